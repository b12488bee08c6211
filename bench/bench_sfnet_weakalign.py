"""Micro-benchmark: inference time and peak memory per image pair of SFNet and WeakAlign, against the
plain nearest-neighbour (NN) baseline timed in the same run.

Per pair and image side S (both images S x S, 10 source keypoints):

- ``nn``: backbone up to the NN layer (``block10`` on efficientnet_lite0) for both images, then
  the pipeline's NN keypoint transfer (``pipeline_lib.methods.nn.nn_transfer``);
- ``sfnet``: SFNet forward (backbone to the stride-32 layer, adaptation, correlation, kernel soft
  argmax both ways) and keypoint transfer through the flow;
- ``weakalign``: both WeakAlign stages (the second one re-runs the backbone on the affine-warped
  source) and keypoint transfer by the transforms (``swap`` mode: no inversion).

Training throughput (pairs/s of full optimisation steps at ``--batch-size`` pairs: forward, loss,
backward, Adam step, with the settings of the workflow stage: frozen backbone) is reported for both
methods, with the ratio of the training time per pair to the NN inference time per pair:

- ``sfnet`` train: synthetic pairs from random images and masks (Lee et al. Eq. 4 loss);
- ``weakalign`` train: random image pairs, minus the soft-inlier counts.

Weights are random unless ``--pretrained`` (timing does not depend on them). Memory: peak extra
CUDA memory per call, or on CPU the peak-RSS growth of one call (the method of
``bench/bench_matching.py``; RSS includes allocator slack, so treat it as approximate).

Usage:
    python bench/bench_sfnet_weakalign.py --device auto --sizes 128 256 --repeats 10 --batch-size 4 --steps 5
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline_lib.backbones import build_backbone, resolve_device
from pipeline_lib.kernels.grids import normalised_to_pixels, pixels_to_normalised
from pipeline_lib.kernels.warps import composed_points
from pipeline_lib.methods.nn import nn_transfer
from pipeline_lib.sfnet import SFNetConfig, SyntheticConfig, build_sfnet, make_loss_fn as sfnet_loss_fn, make_pairs
from pipeline_lib.sfnet.predict import transfer_points
from pipeline_lib.weakalign import PairBatch, WeakAlignConfig, build_weakalign
from pipeline_lib.weakalign import make_loss_fn as weakalign_loss_fn
from _timing import cpu_peak_mib, cuda_peak_mib, median_ms, save_rows, markdown_table  # shared helpers (bench/_timing.py)

N_KEYPOINTS = 10
METHODS = ("nn", "sfnet", "weakalign")


@dataclass
class Row:
    device: str
    image_px: int
    nn_ms: float
    sfnet_ms: float
    weakalign_ms: float
    sfnet_over_nn: float
    weakalign_over_nn: float
    nn_peak_mib: float
    sfnet_peak_mib: float
    weakalign_peak_mib: float
    batch_size: int
    sfnet_train_pairs_per_s: float
    weakalign_train_pairs_per_s: float
    sfnet_train_over_nn: float
    weakalign_train_over_nn: float
    sfnet_grid: str
    weakalign_grid: str
    backbone: str
    pretrained: bool
    memory_method: str
    repeats: int
    threads: int
    torch_version: str


def pair_fns(backbone_name: str, size: int, device: torch.device, pretrained: bool):
    """{method: fn(src (1, 3, S, S), trg, kps (K, 2)) -> (K, 2)} and the models' grids."""
    bb = build_backbone(backbone_name, pretrained=pretrained).to(device).eval()
    sfnet = build_sfnet(SFNetConfig(image_size=size), bb).to(device).eval()
    wa = build_weakalign(WeakAlignConfig(image_size=size), bb).to(device).eval()
    nn_layer = wa.layer  # the same stride-16 layer for the baseline
    hw = (size, size)

    @torch.inference_mode()
    def nn_fn(src, trg, kps):
        feats = bb(torch.cat([src, trg]), upto=nn_layer)[nn_layer]
        return nn_transfer(feats[0], feats[1], kps, hw, hw)

    @torch.inference_mode()
    def sfnet_fn(src, trg, kps):
        return transfer_points(sfnet(src, trg).flow_s2t, kps, hw, hw)

    @torch.inference_mode()
    def weakalign_fn(src, trg, kps):
        out = wa(trg, src)  # "swap" mode: the backward map of (target, source) sends source points to the target
        pts = composed_points(out.theta_aff, out.theta_tps, pixels_to_normalised(kps, hw)[None])[0]
        return normalised_to_pixels(pts, hw)

    with torch.inference_mode():
        grid = tuple(sfnet(torch.zeros(1, 3, size, size, device=device), torch.zeros(1, 3, size, size, device=device))
                     .flow_s2t.shape[1:3])
    return {"nn": nn_fn, "sfnet": sfnet_fn, "weakalign": weakalign_fn}, grid, wa.grid_hw, {"sfnet": sfnet,
                                                                                        "weakalign": wa}


