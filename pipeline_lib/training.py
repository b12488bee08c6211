"""One training loop for every trained method: epochs, checkpoint every epoch, resume after a kill,
progress bar, CSV log and loss-curve picture, device from config.

A method supplies its model, a loss function of (model, batch) and a batch iterator per epoch; the
loop owns optimisation, seeding and persistence. A loss function may also return ``(loss, metrics)``,
a dict of per-batch diagnostics (e.g. the share of pixels that pass gradient) that the loop averages per
epoch into ``train_log.csv`` and draws beside the loss. Every epoch also logs how far the trainable
parameters moved (``param_change``: relative L2 change over the epoch), so a model that does not learn is
seen in the log, not only in the results. Checkpoints live in ``<out_dir>/checkpoints`` (not a
Snakemake output, so they survive a killed job); the final weights are written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from .atomic import atomic_path, write_text

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "loss", "lr", "param_change", "n_batches", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 4
    weight_decay: float = 0.0
    seed: int = 0
    # (parameter-name prefix, learning rate) pairs: parameters whose name starts with a prefix (first match)
    # get that rate, e.g. FCSS's sampling shifts; the rest get ``lr``.
    lr_groups: tuple[tuple[str, float], ...] = ()

    def fingerprint(self, extra: dict | None = None) -> str:
        """Checkpoints resume only into a run with the same settings (more epochs may be asked for)."""
        settings = {k: v for k, v in asdict(self).items() if k != "epochs"}
        text = json.dumps({**settings, **(extra or {})}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    resumed_from: int
    history: list[dict]


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file cannot be read safely; the message names the file and the fix."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by this library (tensors and plain metadata only) with
    ``torch.load(weights_only=True)``: a file that embeds code is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; run the rule that writes it (snakemake <that file>).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign, or carrying pickled objects other than tensors/plain data
        raise CheckpointError(f"cannot read checkpoint {path} as tensors and plain metadata "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); it is truncated or was not "
                              f"written by pipeline_lib. Delete it and rerun the rule that makes it.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a pipeline_lib checkpoint dict; delete it "
                              f"and rerun the rule that makes it.")
    return state


def latest_checkpoint(ckpt_dir: Path, fingerprint: str, epochs: int | None = None) -> dict | None:
    """The newest readable checkpoint of this run, or None (a corrupt file is skipped, never trusted).

    ``epochs``: only checkpoints within that many epochs count, so a rerun asking for FEWER epochs resumes from
    (or ends at) its own last epoch instead of returning a model trained for longer.
    """
    for path in sorted(ckpt_dir.glob("epoch_*.pt"), reverse=True):
        if epochs is not None and int(path.stem.removeprefix("epoch_")) >= epochs:
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:  # a torn file from a kill is ignored, with a warning
            log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
            continue
        if state.get("fingerprint") == fingerprint:
            return state
        log.warning("ignoring checkpoint %s from a run with other settings", path)
    return None


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Adam parameter groups of the trainable parameters: one per ``cfg.lr_groups`` prefix that matches
    something (first matching prefix wins), then the rest at ``cfg.lr``. A prefix that matches no trainable
    parameter is an error (a typo would otherwise train everything at the base rate)."""
    groups: dict[str, list] = {prefix: [] for prefix, _ in cfg.lr_groups}
    rest = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((pre for pre, _ in cfg.lr_groups if name.startswith(pre)), None)
        (groups[prefix] if prefix is not None else rest).append(p)
    empty = [pre for pre, ps in groups.items() if not ps]
    if empty:
        raise ValueError(f"lr_groups prefix(es) {empty} match no trainable parameter of {type(model).__name__}; "
                         f"parameter names start with e.g. {sorted({n.split('.')[0] for n, _ in model.named_parameters()})}")
    out = [{"params": groups[pre], "lr": lr, "name": pre} for pre, lr in cfg.lr_groups]
    if rest:
        out.append({"params": rest, "lr": cfg.lr, "name": "default"})
    return out


def _flat_trainable(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters() if p.requires_grad])


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """||after - before|| / ||before|| (the plain norm when ``before`` is zero)."""
    return float((after - before).norm() / before.norm().clamp_min(1e-12))


