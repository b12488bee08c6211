"""Feature extraction as a cached stage: one Zarr store per dataset and backbone.

Layout of ``features.zarr``::

    attrs: backbone, layers [{name, channels, stride, receptive_field}], image_ids, longer_side,
           dtype, provenance {config, seed, versions}; a trained encoder's store adds
           checkpoint {path, sha256} (the content key its consumers check, pipeline_lib.features.keyed)
    images/<nnnnn>/            one group per image (attrs: image_id, original_hw, resized_hw)
        <layer name>           (C, h, w) array, one chunk per image and layer

Written to a temporary path and renamed, so an interrupted extraction leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from tqdm import tqdm

from ..atomic import atomic_path
from ..backbones import Backbone, describe_layers, to_tensor
from ..datasets import DatasetIndex, load_rgb
from ..geometry import resized_shape

log = logging.getLogger(__name__)


def resize_image(image: np.ndarray, longer_side: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H', W') float in [0, 1] with the longer side = ``longer_side``."""
    t = to_tensor(image)
    hw = resized_shape(t.shape[1], t.shape[2], longer_side)
    return F.interpolate(t[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def _group_key(i: int) -> str:
    return f"{i:05d}"


def extract_features(index: DatasetIndex, backbone: Backbone, out_path: str | Path, longer_side: int,
                     batch_size: int, device: torch.device, dtype: str = "float32",
                     provenance: dict | None = None, image_ids: Sequence[str] | None = None,
                     extra_attrs: dict | None = None) -> None:
    """Run ``backbone`` once over every image and store all its layers (atomic write).

    ``extra_attrs`` (JSON values) are added to the store's attributes, e.g. the checkpoint key."""
    ids = sorted(image_ids if image_ids is not None else index.images)
    backbone = backbone.to(device).eval()
    infos = describe_layers(backbone)
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, key in enumerate(ids):
        rec = index.images[key]
        by_shape[resized_shape(rec.height, rec.width, longer_side)].append(i)
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({
            "backbone": backbone.name, "layers": [asdict(x) for x in infos], "image_ids": ids,
            "longer_side": longer_side, "dtype": dtype, "default_layer": backbone.default_layer,
            "provenance": provenance or {}, **(extra_attrs or {}),
        })
        images = root.create_group("images")
        bar = tqdm(total=len(ids), desc=f"features {backbone.name}", unit="img")
        for shape, members in sorted(by_shape.items()):
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                batch = torch.stack([resize_image(load_rgb(index.images[ids[i]].path), longer_side) for i in chunk])
                with torch.inference_mode():
                    feats = backbone(batch.to(device))
                for b, i in enumerate(chunk):
                    rec = index.images[ids[i]]
                    g = images.create_group(_group_key(i))
                    g.attrs.update({"image_id": ids[i], "original_hw": [rec.height, rec.width],
                                    "resized_hw": list(shape)})
                    for name, f in feats.items():
                        arr = f[b].float().cpu().numpy().astype(dtype)
                        g.create_array(name, data=arr, chunks=arr.shape)
                bar.update(len(chunk))
        bar.close()


class FeatureStore:
    """Read access to a ``features.zarr`` written by :func:`extract_features`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature store not found: {self.path}; run the extract_features rule first.")
        self.root = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.root.attrs)
        self.image_ids: list[str] = list(self.attrs["image_ids"])
        self._pos = {k: i for i, k in enumerate(self.image_ids)}
        self.layers: list[dict] = list(self.attrs["layers"])
        self.layer_names = [x["name"] for x in self.layers]
        self._images: dict[str, tuple[Any, tuple[int, int], tuple[int, int]]] = {}

    def _image(self, image_id: str) -> tuple[Any, tuple[int, int], tuple[int, int]]:
        """(zarr group, resized_hw, original_hw) of an image, read once: every zarr lookup is a round
        trip through its event loop (~1 ms), and matching asks for the sizes of each pair many times
        (a layer search scores hundreds of layer sets on the same pairs)."""
        if image_id not in self._images:
            if image_id not in self._pos:
                raise KeyError(f"image '{image_id}' is not in {self.path}; re-extract features for this dataset.")
            g = self.root["images"][_group_key(self._pos[image_id])]
            attrs = dict(g.attrs)
            self._images[image_id] = (g, tuple(attrs["resized_hw"]), tuple(attrs["original_hw"]))
        return self._images[image_id]

    def _group(self, image_id: str):
        return self._image(image_id)[0]

    def resized_hw(self, image_id: str) -> tuple[int, int]:
        return self._image(image_id)[1]

    def original_hw(self, image_id: str) -> tuple[int, int]:
        return self._image(image_id)[2]

    def get(self, image_id: str, layers: Iterable[str]) -> dict[str, np.ndarray]:
        g = self._group(image_id)
        out = {}
        for name in layers:
            if name not in self.layer_names:
                raise KeyError(f"layer '{name}' not in {self.path}; available: {self.layer_names}.")
            out[name] = g[name][:].astype(np.float32)
        return out

    def resolve_layer(self, name: str) -> str:
        return self.attrs["default_layer"] if name == "auto" else name


class FeatureStores:
    """Several stores of one backbone read as one (the cross-dataset protocol: the evaluation dataset's and the
    training dataset's own caches, each shared with the single-dataset configs over the same images). Same
    read interface as :class:`FeatureStore`; each image is read from the store that holds it."""

    def __init__(self, stores: Sequence[FeatureStore]):
        if not stores:
            raise ValueError("FeatureStores needs at least one store")
        first = stores[0]
        for s in stores[1:]:
            for key in ("backbone", "layers", "longer_side", "dtype"):
                if s.attrs.get(key) != first.attrs.get(key):
                    raise ValueError(f"feature stores {first.path} and {s.path} differ in '{key}' "
                                     f"({first.attrs.get(key)!r} vs {s.attrs.get(key)!r}); re-extract one of them.")
        self.stores = list(stores)
        self.path = first.path  # named in messages; every store's path is in self.stores
        self.image_ids = [i for s in self.stores for i in s.image_ids]
        self._by_id: dict[str, FeatureStore] = {}
        for s in self.stores:
            for i in s.image_ids:
                if i in self._by_id:
                    raise ValueError(f"image '{i}' is in two feature stores, {self._by_id[i].path} and {s.path}; "
                                     f"an image may belong to one dataset only.")
                self._by_id[i] = s
        self.attrs = {**first.attrs, "image_ids": self.image_ids}
        self.layers, self.layer_names = first.layers, first.layer_names

    def _store(self, image_id: str) -> FeatureStore:
        if image_id not in self._by_id:
            raise KeyError(f"image '{image_id}' is in none of {[str(s.path) for s in self.stores]}; re-extract "
                           f"features for this dataset.")
        return self._by_id[image_id]

    def resized_hw(self, image_id: str) -> tuple[int, int]:
        return self._store(image_id).resized_hw(image_id)

    def original_hw(self, image_id: str) -> tuple[int, int]:
        return self._store(image_id).original_hw(image_id)

    def get(self, image_id: str, layers: Iterable[str]) -> dict[str, np.ndarray]:
        return self._store(image_id).get(image_id, layers)

    def resolve_layer(self, name: str) -> str:
        return self.stores[0].resolve_layer(name)


def open_stores(paths: str | Path | Sequence[str | Path]) -> FeatureStore | FeatureStores:
    """The feature store at ``paths``, or (several paths: one per dataset) the stores read as one."""
    if isinstance(paths, (str, Path)):
        return FeatureStore(paths)
    stores = [FeatureStore(p) for p in paths]
    return stores[0] if len(stores) == 1 else FeatureStores(stores)
