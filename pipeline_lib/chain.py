"""The full chain's glue: the Siamese-trained encoder's feature store, keyed by its checkpoint's content.

The store written by :func:`extract_encoder_features` records ``checkpoint: {path, sha256}``;
every consumer opens it with :func:`open_encoder_store`, which refuses a store whose key is not
the sha256 of the checkpoint it was given (a retrained encoder never meets stale features).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .backbones import build_from_checkpoint, checkpoint_key, resolve_device
from .features import FeatureStore, extract_features
from .provenance import provenance
from .stage_io import load_dataset

CHAIN_METHOD = "gaur_hpf"  # RHM on beam-searched hyperpixels of the Siamese-trained encoder


class StaleFeaturesError(ValueError):
    """A feature store does not come from the checkpoint it is used with."""


def extract_encoder_features(cfg: Mapping, checkpoint: str | Path, out_path: str | Path) -> str:
    """Features of every image from the checkpoint's encoder, like any backbone; returns the key."""
    import torch

    key = checkpoint_key(checkpoint)
    encoder = build_from_checkpoint(checkpoint)
    torch.manual_seed(cfg["seed"])
    extract_features(load_dataset(cfg), encoder, out_path, cfg["image"]["longer_side"],
                     cfg["features"]["batch_size"], resolve_device(cfg["device"]), cfg["features"]["dtype"],
                     provenance=json.loads(json.dumps(provenance(cfg, cfg["seed"]), default=str)),
                     extra_attrs={"checkpoint": {"path": str(checkpoint), "sha256": key}})
    return key


def store_key(store: FeatureStore) -> str | None:
    """The checkpoint key a store was extracted with (None for an ImageNet backbone's store)."""
    return (store.attrs.get("checkpoint") or {}).get("sha256")


def require_key(found: str | None, checkpoint: str | Path, what: str | Path) -> str:
    """Raise StaleFeaturesError unless ``found`` is the key of ``checkpoint``; returns the key."""
    key = checkpoint_key(checkpoint)
    if found != key:
        raise StaleFeaturesError(
            f"{what} was made from checkpoint key {found!r}, but {checkpoint} has key {key!r} (retrained?); "
            f"delete it or rerun the chain (snakemake reruns extract_siamese_features on a new model.pt).")
    return key


def open_encoder_store(features: str | Path, checkpoint: str | Path) -> FeatureStore:
    """Open the encoder's feature store after checking it was extracted from ``checkpoint``."""
    store = FeatureStore(features)
    require_key(store_key(store), checkpoint, features)
    return store
