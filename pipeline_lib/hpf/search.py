"""Beam search of hyperpixel layers (Min et al. Algorithm 1) scored by PCK on validation pairs.

The score of a layer set is the mean per-pair PCK@alpha of keypoint transfer with that set, computed
with the same prediction and evaluation code as the test tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

from tqdm import tqdm

from ..backbones import layer_member
from ..settings import EvaluationSection
from ..datasets.base import ImageRecord, Pair
from ..evaluation import evaluate_predictions
from ..methods import nn_predictor
from ..pair_prediction import predict_pairs
from .beam_search import BeamSearchResult, beam_search
from .matcher import HyperpixelMatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpace:
    candidates: tuple[int, ...]
    base_candidates: tuple[int, ...]


def search_space(layers: Sequence[Mapping], min_base_stride: float, max_base_stride: float) -> SearchSpace:
    """All layers are candidates; base layers need a stride in [min, max] (Min et al. Sec. 3.1
    restrict the base to layers of sufficient resolution; the lower bound keeps CPU matching cheap)."""
    cands = tuple(range(len(layers)))
    bases = tuple(i for i, x in enumerate(layers) if min_base_stride <= float(x["stride"]) <= max_base_stride)
    if not bases:
        strides = sorted({float(x["stride"]) for x in layers})
        raise ValueError(f"no base-layer candidate with stride in [{min_base_stride}, {max_base_stride}]; the "
                         f"backbone's strides are {strides}. Adjust hpf.min_base_stride / hpf.max_base_stride.")
    return SearchSpace(cands, bases)


def layer_set_score(matcher: HyperpixelMatcher, layers: Sequence[int], pairs: Sequence[Pair],
                    images: Mapping[str, ImageRecord], ev: EvaluationSection, alpha: float, kind: str = "rhm") -> float:
    """Mean per-pair PCK@alpha (%) of transfer with hyperpixels of ``layers``."""
    def predictor(src, trg, kps):
        return matcher.transfer(src, trg, kps, layers, kind)

    preds, _ = predict_pairs(predictor, pairs, matcher.store, progress=False)
    rows = evaluate_predictions("search", pairs, images, preds, EvaluationSection(alphas=(alpha,),
                                                                                  threshold=ev.threshold, direction=ev.direction, split=ev.split))
    return sum(r["pck"] for r in rows) / len(rows)


def member_spaces(layers: Sequence[Mapping], space: SearchSpace) -> dict[str, SearchSpace]:
    """A composite backbone's search space split by member (``member:layer`` names); {} for one backbone's layers.
    Members without a base candidate are left out."""
    by_member: dict[str, list[int]] = {}
    for i in space.candidates:
        by_member.setdefault(layer_member(layers[i]["name"]), []).append(i)
    if len(by_member) < 2:
        return {}
    return {m: SearchSpace(tuple(c), tuple(b for b in space.base_candidates if b in c))
            for m, c in by_member.items() if set(c) & set(space.base_candidates)}


def run_search(matcher: HyperpixelMatcher, pairs: Sequence[Pair], images: Mapping[str, ImageRecord],
               ev: EvaluationSection, alpha: float, space: SearchSpace, beam_width: int,
               max_layers: int, initial: Sequence[Sequence[int]] = (),
               memo: dict | None = None) -> BeamSearchResult:
    """Min et al.'s beam search on ``space`` (``initial``: sets scored beside the beam, see ``beam_search``);
    ``memo`` (set -> score) shares scores between several searches over the same pairs."""
    bar = tqdm(desc="beam search", unit="set")
    memo = {} if memo is None else memo

    def score(layers):
        if layers in memo:
            return memo[layers]
        value = memo[layers] = layer_set_score(matcher, layers, pairs, images, ev, alpha)
        bar.update(1)
        bar.set_postfix_str(f"{'-'.join(map(str, layers))}: {value:.1f}")
        log.info("layers %s: PCK@%g = %.2f", matcher.layer_names(layers), alpha, value)
        return value

    result = beam_search(space.candidates, score, beam_width=beam_width, max_layers=max_layers,
                         base_candidates=space.base_candidates, initial=initial)
    bar.close()
    return result


def composite_search(matcher: HyperpixelMatcher, pairs: Sequence[Pair], images: Mapping[str, ImageRecord],
                     ev: EvaluationSection, alpha: float, layers: Sequence[Mapping], space: SearchSpace,
                     beam_width: int, max_layers: int) -> tuple[BeamSearchResult, dict[str, BeamSearchResult]]:
    """The layer search over one backbone's layers, or over a composite's: each member's layers searched alone,
    then all of them with the members' best sets as initial sets (ours). Min et al.'s beam alone is drawn to one
    member: its first step keeps the ``beam_width`` best single layers, and on PF-WILLOW Lite2's stride-16 layers
    fill it, so Lite0's multi-layer set (higher when grown) is never reached. Seeded, the joint set scores at
    least as well as each member's on the validation pairs. Returns (joint result, {member: its result})."""
    memo: dict = {}
    members = {m: run_search(matcher, pairs, images, ev, alpha, sp, beam_width, max_layers, memo=memo)
               for m, sp in member_spaces(layers, space).items()}
    joint = run_search(matcher, pairs, images, ev, alpha, space, beam_width, max_layers,
                       initial=[r.best for r in members.values()], memo=memo)
    return joint, members


def single_layer_nn_scores(store, pairs, images, ev: EvaluationSection, alpha: float, device) -> dict[str, float]:
    """The NN baseline method on every single layer over the validation pairs (to pick its best layer)."""
    scores = {}
    for name in tqdm(store.layer_names, desc="single-layer NN", unit="layer"):
        preds, _ = predict_pairs(nn_predictor(store, name, device), pairs, store, progress=False)
        rows = evaluate_predictions("nn", pairs, images, preds, EvaluationSection(alphas=(alpha,), threshold=ev.threshold,
                                                                                  direction=ev.direction, split=ev.split))
        scores[name] = sum(r["pck"] for r in rows) / len(rows)
    return scores
