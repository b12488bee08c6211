"""Workflow stages of CNNGeometric (Rocco et al. 2017) and WeakAlign (Rocco et al. 2018).

- ``train_cnngeometric``: the affine and TPS regression heads trained on synthetic warps of the
  training split's images (no labels; :mod:`.synthetic`), config section ``cnngeometric``;
- ``train``: WeakAlign's weakly supervised fine-tuning on the training split's pairs, starting from
  the CNNGeometric checkpoint (Rocco et al. 2018 Sec. 4.1), config section ``weakalign``;
- ``predict``: keypoint transfer by the estimated transforms, for either checkpoint (``method``).

Both checkpoints are the same network (:class:`WeakAlign`; its architecture is set by the
``weakalign`` section), so WeakAlign loads the CNNGeometric weights unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import torch

from ..backbones import build_backbone, checkpoint_key, resolve_device
from ..config import ConfigError, section
from ..datasets import ImageRecord
from ..pair_prediction import ImageKeypointFn, KeypointFn, on_images, predict_pairs
from ..protocols import learned_from, merge_learned, read_learned
from ..settings import Settings, reads
from ..stage_io import finish_predictions, load_dataset, prediction_inputs, save_trained
from ..training import TrainConfig, load_checkpoint, load_trained, resumable_settings, save_weights
from .model import WeakAlign, build_weakalign
from .predict import weakalign_keypoint_fn
from .synthetic import GRID_LOSS_POINTS, WarpRanges, identity_grid_loss, train_cnngeometric as fit_cnngeometric
from .train import WeakAlignSettings, load_pair_images, settings_from_config, train_weakalign, training_pairs

log = logging.getLogger(__name__)
CNNGEOMETRIC = "cnngeometric"
WEAKALIGN = "weakalign"
CNNGEOMETRIC_TRAIN_KEYS = ("epochs", "lr", "batch_size", "weight_decay")
CNNGEOMETRIC_OTHER_KEYS = ("grid_loss_points", "fixed_warps")


def settings(cfg: Mapping) -> WeakAlignSettings:
    return settings_from_config(cfg["weakalign"], seed=cfg["seed"])


def cnngeometric_settings(cfg: Mapping) -> tuple[TrainConfig, WarpRanges, int]:
    """(TrainConfig, WarpRanges, grid-loss points per side) of the config section ``cnngeometric``."""
    sec = dict(cfg.get(CNNGEOMETRIC, {}))
    range_keys = set(WarpRanges.__dataclass_fields__)
    unknown = set(sec) - range_keys - set(CNNGEOMETRIC_TRAIN_KEYS) - set(CNNGEOMETRIC_OTHER_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) cnngeometric.{sorted(unknown)}; allowed: "
                          f"{sorted(range_keys | set(CNNGEOMETRIC_TRAIN_KEYS) | set(CNNGEOMETRIC_OTHER_KEYS))}")
    train = section(TrainConfig, {**{k: sec[k] for k in CNNGEOMETRIC_TRAIN_KEYS if k in sec}, "seed": cfg["seed"]})
    ranges = section(WarpRanges, {k: sec[k] for k in range_keys if k in sec})
    return train, ranges, int(sec.get("grid_loss_points", GRID_LOSS_POINTS))


def build(cfg: Mapping, backbone_name: str) -> WeakAlign:
    """The untrained model of this config (ImageNet backbone; regression heads start at the identity)."""
    torch.manual_seed(cfg["seed"])
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    return build_weakalign(settings(cfg).model, backbone)


def load_init(model: WeakAlign, init_from: str | Path) -> WeakAlign:
    """Load a CNNGeometric checkpoint (``training.save_weights`` format) into ``model``; a checkpoint of
    another architecture (e.g. another ``weakalign.image_size``) stops with an error naming both."""
    path = Path(init_from)
    if not path.is_file():
        raise FileNotFoundError(f"WeakAlign init_from: no CNNGeometric checkpoint at {path}; run the "
                                f"train_cnngeometric rule first (or pass init_from=None to start at the identity).")
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"WeakAlign init_from {path}: the checkpoint does not fit this model (layer "
                         f"{model.layer}, {model.image_size} px, grid {model.grid_hw}); retrain CNNGeometric with the "
                         f"same weakalign settings. ({str(exc).splitlines()[0]})") from exc
    return model


@reads("seed", "weights", "cnngeometric", "weakalign", "dataset")
def train_cnngeometric(cfg: Mapping, backbone_name: str, out_weights: str | Path,
                       out_init: str | Path | None = None) -> None:
    """CNNGeometric: regression heads trained on synthetic warps of the training split's images;
    checkpoints beside ``out_weights``; ``out_init``: the untrained model (the ``cnngeometric@init`` row)."""
    s = settings(cfg)
    train_cfg, ranges, grid_points = cnngeometric_settings(cfg)
    index = load_dataset(cfg)
    pairs = training_pairs(index)
    images, _ = load_pair_images(index, pairs, s.model.image_size)
    device = resolve_device(cfg["device"])
    model = build(cfg, backbone_name)
    if out_init is not None:
        save_weights(model, out_init, {"method": CNNGEOMETRIC, CNNGEOMETRIC: dict(cfg.get(CNNGEOMETRIC, {})),
                                       "backbone": backbone_name, "initial": True})
    floor = identity_grid_loss(images, ranges, cfg["seed"], model.tps_grid_size, grid_points)
    log.info("CNNGeometric: %d training images at %d px, %d epochs; grid loss of the identity on random warps: "
             "affine %.4f, tps %.4f", len(images), s.model.image_size, train_cfg.epochs, floor["affine"], floor["tps"])
    extra = {CNNGEOMETRIC: resumable_settings(cfg.get(CNNGEOMETRIC, {})), "model": asdict(s.model),
             "backbone": backbone_name, "pairs": [p.pair_id for p in pairs]}
    result = fit_cnngeometric(model, images, train_cfg, Path(out_weights).parent, device, ranges, grid_points,
                              extra_fingerprint=extra, fixed_warps=Settings(cfg).cnngeometric.fixed_warps)
    save_trained(cfg, CNNGEOMETRIC, model, result, out_weights, device, learned_from(pairs),
                 backbone=backbone_name, n_images=len(images),
                 layer=model.layer, image_size=s.model.image_size, ranges=asdict(ranges),
                 identity_grid_loss=floor, train=asdict(train_cfg))


@reads("seed", "weights", "weakalign", "dataset")
def train(cfg: Mapping, backbone_name: str, out_weights: str | Path, init_from: str | Path | None = None,
          out_init: str | Path | None = None) -> None:
    """WeakAlign: fine-tune on the training split's pairs (category labels only) from the CNNGeometric
    checkpoint ``init_from`` (None: from the identity heads); checkpoints beside ``out_weights``;
    ``out_init``: the model training starts from (the ``weakalign@init`` row)."""
    s = settings(cfg)
    index = load_dataset(cfg)
    pairs = training_pairs(index)
    images, pair_index = load_pair_images(index, pairs, s.model.image_size)
    device = resolve_device(cfg["device"])
    model = build(cfg, backbone_name)
    start = {"init_from": None}
    if init_from is not None:
        load_init(model, init_from)
        start = {"init_from": str(init_from), "init_sha256": checkpoint_key(init_from)}
    if out_init is not None:
        save_weights(model, out_init, {"method": WEAKALIGN, WEAKALIGN: dict(cfg[WEAKALIGN]), "backbone": backbone_name,
                                       "initial": True, **start})
    log.info("WeakAlign: %d training pairs (%d images) at %d px, %d epochs, from %s", len(pairs), len(images),
             s.model.image_size, s.train.epochs, start["init_from"] or "the identity")
    extra = {WEAKALIGN: resumable_settings(cfg[WEAKALIGN]), "backbone": backbone_name,
             "pairs": [p.pair_id for p in pairs], "init_sha256": start.get("init_sha256")}  # content, not path
    result = train_weakalign(model, images, pair_index, s.train, Path(out_weights).parent, device, s.augment, s.loss,
                             extra_fingerprint=extra)
    learned = merge_learned(learned_from(pairs), read_learned(init_from) if init_from is not None else None)
    save_trained(cfg, WEAKALIGN, model, result, out_weights, device, learned, backbone=backbone_name, n_pairs=len(pairs),
                 layer=model.layer, train=asdict(s.train), **start)


@reads("seed", "weights", "weakalign", "evaluation", "dataset")
def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json,
            method: str = WEAKALIGN) -> None:
    """Keypoint transfer by the estimated affine + TPS transforms on the evaluation pairs; ``method`` is the
    name written (``weakalign``, ``cnngeometric``, or their ``@init`` rows: the same path, other weights)."""
    s = settings(cfg)
    index, pairs, device, model = prediction_inputs(cfg, build(cfg, backbone_name), weights)
    preds, ms = predict_pairs(on_images(image_keypoint_fn(cfg, model), index.images), pairs, desc=method)
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device),
                       image_size=s.model.image_size, layer=model.layer, transfer=s.transfer,
                       weights_sha256=checkpoint_key(weights))


def image_keypoint_fn(cfg: Mapping, model: WeakAlign) -> ImageKeypointFn:
    """Keypoints of one image pair through a loaded model's affine + TPS estimate (``predict``, and ``match``)."""
    return weakalign_keypoint_fn(model, settings(cfg).transfer)


def match_predictor(cfg: Mapping, backbone_name: str, weights: str | Path, device,
                    images: Mapping[str, ImageRecord]) -> tuple[KeypointFn, None]:
    """The keypoint function of the model in ``weights`` on any ``images`` (``match``, the report's warp pictures)."""
    return on_images(image_keypoint_fn(cfg, load_trained(build(cfg, backbone_name), weights, device)), images), None
