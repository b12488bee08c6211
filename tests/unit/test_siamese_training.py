"""Training path: data + providers + training.fit on a planted translation, then keypoint transfer.

(Checkpoint/resume of the loop itself is covered by test_training.py.)
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets import DatasetIndex, ImageRecord, Pair, load_rgb
from pipeline_lib.datasets import demo, demo_synthesis
from pipeline_lib.kernels.grids import pixel_grid
from pipeline_lib.pair_prediction import on_images, predict_pairs
from pipeline_lib.siamese import (AugmentConfig, ManifoldEmbeddings, PseudoFlowStores, SiameseFlowNet, SiamesePairData,
                                  batch_factory, batch_loss, demo_flow_provider, grid_flow_provider, predict_keypoints,
                                  pseudo_flow_provider, siamese_keypoint_fn, transfer_from_neighbours)
from pipeline_lib.training import TrainConfig, fit
from pipeline_lib.settings import DemoSection, Settings

SIZE = 64
SHIFT = (5, 3)  # planted flow: source pixel p shows the same content as target pixel p + SHIFT
N_PAIRS = 12


# One intra-op thread: on a shared, oversubscribed CPU, spinning OpenMP threads made these tests ~5x slower
# (measured 138 s vs 24 s for test_siamese_model.py at load 10 on 2 cores).
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def constant_flow(pair, src_hw, trg_hw):
    flow = np.broadcast_to(np.array(SHIFT, dtype=np.float32), (*src_hw, 2)).copy()
    p = pixel_grid(src_hw).numpy()
    pos = p + flow
    mask = (pos[..., 0] <= trg_hw[1] - 1) & (pos[..., 1] <= trg_hw[0] - 1)
    return flow, mask


@pytest.fixture(scope="module")
def translated_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("translated")
    g = torch.Generator().manual_seed(0)
    margin = 8
    images, pairs = {}, []
    for i in range(N_PAIRS):
        canvas = F.interpolate(torch.rand(1, 3, 10, 10, generator=g), size=(SIZE + margin, SIZE + margin),
                               mode="bicubic", align_corners=False)[0].clamp(0, 1)
        canvas = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        src = canvas[margin:margin + SIZE, margin:margin + SIZE]
        trg = canvas[margin - SHIFT[1]:margin - SHIFT[1] + SIZE, margin - SHIFT[0]:margin - SHIFT[0] + SIZE]
        for name, arr in (("s", src), ("t", trg)):
            path = root / f"{name}{i}.png"
            Image.fromarray(arr).save(path)
            images[f"{name}{i}"] = ImageRecord(f"{name}{i}", path, "tex", SIZE, SIZE)
        kps = np.array([[20.0, 20.0], [40.0, 30.0], [30.0, 45.0]])
        pairs.append(Pair(f"p{i}", "tex", f"s{i}", f"t{i}", kps, kps + SHIFT, np.ones(3, bool), "train"))
    return DatasetIndex("translated", "synthetic", images, pairs)


@pytest.fixture(scope="module")
def trained(translated_set, tmp_path_factory):
    torch.manual_seed(0)
    # ImageNet weights: their BN statistics keep eval-mode prediction sane after a few fine-tuning steps.
    model = SiameseFlowNet(build_backbone("efficientnet_lite0"))
    data = SiamesePairData(translated_set, translated_set.pairs, constant_flow, SIZE)
    result = fit(model, batch_loss, batch_factory(data, batch_size=2), TrainConfig(epochs=2, lr=1e-3, batch_size=2),
                 tmp_path_factory.mktemp("run"), torch.device("cpu"), desc="siamese")
    return model, result


def test_items_are_padded_squares_with_the_provider_flow(translated_set):
    data = SiamesePairData(translated_set, translated_set.pairs[:1], constant_flow, 48)
    item = data[0]
    assert item["src"].shape == (3, 48, 48) and item["flow"].shape == (48, 48, 2) and item["mask"].dtype == torch.bool
    assert torch.allclose(item["flow"][item["mask"]], torch.tensor(SHIFT, dtype=torch.float32))


def test_rectangular_images_are_padded_not_stretched(tmp_path):
    path = tmp_path / "r.png"
    Image.fromarray(np.full((30, 60, 3), 200, np.uint8)).save(path)
    index = DatasetIndex("r", "synthetic", {"a": ImageRecord("a", path, "c", 30, 60)},
                         [Pair("aa", "c", "a", "a", np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1, bool))])

    def zero(pair, src_hw, trg_hw):
        assert src_hw == trg_hw == (16, 32)
        return np.zeros((*src_hw, 2)), np.ones(src_hw, bool)

    item = SiamesePairData(index, index.pairs, zero, 32)[0]
    assert item["mask"][:16].all() and not item["mask"][16:].any()
    assert (item["src"][:, 16:] == 0).all() and (item["src"][:, :16] > 0.7).all()
    with pytest.raises(ValueError, match="expected"):
        SiamesePairData(index, index.pairs, lambda p, a, b: (np.zeros((5, 5, 2)), np.ones((5, 5), bool)), 32)[0]


def test_batches_are_seeded_and_augmented_consistently(translated_set):
    data = SiamesePairData(translated_set, translated_set.pairs[:5], constant_flow, SIZE)
    factory = batch_factory(data, batch_size=2, augment=AugmentConfig())
    a = list(factory(0, torch.Generator().manual_seed(7)))
    b = list(factory(0, torch.Generator().manual_seed(7)))
    assert [x.src.shape[0] for x in a] == [2, 2, 1]
    assert all(torch.equal(x.flow, y.flow) and x.pair_ids == y.pair_ids for x, y in zip(a, b))
    batch = a[0]
    assert batch.src.shape == (2, 3, SIZE, SIZE) and batch.flow.shape == (2, SIZE, SIZE, 2)
    assert batch.mask.any() and not torch.allclose(batch.flow[batch.mask][:, 0], torch.tensor(float(SHIFT[0])))


def test_training_reduces_the_loss(trained, tmp_path):
    _, result = trained
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 2 and losses[1] < losses[0]


def test_trained_model_moves_keypoints_the_planted_way(trained, translated_set):
    model, _ = trained
    pair = translated_set.pairs[0]
    src, trg = load_rgb(translated_set.images[pair.src].path), load_rgb(translated_set.images[pair.trg].path)
    out = predict_keypoints(model, src, trg, pair.src_kps, input_size=SIZE)
    moved = out - pair.src_kps
    assert out.shape == (3, 2)
    assert (moved[:, 0] > 0).all() and (moved[:, 1] > 0).all()  # right and down, like SHIFT
    preds, ms = predict_pairs(on_images(siamese_keypoint_fn(model, SIZE), translated_set.images),
                              translated_set.pairs[:2], progress=False)
    assert set(preds) == {"p0", "p1"} and np.allclose(preds["p0"], out) and ms > 0
    assert predict_keypoints(model, src, trg, np.zeros((0, 2)), input_size=SIZE).shape == (0, 2)
    # Gaur et al. Sec. 6: keypoints of retrieved images mapped onto the query and averaged
    partial = np.array([True, True, False])
    mean, count = transfer_from_neighbours(model, trg, [(src, pair.src_kps, pair.valid), (src, pair.src_kps, partial)],
                                           input_size=SIZE)
    assert count.tolist() == [2, 2, 1] and np.allclose(mean, out)


def test_pseudo_flow_provider_recovers_a_planted_grid_shift():
    g = torch.Generator().manual_seed(0)
    emb_s = torch.randn(8, 8, 12, generator=g)
    emb_t = torch.roll(emb_s, shifts=(0, 1), dims=(0, 1))  # one cell to the right
    store = {"a": (emb_s.numpy(), None), "b": (emb_t.numpy(), None)}
    flow_for = pseudo_flow_provider(lambda k: store[k], mode="mutual")
    pair = Pair("ab", "c", "a", "b", np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1, bool))
    flow, mask = flow_for(pair, (32, 32), (32, 32))
    assert flow.shape == (32, 32, 2) and mask.all()
    assert np.allclose(flow[:, :24, 0], 4.0) and np.allclose(flow[..., 1], 0.0)  # 4 px cells


def test_demo_flow_provider_matches_keypoints(tmp_path):
    cfg = DemoSection(photos=("chelsea",), images_per_category=2, image_size=48, n_keypoints=5)
    demo_synthesis.generate(tmp_path / "demo", cfg, seed=0)
    index = demo.load(tmp_path / "demo")
    flow_for = demo_flow_provider(index)
    pair = index.pairs[0]
    flow, mask = flow_for(pair, (32, 32), (32, 32))  # resized from 48
    kps = (pair.src_kps + 0.5) * 32 / 48 - 0.5
    ij = np.clip(np.round(kps).astype(int), 0, 31)
    moved = kps + flow[ij[:, 1], ij[:, 0]]
    expect = (pair.trg_kps + 0.5) * 32 / 48 - 0.5
    ok = mask[ij[:, 1], ij[:, 0]]
    assert ok.sum() >= 3 and np.abs(moved - expect)[ok].max() < 1.5  # nearest-pixel flow on a warped pair


def test_manifold_embeddings_read_the_final_iteration(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "m.zarr"), mode="w")
    root.attrs["image_ids"] = ["x/0", "x/1"]
    emb = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    labels = np.stack([np.zeros((2, 4, 4), np.int32), np.ones((2, 4, 4), np.int32)])  # (n_iter, n_img, g, g)
    root.create_array("embedding", data=emb)
    root.create_array("label_maps", data=labels)
    embeddings = ManifoldEmbeddings([tmp_path / "m.zarr"])
    e, lab = embeddings("x/1")
    assert np.array_equal(e, emb[1]) and (lab == 1).all() and "x/0" in embeddings
    with pytest.raises(KeyError, match="no manifold store"):
        embeddings("y/0")


def test_stored_grid_flow_is_rescaled_to_the_resized_frames(tmp_path):
    import zarr

    from pipeline_lib.pseudo_flow import pseudo_flow

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(4, 4, 6, generator=g)
    # original images: source 40x40, target 80x80 (same content at twice the size): identity cells
    flow, mask = pseudo_flow(emb, emb, (40, 40), (80, 80))
    root = zarr.open_group(str(tmp_path / "pgt.zarr"), mode="w")
    grp = root.create_group("p00000")
    grp.attrs.update({"pair_id": "ab", "src_hw": [40, 40], "trg_hw": [80, 80]})
    grp.create_array("flow", data=flow.numpy())
    grp.create_array("mask", data=mask.numpy())
    stores = PseudoFlowStores([tmp_path / "pgt.zarr"])
    pair = Pair("ab", "c", "a", "b", np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1, bool))
    out, ok = grid_flow_provider(stores)(pair, (20, 20), (20, 20))  # both resized to 20 px
    assert out.shape == (20, 20, 2) and ok.all()
    # same content at the same resized place: zero flow where the two bilinear steps (grid -> 40 px
    # -> 20 px) stay between the outermost cell centres (x in [4.5, 34.5]); outside, the border value
    # is held
    assert np.abs(out[4:17, 4:17]).max() < 1e-4
    with pytest.raises(KeyError):
        stores(replace(pair, pair_id="zz"))


def test_top_k_retrieval_protocol_transfers_from_the_nearest_gallery_image(translated_set):
    from pipeline_lib.siamese import predict_by_retrieval

    torch.manual_seed(0)
    with torch.no_grad():  # untrained correlation fusion: a soft nearest-neighbour matcher, an image onto itself stays
        matcher = SiameseFlowNet(build_backbone("efficientnet_lite0"), fusion="correlation").eval()
    rec = translated_set.images
    images = {"q": replace(rec["s0"], image_id="q"), "copy": replace(rec["s0"], image_id="copy"),
              "other": replace(rec["s5"], image_id="other")}
    k0 = np.array([[20.0, 22.0], [41.0, 30.0], [30.0, 44.0]])
    k_other, k_self = k0[::-1].copy(), k0 + 9.0
    valid = np.array([True, True, False])
    test = [Pair("t", "tex", "other", "q", k_other, k0, valid, "test")]
    gallery = [Pair("g1", "tex", "copy", "other", k0, k_other, np.ones(3, bool), "train"),
               Pair("g2", "tex", "q", "other", k_self, k_other, np.ones(3, bool), "train")]  # the query itself: ignored
    preds, ms = predict_by_retrieval(matcher, test, gallery, images, k=1, input_size=SIZE, progress=False)
    assert ms > 0 and np.isnan(preds["t"][2]).all()
    assert np.abs(preds["t"][:2] - k0[:2]).max() < 2.0  # the copy's keypoints, carried onto the query
    with pytest.raises(ValueError, match="no gallery image"):
        predict_by_retrieval(matcher, [replace(test[0], category="cat")], gallery, images, k=1, input_size=SIZE,
                             progress=False)


def test_matching_loss_trains_the_match_adapters_only(translated_set, tmp_path):
    """fusion=correlation with match adapters and the matching loss alone, encoder frozen: the cross-entropy
    falls on the planted translation, and nothing but the adapters moves (the decoder gets no gradient)."""
    from functools import partial

    torch.manual_seed(0)
    model = SiameseFlowNet(build_backbone("efficientnet_lite0"), fusion="correlation", match_adapter=True,
                           freeze_backbone=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = SiamesePairData(translated_set, translated_set.pairs, constant_flow, SIZE)
    loss_fn = partial(batch_loss, flow_weight=0.0, match_weight=1.0)
    result = fit(model, loss_fn, batch_factory(data, batch_size=4), TrainConfig(epochs=4, lr=1e-2, batch_size=4),
                 tmp_path, torch.device("cpu"), desc="siamese")
    h = result.history
    assert h[-1]["match_ce"] < 0.8 * h[0]["match_ce"] and 0.5 < h[0]["match_share"] <= 1.0
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(n.startswith("match_adapters.") for n in changed)


def siamese_section(values: dict):
    """The validated ``siamese`` section of a config with ``values``."""
    from pipeline_lib.config import validate_config

    return Settings(validate_config({"siamese": values})).siamese


def test_loss_settings_are_checked_against_the_fusion():
    from dataclasses import replace

    from pipeline_lib.siamese.stage import loss_function

    stack = replace(siamese_section({}), match_loss_weight=1.0)  # past the schema (which refuses it too)
    with pytest.raises(ValueError, match="match_loss_weight 1.0 needs .* fusion 'correlation'"):
        loss_function(stack)
    with pytest.raises(ValueError, match="both 0"):
        loss_function(siamese_section({"fusion": "correlation", "flow_loss_weight": 0}))
    fn = loss_function(siamese_section({"fusion": "correlation", "match_loss_weight": 2.0}))
    assert fn.keywords["match_weight"] == 2.0 and fn.keywords["flow_weight"] == 1.0


def test_augmentation_comes_from_the_config_with_the_papers_defaults():
    from pipeline_lib.siamese.stage import augment_config

    paper = augment_config(siamese_section({}))
    assert paper == AugmentConfig(rotation_deg=(-16.0, 16.0), scale=(0.9, 2.0), apply_to="both")  # Gaur et al. Sec. 6
    mild = augment_config(siamese_section({"augment_scale": [1.0, 1.2], "augment_apply_to": "target",
                                           "augment_rotation_deg": [-5, 5]}))
    assert mild.scale == (1.0, 1.2) and mild.rotation_deg == (-5, 5) and mild.apply_to == "target"
    assert augment_config(siamese_section({"augment": False})) is None
    with pytest.raises(ValueError, match="min, max"):
        augment_config(siamese_section({"augment_scale": [2.0, 1.0]}))


def test_load_model_rebuilds_the_trained_architecture(tmp_path):
    from pipeline_lib.config import validate_config
    from pipeline_lib.siamese.stage import _model, load_model
    from pipeline_lib.training import save_weights

    trained_cfg = validate_config({"device": "cpu", "siamese": {"fusion": "correlation"}})
    model = _model(Settings(trained_cfg).siamese, "efficientnet_lite0", None)
    save_weights(model, tmp_path / "model.pt", {"backbone": "efficientnet_lite0", "siamese": trained_cfg["siamese"]})
    loaded = load_model(validate_config({"device": "cpu"}), "efficientnet_lite0", tmp_path / "model.pt", "cpu")
    assert loaded.fusion == "correlation" and loaded.match_layers == model.match_layers and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert loaded.backbone is not None and hasattr(loaded.backbone, "layer_names")  # the encoder, for the chain


@pytest.fixture(scope="module")
def tiny_demo_run(tmp_path_factory):
    """A generated demo (one photo, 3 images, 64 px) under results/, and a zero pseudo flow store of its
    training pairs (what the make_pseudo_flow stage writes), for ``stage.train``."""
    import zarr

    from pipeline_lib.config import validate_config
    from pipeline_lib.stage_io import load_dataset

    results = tmp_path_factory.mktemp("tiny_siamese") / "results"
    demo_synthesis.generate(results / "demo" / "data", DemoSection(photos=("chelsea",), images_per_category=3,
                                                         image_size=SIZE, n_keypoints=6), seed=1)
    cfg = validate_config({"results_dir": str(results), "device": "cpu",
                           "dataset": {"name": "demo", "kind": "demo", "split": {"mode": "given"}},
                           "siamese": {"input_size": SIZE, "epochs": 1, "batch_size": 2, "lr": 1e-3,
                                       "max_train_pairs": 2, "freeze_backbone": True}})
    index = load_dataset(cfg)
    store = results / "pseudo_flow.zarr"
    root = zarr.open_group(str(store), mode="w")
    for n, p in enumerate(q for q in index.pairs if q.split == "train"):
        g = root.create_group(f"p{n:05d}")
        g.attrs.update({"pair_id": p.pair_id, "src_hw": [SIZE, SIZE], "trg_hw": [SIZE, SIZE]})
        g.create_array("flow", data=np.zeros((8, 8, 2), np.float32))
        g.create_array("mask", data=np.ones((8, 8), bool))
    return cfg, store, results


def test_initial_weights_are_the_untrained_network(tiny_demo_run):
    """``out_init`` holds the seeded network before any step (the siamese@init rows); training moved it."""
    from pipeline_lib.siamese import stage
    from pipeline_lib.training import relative_change

    cfg, store, results = tiny_demo_run
    out = results / "siamese"
    stage.train(cfg, "efficientnet_lite0", [store], out / "model.pt", out_init=out / "init.pt")
    init, trained = (torch.load(out / f, map_location="cpu", weights_only=False) for f in ("init.pt", "model.pt"))
    assert init["meta"] == trained["meta"] and init["meta"]["siamese"]["epochs"] == 1
    torch.manual_seed(cfg["seed"])  # what train() does before building the network
    fresh = stage._model(Settings(cfg).siamese, "efficientnet_lite0", None).state_dict()
    assert init["model"].keys() == fresh.keys()
    assert all(torch.equal(init["model"][k], fresh[k]) for k in fresh)
    head = [k for k in fresh if k.startswith(("decoder.", "head."))]
    flat = lambda sd: torch.cat([sd[k].reshape(-1).float() for k in head])  # noqa: E731
    assert relative_change(flat(init["model"]), flat(trained["model"])) > 0
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].split(",")[-2:] == ["under_T", "epe_px"] and len(log) == 2


def test_predict_writes_the_given_method_name(tiny_demo_run):
    import json

    from pipeline_lib.siamese import stage

    cfg, store, results = tiny_demo_run
    out = results / "siamese"
    if not (out / "init.pt").exists():
        stage.train(cfg, "efficientnet_lite0", [store], out / "model.pt", out_init=out / "init.pt")
    cfg = {**cfg, "evaluation": {**cfg["evaluation"], "split": "test"}}
    stage.predict(cfg, "efficientnet_lite0", out / "init.pt", results / "p.csv", results / "p.json",
                  method="siamese@init")
    assert json.loads((results / "p.json").read_text())["method"] == "siamese@init"
    assert (results / "p.csv").read_text().count("\n") > 1
