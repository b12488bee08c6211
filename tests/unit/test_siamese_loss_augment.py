"""Truncated Euclidean loss (Gaur et al. Eq. 10) and flow-consistent augmentation, with known answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.kernels.grids import pixel_grid, pixels_to_normalised
from pipeline_lib.siamese.augment import (ROTATION_RANGE_DEG, SCALE_RANGE, AugmentConfig, augment_pair,
                                          sample_transform, similarity_matrix, transform_flow, warp_image)
from pipeline_lib.siamese.loss import (batch_loss, flow_metrics, match_targets, matching_loss, truncated_euclidean_loss,
                                       truncation_px2)

S = 16  # literal reading: T^2 = 16 px^2 -> T = 4 px; long_side: T = 16 px
T_LITERAL = 16.0


def flows(err_x: float, b=1, h=S, w=S):
    target = torch.randn(b, h, w, 2, generator=torch.Generator().manual_seed(0))
    pred = target.clone()
    pred[..., 0] += err_x
    return pred, target, torch.ones(b, h, w, dtype=torch.bool)


def test_truncation_readings_of_eq10():
    # Gaur et al. Eq. 10, "T^2 ... equal to the long edge": literal T^2 = side px^2, ours T = fraction x side px
    assert truncation_px2((48, 64), "literal") == 64.0
    assert truncation_px2((48, 64), "long_side") == 64.0 ** 2
    assert truncation_px2((48, 64), "long_side", 0.25) == 16.0 ** 2
    assert truncation_px2((48, 64), "literal", 0.25) == 64.0  # the fraction belongs to long_side
    with pytest.raises(ValueError, match="truncation must be one of"):
        truncation_px2((48, 64), "short_side")
    with pytest.raises(ValueError, match="positive"):
        truncation_px2((48, 64), "long_side", 0.0)


def planted_errors():
    """Errors of 2 px (row 0), 8 px (row 1) and 20 px (row 2) on an S x S flow, the rest exact."""
    target = torch.zeros(1, S, S, 2)
    pred = target.clone()
    for row, err in ((0, 2.0), (1, 8.0), (2, 20.0)):
        pred[0, row, :, 1] = err
    return pred.requires_grad_(), target, torch.ones(1, S, S, dtype=torch.bool)


@pytest.mark.parametrize("reading,trained_rows", [("literal", [0]),  # T = 4 px: only the 2 px errors
                                                  ("long_side", [0, 1])])  # T = 16 px: 2 and 8 px, not 20 px
def test_which_planted_errors_give_gradient(reading, trained_rows):
    pred, target, mask = planted_errors()
    t_sq = truncation_px2((S, S), reading)
    truncated_euclidean_loss(pred, target, mask, t_sq).backward()
    moved = [row for row in range(S) if torch.count_nonzero(pred.grad[0, row]) > 0]
    assert moved == trained_rows
    metrics = flow_metrics(pred, target, mask, t_sq)
    # rows 3.. are exact (error 0 < T): they count as under T but give no gradient (zero error)
    assert metrics["under_T"] == pytest.approx((S - 3 + len(trained_rows)) / S)
    assert metrics["epe_px"] == pytest.approx((2.0 + 8.0 + 20.0) / S)


def test_flow_metrics_on_a_synthetic_case():
    target = torch.zeros(2, 4, 4, 2)
    pred = target.clone()
    pred[0, :2, :, 0] = 3.0  # 8 pixels at 3 px: under T = 5 px
    pred[0, 2:, :, 0] = 4.0  # 8 pixels at 4 px (x) ...
    pred[0, 2:, :, 1] = 3.0  # ... and 3 px (y): 5 px, not under T (strictly)
    pred[1] = 100.0  # the second item is unsupervised: ignored
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0] = True
    m = flow_metrics(pred, target, mask, 25.0)
    assert m["under_T"] == pytest.approx(0.5) and m["epe_px"] == pytest.approx(4.0)
    empty = flow_metrics(pred, target, torch.zeros_like(mask), 25.0)
    assert math.isnan(empty["under_T"]) and math.isnan(empty["epe_px"])


class _ConstantFlow(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, src, trg):
        return self.value.expand(src.shape[0], src.shape[2], src.shape[3], 2)


def test_batch_loss_returns_the_metrics_under_the_configured_reading():
    from pipeline_lib.siamese.data import FlowBatch

    b = FlowBatch(torch.zeros(1, 3, S, S), torch.zeros(1, 3, S, S), torch.zeros(1, S, S, 2),
                  torch.ones(1, S, S, dtype=torch.bool), ("p",))
    model = _ConstantFlow([6.0, 8.0])  # error 10 px everywhere
    loss, m = batch_loss(model, b, truncation="literal")  # T = 4 px
    assert loss.item() == pytest.approx(T_LITERAL) and m == {"under_T": 0.0, "epe_px": pytest.approx(10.0)}
    loss, m = batch_loss(model, b)  # default long_side: T = 16 px
    assert loss.item() == pytest.approx(100.0) and m["under_T"] == 1.0
    loss.backward()
    assert torch.allclose(model.value.grad, torch.tensor([12.0, 16.0]))  # d/dv mean ||v||^2 = 2 v


def test_match_targets_of_a_one_cell_translation():
    """A flow of +8 px in x on a 32 px input with a 4 x 4 grid (8 px cells): every cell's target is the next
    cell to the right; the last column leaves the image (invalid), as do unconfident pixels."""
    flow = torch.zeros(1, 32, 32, 2)
    flow[..., 0] = 8.0
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    mask[0, :8, :8] = False  # cell (0, 0) unconfident
    index, valid = match_targets(flow, mask, (4, 4))
    grid = torch.arange(16).view(4, 4)
    assert torch.equal(index[0].view(4, 4)[:, :3], grid[:, 1:])
    expect = torch.ones(4, 4, dtype=torch.bool)
    expect[:, 3] = False
    expect[0, 0] = False
    assert torch.equal(valid[0].view(4, 4), expect)
    # a coarser target grid: the same points fall into 2 x 2 cells of 16 px
    index, valid = match_targets(flow, torch.ones_like(mask), (4, 4), (2, 2))
    assert index[0].view(4, 4)[0].tolist()[:3] == [0, 1, 1] and valid[0].view(4, 4)[:, 3].logical_not().all()


def test_match_targets_on_a_padded_grid():
    """A 36 px input padded to 40 (stride 8): the 5 x 5 grid covers 40 px, so cells stay 8 px wide and the
    last row and column (centres at 35.5 px, in the padding) have no target."""
    flow = torch.zeros(1, 36, 36, 2)
    flow[..., 0] = 8.0
    index, valid = match_targets(flow, torch.ones(1, 36, 36, dtype=torch.bool), (5, 5), covered_hw=(40, 40))
    grid = torch.arange(25).view(5, 5)
    assert torch.equal(index[0].view(5, 5)[:4, :3], grid[:4, 1:4])
    assert valid[0].view(5, 5)[:4, :3].all() and not valid[0].view(5, 5)[4].any()
    assert not valid[0].view(5, 5)[:, 3:].any()  # 3: reaches 35.5 + 0.5 = 36 px, outside; 4: in the padding


def test_matching_loss_prefers_the_planted_match_and_ignores_invalid_cells():
    flow = torch.zeros(1, 32, 32, 2)
    flow[..., 0] = 8.0
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    target, valid = match_targets(flow, mask, (4, 4))
    right = F.one_hot(target[0], 16).float().view(1, 4, 4, 4, 4)  # correlation 1 at the true target cell
    wrong = torch.roll(right, 1, dims=-1)
    good, share = matching_loss(right, flow, mask, beta=50.0)
    bad, _ = matching_loss(wrong, flow, mask, beta=50.0)
    assert share == pytest.approx(valid.float().mean().item()) == pytest.approx(0.75)
    assert good.item() < 1e-6 < 10.0 < bad.item()
    none, share = matching_loss(wrong, flow, torch.zeros_like(mask), beta=50.0)
    assert none.item() == 0.0 and share == 0.0
    with pytest.raises(ValueError, match="corr"):
        matching_loss(right[0], flow, mask, beta=50.0)


def test_batch_loss_refuses_a_matching_loss_without_a_correlation():
    from pipeline_lib.siamese.data import FlowBatch

    b = FlowBatch(torch.zeros(1, 3, S, S), torch.zeros(1, 3, S, S), torch.zeros(1, S, S, 2),
                  torch.ones(1, S, S, dtype=torch.bool), ("p",))
    with pytest.raises(ValueError, match="not both 0"):
        batch_loss(_ConstantFlow([0.0, 0.0]), b, flow_weight=0.0)
    with pytest.raises(ValueError, match="fusion: correlation"):
        batch_loss(_ConstantFlow([0.0, 0.0]), b, match_weight=1.0)  # a flow regressor without a correlation


def test_zero_at_perfect_prediction():
    pred, target, mask = flows(0.0)
    assert truncated_euclidean_loss(pred, target, mask).item() == 0.0


def test_default_truncation_is_the_literal_one():
    pred, target, mask = flows(10.0)
    assert truncated_euclidean_loss(pred, target, mask).item() == pytest.approx(T_LITERAL)


def test_grows_then_saturates_at_t_squared():
    values = [truncated_euclidean_loss(*flows(e), T_LITERAL).item() for e in (0.5, 1.0, 3.0, 4.5, 10.0, 100.0)]
    assert values[:3] == pytest.approx([0.25, 1.0, 9.0])
    assert values[3:] == pytest.approx([16.0, 16.0, 16.0])  # min(e^2, T^2), T^2 = 16
    pred, target, mask = flows(3.0, b=2)
    assert truncated_euclidean_loss(pred, target, mask, reduction="sum").item() == pytest.approx(9.0 * 2 * S * S)
    assert truncated_euclidean_loss(pred, target, mask, t_sq_px2=4.0).item() == pytest.approx(4.0)


def test_masked_pixels_do_not_count():
    pred, target, mask = flows(1.0)
    pred[0, :4] += 50.0  # wild errors ...
    mask[0, :4] = False  # ... on masked rows
    assert truncated_euclidean_loss(pred, target, mask).item() == pytest.approx(1.0)
    mask[:] = False
    empty = truncated_euclidean_loss(pred.requires_grad_(), target, mask)
    assert empty.item() == 0.0
    empty.backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_gradient_is_zero_for_truncated_pixels():
    pred, target, mask = flows(1.0)
    pred[0, 0, :5, 0] += 20.0  # these five pixels are beyond T
    pred.requires_grad_(True)
    truncated_euclidean_loss(pred, target, mask).backward()
    assert torch.count_nonzero(pred.grad[0, 0, :5]) == 0
    assert (pred.grad[0, 1:, :, 0] > 0).all()  # d/dx of x^2 / n at error +1
    assert torch.allclose(pred.grad[0, 1:, :, 0], torch.full((S - 1, S), 2.0 / (S * S)))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(1, 3, 4, 2, generator=g, dtype=torch.float64).requires_grad_()
    target = pred.detach() + torch.tensor([0.5, 3.0], dtype=torch.float64)  # some pixels beyond T = 2
    target[0, 0, :2] = pred.detach()[0, 0, :2] + 0.3
    mask = torch.rand(1, 3, 4, generator=g) > 0.2
    assert torch.autograd.gradcheck(lambda p: truncated_euclidean_loss(p, target, mask), (pred,))


def test_loss_rejects_bad_shapes():
    pred, target, mask = flows(0.0)
    with pytest.raises(ValueError):
        truncated_euclidean_loss(pred, target[..., :1], mask)
    with pytest.raises(ValueError):
        truncated_euclidean_loss(pred, target, mask, reduction="max")


def expected_similarity(p, angle_deg, scale, hw):
    """Independent formula: s * R(theta) (p - c) + c, y axis down, positive = counter-clockwise on screen."""
    a = math.radians(angle_deg)
    cx, cy = (hw[1] - 1) / 2, (hw[0] - 1) / 2
    x, y = p[..., 0] - cx, p[..., 1] - cy
    return torch.stack([scale * (math.cos(a) * x + math.sin(a) * y) + cx,
                        scale * (-math.sin(a) * x + math.cos(a) * y) + cy], -1)


@pytest.mark.parametrize("angle,scale", [(12.0, 1.0), (-16.0, 0.9), (7.0, 1.7)])
def test_zero_flow_with_target_transform_is_T_of_p_minus_p(angle, scale):
    hw = (24, 32)
    flow = torch.zeros(*hw, 2)
    mask = torch.ones(hw, dtype=torch.bool)
    new, ok = transform_flow(flow, mask, trg_m=similarity_matrix(angle, scale, hw))
    p = pixel_grid(hw, dtype=torch.float64)
    tp = expected_similarity(p, angle, scale, hw)
    inside = (tp[..., 0] >= -0.5) & (tp[..., 0] <= hw[1] - 0.5) & (tp[..., 1] >= -0.5) & (tp[..., 1] <= hw[0] - 0.5)
    assert torch.equal(ok, inside) and ok.sum() > 0.3 * ok.numel()
    assert torch.allclose(new[ok].double(), (tp - p)[ok], atol=1e-4)
    assert torch.count_nonzero(new[~ok]) == 0


def smooth_canvas(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]


def sample(image, xy):
    """Bilinear (C, H, W) at (..., 2) pixel points (zeros outside)."""
    grid = pixels_to_normalised(xy.float(), tuple(image.shape[1:]))[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def translated_pair(hw=(32, 40), t=(3, -2), margin=6):
    canvas = smooth_canvas(hw[0] + 2 * margin, hw[1] + 2 * margin)
    tx, ty = t
    src = canvas[:, margin:margin + hw[0], margin:margin + hw[1]]
    trg = canvas[:, margin - ty:margin - ty + hw[0], margin - tx:margin - tx + hw[1]]  # trg(p + t) = src(p)
    flow = torch.tensor([float(tx), float(ty)]).expand(*hw, 2).clone()
    p = pixel_grid(hw)
    mask = (p[..., 0] + tx <= hw[1] - 1) & (p[..., 0] + tx >= 0) & (p[..., 1] + ty <= hw[0] - 1) & (p[..., 1] + ty >= 0)
    return src, trg, flow, mask


def test_planted_pair_is_consistent_before_augmentation():
    src, trg, flow, mask = translated_pair()
    p = pixel_grid(tuple(src.shape[1:]))
    assert torch.allclose(sample(trg, p + flow)[:, mask], src[:, mask], atol=1e-6)


def test_source_transform_of_translation_flow_reproduces_the_pixel():
    src, trg, flow, mask = translated_pair()
    hw = tuple(src.shape[1:])
    m = similarity_matrix(10.0, 1.3, hw)
    new_src = warp_image(src, m)
    new_flow, ok = transform_flow(flow, mask, src_m=m)
    q = pixel_grid(hw, dtype=torch.float64)
    p = q @ torch.linalg.inv(m)[:2, :2].T + torch.linalg.inv(m)[:2, 2]  # old source position of q
    # translation is kept: F'(q) = S^-1 q + t - q
    assert torch.allclose(new_flow[ok].double(), (p + flow.double() - q)[ok], atol=1e-4)
    # pixels whose bilinear footprints lie inside both images: the target at q + F'(q) is the pixel
    pos = q + new_flow.double()
    inner = ok & (p >= 0).all(-1) & (p[..., 0] <= hw[1] - 1) & (p[..., 1] <= hw[0] - 1) & \
        (pos >= 0).all(-1) & (pos[..., 0] <= hw[1] - 1) & (pos[..., 1] <= hw[0] - 1)
    assert inner.sum() > 0.3 * inner.numel()
    assert torch.allclose(sample(trg, pos)[:, inner], new_src[:, inner], atol=1e-4)


def test_both_images_transformed_stay_consistent():
    src, trg, flow, mask = translated_pair()
    hw = tuple(src.shape[1:])
    cfg = AugmentConfig(apply_to="both")
    new_src, new_trg, new_flow, ok = augment_pair(src, trg, flow, mask, cfg, torch.Generator().manual_seed(5))
    pos = pixel_grid(hw) + new_flow
    inner = ok & (pos >= 1).all(-1) & (pos[..., 0] <= hw[1] - 2) & (pos[..., 1] <= hw[0] - 2)
    inner &= F.max_pool2d((new_src.sum(0) == 0).float()[None], 3, 1, 1)[0] == 0  # away from the zero padding
    assert inner.sum() > 50
    err = (sample(new_trg, pos) - new_src)[:, inner].abs()
    assert err.max() < 0.05  # two bilinear resamplings of a smooth image


def test_augment_is_seeded_and_in_the_paper_ranges():
    src, trg, flow, mask = translated_pair()
    cfg = AugmentConfig()
    assert cfg.rotation_deg == ROTATION_RANGE_DEG == (-16.0, 16.0) and cfg.scale == SCALE_RANGE == (0.9, 2.0)
    a = augment_pair(src, trg, flow, mask, cfg, torch.Generator().manual_seed(1))
    b = augment_pair(src, trg, flow, mask, cfg, torch.Generator().manual_seed(1))
    c = augment_pair(src, trg, flow, mask, cfg, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[2], c[2])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        m = sample_transform((32, 32), cfg, g)
        scale = math.sqrt(float(torch.linalg.det(m[:2, :2])))
        angle = math.degrees(math.atan2(float(m[0, 1]), float(m[0, 0])))
        assert 0.9 - 1e-9 <= scale <= 2.0 + 1e-9 and -16 - 1e-9 <= angle <= 16 + 1e-9
    with pytest.raises(ValueError):
        AugmentConfig(apply_to="neither")


def test_same_draw_gives_both_images_one_transform():
    """draw=same: identical source and target stay identical (zero flow stays zero), and a translation is
    rotated and scaled with the pair, constant over the image."""
    src, trg, flow, mask = translated_pair()
    hw = tuple(src.shape[1:])
    cfg = AugmentConfig(draw="same")
    new_src, new_trg, new_flow, ok = augment_pair(src, src.clone(), torch.zeros_like(flow), torch.ones_like(mask), cfg,
                                                  torch.Generator().manual_seed(3))
    assert torch.equal(new_src, new_trg) and ok.sum() > 0.3 * ok.numel()
    assert new_flow.abs().max() < 1e-4
    g = torch.Generator().manual_seed(3)
    angle, scale = torch.rand(2, generator=g, dtype=torch.float64).tolist()  # the one draw of sample_similarity
    angle = cfg.rotation_deg[0] + angle * (cfg.rotation_deg[1] - cfg.rotation_deg[0])
    scale = cfg.scale[0] + scale * (cfg.scale[1] - cfg.scale[0])
    _, _, moved, ok = augment_pair(src, trg, flow, mask, cfg, torch.Generator().manual_seed(3))
    expected = similarity_matrix(angle, scale, hw)[:2, :2] @ flow[0, 0].double()  # F' = s R t
    assert ok.sum() > 0.2 * ok.numel()
    assert torch.allclose(moved[ok].double(), expected.expand(int(ok.sum()), 2), atol=1e-4)


def test_independent_draws_differ_per_image():
    src, _, flow, mask = translated_pair()
    _, _, new_flow, ok = augment_pair(src, src.clone(), torch.zeros_like(flow), torch.ones_like(mask),
                                      AugmentConfig(draw="independent"), torch.Generator().manual_seed(3))
    assert new_flow[ok].norm(dim=-1).max() > 1.0  # a relative transform: identical images no longer match at q
    with pytest.raises(ValueError, match="draw"):
        AugmentConfig(draw="sometimes")


def test_augment_draw_comes_from_the_config():
    from pipeline_lib.config import schema_default, validate_config
    from pipeline_lib.settings import Settings
    from pipeline_lib.siamese.stage import augment_config

    assert augment_config(Settings(validate_config({})).siamese).draw == schema_default("siamese", "augment_draw")
    cfg = validate_config({"siamese": {"augment_draw": "independent"}})
    assert augment_config(Settings(cfg).siamese).draw == "independent"
