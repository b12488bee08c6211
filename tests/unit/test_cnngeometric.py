"""CNNGeometric (Rocco et al. 2017): synthetic warps with known parameters, the grid loss, a short
training run through the shared loop, and the stages that save init.pt and hand the weights to WeakAlign."""


import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.backbones import build_backbone
from pipeline_lib.config import ConfigError, validate_config
from pipeline_lib.kernels.warps import identity_affine, identity_tps
from pipeline_lib.training import TrainConfig, fit, save_weights
from pipeline_lib.weakalign import TPS_GRID_SIZE, WeakAlignConfig, build_weakalign
from pipeline_lib.weakalign import stage
from pipeline_lib.weakalign.synthetic import (AFFINE_ROTATION_MAX_DEG, AFFINE_SCALE_JITTER, AFFINE_TRANSLATION_MAX,
                                              TPS_JITTER, WarpRanges, fixed_synthetic_features, grid_loss,
                                              make_batches, make_feature_batches, make_feature_loss_fn, make_loss_fn,
                                              random_affine, random_tps, regress_pair, synthetic_pair,
                                              train_cnngeometric)

S = 64  # model input side: a 4 x 4 feature grid


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def smooth_images(n, size=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def test_schema_defaults_are_the_release_ranges():
    train, ranges, points = stage.cnngeometric_settings(validate_config({}))
    assert ranges == WarpRanges() and points == 20
    assert (ranges.affine_rotation_deg, ranges.affine_scale, ranges.affine_translation, ranges.tps_jitter) == (
        AFFINE_ROTATION_MAX_DEG, AFFINE_SCALE_JITTER, AFFINE_TRANSLATION_MAX, TPS_JITTER) == (30.0, 0.5, 0.5, 0.4)
    assert (train.lr, train.batch_size) == (1e-3, 16)


def test_unknown_cnngeometric_key_is_refused():
    cfg = validate_config({})
    cfg["cnngeometric"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        stage.cnngeometric_settings(cfg)


@pytest.mark.parametrize("kind", ["affine", "tps"])
def test_grid_loss_is_zero_for_the_true_parameters_and_positive_otherwise(kind):
    g = torch.Generator().manual_seed(0)
    theta = random_affine(5, WarpRanges(), g) if kind == "affine" else random_tps(5, WarpRanges(), g)
    assert grid_loss(kind, theta, theta).item() == pytest.approx(0.0, abs=1e-10)
    other = theta + 0.05 * torch.randn(theta.shape, generator=g)
    assert grid_loss(kind, other, theta).item() > 1e-4
    # a pure translation by d of every point costs |d|^2 (mean of the squared point distances)
    if kind == "affine":
        shifted = theta.clone()
        shifted[:, 2] += 0.1
        assert grid_loss(kind, shifted, theta).item() == pytest.approx(0.01, rel=1e-5)


def test_random_parameters_lie_in_the_configured_ranges():
    g = torch.Generator().manual_seed(1)
    r = WarpRanges(affine_rotation_deg=20.0, affine_scale=0.0, affine_translation=0.3, tps_jitter=0.25)
    aff = random_affine(2000, r, g)
    angle = torch.rad2deg(torch.atan2(aff[:, 3], aff[:, 0]))  # no scale jitter: a pure rotation
    assert angle.abs().max() <= 20.0 + 1e-4 and angle.abs().max() > 18.0
    assert torch.allclose(aff[:, 0], aff[:, 4]) and torch.allclose(aff[:, 1], -aff[:, 3])
    t = aff[:, [2, 5]]
    assert t.abs().max() <= 0.3 and t.abs().max() > 0.28
    scaled = random_affine(2000, WarpRanges(affine_rotation_deg=0.0, affine_scale=0.5), g)
    diag = scaled[:, [0, 4]]
    assert diag.min() >= 0.5 and diag.max() <= 1.5 and scaled[:, [1, 3]].abs().max() == 0
    tps = random_tps(2000, r, g)
    jitter = (tps - identity_tps(2000, TPS_GRID_SIZE)).abs()
    assert jitter.max() <= 0.25 and jitter.max() > 0.24


def test_warp_ranges_are_validated():
    with pytest.raises(ValueError, match="affine_scale"):
        WarpRanges(affine_scale=1.0)
    with pytest.raises(ValueError, match="crop_factor"):
        WarpRanges(crop_factor=0.0)


def test_synthetic_pair_target_shows_the_source_at_the_known_backward_map():
    img = smooth_images(2, 48)
    src, trg = synthetic_pair(img, "affine", identity_affine(2), crop_factor=1.0)
    assert torch.allclose(src, img, atol=1e-5) and torch.allclose(trg, img, atol=1e-5)
    # a translation by one pixel to the right: target(q) = source(q + 1 px) in the cropped frame
    theta = identity_affine(2)
    theta[:, 2] = 2.0 / 48
    src, trg = synthetic_pair(img, "affine", theta, crop_factor=1.0)
    assert torch.allclose(trg[..., :-1], src[..., 1:], atol=1e-5)
    src_t, trg_t = synthetic_pair(img, "tps", identity_tps(2, TPS_GRID_SIZE), crop_factor=0.5)
    assert torch.allclose(src_t, trg_t, atol=1e-5)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0", pretrained=False)


def test_a_short_training_run_lowers_the_grid_loss(backbone, tmp_path):
    """Through training.fit, the heads fit a fixed set of synthetic pairs: their grid loss falls."""
    torch.manual_seed(0)
    model = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    ranges = WarpRanges(affine_rotation_deg=0.0, affine_scale=0.0, affine_translation=0.4, tps_jitter=0.2)
    fixed = next(make_batches(smooth_images(4), 4, ranges)(0, torch.Generator().manual_seed(99)))
    loss_fn = make_loss_fn()

    def loss_now():
        with torch.no_grad():
            return float(loss_fn(model.train(), fixed)[0])

    before = loss_now()
    result = fit(model, loss_fn, lambda epoch, gen: iter([fixed]), TrainConfig(epochs=10, lr=3e-3), tmp_path,
                 torch.device("cpu"), desc="cnngeometric")
    after = loss_now()
    assert after < 0.5 * before, (before, after)
    assert {"grid_loss_affine", "grid_loss_tps", "param_change"} <= set(result.history[-1])


def test_the_stage_batches_give_one_affine_and_one_tps_pair_per_image():
    batches = list(make_batches(smooth_images(5), 2)(0, torch.Generator().manual_seed(0)))
    assert [len(b.theta_aff) for b in batches] == [2, 2, 1]
    assert all(b.src_aff.shape == b.trg_tps.shape == (len(b.theta_aff), 3, S, S) for b in batches)
    assert all(b.theta_tps.shape == (len(b.theta_aff), 18) for b in batches)


def test_each_head_regresses_from_the_direct_correlation(backbone):
    torch.manual_seed(0)
    model = build_weakalign(WeakAlignConfig(image_size=S), backbone).eval()
    img = smooth_images(2)
    with torch.no_grad():
        th_aff, th_tps = regress_pair(model, img, img)
    # zero-initialised heads
    assert torch.equal(th_aff, identity_affine(2)) and torch.equal(th_tps, identity_tps(2, TPS_GRID_SIZE))


def test_the_fixed_set_holds_the_features_of_each_images_known_warps(backbone):
    """Row r * N + i of the fixed set: the backbone's features of image i warped by that row's parameters; the
    source row: the features of image i's crop; the same seed draws the same set."""
    torch.manual_seed(0)
    model = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    images, ranges = smooth_images(3), WarpRanges()
    fixed = fixed_synthetic_features(model, images, 2, ranges, seed=5, batch_size=2, device=torch.device("cpu"))
    assert len(fixed) == 6 and fixed.src.shape[0] == 3 and fixed.theta_tps.shape == (6, 18)
    with torch.no_grad():
        for row in (1, 5):  # image 1 warp 0, image 2 warp 1
            i = row % 3
            src, trg_aff = synthetic_pair(images[i:i + 1], "affine", fixed.theta_aff[row:row + 1])
            _, trg_tps = synthetic_pair(images[i:i + 1], "tps", fixed.theta_tps[row:row + 1])
            assert torch.allclose(fixed.src[i], model.features(src)[0], atol=1e-5)
            assert torch.allclose(fixed.trg_aff[row], model.features(trg_aff)[0], atol=1e-5)
            assert torch.allclose(fixed.trg_tps[row], model.features(trg_tps)[0], atol=1e-5)
    again = fixed_synthetic_features(model, images, 2, ranges, seed=5, batch_size=3, device=torch.device("cpu"))
    assert torch.equal(again.theta_aff, fixed.theta_aff) and torch.allclose(again.trg_tps, fixed.trg_tps, atol=1e-5)
    batches = list(make_feature_batches(fixed, 4)(0, torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [4, 2]  # one pass over the 3 images x 2 warps
    trained_backbone = build_weakalign(WeakAlignConfig(image_size=S, train_backbone=True), backbone)
    with pytest.raises(ValueError, match="frozen backbone"):
        fixed_synthetic_features(trained_backbone, images, 2, ranges, 0, 2, torch.device("cpu"))
    for p in backbone.parameters():  # the model above unfroze the shared fixture's backbone
        p.requires_grad_(False)


def test_training_on_the_fixed_set_lowers_its_grid_loss_without_a_backbone_forward(backbone, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    ranges = WarpRanges(affine_rotation_deg=0.0, affine_scale=0.0, affine_translation=0.4, tps_jitter=0.2)
    images = smooth_images(4)
    fixed = fixed_synthetic_features(model, images, 2, ranges, seed=0, batch_size=4, device=torch.device("cpu"))
    loss_fn = make_feature_loss_fn()
    every = (fixed.src[torch.arange(8) % 4], fixed.trg_aff, fixed.theta_aff, fixed.trg_tps, fixed.theta_tps)

    def loss_now():
        with torch.no_grad():
            return float(loss_fn(model.train(), every)[0])

    before = loss_now()
    with monkeypatch.context() as m:  # the epochs read the cached features only: a backbone call would fail
        m.setattr(model.backbone, "forward", lambda *a, **k: pytest.fail("backbone called while training"))
        result = fit(model, loss_fn, make_feature_batches(fixed, 4), TrainConfig(epochs=10, lr=3e-3), tmp_path / "a",
                     torch.device("cpu"), desc="cnngeometric")
    assert loss_now() < 0.5 * before, before
    assert [h["n_batches"] for h in result.history] == [2] * 10  # 4 images x 2 warps, batches of 4
    staged = train_cnngeometric(build_weakalign(WeakAlignConfig(image_size=S), backbone), images,
                                TrainConfig(epochs=1, batch_size=3), tmp_path / "b", torch.device("cpu"), ranges,
                                fixed_warps=3)
    assert staged.history[0]["n_batches"] == 4  # 4 images x 3 warps in batches of 3


def test_weakalign_loads_the_cnngeometric_weights_exactly(backbone, tmp_path):
    torch.manual_seed(1)
    cg = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    with torch.no_grad():
        for p in cg.regress_affine.parameters():
            p.add_(torch.randn_like(p))
    save_weights(cg, tmp_path / "cg.pt", {"method": "cnngeometric"})
    fresh = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    stage.load_init(fresh, tmp_path / "cg.pt")
    for (k, a), b in zip(cg.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    other = build_weakalign(WeakAlignConfig(image_size=96), backbone)
    with pytest.raises(ValueError, match="does not fit"):
        stage.load_init(other, tmp_path / "cg.pt")
    with pytest.raises(FileNotFoundError, match="train_cnngeometric"):
        stage.load_init(fresh, tmp_path / "missing.pt")


TINY = {"dataset": {"name": "tiny_cg", "kind": "demo", "split": {"mode": "given"}},
        "demo": {"photos": ["chelsea", "coffee"], "images_per_category": 3, "image_size": 64},
        "image": {"longer_side": 64}, "device": "cpu", "methods": ["cnngeometric", "weakalign"],
        "weakalign": {"image_size": 64, "epochs": 1, "batch_size": 4, "lr": 1e-3},
        "cnngeometric": {"epochs": 1, "batch_size": 4}}


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    from pipeline_lib.datasets.stage import generate_demo
    from pipeline_lib.stage_io import dataset_root

    cfg = validate_config({**TINY, "results_dir": str(tmp_path_factory.mktemp("cg") / "results")})
    generate_demo(cfg, dataset_root(cfg))
    return cfg


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_stages_save_init_and_weakalign_starts_from_the_cnngeometric_checkpoint(tiny_cfg, tmp_path):
    cg_dir, wa_dir = tmp_path / "cnngeometric", tmp_path / "weakalign"
    stage.train_cnngeometric(tiny_cfg, "efficientnet_lite0", cg_dir / "model.pt", out_init=cg_dir / "init.pt")
    untrained = stage.build(tiny_cfg, "efficientnet_lite0").state_dict()
    for k, v in _state(cg_dir / "init.pt").items():  # init.pt = the model before any optimisation step
        assert torch.equal(v, untrained[k]), k
    trained = _state(cg_dir / "model.pt")
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)
    stage.train(tiny_cfg, "efficientnet_lite0", wa_dir / "model.pt", init_from=cg_dir / "model.pt",
                out_init=wa_dir / "init.pt")
    for k, v in _state(wa_dir / "init.pt").items():  # weakalign@init = the CNNGeometric weights
        assert torch.equal(v, trained[k]), k
    assert any(not torch.equal(v, trained[k]) for k, v in _state(wa_dir / "model.pt").items())
