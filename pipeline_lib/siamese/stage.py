"""Workflow stages of the Siamese flow network (Gaur et al. Sec. 5): training on the stored pseudo ground
truth of the make_pseudo_flow stage (or the demo's exact flow, an oracle) and prediction as a method of the
PCK tables: pairwise transfer, or the paper's top-K retrieval protocol (``siamese.retrieval_top_k``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..backbones import build_backbone, resolve_device
from ..datasets import ImageRecord
from ..features import open_stores
from ..pair_prediction import KeypointFn, on_images, predict_pairs
from ..config import plain, section
from ..protocols import learned_from, refuse_seen
from ..settings import Settings, SiameseSection, reads
from ..stage_io import eval_pairs, finish_predictions, load_dataset, write_meta
from ..training import TrainConfig, fit, load_checkpoint, resumable_settings, save_weights
from .augment import AugmentConfig
from .data import PseudoFlowStores, SiamesePairData, batch_factory, demo_flow_provider, grid_flow_provider
from .loss import batch_loss
from .model import SiameseFlowNet
from .predict import predict_by_retrieval, siamese_keypoint_fn
from .stored_features import StoredPairData, stored_batch_factory, stored_match_loss

log = logging.getLogger(__name__)
# siamese config keys that shape the network (a checkpoint is rebuilt with the values it was trained with)
ARCHITECTURE_KEYS = ("fusion", "match_layers", "match_beta", "match_kernel_sigma_cells", "freeze_backbone", "skip_target",
                     "match_adapter")


def _model(sc: SiameseSection, backbone_name: str, weights_path: str | None) -> SiameseFlowNet:
    backbone = build_backbone(backbone_name, weights_path=weights_path)
    match_layers = None if sc.match_layers == "auto" else tuple(sc.match_layers)
    return SiameseFlowNet(backbone, freeze_backbone=sc.freeze_backbone, fusion=sc.fusion, skip_target=sc.skip_target,
                          match_layers=match_layers, beta=sc.match_beta, kernel_sigma_cells=sc.match_kernel_sigma_cells,
                          match_adapter=sc.match_adapter)


def augment_config(sc: SiameseSection) -> AugmentConfig | None:
    """The augmentation of the ``siamese`` config section, or None when it is off."""
    if not sc.augment:
        return None
    return AugmentConfig(rotation_deg=tuple(sc.augment_rotation_deg), scale=tuple(sc.augment_scale),
                         apply_to=sc.augment_apply_to, draw=sc.augment_draw)


def loss_function(sc: SiameseSection):
    """``loss_fn(model, batch) -> (loss, metrics)`` of the ``siamese`` config section: ``flow_loss_weight`` x the
    truncated Euclidean loss (Gaur et al. Eq. 10; T from ``truncation`` / ``truncation_fraction``, our reading)
    + ``match_loss_weight`` x the matching loss on the correlation (ours; fusion=correlation)."""
    if sc.match_loss_weight and sc.fusion != "correlation":
        raise ValueError(f"siamese.match_loss_weight {sc.match_loss_weight} needs the correlation of fusion "
                         f"'correlation', but siamese.fusion is '{sc.fusion}': set one of them in the config.")
    if not (sc.flow_loss_weight or sc.match_loss_weight):
        raise ValueError("siamese.flow_loss_weight and siamese.match_loss_weight are both 0: nothing would train; "
                         "set one of them > 0 in the config.")
    return partial(batch_loss, truncation=sc.truncation, truncation_fraction=sc.truncation_fraction,
                   flow_weight=sc.flow_loss_weight, match_weight=sc.match_loss_weight)


def resolve_match_layers(sc: SiameseSection, search_record: str | Path | None) -> SiameseSection:
    """``sc`` with ``match_layers: search`` replaced by the best layers of the hpf layer search record
    (``search.json`` of the search_hyperpixel_layers rule); any other value unchanged."""
    if sc.match_layers != "search":
        return sc
    if search_record is None:
        raise ValueError("siamese.match_layers is 'search' but no hpf layer search record was given; the "
                         "train_siamese rule passes search_hyperpixel_layers' search.json (hpf.layers: search).")
    layers = json.loads(Path(search_record).read_text()).get("best_layers")
    if not layers:
        raise ValueError(f"{search_record} records no best_layers; rerun the search_hyperpixel_layers rule.")
    return replace(sc, match_layers=tuple(layers))


def check_train_on(sc: SiameseSection, longer_side: int) -> None:
    """Raise ValueError naming the keys when ``siamese.train_on: features`` cannot train what it says."""
    if sc.train_on != "features":
        return
    wrong = {k: v for k, v in (("fusion", sc.fusion != "correlation"), ("match_adapter", not sc.match_adapter),
                               ("freeze_backbone", not sc.freeze_backbone),
                               ("flow_loss_weight", sc.flow_loss_weight != 0),
                               ("match_loss_weight", not sc.match_loss_weight)) if v}
    if wrong:
        raise ValueError(f"siamese.train_on 'features' trains only the match adapters on stored features: it needs "
                         f"fusion: correlation, match_adapter: true, freeze_backbone: true, flow_loss_weight: 0 and "
                         f"match_loss_weight > 0; the config sets {sorted(wrong)} otherwise. Fix those keys or set "
                         f"siamese.train_on: images.")
    if sc.input_size != longer_side:
        raise ValueError(f"siamese.train_on 'features': the adapters learn on the stored features of "
                         f"image.longer_side {longer_side} px, but siamese.input_size is {sc.input_size}; set "
                         f"siamese.input_size: {longer_side} so the network's own flow runs at that size.")


def train_config(sc: SiameseSection, seed: int) -> TrainConfig:
    groups = (("backbone.", sc.encoder_lr),) if sc.encoder_lr is not None and not sc.freeze_backbone else ()
    return TrainConfig(epochs=sc.epochs, lr=sc.lr, batch_size=sc.batch_size, seed=seed, lr_groups=groups)


@reads("seed", "weights", "siamese", "pseudo_flow", "manifold", "dataset", "image")
def train(cfg: Mapping, backbone_name: str, pseudo_flow_stores: Sequence[str | Path], out_weights: str | Path,
          out_init: str | Path | None = None, features: str | Path | Sequence[str | Path] | None = None,
          search_record: str | Path | None = None) -> None:
    """Train on the stored pseudo flow of the training pairs (the make_pseudo_flow stage); checkpoints
    beside ``out_weights`` (resumable). ``out_init``: also save the seeded, untrained network there (the
    ``siamese@init`` baseline), with the same meta as ``out_weights``. ``features``: the backbone's feature
    store(s) (``siamese.train_on: features``); ``search_record``: the hpf search (``match_layers: search``)."""
    s = Settings(cfg)
    sc = resolve_match_layers(s.siamese, search_record)
    check_train_on(sc, s.image.longer_side)
    if sc.train_on == "features" and features is None:
        raise ValueError("siamese.train_on is 'features' but no feature store was given (the extract_features "
                         "rule's store of this backbone).")
    index = load_dataset(cfg)
    stores = PseudoFlowStores(pseudo_flow_stores)
    pairs = [p for p in index.pairs if p.split == "train" and p.pair_id in stores]
    if sc.max_train_pairs:
        pairs = pairs[:sc.max_train_pairs]
    if not pairs:
        raise ValueError(f"no training pair of dataset {index.name} has a stored pseudo flow; set dataset.split so "
                         f"that the train split is not empty and pseudo_flow.split: train.")
    if sc.flow_source == "exact":
        provider = demo_flow_provider(index)  # oracle upper bound, demo only
    else:
        provider = grid_flow_provider(stores)
    tc = train_config(sc, s.seed)
    device = resolve_device(s.device)
    torch.manual_seed(s.seed)
    model = _model(sc, backbone_name, s.weights.get(backbone_name))
    if not sc.flow_loss_weight:  # the decoder serves only Eq. 10: it keeps its zero residual, and the
        model.decoder.requires_grad_(False)  # logged param_change is that of what trains (the match adapters)
        model.head.requires_grad_(False)
    meta = {"backbone": backbone_name, "siamese": plain(sc), "train": asdict(tc), "n_pairs": len(pairs),
            "pseudo_flow": plain(s.pseudo_flow)}
    if out_init is not None:  # seeded construction, before any optimisation step
        save_weights(model, out_init, meta)
    out_dir = Path(out_weights).parent
    if sc.train_on == "features":  # the match adapters on the stored maps of the match layers (stored_features)
        data = StoredPairData(open_stores(features), pairs, model.match_layers, provider)
        loss_fn, batches = stored_match_loss, stored_batch_factory(data, tc.batch_size)
    else:
        data = SiamesePairData(index, pairs, provider, sc.input_size)
        loss_fn, batches = loss_function(sc), batch_factory(data, tc.batch_size, augment_config(sc))
    result = fit(model, loss_fn, batches, tc, out_dir, device,
                 extra_fingerprint={"siamese": resumable_settings(plain(sc)), "backbone": backbone_name,
                                    "n_pairs": len(pairs)},
                 desc="siamese")
    save_weights(model, out_weights, meta)
    learned = learned_from(pairs, stores.manifold_images(p.pair_id for p in pairs))
    write_meta(out_dir / "train_meta.json", cfg, n_pairs=len(pairs), resumed_from_epoch=result.resumed_from,
               history=result.history, device=str(device), learned_from=learned)


def load_model(cfg: Mapping, backbone_name: str, weights: str | Path, device) -> SiameseFlowNet:
    """The trained network on ``device`` in eval mode; ``.backbone`` is its encoder. The architecture keys
    (ARCHITECTURE_KEYS) come from the checkpoint's meta when it records them, else from ``cfg['siamese']``."""
    state = load_checkpoint(weights)
    trained = state.get("meta", {}).get("siamese", {}) if isinstance(state, dict) else {}
    s = Settings(cfg)
    sc = section(SiameseSection, {**plain(s.siamese), **{k: trained[k] for k in ARCHITECTURE_KEYS if k in trained}})
    model = _model(sc, backbone_name, s.weights.get(backbone_name))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@reads("seed", "weights", "siamese", "evaluation", "dataset")
