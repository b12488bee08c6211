"""Micro-benchmark of the Siamese flow network: training throughput, inference time, and the
nearest-neighbour (NN) baseline's inference time measured in the same run.

For each square input size (default 128 and 256 px), on random images:

- train: pairs/s of full optimisation steps (forward of both images, truncated Euclidean loss,
  backward, Adam step) at ``--batch-size`` pairs, encoder fine-tuned (Gaur et al. Sec. 5);
- siamese: ms per pair of one forward at batch 1 (dense flow at input resolution);
- nn: ms per pair of the baseline at batch 1: the same backbone up to its default layer on both
  images, then every source cell's cosine nearest target cell (dense NN correspondence);
  siamese_over_nn is the ratio;
- peak memory per measurement. CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU (Linux):
  the process peak RSS (``getrusage().ru_maxrss``), reset before each measurement via
  ``malloc_trim(0)`` + ``/proc/self/clear_refs`` when allowed (else it is the peak so far:
  monotone); reported as the peak itself, not the growth, so it includes the interpreter, torch
  and the resident model (~1 GiB here).

The 1-minute load average is recorded: on a shared machine, wall-clock times scale with it.

Usage:
    python bench/bench_siamese.py --device auto --sizes 128 256 --batch-size 4 --steps 5 [--threads 1]
        [--fusion stack|correlation]

Learning mode (``--learning``): does the network learn? Trains it on the demo exactly as the train_siamese
stage does (``pipeline_lib.siamese.stage.train`` with config/config.yaml's ``siamese`` block plus ``--set``
overrides; the demo data, index and pseudo flow stores read from ``--results-dir``, normally the results of
``make run``), then scores the demo's test pairs with the trained weights, the initial (seeded, untrained)
weights and zero flow (keypoints kept in place). Prints PCK@0.05/0.1/0.15 of the three and the per-epoch
log (loss, share of supervised pixels under T, end-point error, parameter change) and CPU seconds:
    python bench/bench_siamese.py --learning --threads 2 --set fusion=stack flow_source=exact epochs=20
        max_train_pairs=0 freeze_backbone=true
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline_lib.backbones import build_backbone, describe_layers, resolve_device
from pipeline_lib.siamese.loss import truncated_euclidean_loss
from pipeline_lib.siamese.model import STRIDE_PROBE_PX, SiameseFlowNet
from _timing import MIB, save_rows, sync, markdown_table  # shared helpers (bench/_timing.py)



@dataclass
class Row:
    device: str
    backbone: str
    fusion: str
    input_px: int
    batch_size: int
    train_pairs_per_s: float
    train_peak_mib: float
    siamese_ms: float
    siamese_peak_mib: float
    nn_ms: float
    nn_peak_mib: float
    siamese_over_nn: float
    nn_layer: str
    memory_method: str
    repeats: int
    threads: int
    load_avg_1min: float
    torch_version: str


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, or it stays in the RSS
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        except (OSError, AttributeError):
            pass


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        sync(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def timed(fn, device: torch.device, repeats: int, warmup: int) -> tuple[list[float], float]:
    """Per-call seconds of ``fn`` and the peak memory (MiB) over the timed calls."""
    for _ in range(warmup):
        fn()
    reset_peak(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, peak_mib(device)


def dense_nn(backbone, layer: str, src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Backbone on both images, then each source cell's cosine nearest target cell -> (h*w,) indices."""
    feats = backbone(torch.cat([src, trg]), upto=layer)[layer]
    c = feats.shape[1]
    fs = F.normalize(feats[0].reshape(c, -1), dim=0)
    ft = F.normalize(feats[1].reshape(c, -1), dim=0)
    return (fs.T @ ft).argmax(dim=1)


