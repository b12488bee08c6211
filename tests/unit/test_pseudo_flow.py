"""Pseudo ground-truth flow from embeddings: planted translations, confidence rules, quality metric."""

import numpy as np
import pytest
import torch

from pipeline_lib.kernels.flow import rescale_flow, upsample_flow
from pipeline_lib.pseudo_flow import flow_quality, pseudo_flow

H, W, D = 6, 8, 16
IMG = (48, 64)  # 8 px cells


def random_embedding(seed, h=H, w=W, d=D):
    return torch.randn(h, w, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_planted_translation_gives_that_flow_and_all_mutual(metric):
    src = random_embedding(0)
    dy, dx = 1, 2
    trg = torch.roll(src, shifts=(dy, dx), dims=(0, 1))  # target cell (i+dy, j+dx) == source cell (i, j)
    flow, mask = pseudo_flow(src, trg, IMG, IMG, mode="mutual", metric=metric)
    assert flow.shape == (H, W, 2) and mask.shape == (H, W) and mask.dtype == torch.bool
    assert mask.all()
    cell_h, cell_w = IMG[0] / H, IMG[1] / W
    inner = flow[: H - dy, : W - dx]  # cells whose counterpart does not wrap around
    assert torch.equal(inner, torch.tensor([dx * cell_w, dy * cell_h], dtype=flow.dtype).expand_as(inner))
    # wrapped cells land on the other side: still exact, in pixels
    assert flow[H - 1, 0, 1].item() == pytest.approx((0 - (H - 1)) * cell_h)


def test_flow_is_in_target_pixels_when_sizes_differ():
    src = random_embedding(1)
    flow, mask = pseudo_flow(src, src.clone(), (48, 64), (96, 128))  # same grid, target twice as large
    # source cell centre x = (j + .5) * 8 - .5, target x = (j + .5) * 16 - .5
    j = torch.arange(W, dtype=torch.float64)
    assert torch.allclose(flow[0, :, 0], (j + 0.5) * 8)
    assert mask.all()


def test_non_mutual_cell_is_masked():
    src = random_embedding(2)
    trg = src.clone()
    # source cell (0, 1) becomes a near copy of source cell (0, 0): both pick target (0, 0), which
    # picks (0, 0) back; (0, 1) is then not mutual.
    src[0, 1] = src[0, 0] + 1e-3
    flow, mask = pseudo_flow(src, trg, IMG, IMG, mode="mutual")
    assert not mask[0, 1] and mask.sum() == H * W - 1
    assert flow[0, 1, 0].item() == pytest.approx(-8.0)  # matched one cell to the left
    _, none = pseudo_flow(src, trg, IMG, IMG, mode="none")
    assert none.all()


def test_label_mode_masks_label_disagreement():
    src = random_embedding(3)
    labels = torch.arange(H * W).reshape(H, W) % 3
    trg_labels = labels.clone()
    trg_labels[2, 3] = (labels[2, 3] + 1) % 3
    _, mask = pseudo_flow(src, src.clone(), IMG, IMG, mode="labels", src_labels=labels, trg_labels=trg_labels)
    assert not mask[2, 3] and mask.sum() == H * W - 1
    src2 = src.clone()
    src2[0, 1] = src2[0, 0] + 1e-3  # (0, 1) is not mutual, but its label agrees (label 0 everywhere)
    lab = torch.zeros(H, W, dtype=torch.long)
    trg_lab = lab.clone()
    trg_lab[2, 3] = 1  # (2, 3) is mutual, but its label disagrees
    _, both = pseudo_flow(src2, src, IMG, IMG, mode="both", src_labels=lab, trg_labels=trg_lab)
    assert both.sum() == H * W - 2 and not both[0, 1] and not both[2, 3]
    with pytest.raises(ValueError, match="needs src_labels"):
        pseudo_flow(src, src, IMG, IMG, mode="labels")


def test_numpy_inputs_and_bad_shapes():
    src = random_embedding(4).numpy()
    flow, mask = pseudo_flow(src, src, IMG, IMG)
    assert torch.count_nonzero(flow) == 0 and mask.all()
    with pytest.raises(ValueError):
        pseudo_flow(src, src[..., :3], IMG, IMG)
    with pytest.raises(ValueError):
        pseudo_flow(src, src, IMG, IMG, metric="manhattan")


def test_upsample_constant_flow_and_nearest_mask():
    flow = torch.tensor([3.0, -2.0]).expand(H, W, 2).clone()
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[0, 0] = False
    flow[0, 0] = 1000.0  # an unreliable cell must not leak into its neighbours
    up, up_mask = upsample_flow(flow, mask, IMG)
    assert up.shape == (*IMG, 2) and up_mask.shape == IMG
    assert not up_mask[:8, :8].any() and up_mask[8:, :].all() and up_mask[:, 8:].all()
    assert torch.allclose(up[up_mask], torch.tensor([3.0, -2.0]))


def test_upsample_interpolates_between_cell_centres():
    flow = torch.zeros(1, 2, 2)
    flow[0, 1, 0] = 8.0  # x-flow 0 at cell 0 (centre x=7.5 on a 32 px image), 8 at cell 1 (centre 23.5)
    up, ok = upsample_flow(flow, torch.ones(1, 2, dtype=torch.bool), (16, 32))
    assert ok.all()
    assert up[0, 7, 0].item() == pytest.approx(0.0) and up[0, 24, 0].item() == pytest.approx(8.0)
    assert up[0, 15, 0].item() == pytest.approx(3.75)  # (15 - 7.5) / 16 * 8
    assert up[0, 23, 0].item() == pytest.approx(7.75)  # (23 - 7.5) / 16 * 8


def test_rescale_flow_keeps_the_correspondence():
    flow = torch.tensor([4.0, 2.0]).expand(10, 10, 2).clone()
    valid = torch.ones(10, 10, dtype=torch.bool)
    out, ok = rescale_flow(flow, valid, (10, 10), (10, 10), (20, 20), (5, 5))
    # pixel q at 20 px: source point (q + .5) / 2 - .5; its target (p + F + .5) / 2 - .5 on 5 px
    q = torch.tensor([6.0, 8.0])
    p = (q + 0.5) / 2 - 0.5
    expect = (p + torch.tensor([4.0, 2.0]) + 0.5) / 2 - 0.5 - q
    assert ok.all() and torch.allclose(out[8, 6], expect.to(out))


def test_flow_quality_truth_against_itself():
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(12, 10, 2)) * 5
    valid = rng.random((12, 10)) > 0.3
    q = flow_quality(flow, valid, flow, valid, [1, 5])
    assert q["epe"] == 0.0 and q["pck@1"] == 1.0 and q["pck@5"] == 1.0 and q["coverage"] == 1.0
    assert q["n_pixels"] == valid.sum()


