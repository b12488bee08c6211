"""Workflow stages of FCSS (Kim et al. 2017): weakly supervised training on the training split's pairs
and prediction as a method of the PCK tables. Settings come from the config section ``fcss``."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..backbones import build_backbone, resolve_device
from ..config import ConfigError, section
from ..datasets import ImageRecord
from ..pair_prediction import predict_pairs
from ..protocols import learned_from
from ..settings import Settings, reads
from ..stage_io import finish_predictions, load_dataset, prediction_inputs, save_trained
from ..training import TrainConfig, load_trained, resumable_settings, save_weights
from .model import FCSS, FCSSConfig, build_fcss
from .predict import DescriptorFrame
from .train import FCSSTrainConfig, build_training_pairs, train_fcss, with_shift_lr

log = logging.getLogger(__name__)
TRAIN_KEYS = ("epochs", "lr", "batch_size", "weight_decay")  # TrainConfig keys of the section
PREDICT_KEYS = ("longer_side", "matcher")  # keys that only prediction reads
TRAIN_SPLIT = "train"  # the stage trains on training pairs only, never on validation or test images
# Our choice (Kim et al. give no rates; their release trains the shifts at 0.1 x the base rate of SGD).
# Adam moves every parameter by about its learning rate per step whatever the gradient's scale, and
# the shifts live in cells (initial std 5-9 cells) while the backbone weights are ~1e-2: at one base
# rate of 1e-4 the shifts move ~1e-4 cells per step, i.e. not at all (the 0.0403 -> 0.0400).
# 0.05 cells per step lets a shift cross a cell in ~20 steps.
SHIFT_LR = 0.05


@dataclass(frozen=True)
class FCSSSettings:
    """Everything one config section ``fcss`` sets (see :func:`settings_from_config`)."""

    model: FCSSConfig
    supervision: FCSSTrainConfig
    train: TrainConfig
    longer_side: int  # prediction resolution (px), 0 = the config's image.longer_side
    shift_lr: float | None = SHIFT_LR  # learning rate of the sampling shifts (None = the base lr)
    matcher: str = "nn"  # keypoint transfer at prediction: nn | rhm (predict.py)


def settings_from_config(fcss: Mapping[str, Any], seed: int = 0) -> FCSSSettings:
    """Split the section into its dataclasses: model keys, the :class:`TrainConfig` keys, the prediction keys
    (``longer_side``, ``matcher``), ``shift_lr`` and the nested ``train`` mapping (:class:`FCSSTrainConfig`,
    whose split is always the train split).
    Unknown keys are an error; ``seed`` seeds both the initial sampling patterns and the loop."""
    model_keys = set(FCSSConfig.__dataclass_fields__) - {"seed"}
    flat = {k: v for k, v in fcss.items() if k not in ("train", "shift_lr") + PREDICT_KEYS}
    unknown = set(flat) - model_keys - set(TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) fcss.{sorted(unknown)}; allowed: {sorted(model_keys | set(TRAIN_KEYS))} "
                          f"+ {', '.join(PREDICT_KEYS)}, shift_lr, train")
    supervision = dict(fcss.get("train", {}))
    if "split" in supervision:
        raise ConfigError("fcss.train.split cannot be set: FCSS trains on the train split only")
    model = section(FCSSConfig, {**{k: v for k, v in flat.items() if k in model_keys}, "seed": seed})
    train = section(TrainConfig, {**{k: v for k, v in flat.items() if k in TRAIN_KEYS}, "seed": seed})
    return FCSSSettings(model, section(FCSSTrainConfig, {**supervision, "split": TRAIN_SPLIT}), train,
                        int(fcss.get("longer_side", 0)), fcss.get("shift_lr", SHIFT_LR), str(fcss.get("matcher", "nn")))


def settings(cfg: Mapping) -> FCSSSettings:
    return settings_from_config(cfg["fcss"], seed=cfg["seed"])


def predict_longer_side(cfg: Mapping) -> int:
    """Prediction resolution: ``fcss.longer_side``, or the config's ``image.longer_side`` when 0."""
    return settings(cfg).longer_side or int(cfg["image"]["longer_side"])


