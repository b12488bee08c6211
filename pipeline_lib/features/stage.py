"""Workflow stages of feature extraction: a backbone's features of every image, or a trained encoder's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from ..backbones import (Backbone, build_backbone, build_from_checkpoint, checkpoint_key, config_weights,
                         resolve_device)
from ..datasets import DatasetIndex
from ..provenance import provenance
from ..settings import Settings, reads
from ..stage_io import load_images
from .store import extract_features

log = logging.getLogger(__name__)


# No seed: every weight comes from ImageNet or the checkpoint and extraction draws nothing at random, so the
# features do not depend on `seed` (and a new seed reruns no extraction).
def _extract(cfg: Mapping, backbone: Backbone, out_path: str | Path, extra_attrs: Mapping | None = None,
             index: DatasetIndex | None = None) -> None:
    s = Settings(cfg)
    extract_features(index if index is not None else load_images(cfg), backbone, out_path, s.image.longer_side,
                     s.features.batch_size,
                     resolve_device(s.device), s.features.dtype,
                     provenance=json.loads(json.dumps(provenance(cfg, seed=None), default=str)),
                     extra_attrs=extra_attrs)


@reads("image", "features", "weights", "dataset")
def extract(cfg: Mapping, backbone_name: str, out_path: str | Path, index: DatasetIndex | None = None,
            section: str = "dataset") -> None:
    """Every image's features from the named backbone (its weights file from ``weights`` where it needs one), of
    the dataset of config ``section`` (``dataset``, or ``train_dataset``: each dataset has its own cache) or of
    the images of ``index`` (``match``: two images of the user's)."""
    _extract(cfg, build_backbone(backbone_name, weights_path=config_weights(Settings(cfg).weights, backbone_name)), out_path,
             index=index if index is not None else load_images(cfg, section))


@reads("image", "features", "dataset")
def extract_encoder(cfg: Mapping, checkpoint: str | Path, out_path: str | Path, index: DatasetIndex | None = None) -> str:
    """Features of every image (of the dataset or of ``index``) from a Siamese checkpoint's encoder (the full
    chain), like any backbone; the store is keyed by the checkpoint's sha256 (:mod:`.keyed`). Returns the key."""
    key = checkpoint_key(checkpoint)
    _extract(cfg, build_from_checkpoint(checkpoint), out_path,
             extra_attrs={"checkpoint": {"path": str(checkpoint), "sha256": key}}, index=index)
    log.info("encoder features of %s (key %s) -> %s", checkpoint, key, out_path)
    return key
