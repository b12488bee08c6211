"""Algorithm 1 reading a category's features a block of images at a time (pipeline_lib.manifold.rows)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from pipeline_lib.manifold.algorithm1 import ManifoldConfig, fraction_changed, run_manifold
from pipeline_lib.manifold.clustering import scalable_ward
from pipeline_lib.manifold.kfd import KernelFisherDiscriminant
from pipeline_lib.manifold.rows import ArrayRows, ImageRows, prepare_features

from tests.unit.test_manifold_algorithm1 import SYNTH_CONFIG, make_category


class CountingFeatures:
    """(n_img, h, w, C) features that record which images each read asked for."""

    def __init__(self, feats: np.ndarray):
        self.feats, self.shape, self.dtype, self.reads = feats, feats.shape, feats.dtype, []

    def __getitem__(self, images: slice) -> np.ndarray:
        self.reads.append((images.start, images.stop))
        return self.feats[images]


def test_image_rows_are_the_prepared_features_in_order_whatever_the_block():
    feats, _, _ = make_category(n_img=7, h=5, w=4, C=6, seed=1)
    whole = prepare_features(feats.reshape(-1, 6), relu=True)
    for chunk in (None, 1, 3, 7, 50):
        rows = ImageRows(feats, relu=True, chunk_images=chunk)
        got = np.concatenate([b for _, b in rows.blocks()])
        np.testing.assert_array_equal(got, whole)
        assert [sl.start for sl, _ in rows.blocks()] == [i * 20 for i in range(0, 7, chunk or 7)]
        idx = np.array([0, 19, 20, 77, 139])
        np.testing.assert_array_equal(rows.take(idx), whole[idx])
    with pytest.raises(ValueError, match="sorted"):
        ImageRows(feats, relu=True, chunk_images=2).take(np.array([5, 3]))


def test_image_rows_read_one_block_of_images_at_a_time():
    feats, _, _ = make_category(n_img=10, h=4, w=4, C=5, seed=2)
    src = CountingFeatures(feats)
    list(ImageRows(src, relu=True, chunk_images=4).blocks())
    assert src.reads == [(0, 4), (4, 8), (8, 10)]


def test_scalable_ward_and_kfd_on_blocks_match_the_whole_array():
    feats, _, _ = make_category(n_img=12, h=10, w=10, C=8, n_parts=3, seed=3)
    X = prepare_features(feats.reshape(-1, 8), relu=True)
    rows = ImageRows(feats, relu=True, chunk_images=5)
    # Ward sample + nearest centroid: the same labels (per-row arithmetic does not depend on the block)
    whole = scalable_ward(X, 4, max_hac_samples=300, random_state=0)
    np.testing.assert_array_equal(scalable_ward(rows, 4, max_hac_samples=300, random_state=0), whole)
    # Nystroem KFD: scatter summed block by block = the same model up to rounding
    kw = dict(n_components=3, n_anchors=200, solver="nystroem", random_state=0, gamma=1.0, reg=1.0)
    a = KernelFisherDiscriminant(**kw).fit(X, whole)
    b = KernelFisherDiscriminant(**kw).fit_rows(rows, whole)
    np.testing.assert_array_equal(a.anchor_indices_, b.anchor_indices_)
    np.testing.assert_allclose(b.transform(X), a.transform(X), rtol=1e-8, atol=1e-8)
    # exact solver on a source (n <= anchors): all rows taken at once
    small = ImageRows(feats[:2], relu=True, chunk_images=1)
    c = KernelFisherDiscriminant(n_components=2, solver="exact", gamma=1.0).fit_rows(small, whole[:200] % 3)
    d = KernelFisherDiscriminant(n_components=2, solver="exact", gamma=1.0).fit(X[:200], whole[:200] % 3)
    np.testing.assert_allclose(c.transform(X[:200]), d.transform(X[:200]), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="y must have shape"):
        KernelFisherDiscriminant(n_components=2).fit_rows(small, whole)


def test_array_rows_read_a_zarr_array_block_by_block(tmp_path):
    X = np.random.default_rng(0).normal(size=(50, 3))
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(7, 3), dtype="f8")
    z[:] = X
    rows = ArrayRows(z, block_rows=16)
    assert [sl.stop - sl.start for sl, _ in rows.blocks()] == [16, 16, 16, 2]
    np.testing.assert_array_equal(rows.take(np.array([1, 17, 49])), X[[1, 17, 49]])


def test_a_100_image_run_labels_the_same_with_and_without_blocks():
    """Issue 21's criterion: same seed, chunked vs all at once, >= 99.9 % of the cells labelled alike
    (Nystroem KFD and the Ward sample both active: 14,400 vectors > n_anchors and > max_hac_samples)."""
    feats, _, _ = make_category(n_img=100, h=12, w=12, C=16, n_parts=3, seed=4)
    cfg = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 4}, n_anchors=300, max_hac_samples=2000,
                         isolate_graphcut=False, chunk_images=None)
    whole = run_manifold(feats, cfg)
    blocks = run_manifold(feats, dataclasses.replace(cfg, chunk_images=7))
    assert whole.kfd.solver_ == "nystroem" and whole.n_iter == blocks.n_iter
    for a, b in zip(whole.label_maps, blocks.label_maps):
        assert 1.0 - fraction_changed(a, b) >= 0.999
    np.testing.assert_allclose(blocks.embed(feats[:3]), whole.embed(feats[:3]), rtol=1e-6, atol=1e-6)


def test_run_manifold_reads_features_only_in_blocks():
    feats, _, _ = make_category(n_img=9, h=8, w=8, C=6, seed=5)
    src = CountingFeatures(feats)
    cfg = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 2}, isolate_graphcut=False, chunk_images=4)
    res = run_manifold(src, cfg)
    assert set(src.reads) == {(0, 4), (4, 8), (8, 9)}
    np.testing.assert_array_equal(res.label_maps, run_manifold(feats, cfg).label_maps)


def test_chunk_images_is_validated():
    with pytest.raises(ValueError, match="chunk_images"):
        ManifoldConfig(chunk_images=0)
    assert ManifoldConfig(chunk_images=None).chunk_images is None