def train_steps(models: dict, size: int, batch_size: int, seed: int) -> dict:
    """{method: fn() doing one optimisation step on ``batch_size`` random pairs}, as the workflow
    stages train (the loss functions of :mod:`pipeline_lib.sfnet.train` / :mod:`pipeline_lib.weakalign.train`)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, size, size, generator=gen)
    masks = torch.zeros(batch_size, 1, size, size)
    masks[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1  # a centred object
    pairs = PairBatch(images, torch.rand(batch_size, 3, size, size, generator=gen))
    losses = {"sfnet": sfnet_loss_fn(), "weakalign": weakalign_loss_fn()}

    def step(method: str):
        model = models[method]
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def run():
            batch = make_pairs(images, masks, SyntheticConfig(), gen) if method == "sfnet" else pairs
            loss = losses[method](model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    return {m: step(m) for m in models}


def bench_size(backbone_name, size, device, repeats, warmup, seed, pretrained, batch_size, steps) -> Row:
    torch.manual_seed(seed)
    fns, sf_grid, wa_grid, models = pair_fns(backbone_name, size, device, pretrained)
    gen = torch.Generator().manual_seed(seed)
    src, trg = (torch.rand(1, 3, size, size, generator=gen).to(device) for _ in range(2))
    args = (src, trg, (torch.rand(N_KEYPOINTS, 2, generator=gen) * (size - 1)).to(device))
    ms = {m: median_ms(fns[m], args, device, repeats, warmup) for m in METHODS}
    for model in models.values():
        model.train()
    train_ms = {m: median_ms(fn, (), device, steps, 1) / batch_size  # ms per training pair
                for m, fn in train_steps(models, size, batch_size, seed).items()}
    for model in models.values():
        model.eval()
    if device.type == "cuda":
        peak = {m: cuda_peak_mib(fns[m], args, device) for m in METHODS}
        method = "cuda.max_memory_allocated - allocated_before"
    else:
        peak = {m: cpu_peak_mib(fns[m], args) for m in METHODS}
        method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before"
    return Row(device=str(device), image_px=size, nn_ms=round(ms["nn"], 2), sfnet_ms=round(ms["sfnet"], 2),
               weakalign_ms=round(ms["weakalign"], 2), sfnet_over_nn=round(ms["sfnet"] / ms["nn"], 2),
               weakalign_over_nn=round(ms["weakalign"] / ms["nn"], 2), nn_peak_mib=round(peak["nn"], 1),
               sfnet_peak_mib=round(peak["sfnet"], 1), weakalign_peak_mib=round(peak["weakalign"], 1),
               batch_size=batch_size, sfnet_train_pairs_per_s=round(1e3 / train_ms["sfnet"], 2),
               weakalign_train_pairs_per_s=round(1e3 / train_ms["weakalign"], 2),
               sfnet_train_over_nn=round(train_ms["sfnet"] / ms["nn"], 2),
               weakalign_train_over_nn=round(train_ms["weakalign"] / ms["nn"], 2),
               sfnet_grid="x".join(map(str, sf_grid)), weakalign_grid="x".join(map(str, wa_grid)),
               backbone=backbone_name, pretrained=pretrained, memory_method=method, repeats=repeats,
               threads=torch.get_num_threads(), torch_version=torch.__version__)


def markdown(rows: list[Row]) -> str:
    cols = ["device", "image_px", "sfnet_grid", "nn_ms", "sfnet_ms", "weakalign_ms", "sfnet_over_nn",
            "weakalign_over_nn", "sfnet_train_pairs_per_s", "weakalign_train_pairs_per_s", "sfnet_train_over_nn",
            "weakalign_train_over_nn", "nn_peak_mib", "sfnet_peak_mib", "weakalign_peak_mib"]
    return markdown_table(rows, cols)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256], help="square image sides in pixels")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--pretrained", action="store_true", help="load ImageNet weights (timing does not need them)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per method and size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per method and size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sfnet_weakalign.csv"))
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        parser.error(str(err))
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    rows = [bench_size(args.backbone, s, device, args.repeats, args.warmup, args.seed, args.pretrained,
                       args.batch_size, args.steps) for s in args.sizes]
    print(markdown(rows))
    print(f"\nmemory: {rows[0].memory_method}; backbone {args.backbone}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {N_KEYPOINTS} keypoints per pair; "
          f"train_over_nn = training ms per pair / NN inference ms per pair")
    save_rows(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
