"""Feature stores keyed by the checkpoint they were extracted with (the full chain's trained encoder).

A trained encoder's store records ``checkpoint: {path, sha256}``; every consumer opens it with
:func:`open_encoder_store`, which refuses a store whose key is not the sha256 of the checkpoint it was
given, so a retrained encoder never meets stale features.
"""

from __future__ import annotations

from pathlib import Path

from ..backbones import checkpoint_key
from .store import FeatureStore, FeatureStores, open_stores


class StaleFeaturesError(ValueError):
    """A feature store does not come from the checkpoint it is used with."""


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


def open_features(features, checkpoint: str | Path | None = None) -> tuple[FeatureStore | FeatureStores, dict]:
    """A feature store (or several read as one: :func:`open_stores`) and the facts to record with what is made
    from it; with ``checkpoint`` the store must have been extracted from it (else StaleFeaturesError)."""
    if checkpoint is None:
        return open_stores(features), {}
    store = open_encoder_store(features, checkpoint)
    return store, {"checkpoint": str(checkpoint), "checkpoint_sha256": store_key(store)}
