"""One training loop for every trained method: epochs, checkpoint every epoch, resume after a kill,
progress bar, CSV log and loss-curve picture, device from config.

A method supplies its model, a loss function of (model, batch) and a batch iterator per epoch; the
loop owns optimisation, seeding and persistence. Checkpoints live in ``<out_dir>/checkpoints`` (not a
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
LOG_COLUMNS = ("epoch", "loss", "lr", "n_batches", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 4
    weight_decay: float = 0.0
    seed: int = 0

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


def latest_checkpoint(ckpt_dir: Path, fingerprint: str) -> dict | None:
    """The newest readable checkpoint of this run, or None (a corrupt file is skipped, never trusted)."""
    for path in sorted(ckpt_dir.glob("epoch_*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a torn file from a kill is ignored, with a warning
            log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
            continue
        if state.get("fingerprint") == fingerprint:
            return state
        log.warning("ignoring checkpoint %s from a run with other settings", path)
    return None


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor],
        batches: Callable[[int, torch.Generator], Iterable], cfg: TrainConfig, out_dir: str | Path,
        device: torch.device, extra_fingerprint: dict | None = None, desc: str = "train") -> TrainResult:
    """Train ``model`` for ``cfg.epochs`` epochs, resuming from the last checkpoint in ``out_dir``.

    ``batches(epoch, generator)`` yields the batches of one epoch (shuffled with ``generator``);
    ``loss_fn(model, batch)`` returns a scalar loss. Writes ``train_log.csv`` and ``loss_curve.png``.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint(extra_fingerprint)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    start = 0
    state = latest_checkpoint(ckpt_dir, fp)
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
        for batch in tqdm(batches(epoch, gen), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                          leave=False):
            loss = loss_fn(model, batch)
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
        history.append({"epoch": epoch + 1, "loss": total / n, "lr": cfg.lr, "n_batches": n,
                        "seconds": round(time.perf_counter() - t0, 3)})
        log.info("%s epoch %d/%d loss %.5f", desc, epoch + 1, cfg.epochs, total / n)
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


def write_log(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
    w.writeheader()
    w.writerows(history)
    write_text(path, buf.getvalue())


def plot_loss(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_title(title)
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
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
