"""Micro-benchmark: FCSS inference per image pair vs nearest neighbour on plain backbone features.

Both methods run in the same process on the same random image pair and keypoints, per image size:

- ``fcss``: FCSS descriptors of both images (backbone up to the deepest CSS layer, three CSS
  layers, upsampling, normalisation) and NN transfer of the keypoints (``predict_keypoints``);
- ``nn``: the backbone up to its default NN layer for both images and the same NN transfer
  (``methods.nn.nn_transfer``), i.e. the pipeline's baseline computed from images.

Training: ``fcss_train``, one optimisation step on one image pair (descriptors of both images,
forward-backward consistency inside a centred object box, N = 1024 samples, contrastive loss,
backward through the CSS layers and the backbone, Adam step), as the workflow stage trains;
reported as pairs/s and as the ratio of its time per pair to the NN inference time per pair.

Reports the median wall-clock and process-CPU ms/pair, the FCSS/NN ratios and the peak extra
memory of one call (CUDA: ``max_memory_allocated`` growth; CPU: peak-RSS growth, as in
``bench_matching.py``, approximate). On a shared CPU trust the CPU-time columns over wall time.
Random-initialised weights are used when the pretrained ones are not installed (timing only).

Layer choice (``--layers-config``): untrained FCSS (seeded random sampling patterns, ImageNet
backbone; the ``fcss@init`` model) with CSS layers on candidate backbone layers across the strides,
scored by PCK on the config's *validation* pairs (never the test pairs), beside NN on the same
backbone. The initial shift std keeps the paper's pixel extent (VGG conv3-4: 5 cells x stride 4 =
20 px) at every stride: std = 20 px / stride cells.

Usage:
    python bench/bench_fcss.py --device auto --sizes 128 256 --repeats 10 --steps 3 --threads 1
    python bench/bench_fcss.py --layers-config config/pf-willow-split.yaml --threads 1
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline_lib.backbones import BackboneError, build_backbone, resolve_device
from pipeline_lib.fcss import (FCSSConfig, FCSSTrainConfig, TrainBatch, TrainPair, build_fcss, make_loss_fn,
                               predict_keypoints)
from pipeline_lib.methods.nn import nn_transfer
from _timing import cpu_peak_mib, cuda_peak_mib, save_rows, sync, markdown_table  # shared helpers (bench/_timing.py)

N_KEYPOINTS = 10  # PF-WILLOW annotates 10 keypoints per image


# Timing and memory helpers: the same measurement as bench_matching.py (kept local so this script
# does not break when that one's imports change).
def median_ms(fn, args, device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """Median wall-clock ms and median process-CPU ms (all threads) per call. On a shared CPU the
    CPU time is the steadier number: it does not count time spent waiting for a core."""
    for _ in range(warmup):
        fn(*args)
    sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        sync(device)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


@dataclass
class Row:
    device: str
    backbone: str
    pretrained: bool
    image_px: int
    fcss_layers: str
    descriptor_dim: int
    descriptor_hw: str
    nn_layer: str
    nn_ms: float
    fcss_ms: float
    fcss_over_nn: float
    nn_cpu_ms: float
    fcss_cpu_ms: float
    fcss_over_nn_cpu: float
    fcss_train_pairs_per_s: float
    fcss_train_over_nn: float
    fcss_train_cpu_over_nn_cpu: float
    nn_peak_mib: float
    fcss_peak_mib: float
    memory_method: str
    repeats: int
    threads: int
    torch_version: str


def nn_pair(backbone, layer):
    def run(src, trg, kps):
        with torch.inference_mode():
            fs = backbone(src[None], upto=layer)[layer][0]
            ft = backbone(trg[None], upto=layer)[layer][0]
            return nn_transfer(fs, ft, kps, tuple(src.shape[1:]), tuple(trg.shape[1:]))
    return run


def fcss_pair(model):
    def run(src, trg, kps):
        return predict_keypoints(model, src, trg, kps)
    return run


def fcss_train_step(model, src, trg, seed):
    """One optimisation step of the workflow stage's loss on one pair (object = the centred half box)."""
    h, w = src.shape[1:]
    region = torch.zeros(h, w, dtype=torch.bool)
    region[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    batch = TrainBatch((TrainPair("bench", src, trg, region, region),), seed)
    loss_fn = make_loss_fn(FCSSTrainConfig())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run():
        loss, _ = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def bench_size(size, backbone, pretrained, model, device, repeats, warmup, seed, steps) -> Row:
    gen = torch.Generator().manual_seed(seed)
    src = torch.rand(3, size, size, generator=gen).to(device)
    trg = torch.rand(3, size, size, generator=gen).to(device)
    kps = (torch.rand(N_KEYPOINTS, 2, generator=gen) * (size - 1)).to(device)
    fns = {"nn": nn_pair(backbone, backbone.default_layer), "fcss": fcss_pair(model)}
    timed = {k: median_ms(f, (src, trg, kps), device, repeats, warmup) for k, f in fns.items()}
    ms = {k: v[0] for k, v in timed.items()}
    cpu = {k: v[1] for k, v in timed.items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    train_ms, train_cpu = median_ms(fcss_train_step(model, src, trg, seed), (), device, steps, 1)
    model.load_state_dict(state)  # the inference rows above and the descriptor shape below use the same weights
    model.eval()
    if device.type == "cuda":
        peak = {k: cuda_peak_mib(f, (src, trg, kps), device) for k, f in fns.items()}
        method = "cuda.max_memory_allocated - allocated_before"
    else:
        peak = {k: cpu_peak_mib(f, (src, trg, kps)) for k, f in fns.items()}
        method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before"
    with torch.inference_mode():
        desc = model(src[None])
    return Row(device=str(device), backbone=backbone.name, pretrained=pretrained, image_px=size,
               fcss_layers="+".join(model.layers), descriptor_dim=int(desc.shape[1]),
               descriptor_hw=f"{desc.shape[2]}x{desc.shape[3]}", nn_layer=backbone.default_layer,
               nn_ms=round(ms["nn"], 3), fcss_ms=round(ms["fcss"], 3), fcss_over_nn=round(ms["fcss"] / ms["nn"], 2),
               nn_cpu_ms=round(cpu["nn"], 3), fcss_cpu_ms=round(cpu["fcss"], 3),
               fcss_over_nn_cpu=round(cpu["fcss"] / cpu["nn"], 2),
               fcss_train_pairs_per_s=round(1e3 / train_ms, 2), fcss_train_over_nn=round(train_ms / ms["nn"], 2),
               fcss_train_cpu_over_nn_cpu=round(train_cpu / cpu["nn"], 2),
               nn_peak_mib=round(peak["nn"], 1), fcss_peak_mib=round(peak["fcss"], 1), memory_method=method,
               repeats=repeats, threads=torch.get_num_threads(), torch_version=torch.__version__)


def markdown(rows: list[Row]) -> str:
    cols = ["device", "image_px", "descriptor_hw", "nn_layer", "nn_ms", "fcss_ms", "fcss_over_nn", "nn_cpu_ms",
            "fcss_cpu_ms", "fcss_over_nn_cpu", "fcss_train_pairs_per_s", "fcss_train_over_nn",
            "fcss_train_cpu_over_nn_cpu", "nn_peak_mib", "fcss_peak_mib"]
    return markdown_table(rows, cols)


# Candidate CSS layer sets of efficientnet_lite0 (strides 4, 8, 16, 16): single levels and three-level stacks.
LAYER_CANDIDATES = (("block00", "block01", "block02"), ("block02",), ("block04",), ("block06",), ("block10",),
                    ("block02", "block04", "block06"), ("block04", "block06", "block10"))
PAPER_SHIFT_EXTENT_PX = 20.0  # Kim et al.'s release: std 5 cells on conv3-4 (stride 4)


def measure_layers(config: Path, candidates, split: str = "val") -> list[dict]:
    """PCK@0.05/0.1/0.15 of NN on the backbone's default layer, then of untrained FCSS per candidate layer
    set, on ``split`` pairs of ``config``."""
    from pipeline_lib.config import load_config
    from pipeline_lib.evaluation import evaluate_predictions, summarise
    from pipeline_lib.settings import Settings
    from pipeline_lib.backbones import measure_strides
    from pipeline_lib.fcss import DescriptorFrame
    from pipeline_lib.pair_prediction import predict_pairs
    from pipeline_lib.stage_io import eval_pairs, load_dataset

    cfg = load_config(config, {"evaluation": {**load_config(config)["evaluation"], "split": split}})
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    backbone = build_backbone("efficientnet_lite0", pretrained=True).eval()
    strides = measure_strides(backbone)
    side = int(cfg["image"]["longer_side"])
    ev = Settings(cfg).evaluation
    rows = []

    class Plain(torch.nn.Module):  # NN on the backbone's default layer, through the same transfer code
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, images):
            return backbone(images, upto=backbone.default_layer)[backbone.default_layer]

    frame = DescriptorFrame(Plain(), index.images, side)
    preds, ms = predict_pairs(frame, pairs, frame, desc="nn")
    summ = summarise(evaluate_predictions("nn", pairs, index.images, preds, ev))
    pck = {float(r["alpha"]): float(r["pck_per_pair"]) for r in summ if r["category"] == "all"}
    rows.append({"layers": f"nn ({backbone.default_layer})", "strides": f"{strides[backbone.default_layer]:g}",
                 "shift_std_cells": "", "split": split, "n_pairs": len(pairs),
                 **{f"pck@{a:g}": round(v, 1) for a, v in sorted(pck.items())}, "ms_per_pair": round(ms, 1),
                 "seconds": 0.0})
    print(rows[-1], flush=True)
    for layers in candidates:
        stds = tuple(PAPER_SHIFT_EXTENT_PX / strides[n] for n in layers)
        model = build_fcss(FCSSConfig(layers=layers, init_shift_std_cells=stds, seed=cfg["seed"]), backbone).eval()
        t0 = time.perf_counter()
        frame = DescriptorFrame(model, index.images, side)
        preds, ms = predict_pairs(frame, pairs, frame, desc="+".join(layers))
        summ = summarise(evaluate_predictions("fcss@init", pairs, index.images, preds, ev))
        pck = {float(r["alpha"]): float(r["pck_per_pair"]) for r in summ if r["category"] == "all"}
        rows.append({"layers": "+".join(layers), "strides": "/".join(f"{strides[n]:g}" for n in layers),
                     "shift_std_cells": "/".join(f"{x:.2f}" for x in stds), "split": split, "n_pairs": len(pairs),
                     **{f"pck@{a:g}": round(v, 1) for a, v in sorted(pck.items())}, "ms_per_pair": round(ms, 1),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers-config", type=Path, default=None,
                        help="measure the candidate CSS layer sets on this config's validation pairs instead")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256], help="square image sides (px)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per method and size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (0 = torch's default); 1 avoids idle-thread spinning being "
                             "counted on a shared machine")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fcss.csv"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.layers_config is not None:
        rows = measure_layers(args.layers_config, LAYER_CANDIDATES)
        print(markdown_table(rows, list(rows[0])))
        out = args.out.with_name("fcss_layers.csv") if args.out.name == "fcss.csv" else args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out}")
        return
    try:
        device = resolve_device(args.device)
    except BackboneError as err:
        parser.error(str(err))

    try:
        backbone, pretrained = build_backbone(args.backbone, pretrained=True), True
    except BackboneError:
        backbone, pretrained = build_backbone(args.backbone, pretrained=False), False
    backbone = backbone.to(device).eval()
    model = build_fcss(FCSSConfig(seed=args.seed), backbone).to(device).eval()
    rows = [bench_size(s, backbone, pretrained, model, device, args.repeats, args.warmup, args.seed, args.steps)
            for s in args.sizes]
    print(markdown(rows))
    print(f"\nFCSS layers {rows[0].fcss_layers} ({rows[0].descriptor_dim}-d); backbone {args.backbone} "
          f"(pretrained={pretrained}); memory: {rows[0].memory_method}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {N_KEYPOINTS} keypoints per pair")
    save_rows(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
