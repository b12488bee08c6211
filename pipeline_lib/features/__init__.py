"""Backbone features as a cached stage: the Zarr store (:mod:`.store`), stores keyed by a trained
encoder's checkpoint (:mod:`.keyed`) and the extraction stage (:mod:`.stage`)."""

from .keyed import StaleFeaturesError, open_encoder_store, open_features, require_key, store_key
from .store import FeatureStore, FeatureStores, extract_features, open_stores, resize_image

__all__ = ["FeatureStore", "FeatureStores", "open_stores", "extract_features", "resize_image", "StaleFeaturesError", "open_encoder_store",
           "open_features", "require_key", "store_key"]