def build(cfg: Mapping, backbone_name: str) -> FCSS:
    """The untrained model of this config (ImageNet backbone, seeded sampling patterns)."""
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    return build_fcss(settings(cfg).model, backbone)


@reads("seed", "weights", "fcss", "dataset")
def train(cfg: Mapping, backbone_name: str, out_weights: str | Path, out_init: str | Path | None = None) -> None:
    """Train on the training split's pairs and their object regions; checkpoints beside ``out_weights``;
    ``out_init``: the untrained model's weights (the ``fcss@init`` row). The sampling shifts train at
    ``fcss.shift_lr`` (``TrainConfig.lr_groups``), the rest at ``fcss.lr``."""
    s = settings(cfg)
    index = load_dataset(cfg)
    pairs = build_training_pairs(index, s.supervision)
    device = resolve_device(cfg["device"])
    model = build(cfg, backbone_name)
    if out_init is not None:
        save_weights(model, out_init, {"method": "fcss", "fcss": dict(cfg["fcss"]), "backbone": backbone_name,
                                       "initial": True, "layers": list(model.layers)})
    train_cfg = with_shift_lr(s.train, model, s.shift_lr)
    log.info("FCSS: %d training pairs at %d px, %d epochs, layers %s, lr %g (shifts %s)", len(pairs),
             s.supervision.longer_side, s.train.epochs, list(model.layers), s.train.lr, s.shift_lr)
    extra = {"fcss": resumable_settings(cfg["fcss"]), "pairs": [p.pair_id for p in pairs]}
    result = train_fcss(model, pairs, train_cfg, s.supervision, Path(out_weights).parent, device,
                        extra_fingerprint=extra)
    used = {tp.pair_id for tp in pairs}
    save_trained(cfg, "fcss", model, result, out_weights, device,
                 learned_from([p for p in index.pairs if p.pair_id in used]), backbone=backbone_name, n_pairs=len(pairs),
                 layers=list(model.layers), train=asdict(train_cfg))


@reads("seed", "weights", "fcss", "evaluation", "image", "transfer", "dataset")
def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json, method: str = "fcss") -> None:
    """Keypoint transfer on FCSS descriptors of the evaluation pairs by ``fcss.matcher`` (``method``: the
    name written, e.g. ``fcss@init`` for the initial weights); the target cell or sub-cell as ``transfer`` says,
    as for the training-free matchers."""
    index, pairs, device, model = prediction_inputs(cfg, build(cfg, backbone_name), weights)
    frame = descriptor_frame(cfg, model, index.images)
    preds, ms = predict_pairs(frame, pairs, frame, desc=method)
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device), longer_side=frame.longer_side,
                       layers=list(model.layers), target=Settings(cfg).transfer.target, matcher=frame.matcher)


def descriptor_frame(cfg: Mapping, model: FCSS, images: Mapping[str, ImageRecord]) -> DescriptorFrame:
    """The keypoint function and frame of a prediction with ``model``: resolution, matcher and target as the
    config says."""
    return DescriptorFrame(model, images, predict_longer_side(cfg), Settings(cfg).transfer.subcell(),
                           settings(cfg).matcher)


def match_predictor(cfg: Mapping, backbone_name: str, weights: str | Path, device,
                    images: Mapping[str, ImageRecord]) -> tuple[DescriptorFrame, DescriptorFrame]:
    """Transfer on the descriptors of the model in ``weights`` for any ``images`` (``match``), by the configured
    matcher: the keypoint function and its frame (keypoints at the prediction resolution)."""
    frame = descriptor_frame(cfg, load_trained(build(cfg, backbone_name), weights, device), images)
    return frame, frame
