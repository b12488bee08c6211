"""Sub-cell targets of the training-free matchers (``transfer.target: soft_argmax``): a one-hot score is the cell
centre, a peak between cells lands between them, and a sub-cell translation is recovered more closely than by
cell centres, for NN and through the hyperpixel matcher's path."""

import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.config import validate_config
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.soft_argmax import Subcell, subcell_targets
from pipeline_lib.methods.nn import nn_transfer
from pipeline_lib.settings import Settings


def test_a_one_hot_score_is_the_cell_centre():
    h, w, hw = 5, 7, (40, 56)
    scores = torch.zeros(3, h * w, dtype=torch.float64)
    cells = torch.tensor([0, 17, h * w - 1])
    scores[torch.arange(3), cells] = 1.0
    out = subcell_targets(scores, (h, w), hw, beta=50.0, radius_cells=2)
    assert torch.allclose(out, cell_centres(h, w, hw, dtype=torch.float64)[cells], atol=1e-9)


def test_a_peak_between_two_cells_lands_between_their_centres():
    h, w, hw = 1, 6, (8, 48)  # 8-px cells
    scores = torch.full((1, w), 0.1, dtype=torch.float64)
    scores[0, 2] = scores[0, 3] = 1.0
    out = subcell_targets(scores, (h, w), hw, beta=50.0, radius_cells=2)
    centres = cell_centres(h, w, hw, dtype=torch.float64)
    assert out[0, 0].item() == pytest.approx((centres[2, 0] + centres[3, 0]).item() / 2, abs=0.05)
    with pytest.raises(ValueError, match=r"\(N, 6\) for a 1 x 6 grid"):
        subcell_targets(scores[:, :5], (h, w), hw)


def smooth_map(c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(1, c, h // 4, w // 4, generator=g, dtype=torch.float64), size=(h, w),
                         mode="bicubic", align_corners=False)[0]


def test_nn_recovers_a_sub_cell_translation_closer_than_cell_centres():
    """Target features = source features shifted by 0.4 cell in x and 0.3 in y (bilinear): the soft argmax
    lands nearer the true positions than the centres of the best cells."""
    c, h, w, cell = 32, 24, 24, 8
    hw = (h * cell, w * cell)
    src = smooth_map(c, h, w, 0)
    shift = torch.tensor([0.4, 0.3], dtype=torch.float64)  # cells
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack([(xs - shift[0] + 0.5) / w * 2 - 1, (ys - shift[1] + 0.5) / h * 2 - 1], -1)[None]
    trg = F.grid_sample(src[None], grid, mode="bilinear", align_corners=False, padding_mode="border")[0]
    g = torch.Generator().manual_seed(1)
    kps = (torch.rand(60, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2) * hw[0]  # away from the border
    truth = kps + shift * cell
    coarse = nn_transfer(src, trg, kps, hw, hw)
    fine = nn_transfer(src, trg, kps, hw, hw, Subcell(beta=50.0, radius_cells=1))
    err_coarse = (coarse - truth).norm(dim=1).mean().item()
    err_fine = (fine - truth).norm(dim=1).mean().item()
    assert err_fine < 0.8 * err_coarse, (err_fine, err_coarse)


def test_the_transfer_section_chooses_the_target():
    assert Settings(validate_config({})).transfer.subcell() is None  # the default: cell centres, as before
    cfg = validate_config({"transfer": {"target": "soft_argmax", "beta": 20.0}})
    assert Settings(cfg).transfer.subcell() == Subcell(beta=20.0, radius_cells=2) and Subcell() == Subcell(10.0, 2)
