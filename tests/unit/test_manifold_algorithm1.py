"""Algorithm 1 (run_manifold), its config, the SOP models and the agreement measure."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from scipy.stats import multivariate_normal, special_ortho_group
from sklearn.metrics import adjusted_rand_score

from pipeline_lib.manifold.clustering import scalable_ward
from pipeline_lib.manifold.algorithm1 import (
    ManifoldConfig,
    fraction_changed,
    l2_normalize,
    prepare_features,
    run_manifold,
)
from pipeline_lib.manifold.measures import keypoint_label_agreement
from pipeline_lib.manifold.sop_model import (
    fit_sop_models,
    model_change,
    rotate_sop_models,
    unary_costs,
)


def make_category(n_img=6, h=12, w=12, C=16, n_parts=3, noise=0.6, seed=0):
    """Synthetic category: 3 vertical "parts" (bands whose borders move by +-1 cell per image),
    each with its own non-negative prototype feature, plus Gaussian noise, then ReLU.

    Returns features (n_img, h, w, C), part maps (n_img, h, w) and keypoint cells
    (n_img, 3 * n_parts, 2): rows 2, 6, 9 at the centre column of every part.
    """
    rng = np.random.default_rng(seed)
    protos = np.abs(rng.normal(0.0, 1.0, (n_parts, C)))
    feats = np.empty((n_img, h, w, C))
    parts = np.empty((n_img, h, w), dtype=int)
    kps = []
    for i in range(n_img):
        borders = np.linspace(0, w, n_parts + 1).round().astype(int)
        borders[1:-1] += rng.integers(-1, 2, n_parts - 1)
        parts[i] = np.searchsorted(borders[1:-1], np.arange(w), side="right")[None, :]
        feats[i] = protos[parts[i]] + noise * rng.normal(size=(h, w, C))
        kps.append([(r, (borders[p] + borders[p + 1]) // 2) for p in range(n_parts) for r in (2, 6, 9)])
    return np.maximum(feats, 0.0), parts, np.array(kps)


SYNTH_CONFIG = dict(n_clusters=3, pairwise_weight=4.0, sigma=1.0, max_iter=10, kfd_reg=1.0)  # reg: see test_manifold_demo


# ----------------------------------------------------------------------------- config
def test_config_defaults_follow_the_paper():
    cfg = ManifoldConfig()
    # Gaur et al. Sec. 3: d = 32 discriminants, which needs k >= d + 1 = 33 clusters; ReLU (Sec. 6); poly kernel
    assert cfg.discriminants == 32 and cfg.n_clusters == 33 and cfg.relu and cfg.kernel == "poly"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_clusters = 3  # type: ignore[misc]


def test_discriminants_default_to_k_minus_1_and_more_than_that_is_an_error():
    assert ManifoldConfig(n_clusters=15).discriminants == 14
    assert ManifoldConfig(n_clusters=15, n_components=5).discriminants == 5
    assert ManifoldConfig(n_clusters=33, n_components=32).discriminants == 32
    # the paper's literal pair (k = 15, d = 32) is impossible: the error names both values and the fix
    with pytest.raises(ValueError, match=r"n_components=32 exceeds n_clusters - 1 = 14.*n_clusters >= 33"):
        ManifoldConfig(n_clusters=15, n_components=32)
    with pytest.raises(ValueError, match="n_components=15 exceeds"):
        ManifoldConfig.from_mapping({"n_clusters": 15, "n_components": 15})


def test_relu_zeroes_negative_features_before_normalisation():
    X = np.array([[3.0, -4.0, 4.0], [-1.0, -2.0, -3.0], [-3.0, 4.0, 0.0]])
    # ReLU first: [3, 0, 4] -> [.6, 0, .8]; all-negative -> zero vector; [0, 4, 0] -> [0, 1, 0]
    np.testing.assert_allclose(prepare_features(X, relu=True), [[0.6, 0.0, 0.8], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # without it: plain L2 normalisation, negatives kept (normalising first would give [3, -4, 4] / sqrt(41))
    np.testing.assert_allclose(prepare_features(X, relu=False)[0], X[0] / np.sqrt(41.0))
    assert np.any(prepare_features(X, relu=False) < 0)


def test_run_manifold_and_embed_apply_the_relu():
    feats, _, _ = make_category(n_img=2, seed=4)
    # the same features with extra channels that are negative everywhere: with ReLU they vanish
    padded = np.concatenate([feats, -np.abs(feats[..., :4]) - 1.0], axis=-1)
    cfg = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 2}, isolate_graphcut=False)
    a = run_manifold(np.concatenate([feats, np.zeros_like(feats[..., :4])], axis=-1), cfg)
    b = run_manifold(padded, cfg)
    np.testing.assert_array_equal(a.label_maps, b.label_maps)
    np.testing.assert_allclose(a.embed(np.concatenate([feats, np.zeros_like(feats[..., :4])], axis=-1)), b.embed(padded))
    off = run_manifold(padded, dataclasses.replace(cfg, relu=False))
    assert not np.array_equal(off.embed(padded), b.embed(padded))


def test_config_from_mapping_rejects_unknown_keys():
    assert ManifoldConfig.from_mapping({"n_clusters": 4, "sigma": 2.0}).sigma == 2.0
    with pytest.raises(ValueError, match="unknown key"):
        ManifoldConfig.from_mapping({"n_cluster": 4})


@pytest.mark.parametrize(
    "bad",
    [
        {"n_clusters": 1},
        {"n_clusters": True},
        {"n_components": 0},
        {"n_clusters": 15, "n_components": 32},
        {"relu": 1},
        {"kernel": "rbf"},
        {"kfd_solver": "svd"},
        {"sigma": 0.0},
        {"cov_reg": 0.0},
        {"pairwise_weight": -1.0},
        {"max_iter": 0},
        {"tol": float("nan")},
        {"label_tol": -0.1},
        {"max_hac_samples": 10},  # < n_clusters = 15
        {"isolate_graphcut": 1},
    ],
)
def test_config_range_checks(bad):
    with pytest.raises(ValueError):
        ManifoldConfig(**bad)


# ----------------------------------------------------------------------------- SOP models
def _gaussian_clusters(seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(m, s, (n, 2)) for m, s, n in [(0.0, 1.0, 60), (5.0, 0.5, 30), (-5.0, 2.0, 10)]])
    y = np.repeat([0, 1, 2], [60, 30, 10])
    return X, y


def test_sop_models_and_unary_match_bayes_rule():
    X, y = _gaussian_clusters()
    models = fit_sop_models(X, y, 3, cov_reg=1e-3)
    np.testing.assert_allclose(models.priors, [0.6, 0.3, 0.1])
    np.testing.assert_allclose(models.means[1], X[y == 1].mean(0))
    np.testing.assert_allclose(models.covariances[2], np.cov(X[y == 2].T, bias=True) + 1e-3 * np.eye(2))
    U = unary_costs(X, models)
    joint = np.stack(
        [multivariate_normal(models.means[c], models.covariances[c]).pdf(X) * models.priors[c] for c in range(3)], 1
    )
    np.testing.assert_allclose(U, -np.log(joint / joint.sum(1, keepdims=True)), atol=1e-8)
    np.testing.assert_allclose(np.exp(-U).sum(1), 1.0)


def test_unary_is_finite_far_from_every_cluster():
    X, y = _gaussian_clusters()
    models = fit_sop_models(X, y, 3, cov_reg=1e-3)
    U = unary_costs(np.array([[1e4, -1e4], [0.0, 1e6]]), models)
    assert np.all(np.isfinite(U)) and np.all(U >= 0)
    assert np.allclose(U.min(axis=1), 0.0)


def test_model_change_is_zero_under_relabelling_and_rotation():
    X, y = _gaussian_clusters()
    models = fit_sop_models(X, y, 3, cov_reg=1e-3)
    assert model_change(models, models) == 0.0
    permuted = fit_sop_models(X, (y + 1) % 3, 3, cov_reg=1e-3)
    assert model_change(models, permuted) == pytest.approx(0.0, abs=1e-12)
    R = special_ortho_group.rvs(2, random_state=0)
    rotated = fit_sop_models(X @ R, y, 3, cov_reg=1e-3)
    assert model_change(models, rotate_sop_models(rotated, R.T)) == pytest.approx(0.0, abs=1e-9)
    moved = fit_sop_models(X + np.where(y[:, None] == 0, 1.0, 0.0), y, 3, cov_reg=1e-3)
    assert model_change(models, moved) > 0.1
    assert model_change(models, fit_sop_models(np.c_[X, X], y, 3, cov_reg=1e-3)) == np.inf


def test_sop_rejects_empty_cluster():
    X, y = _gaussian_clusters()
    with pytest.raises(ValueError, match="no members"):
        fit_sop_models(X, y, 4, cov_reg=1e-3)


# ----------------------------------------------------------------------------- helpers
def test_keypoint_label_agreement_known_answer():
    maps = np.zeros((3, 2, 2), dtype=int)
    maps[0] = [[0, 1], [2, 3]]
    maps[1] = [[0, 1], [1, 3]]
    maps[2] = [[5, 1], [2, 3]]
    cells = np.array([[[0, 0], [0, 1], [1, 0]]] * 3)  # kp0 at (0,0), kp1 at (0,1), kp2 at (1,0)
    valid = np.array([[True, True, True], [True, True, True], [True, False, True]])
    # kp0: labels 0,0,5 -> 1 of 3 pairs agree; kp1: 1,1 (image 2 invalid) -> 1 of 1;
    # kp2: 2,1,2 -> 1 of 3.  Total 3 / 7.
    assert keypoint_label_agreement(maps, cells, valid) == pytest.approx(3 / 7)
    assert np.isnan(keypoint_label_agreement(maps, cells, np.zeros((3, 3), dtype=bool)))
    with pytest.raises(ValueError, match="inside"):
        keypoint_label_agreement(maps, cells + 5, valid)


def test_fraction_changed_ignores_label_ids():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert fraction_changed(a, (a + 1) % 3) == 0.0
    assert fraction_changed(a, np.array([2, 2, 0, 0, 1, 0])) == pytest.approx(1 / 6)


def test_l2_normalize_keeps_zero_rows():
    Z = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(Z, [[0.6, 0.8], [0.0, 0.0]])


# ----------------------------------------------------------------------------- Algorithm 1
@pytest.mark.parametrize("seed", [0, 1])
def test_run_manifold_converges_and_improves_part_consistency(seed, caplog):
    feats, parts, kps = make_category(noise=0.6, seed=seed)
    valid = np.ones(kps.shape[:2], dtype=bool)
    calls = []
    cfg = ManifoldConfig(**SYNTH_CONFIG, isolate_graphcut=(seed == 0))
    with caplog.at_level(logging.WARNING, logger="pipeline_lib.manifold.algorithm1"):
        res = run_manifold(feats, cfg, progress=calls.append)
    assert not any("lowered" in r.getMessage() for r in caplog.records)  # d = k - 1 = 2 from the start
    n_rec = res.n_iter + 1
    assert res.converged and res.n_iter < cfg.max_iter
    assert res.label_maps.shape == (n_rec, 6, 12, 12) and res.label_maps.dtype == np.int16
    assert res.energies.shape == res.fraction_changed.shape == res.model_change.shape == (n_rec,)
    assert res.image_energies.shape == (n_rec, 6)
    assert np.isnan(res.energies[0]) and np.all(np.isfinite(res.energies[1:]))
    np.testing.assert_allclose(res.energies[1:], res.image_energies[1:].sum(1))
    assert list(res.n_components) == [0] + [2] * res.n_iter
    assert len(calls) == res.n_iter and calls[-1]["converged"]
    # iteration 0 is HAC of the ReLU'd, L2-normalised raw features (non-negative already: ReLU is a no-op)
    X = l2_normalize(feats.reshape(-1, feats.shape[-1]))
    np.testing.assert_array_equal(res.label_maps[0].ravel(), scalable_ward(X, 3, random_state=cfg.seed))
    # the refinement makes the same part get the same label more consistently
    agree0 = keypoint_label_agreement(res.label_maps[0], kps, valid)
    agree_final = keypoint_label_agreement(res.labels, kps, valid)
    assert agree_final >= agree0 and agree_final > 0.95
    assert adjusted_rand_score(parts.ravel(), res.labels.ravel()) >= adjusted_rand_score(
        parts.ravel(), res.label_maps[0].ravel()
    )
    # the final KFD embeds new features of the same width
    emb = res.embed(feats[:2])
    assert emb.shape == (2, 12, 12, 2)
    np.testing.assert_allclose(emb.reshape(-1, 2), res.kfd.transform(X[: 2 * 144]))
    assert res.sop_models.means.shape == (3, 2)


def test_run_manifold_is_deterministic():
    feats, _, _ = make_category(n_img=3, noise=0.8, seed=2)
    cfg = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 3}, isolate_graphcut=False)
    a, b = run_manifold(feats, cfg), run_manifold(feats, cfg)
    np.testing.assert_array_equal(a.label_maps, b.label_maps)
    np.testing.assert_array_equal(a.energies, b.energies)


def test_label_tolerance_stops_the_loop_once_few_labels_move():
    feats, _, _ = make_category(n_img=3, noise=0.8, seed=2)
    strict = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 4, "tol": 0.0, "label_tol": 0.0}, isolate_graphcut=False)
    loose = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 4, "tol": 0.0, "label_tol": 1.0}, isolate_graphcut=False)
    res_strict, res_loose = run_manifold(feats, strict), run_manifold(feats, loose)
    assert res_loose.n_iter == 1 and res_loose.converged  # every fraction is <= 1
    # without it the loop stops only at a fixed point or at max_iter
    assert res_strict.n_iter == strict.max_iter or res_strict.fraction_changed[-1] == 0.0


def test_run_manifold_validates_inputs():
    with pytest.raises(ValueError, match="n_img, h, w, C"):
        run_manifold(np.zeros((4, 4, 3)))
    nan_in_third = np.ones((4, 4, 4, 3))
    nan_in_third[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(image 2\)"):  # found in the block that holds it
        run_manifold(nan_in_third, ManifoldConfig(n_clusters=2, chunk_images=1))
    with pytest.raises(ValueError, match="exceeds"):
        run_manifold(np.random.default_rng(0).random((1, 3, 3, 4)), ManifoldConfig(n_clusters=10, max_hac_samples=100))
    res_feats, _, _ = make_category(n_img=2, seed=3)
    res = run_manifold(res_feats, ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 1}, isolate_graphcut=False))
    with pytest.raises(ValueError, match="channels"):
        res.embed(res_feats[..., :5])


def killed_on_call(fn, n):
    """``fn`` that raises KeyboardInterrupt on its ``n``-th call (a job killed in iteration ``n``'s graph cuts)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        return fn(*args, **kwargs)

    return wrapped


def test_a_run_killed_in_iteration_3_resumes_there_with_the_same_result(monkeypatch):
    """The checkpoint of the last finished iteration (2) resumes the loop at iteration 3; the result is the one
    of a run never stopped, bit for bit, and iterations 1-2 are not redone."""
    import pipeline_lib.manifold.algorithm1 as algorithm1

    feats, _, _ = make_category(n_img=6, noise=0.6, seed=0)  # labels still move after 5 iterations
    cfg = ManifoldConfig(**{**SYNTH_CONFIG, "max_iter": 5, "tol": 0.0, "label_tol": 0.0}, isolate_graphcut=False)
    whole = run_manifold(feats, cfg)
    assert whole.n_iter >= 3
    real = algorithm1.refine_labels_batch
    monkeypatch.setattr(algorithm1, "refine_labels_batch", killed_on_call(real, 3))
    states = []
    with pytest.raises(KeyboardInterrupt):
        run_manifold(feats, cfg, checkpoint=states.append)
    assert [s["iteration"] for s in states] == [1, 2]
    monkeypatch.setattr(algorithm1, "refine_labels_batch", real)
    done = []
    resumed = run_manifold(feats, cfg, progress=done.append, resume_from=states[-1])
    assert [d["iteration"] for d in done] == list(range(3, whole.n_iter + 1))
    for name in ("label_maps", "energies", "image_energies", "fraction_changed", "model_change", "n_components"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    np.testing.assert_array_equal(resumed.sop_models.means, whole.sop_models.means)
    assert resumed.converged == whole.converged
    with pytest.raises(ValueError, match="belongs to another run"):
        run_manifold(feats[:2], cfg, resume_from=states[-1])