def _split_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, tuple):
        loss, metrics = out
        return loss, {k: float(v) for k, v in metrics.items()}
    return out, {}


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor],
        batches: Callable[[int, torch.Generator], Iterable], cfg: TrainConfig, out_dir: str | Path,
        device: torch.device, extra_fingerprint: dict | None = None, desc: str = "train") -> TrainResult:
    """Train ``model`` for ``cfg.epochs`` epochs, resuming from the last checkpoint in ``out_dir``.

    ``batches(epoch, generator)`` yields the batches of one epoch (shuffled with ``generator``);
    ``loss_fn(model, batch)`` returns a scalar loss, or ``(loss, {name: value})`` with per-batch metrics
    (averaged per epoch into the log). Writes ``train_log.csv`` and ``loss_curve.png``.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint(extra_fingerprint)
    model.to(device)
    opt = torch.optim.Adam(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    start = 0
    state = latest_checkpoint(ckpt_dir, fp, cfg.epochs)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        start = state["epoch"] + 1
        log.info("resuming %s from epoch %d (%s)", desc, start, ckpt_dir)
    else:
        torch.manual_seed(cfg.seed)
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        sums: dict[str, float] = {}
        before = _flat_trainable(model)
        for batch in tqdm(batches(epoch, gen), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                          leave=False):
            loss, metrics = _split_loss(loss_fn(model, batch))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, batch {n + 1}; "
                                         f"lower the learning rate (now {cfg.lr}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            n += 1
        if n == 0:
            raise ValueError(f"{desc}: epoch {epoch + 1} produced no batch; are there training pairs?")
        change = relative_change(before, _flat_trainable(model))
        history.append({"epoch": epoch + 1, "loss": total / n, "lr": cfg.lr, "param_change": change, "n_batches": n,
                        "seconds": round(time.perf_counter() - t0, 3), **{k: v / n for k, v in sums.items()}})
        log.info("%s epoch %d/%d loss %.5f, parameters moved %.3g (relative)%s", desc, epoch + 1, cfg.epochs,
                 total / n, change, "".join(f", {k} {v / n:.4g}" for k, v in sums.items()))
        _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
               "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch, "fingerprint": fp},
              ckpt_dir / f"epoch_{epoch:04d}.pt")
        write_log(out_dir / "train_log.csv", history)
    model.eval()
    write_log(out_dir / "train_log.csv", history)
    plot_loss(history, out_dir / "loss_curve.png", desc)
    return TrainResult(epochs_run=cfg.epochs - start, resumed_from=start, history=history)


def save_weights(model: nn.Module, path: str | Path, meta: dict) -> None:
    """Final weights with their provenance, written atomically."""
    _save({"model": model.state_dict(), "meta": meta}, Path(path))


def metric_names(history: list[dict]) -> list[str]:
    """Per-epoch metrics beyond the fixed LOG_COLUMNS, in first-seen order."""
    return list(dict.fromkeys(k for h in history for k in h if k not in LOG_COLUMNS))


def write_log(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=(*LOG_COLUMNS, *metric_names(history)), restval="")
    w.writeheader()
    w.writerows(history)
    write_text(path, buf.getvalue())


def plot_loss(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = metric_names(history) + (["param_change"] if any("param_change" in h for h in history) else [])
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5 + 3.6 * len(extra), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in history]
    axes[0, 0].plot(epochs, [h["loss"] for h in history], marker="o")
    axes[0, 0].set_ylabel("mean training loss")
    axes[0, 0].set_title(title)
    for ax, name in zip(axes[0, 1:], extra):
        ax.plot(epochs, [h.get(name, float("nan")) for h in history], marker="o", color="tab:orange")
        ax.set_ylabel(name)
        ax.set_title(f"{title}: {name}")
    for ax in axes[0]:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def resumable_settings(section: Mapping) -> dict:
    """A method's config section without ``epochs``: a rerun that only asks for more epochs resumes from
    the last checkpoint (as :meth:`pipeline_lib.training.TrainConfig.fingerprint` intends)."""
    return {k: v for k, v in section.items() if k != "epochs"}


def load_trained(model: nn.Module, weights: str | Path, device: torch.device) -> nn.Module:
    """Load the state written by :func:`pipeline_lib.training.save_weights` into ``model`` (eval mode)."""
    state = load_checkpoint(weights)
    if "model" not in state:
        raise CheckpointError(f"{weights} has no 'model' weights (keys: {sorted(state)}); it is not a final-weights file "
                              f"of pipeline_lib.training.save_weights.")
    model.load_state_dict(state["model"])
    return model.to(device).eval()
