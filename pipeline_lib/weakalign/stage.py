"""Workflow stages of WeakAlign (Rocco et al. 2018): weakly supervised training on the training
split's pairs and prediction as a method of the PCK tables. Settings: config section ``weakalign``."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import torch

from ..backbones import build_backbone, resolve_device
from ..sfnet.predict import predict_pairs
from ..stages import prediction_inputs, save_trained
from ..training import resumable_settings
from .model import WeakAlign, build_weakalign
from .predict import weakalign_keypoint_fn
from .train import WeakAlignSettings, load_pair_images, settings_from_config, train_weakalign, training_pairs

log = logging.getLogger(__name__)


def settings(cfg: Mapping) -> WeakAlignSettings:
    return settings_from_config(cfg["weakalign"], seed=cfg["seed"])


def build(cfg: Mapping, backbone_name: str) -> WeakAlign:
    """The untrained model of this config (ImageNet backbone; regression heads start at the identity)."""
    torch.manual_seed(cfg["seed"])
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    return build_weakalign(settings(cfg).model, backbone)


def train(cfg: Mapping, backbone_name: str, out_weights: str | Path) -> None:
    """Train on the training split's pairs (category labels only); checkpoints beside ``out_weights``."""
    from ..stages import load_dataset

    s = settings(cfg)
    index = load_dataset(cfg)
    pairs = training_pairs(index)
    images, pair_index = load_pair_images(index, pairs, s.model.image_size)
    device = resolve_device(cfg["device"])
    model = build(cfg, backbone_name)
    log.info("WeakAlign: %d training pairs (%d images) at %d px, %d epochs", len(pairs), len(images),
             s.model.image_size, s.train.epochs)
    extra = {"weakalign": resumable_settings(cfg["weakalign"]), "backbone": backbone_name,
             "pairs": [p.pair_id for p in pairs]}
    result = train_weakalign(model, images, pair_index, s.train, Path(out_weights).parent, device, s.augment, s.loss,
                             extra_fingerprint=extra)
    save_trained(cfg, "weakalign", model, result, out_weights, device, backbone=backbone_name, n_pairs=len(pairs),
                 layer=model.layer, train=asdict(s.train))


def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json) -> None:
    """Keypoint transfer by the estimated affine + TPS transforms on the evaluation pairs."""
    from ..stages import finish_predictions

    s = settings(cfg)
    index, pairs, device, model = prediction_inputs(cfg, build(cfg, backbone_name), weights)
    preds, ms = predict_pairs(weakalign_keypoint_fn(model, s.transfer), index, pairs, desc="weakalign")
    finish_predictions(cfg, "weakalign", preds, ms, out_csv, meta_json, device=str(device),
                       image_size=s.model.image_size, layer=model.layer, transfer=s.transfer)
