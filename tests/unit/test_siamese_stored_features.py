"""siamese.train_on: features -- the match adapters trained on stored feature maps (siamese/stored_features.py),
match targets between images of different sizes, match_layers from the hpf search record, and the config checks."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets import Pair
from pipeline_lib.settings import SiameseSection
from pipeline_lib.siamese import SiameseFlowNet
from pipeline_lib.siamese.loss import match_targets
from pipeline_lib.siamese.stage import check_train_on, resolve_match_layers
from pipeline_lib.siamese.stored_features import StoredPairData, stored_batch_factory, stored_match_loss
from pipeline_lib.training import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STRIDE = 8  # px per cell of the planted maps
SHIFT_CELLS = 1  # the target shows each source cell one cell to the right


def test_match_targets_between_images_of_different_sizes():
    """A pure translation by one cell: each source cell's target is the next cell of the target's own grid;
    cells pushed past the target image's right edge are not supervised."""
    src_hw, trg_hw = (32, 48), (40, 32)  # grids 4 x 6 and 5 x 4
    flow = torch.zeros(1, *src_hw, 2)
    flow[..., 0] = STRIDE
    index, valid = match_targets(flow, torch.ones(1, *src_hw, dtype=torch.bool), (4, 6), (5, 4), covered_hw=src_hw,
                                 target_hw=trg_hw)
    ys, xs = np.divmod(np.arange(24), 6)
    expect_valid = xs + 1 < 4  # the target is 4 cells wide
    assert valid[0].numpy().tolist() == expect_valid.tolist()
    assert index[0][valid[0]].numpy().tolist() == (ys * 4 + xs + 1)[expect_valid].tolist()


class PlantedStore:
    """Stored maps of one layer: a target is its source moved one cell right, its channels rescaled and noised,
    so plain cosine matching is imperfect and an adapter has something to learn."""

    def __init__(self, layer: str, channels: int, n_pairs: int, hw=(6, 8)):
        g = torch.Generator().manual_seed(0)
        self.layer, self.maps, self.hw = layer, {}, hw
        scale = torch.rand(channels, 1, 1, generator=g) * 2
        for i in range(n_pairs):
            src = torch.randn(channels, *hw, generator=g)
            trg = torch.roll(src, SHIFT_CELLS, dims=2) * scale + 3.0 * torch.randn(channels, *hw, generator=g)
            self.maps[f"s{i}"], self.maps[f"t{i}"] = src.numpy(), trg.numpy()

    def get(self, image_id, layers):
        return {n: self.maps[image_id] for n in layers}

    def resized_hw(self, image_id):
        return (self.hw[0] * STRIDE, self.hw[1] * STRIDE)


def one_cell_right(pair, src_hw, trg_hw):
    flow = np.zeros((*src_hw, 2), np.float32)
    flow[..., 0] = STRIDE * SHIFT_CELLS
    return flow, np.ones(src_hw, bool)


def test_training_on_stored_maps_moves_only_the_adapters_and_learns_the_planted_match(tmp_path):
    torch.manual_seed(0)
    layer = "block04"
    net = SiameseFlowNet(build_backbone("efficientnet_lite0"), fusion="correlation", match_layers=(layer,),
                         match_adapter=True, freeze_backbone=True)
    net.decoder.requires_grad_(False)
    net.head.requires_grad_(False)
    channels = net.match_adapters[layer].out.out_channels
    store = PlantedStore(layer, channels, n_pairs=6)
    pairs = [Pair(f"p{i}", "c", f"s{i}", f"t{i}", np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1, bool), "train")
             for i in range(6)]
    data = StoredPairData(store, pairs, net.match_layers, one_cell_right)
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("match_adapters")}

    def accuracy():
        with torch.no_grad():
            hits = []
            for item in (data[i] for i in range(len(data))):
                corr = net.correlate(item.src, item.trg)[0].flatten(2).argmax(-1)  # (h, w) best target cell
                h, w = corr.shape
                xs = torch.arange(w).expand(h, w)
                ok = xs + SHIFT_CELLS < w
                hits.append((corr[ok] == (torch.arange(h)[:, None] * w + xs + SHIFT_CELLS)[ok]).float().mean())
            return float(torch.stack(hits).mean())

    before = accuracy()
    result = fit(net, stored_match_loss, stored_batch_factory(data, 2), TrainConfig(epochs=8, lr=3e-3, batch_size=2),
                 tmp_path, torch.device("cpu"), desc="stored")
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert all(0 < h["match_share"] <= 1 for h in result.history)
    assert accuracy() > before + 0.1
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # encoder, decoder, head untouched


def test_match_layers_search_reads_the_hpf_search_record(tmp_path):
    record = tmp_path / "search.json"
    record.write_text(json.dumps({"best_layers": ["block07", "block12"], "best_score": 70.0}))
    sc = replace(SiameseSection(), match_layers="search")
    assert resolve_match_layers(sc, record).match_layers == ("block07", "block12")
    assert resolve_match_layers(replace(sc, match_layers=("block04",)), None).match_layers == ("block04",)
    with pytest.raises(ValueError, match="no hpf layer search record"):
        resolve_match_layers(sc, None)
    record.write_text(json.dumps({"best_score": 70.0}))
    with pytest.raises(ValueError, match="no best_layers"):
        resolve_match_layers(sc, record)


def test_train_on_features_refuses_what_it_cannot_train():
    ok = replace(SiameseSection(), train_on="features", fusion="correlation", match_adapter=True, freeze_backbone=True,
                 flow_loss_weight=0.0, match_loss_weight=1.0, input_size=400)
    check_train_on(ok, 400)
    check_train_on(replace(ok, train_on="images", freeze_backbone=False), 400)  # images: anything goes
    with pytest.raises(ValueError, match=r"\['flow_loss_weight', 'freeze_backbone'\]"):
        check_train_on(replace(ok, freeze_backbone=False, flow_loss_weight=1.0), 400)
    with pytest.raises(ValueError, match="siamese.input_size: 300"):
        check_train_on(ok, 300)