def predict(cfg: Mapping, backbone_name: str, weights: str | Path, out_csv, meta_json, method: str = "siamese"
            ) -> None:
    """Keypoint transfer of the evaluation pairs with the network in ``weights``, written under the method
    name ``method`` (e.g. ``siamese@init`` for the untrained network saved by ``train(out_init=...)``)."""
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    refuse_seen(cfg, pairs, weights)
    s = Settings(cfg)
    sc = s.siamese
    device = resolve_device(s.device)
    model = load_model(cfg, backbone_name, weights, device)
    with torch.inference_mode():
        if sc.retrieval_top_k:  # Gaur et al. Sec. 6: top-K training images of the category, then transfer
            gallery = [p for p in index.pairs if p.split == "train"]
            preds, ms = predict_by_retrieval(model, pairs, gallery, index.images, sc.retrieval_top_k, sc.input_size)
        else:
            preds, ms = predict_pairs(on_images(siamese_keypoint_fn(model, sc.input_size), index.images), pairs,
                                      desc="siamese")
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device),
                       input_size=sc.input_size, fusion=sc.fusion, retrieval_top_k=sc.retrieval_top_k)


def match_predictor(cfg: Mapping, backbone_name: str, weights: str | Path, device,
                    images: Mapping[str, ImageRecord]) -> tuple[KeypointFn, None]:
    """Pairwise transfer through the network in ``weights`` on any ``images`` (``match``, the report's warp
    pictures); no retrieval (``siamese.retrieval_top_k`` needs a dataset's training images)."""
    model = load_model(cfg, backbone_name, weights, device)
    fn = on_images(siamese_keypoint_fn(model, Settings(cfg).siamese.input_size), images)

    def run(src: str, trg: str, kps):
        with torch.inference_mode():
            return fn(src, trg, kps)

    return run, None
