"""Workflow stages of the Siamese flow network (Gaur et al. Sec. 5): training on pseudo ground truth
and prediction as a method of the PCK tables."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..backbones import build_backbone, resolve_device
from ..training import TrainConfig, fit, save_weights
from .augment import AugmentConfig
from .data import ManifoldEmbeddings, SiamesePairData, batch_factory, demo_flow_provider, pseudo_flow_provider
from .loss import batch_loss
from .model import SiameseFlowNet
from .predict import predict_pairs

log = logging.getLogger(__name__)


def _model(cfg: Mapping, backbone_name: str) -> SiameseFlowNet:
    sc = cfg["siamese"]
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    return SiameseFlowNet(backbone, freeze_backbone=sc["freeze_backbone"])


def train(cfg: Mapping, backbone_name: str, manifold_stores: Sequence[str | Path], out_weights: str | Path) -> None:
    """Train on the pseudo flow of the training pairs; checkpoints beside ``out_weights`` (resumable)."""
    from ..stages import load_dataset, write_meta

    sc = cfg["siamese"]
    index = load_dataset(cfg)
    emb = ManifoldEmbeddings(manifold_stores)
    pairs = [p for p in index.pairs if p.split == "train" and p.src in emb and p.trg in emb]
    if sc["max_train_pairs"]:
        pairs = pairs[:sc["max_train_pairs"]]
    if not pairs:
        raise ValueError(f"no training pairs with a manifold embedding in dataset {index.name}; set dataset.split "
                         f"so that the train split is not empty.")
    if sc["flow_source"] == "exact":
        provider = demo_flow_provider(index)  # oracle upper bound, demo only
    else:
        provider = pseudo_flow_provider(emb, mode=cfg["pseudo_flow"]["mode"], metric=cfg["pseudo_flow"]["metric"])
    data = SiamesePairData(index, pairs, provider, sc["input_size"])
    augment = AugmentConfig() if sc["augment"] else None
    tc = TrainConfig(epochs=sc["epochs"], lr=sc["lr"], batch_size=sc["batch_size"], seed=cfg["seed"])
    device = resolve_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    model = _model(cfg, backbone_name)
    out_dir = Path(out_weights).parent
    # Gaur et al. Eq. 10: T^2 = the longer image side (null); a larger cap for pseudo flows whose errors
    # exceed sqrt(side) px, which would otherwise truncate (and silence) nearly every pixel.
    loss_fn = partial(batch_loss, t_sq_px2=sc["truncation_px2"])
    result = fit(model, loss_fn, batch_factory(data, tc.batch_size, augment), tc, out_dir, device,
                 extra_fingerprint={"siamese": sc, "backbone": backbone_name, "n_pairs": len(pairs)},
                 desc="siamese")
    save_weights(model, out_weights, {"backbone": backbone_name, "siamese": dict(sc), "train": asdict(tc),
                                      "n_pairs": len(pairs)})
    write_meta(out_dir / "train_meta.json", cfg, n_pairs=len(pairs), resumed_from_epoch=result.resumed_from,
               history=result.history, device=str(device))


def load_model(cfg: Mapping, backbone_name: str, weights: str | Path, device) -> SiameseFlowNet:
    model = _model(cfg, backbone_name)
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json) -> None:
    from ..stages import eval_pairs, finish_predictions, load_dataset

    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    device = resolve_device(cfg["device"])
    model = load_model(cfg, backbone_name, weights, device)
    with torch.inference_mode():
        preds, ms = predict_pairs(model, pairs, index.images, cfg["siamese"]["input_size"])
    finish_predictions(cfg, "siamese", preds, ms, out_csv, meta_json, device=str(device),
                       input_size=cfg["siamese"]["input_size"])