def bench_size(size: int, args, device: torch.device, gen: torch.Generator) -> Row:
    backbone = build_backbone(args.backbone, pretrained=args.pretrained)
    infos = describe_layers(backbone, probe_size=STRIDE_PROBE_PX)
    model = SiameseFlowNet(backbone, layer_infos=infos, fusion=args.fusion, skip_target=args.skip_target).to(device)
    b = args.batch_size
    src = torch.rand(b, 3, size, size, generator=gen).to(device)
    trg = torch.rand(b, 3, size, size, generator=gen).to(device)
    flow = (torch.rand(b, size, size, 2, generator=gen) * 20 - 10).to(device)
    mask = torch.ones(b, size, size, dtype=torch.bool, device=device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        loss = truncated_euclidean_loss(model(src, trg), flow, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train_t, train_peak = timed(train_step, device, args.steps, args.warmup)
    model.eval()
    s1, t1 = src[:1], trg[:1]

    @torch.inference_mode()
    def infer():
        model(s1, t1)

    layer = backbone.default_layer

    @torch.inference_mode()
    def nn_infer():
        dense_nn(backbone, layer, s1, t1)

    sia_t, sia_peak = timed(infer, device, args.repeats, args.warmup)
    nn_t, nn_peak = timed(nn_infer, device, args.repeats, args.warmup)
    sia_ms, nn_ms = 1e3 * statistics.median(sia_t), 1e3 * statistics.median(nn_t)
    return Row(
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        backbone=args.backbone, fusion=args.fusion, input_px=size, batch_size=b,
        train_pairs_per_s=round(b / statistics.median(train_t), 2), train_peak_mib=round(train_peak, 1),
        siamese_ms=round(sia_ms, 2), siamese_peak_mib=round(sia_peak, 1),
        nn_ms=round(nn_ms, 2), nn_peak_mib=round(nn_peak, 1), siamese_over_nn=round(sia_ms / nn_ms, 2),
        nn_layer=layer,
        memory_method="cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss (process peak RSS)",
        repeats=args.repeats, threads=torch.get_num_threads(), load_avg_1min=round(os.getloadavg()[0], 2),
        torch_version=torch.__version__)


def markdown(rows: list[Row]) -> str:
    cols = ["device", "fusion", "input_px", "batch_size", "train_pairs_per_s", "train_peak_mib", "siamese_ms", "nn_ms",
            "siamese_over_nn", "siamese_peak_mib", "nn_peak_mib", "load_avg_1min"]
    return markdown_table(rows, cols)


def learning(args) -> None:
    """``--learning``: train on the demo with the stage, then PCK of trained vs initial weights vs zero flow."""
    import json
    import tempfile

    import numpy as np
    import yaml

    from pipeline_lib.config import load_config
    from pipeline_lib.evaluation.summary import evaluate_predictions, summarise
    from pipeline_lib.siamese import stage
    from pipeline_lib.pair_prediction import on_images, predict_pairs
    from pipeline_lib.siamese.predict import siamese_keypoint_fn
    from pipeline_lib.stage_io import eval_pairs, load_dataset

    repo = Path(__file__).resolve().parent.parent
    base = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    sc = dict(base["siamese"])
    for kv in args.set:
        if "=" not in kv:
            raise SystemExit(f"--set expects key=value (a siamese config key), got '{kv}'")
        key, value = kv.split("=", 1)
        sc[key] = yaml.safe_load(value)
    cfg = load_config(repo / "config" / "config.yaml", {"results_dir": str(args.results_dir), "siamese": sc,
                                                         "device": args.device})
    backbone = cfg["backbones"][0]
    stores = sorted((args.results_dir / cfg["dataset"]["name"] / backbone / "pseudo_flow").glob("*/pseudo_flow.zarr"))
    if not stores:
        raise SystemExit(f"no pseudo flow stores under {args.results_dir}; run `make run` first (or pass --results-dir)")
    index = load_dataset(cfg)
    ev, pairs = eval_pairs(cfg, index)

    def pck(method: str, preds) -> dict:
        rows = summarise(evaluate_predictions(method, pairs, index.images, preds, ev))
        return {f"pck@{r['alpha']}": r["pck_per_pair"] for r in rows if r["category"] == "all"}

    with tempfile.TemporaryDirectory(prefix="bench_siamese_") as tmp:
        out = Path(tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        stage.train(cfg, backbone, stores, out / "model.pt", out_init=out / "init.pt")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = {"siamese": {k: cfg["siamese"][k] for k in sc}, "train_wall_s": round(wall, 1),
                  "train_cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
                  "load_avg_1min": round(os.getloadavg()[0], 2)}
        for tag in ("init", "model"):
            model = stage.load_model(cfg, backbone, out / f"{tag}.pt", resolve_device(cfg["device"]))
            with torch.inference_mode():
                keypoint_fn = siamese_keypoint_fn(model, cfg["siamese"]["input_size"])
                preds, _ = predict_pairs(on_images(keypoint_fn, index.images), pairs, progress=False)
            result["trained" if tag == "model" else "init"] = pck(tag, preds)
        zero = {}
        for p in pairs:  # zero flow: source keypoints kept in place, rescaled to the target image's size
            s, t = index.images[p.src], index.images[p.trg]
            kps = np.asarray(p.src_kps, float) * np.array([t.width / s.width, t.height / s.height])
            zero[p.pair_id] = np.where(p.valid[:, None], kps, np.nan)
        result["zero_flow"] = pck("zero", zero)
        result["history"] = json.loads((out / "train_meta.json").read_text())["history"]
    for name in ("trained", "init", "zero_flow"):
        print(f"{name:10s} " + "  ".join(f"{k} {v:5.1f}" for k, v in result[name].items()))
    cols = [c for c in ("epoch", "loss", "under_T", "epe_px", "param_change", "seconds") if c in result["history"][0]]
    print("\n" + " ".join(f"{c:>12s}" for c in cols))
    for h in result["history"]:
        print(" ".join(f"{h[c]:12.4g}" for c in cols))
    print(f"\ntrain: {result['train_wall_s']} s wall, {result['train_cpu_s']} s CPU, {result['threads']} threads, "
          f"load {result['load_avg_1min']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"appended to {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--pretrained", action="store_true", help="load ImageNet weights (timing is the same)")
    parser.add_argument("--fusion", choices=["stack", "correlation"], default="stack",
                        help="siamese.fusion: stack (Gaur et al.) or correlation (+ soft-argmax matching)")
    parser.add_argument("--skip-target", action=argparse.BooleanOptionalAction, default=True,
                        help="siamese.skip_target: the target's encoder maps at every decoder skip too")
    parser.add_argument("--learning", action="store_true",
                        help="train on the demo and compare trained / initial weights / zero flow (module docstring)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="--learning: where the demo's data, index and pseudo flow are (read only)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="--learning: siamese config overrides (YAML values)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256], help="square input sides in px")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per size")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference calls per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is faster on an oversubscribed CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/siamese.csv (timing) or bench/results/siamese_learning.jsonl")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("bench/results/siamese_learning.jsonl" if args.learning else "bench/results/siamese.csv")

    device = resolve_device(args.device)  # 'auto' = CUDA when present; clear error for missing CUDA
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.learning:
        learning(args)
        return
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rows = [bench_size(s, args, device, gen) for s in args.sizes]
    print(markdown(rows))
    print(f"\nbackbone {args.backbone}; memory: {rows[0].memory_method}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; NN layer {rows[0].nn_layer}")
    save_rows(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
