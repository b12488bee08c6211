"""Workflow stages of SFNet (Lee et al. 2019): training on the training split's images and
prediction as a method of the PCK tables. Settings come from the config section ``sfnet``."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import torch

from ..backbones import build_backbone, resolve_device
from ..datasets import ImageRecord, training_pairs
from ..pair_prediction import ImageKeypointFn, KeypointFn, on_images, predict_pairs
from ..protocols import learned_from
from ..settings import reads
from ..stage_io import finish_predictions, load_dataset, prediction_inputs, save_trained
from ..training import load_trained, resumable_settings, save_weights
from .model import SFNet, build_sfnet
from .predict import sfnet_keypoint_fn
from .train import SFNetSettings, load_images, pair_index, settings_from_config, train_sfnet, training_image_ids

log = logging.getLogger(__name__)


def settings(cfg: Mapping) -> SFNetSettings:
    return settings_from_config(cfg["sfnet"], seed=cfg["seed"])


def build(cfg: Mapping, backbone_name: str) -> SFNet:
    """The untrained model of this config (ImageNet backbone, seeded adaptation layers)."""
    torch.manual_seed(cfg["seed"])
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    return build_sfnet(settings(cfg).model, backbone)


@reads("seed", "weights", "sfnet", "dataset")
def train(cfg: Mapping, backbone_name: str, out_weights: str | Path, out_init: str | Path | None = None) -> None:
    """Train on synthetic warps of the training split's images; checkpoints beside ``out_weights``;
    ``out_init``: the untrained model's weights (the ``sfnet@init`` row)."""
    s = settings(cfg)
    index = load_dataset(cfg)
    ids = training_image_ids(index)
    pairs = training_pairs(index, method="SFNet") if s.synthetic_fraction < 1 else []
    images, masks = load_images(index, ids, s.model.image_size, s.mask_source)
    device = resolve_device(cfg["device"])
    model = build(cfg, backbone_name)
    if out_init is not None:
        save_weights(model, out_init, {"method": "sfnet", "sfnet": dict(cfg["sfnet"]), "backbone": backbone_name,
                                       "initial": True})
    log.info("SFNet: %d training images (%d real pairs, synthetic share %.2f) at %d px, %d epochs", len(ids),
             len(pairs), s.synthetic_fraction, s.model.image_size, s.train.epochs)
    extra = {"sfnet": resumable_settings(cfg["sfnet"]), "backbone": backbone_name, "images": ids}
    result = train_sfnet(model, images, masks, s.train, Path(out_weights).parent, device, s.synthetic, s.loss,
                         extra_fingerprint=extra, pairs=pair_index(ids, pairs), synthetic_fraction=s.synthetic_fraction)
    save_trained(cfg, "sfnet", model, result, out_weights, device, learned_from(pairs=pairs, images=ids),
                 backbone=backbone_name,
                 n_images=len(ids),
                 layers=list(model.layers), train=asdict(s.train))


@reads("seed", "weights", "sfnet", "evaluation", "dataset")
def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json, method: str = "sfnet") -> None:
    """Keypoint transfer through the dense flow on the evaluation pairs (``method``: the name written,
    e.g. ``sfnet@init`` for the initial weights)."""
    index, pairs, device, model = prediction_inputs(cfg, build(cfg, backbone_name), weights)
    preds, ms = predict_pairs(on_images(image_keypoint_fn(cfg, model), index.images), pairs, desc=method)
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device),
                       image_size=settings(cfg).model.image_size, layers=list(model.layers))


def image_keypoint_fn(cfg: Mapping, model: SFNet) -> ImageKeypointFn:
    """Keypoints of one image pair through a loaded model's dense flow (``predict``, and ``match`` on any two images)."""
    return sfnet_keypoint_fn(model, settings(cfg).model.image_size)


def match_predictor(cfg: Mapping, backbone_name: str, weights: str | Path, device,
                    images: Mapping[str, ImageRecord]) -> tuple[KeypointFn, None]:
    """The keypoint function of the model in ``weights`` on any ``images`` (``match``, the report's warp pictures)."""
    return on_images(image_keypoint_fn(cfg, load_trained(build(cfg, backbone_name), weights, device)), images), None