def test_flow_quality_counts():
    true = np.zeros((2, 2, 2))
    pred = np.zeros((2, 2, 2))
    pred[0, 0] = (3, 4)  # epe 5
    pred[0, 1] = (0, 1)  # epe 1
    valid = np.ones((2, 2), bool)
    pmask = np.array([[True, True], [True, False]])
    q = flow_quality(pred, pmask, true, valid, [1, 4])
    assert q["epe"] == pytest.approx(2.0) and q["pck@1"] == pytest.approx(2 / 3) and q["pck@4"] == pytest.approx(2 / 3)
    assert q["coverage"] == pytest.approx(0.75)
    empty = flow_quality(pred, ~valid, true, valid, [1])
    assert np.isnan(empty["epe"]) and empty["coverage"] == 0.0


def test_matching_features_sources():
    from pipeline_lib.pseudo_flow import matching_features

    g = np.random.default_rng(0)
    emb, raw = g.normal(size=(2, 3, 3, 4)) * 7, g.normal(size=(2, 3, 3, 5)) * 0.1
    assert np.array_equal(matching_features(emb, None, "embedding"), emb)
    assert np.array_equal(matching_features(emb, raw, "raw"), raw)
    both = matching_features(emb, raw, "concat")
    assert both.shape == (2, 3, 3, 9)
    assert np.allclose(np.linalg.norm(both[..., :5], axis=-1), 1) and np.allclose(np.linalg.norm(both[..., 5:], axis=-1), 1)
    assert np.allclose(both[..., :5] * np.linalg.norm(raw, axis=-1, keepdims=True), raw, atol=1e-5)
    with pytest.raises(ValueError, match="features must be"):
        matching_features(emb, raw, "pca")
    with pytest.raises(ValueError, match="raw features"):
        matching_features(emb, None, "concat")
    with pytest.raises(ValueError, match="share the grid"):
        matching_features(emb, raw[:, :2], "concat")


