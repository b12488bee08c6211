"""The feature vectors of one category as rows, read a block of whole images at a time.

Algorithm 1 passes over every feature vector of a category several times per iteration (KFD
scatter, projection, nearest-centroid assignment, unary costs). Holding them all at once costs
``n_img * h * w * C`` float64 (5 GB for 1,000 images of 44 x 44 x 320), so the steps read them
through a :class:`Rows` source instead: ``blocks()`` yields consecutive row blocks, ``take(index)``
gathers chosen rows (anchors, the Ward sample). Two sources:

- :class:`ArrayRows`: an (n, p) array in memory, or any array sliced along its first axis (a
  Zarr array reads only the slice);
- :class:`ImageRows`: (n_img, h, w, C) features of a category (a NumPy array, a Zarr array, or
  any object with ``shape`` and slicing along images), ``chunk_images`` images per block, each
  block ReLU'd and L2-normalised as it is read (Gaur et al. Sec. 3, 6: :func:`prepare_features`).

Peak memory of a pass is then one block, set by ``chunk_images``, not by the number of images.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np

__all__ = ["Rows", "ArrayRows", "ImageRows", "l2_normalize", "prepare_features"]

# Features with a smaller L2 norm are left at zero by the normalisation.
_NORM_EPS = 1e-12


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, (n, C) -> (n, C) float64 (all-zero rows stay zero)."""
    X = np.array(X, dtype=np.float64)  # one copy, normalised in place
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    X /= np.maximum(norms, _NORM_EPS)
    return X


def prepare_features(X: np.ndarray, relu: bool) -> np.ndarray:
    """(n, C) -> (n, C) float64: ReLU (when ``relu``; Gaur et al. Sec. 6), then row-wise L2 norm (Sec. 3, 6).

    The ReLU comes first so that the normalised vectors are the sparse non-negative ones the paper
    embeds; a location whose every channel is <= 0 becomes the zero vector.
    """
    X = np.asarray(X)
    return l2_normalize(np.maximum(X, 0.0) if relu else X)


class Rows(Protocol):
    """n rows of dimension ``dim``, read block by block."""

    @property
    def n(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """Consecutive (row slice, (rows, dim) float64 block) pairs covering all n rows in order."""
        ...

    def take(self, index: np.ndarray) -> np.ndarray:
        """(len(index), dim) float64: the rows at sorted ``index``."""
        ...


def _sorted_index(index: np.ndarray, n: int) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    if index.size and (np.any(np.diff(index) < 0) or index[0] < 0 or index[-1] >= n):
        raise ValueError(f"index must be sorted and within 0..{n - 1}")
    return index


def _take_from_blocks(rows: Rows, index: np.ndarray) -> np.ndarray:
    """Gather sorted ``index`` by one pass over ``rows.blocks()``."""
    index = _sorted_index(index, rows.n)
    out = np.empty((index.size, rows.dim))
    for sl, block in rows.blocks():
        lo, hi = np.searchsorted(index, [sl.start, sl.stop])
        if hi > lo:
            out[lo:hi] = block[index[lo:hi] - sl.start]
    return out


class ArrayRows:
    """Rows of an (n, p) array, ``block_rows`` at a time (None: one block of all rows)."""

    def __init__(self, X: Any, block_rows: int | None = None):
        if len(X.shape) != 2:
            raise ValueError(f"rows must be a 2-D (n, p) array, got shape {tuple(X.shape)}")
        if block_rows is not None and block_rows < 1:
            raise ValueError(f"block_rows must be >= 1 or None, got {block_rows}")
        self.X = X
        self.block_rows = block_rows

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        step = self.block_rows or max(self.n, 1)
        for start in range(0, self.n, step):
            sl = slice(start, min(self.n, start + step))
            yield sl, np.asarray(self.X[sl], dtype=np.float64)

    def take(self, index: np.ndarray) -> np.ndarray:
        if isinstance(self.X, np.ndarray):
            return np.asarray(self.X[np.asarray(index, dtype=np.int64)], dtype=np.float64)
        return _take_from_blocks(self, index)


class ImageRows:
    """Every location of (n_img, h, w, C) features as a row, prepared as Algorithm 1 embeds them.

    Parameters
    ----------
    features : (n_img, h, w, C) numeric array-like (NumPy, Zarr, or an object with ``shape`` whose
        ``features[a:b]`` returns images a..b-1)
    relu : bool
        ReLU before the L2 normalisation (:func:`prepare_features`).
    chunk_images : int or None
        Images per block (None: all in one block).
    """

    def __init__(self, features: Any, relu: bool, chunk_images: int | None = None):
        shape = tuple(int(s) for s in getattr(features, "shape", ()))
        if len(shape) != 4 or min(shape) == 0:
            raise ValueError(f"features must be a non-empty (n_img, h, w, C) array, got shape {shape}")
        dtype = getattr(features, "dtype", None)
        if dtype is not None and not np.issubdtype(np.dtype(dtype), np.number):
            raise ValueError(f"features must be numeric, got {dtype}")
        if chunk_images is not None and chunk_images < 1:
            raise ValueError(f"chunk_images must be >= 1 or None, got {chunk_images}")
        self.features = features
        self.shape = shape
        self.relu = relu
        self.chunk_images = chunk_images

    @property
    def per_image(self) -> int:
        return self.shape[1] * self.shape[2]

    @property
    def n(self) -> int:
        return self.shape[0] * self.per_image

    @property
    def dim(self) -> int:
        return self.shape[3]

    def image_slices(self) -> Iterator[slice]:
        """The images of each block, in order."""
        step = self.chunk_images or self.shape[0]
        for start in range(0, self.shape[0], step):
            yield slice(start, min(self.shape[0], start + step))

    def read(self, images: slice) -> np.ndarray:
        """The raw features of ``images``, (b, h, w, C), checked finite and numeric."""
        F = np.asarray(self.features[images])
        if F.shape != (images.stop - images.start,) + self.shape[1:]:
            raise ValueError(f"features[{images.start}:{images.stop}] has shape {F.shape}, expected "
                             f"{(images.stop - images.start,) + self.shape[1:]}")
        if not np.issubdtype(F.dtype, np.number):
            raise ValueError(f"features must be numeric, got {F.dtype}")
        if not np.all(np.isfinite(F)):
            bad = images.start + int(np.flatnonzero(~np.isfinite(F).reshape(F.shape[0], -1).all(axis=1))[0])
            raise ValueError(f"features contain NaN or inf (image {bad})")
        return F

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        for images in self.image_slices():
            X = prepare_features(self.read(images).reshape(-1, self.dim), self.relu)
            yield slice(images.start * self.per_image, images.stop * self.per_image), X

    def take(self, index: np.ndarray) -> np.ndarray:
        """Reads only the blocks of images that hold some of ``index`` and prepares only the rows taken."""
        index = _sorted_index(index, self.n)
        out = np.empty((index.size, self.dim))
        for images in self.image_slices():
            first = images.start * self.per_image
            lo, hi = np.searchsorted(index, [first, images.stop * self.per_image])
            if hi > lo:
                raw = self.read(images).reshape(-1, self.dim)
                out[lo:hi] = prepare_features(raw[index[lo:hi] - first], self.relu)
        return out