# ----------------------------------------------------------------------------- reference constructions
def test_part_chance_with_one_cell_per_label_is_the_exact_label_correspondence():
    from pipeline_lib.pseudo_flow import part_chance_flow

    src_labels = torch.arange(H * W).reshape(H, W)
    perm = torch.randperm(H * W, generator=torch.Generator().manual_seed(0))
    trg_labels = perm.reshape(H, W)  # label l sits at target cell where perm == l
    flow, mask = part_chance_flow(src_labels, trg_labels, IMG, IMG, torch.Generator().manual_seed(1))
    assert mask.all()
    src_xy = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1).float()
    where = torch.argsort(perm)  # target cell index of label l
    trg_rc = torch.stack([where // W, where % W], -1).reshape(H, W, 2).float()
    cell = torch.tensor([IMG[1] / W, IMG[0] / H])
    expect = (trg_rc - src_xy).flip(-1) * cell  # (row, col) -> xy pixels
    assert torch.allclose(flow, expect)


def test_part_chance_stays_inside_the_label_is_seeded_and_spreads_over_it():
    from pipeline_lib.pseudo_flow import part_chance_flow

    src_labels = torch.zeros(H, W, dtype=torch.long)
    src_labels[:, W // 2:] = 1
    trg_labels = torch.zeros(H, W, dtype=torch.long)
    trg_labels[: H // 2] = 1  # label 1 is the top half of the target
    trg_labels[0, 0] = 2  # a label only the target has: never a destination
    src_labels[5, 0] = 7  # a label the target lacks: random cell anywhere, masked
    flow, mask = part_chance_flow(src_labels, trg_labels, IMG, IMG, torch.Generator().manual_seed(3))
    again, _ = part_chance_flow(src_labels, trg_labels, IMG, IMG, torch.Generator().manual_seed(3))
    other, _ = part_chance_flow(src_labels, trg_labels, IMG, IMG, torch.Generator().manual_seed(4))
    assert torch.equal(flow, again) and not torch.equal(flow, other)
    assert mask.sum() == H * W - 1 and not mask[5, 0]
    from pipeline_lib.kernels.grids import cell_centres

    src_xy = cell_centres(H, W, IMG).reshape(H, W, 2)
    trg = src_xy + flow  # target cell centres reached
    rows = ((trg[..., 1] + 0.5) / (IMG[0] / H) - 0.5).round().long()
    cols = ((trg[..., 0] + 0.5) / (IMG[1] / W) - 0.5).round().long()
    reached = trg_labels[rows, cols]
    assert torch.equal(reached[mask], src_labels[mask])
    # the draw covers the label's cells rather than one of them
    assert len({(int(r), int(c)) for r, c in zip(rows[src_labels == 0], cols[src_labels == 0])}) > 5


def test_raw_same_label_takes_the_nearest_neighbour_within_the_label_only():
    from pipeline_lib.pseudo_flow import same_label_flow

    src = random_embedding(5)
    trg = src.clone()  # unrestricted NN = identity
    src_labels = torch.zeros(H, W, dtype=torch.long)
    trg_labels = torch.zeros(H, W, dtype=torch.long)
    src_labels[2, 3] = 1
    trg_labels[4, 6] = 1  # the only target cell of label 1, far from (2, 3) in feature space
    trg_labels[5, 7] = 1
    trg[5, 7] = src[2, 3] + 0.05  # ... and the nearer one of the two label-1 target cells
    flow, mask = same_label_flow(src, trg, IMG, IMG, src_labels, trg_labels)
    assert mask.all()
    assert flow[2, 3].tolist() == pytest.approx([(7 - 3) * 8.0, (5 - 2) * 8.0])  # -> (5, 7), not itself
    # label-0 cells cannot reach (2, 3)'s twin in the target... they map to themselves (identity)
    keep = src_labels == 0
    keep[4, 6] = keep[5, 7] = False  # their own target cell now carries label 1
    assert torch.count_nonzero(flow[keep]) == 0
    # (4, 6) and (5, 7) are label 0 in the source: they go elsewhere, never to a label-1 cell
    for r, c in ((4, 6), (5, 7)):
        tr, tc = r + int(flow[r, c, 1] / 8), c + int(flow[r, c, 0] / 8)
        assert trg_labels[tr, tc] == 0
    # the unrestricted nearest neighbour of (2, 3) is different: the restriction did the work
    free, _ = pseudo_flow(src, trg, IMG, IMG, mode="none")
    assert torch.count_nonzero(free[2, 3]) == 0


def test_raw_same_label_falls_back_and_masks_a_label_missing_in_the_target():
    from pipeline_lib.pseudo_flow import same_label_flow

    src = random_embedding(6)
    src_labels = torch.zeros(H, W, dtype=torch.long)
    src_labels[0, 0] = 3
    trg_labels = torch.zeros(H, W, dtype=torch.long)
    flow, mask = same_label_flow(src, src.clone(), IMG, IMG, src_labels, trg_labels)
    assert not mask[0, 0] and mask.sum() == H * W - 1
    assert torch.count_nonzero(flow) == 0  # unrestricted fallback for (0, 0): itself
    with pytest.raises(ValueError, match="labels must be"):
        same_label_flow(src, src, IMG, IMG, src_labels[:2], trg_labels)
