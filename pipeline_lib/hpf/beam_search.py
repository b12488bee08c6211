"""Beam search over hyperpixel layer sets (Min et al. 2019, Algorithm 1) and layer-set names.

The search is a pure function of a scoring callback (e.g. validation PCK computed from cached
per-layer features), so it can be tested without a backbone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = [
    "BEAM_WIDTH",
    "MAX_LAYERS",
    "BeamSearchResult",
    "BeamStep",
    "beam_search",
    "decode_layers",
    "encode_layers",
]

# Min et al. Sec. 5.1: "we set the beam size 4 and the maximum number of layers allowed 8".
BEAM_WIDTH = 4
MAX_LAYERS = 8

Layers = tuple[int, ...]
Scored = tuple[Layers, float]


@dataclass(frozen=True)
class BeamStep:
    """One iteration of the search.

    Attributes:
        n_layers: size of every set scored in this step (1 = base-layer search).
        evaluated: every distinct candidate set of the step with its score, in generation order.
        kept: the beam after the step, best first, at most ``beam_width`` entries.
    """

    n_layers: int
    evaluated: tuple[Scored, ...]
    kept: tuple[Scored, ...]


@dataclass(frozen=True)
class BeamSearchResult:
    """Best set over all steps (ties keep the earlier, i.e. smaller, set), and the full trace."""

    best: Layers
    best_score: float
    trace: tuple[BeamStep, ...]
    n_evaluations: int  # distinct sets scored == number of score_fn calls


def beam_search(
    candidates: Sequence[int],
    score_fn: Callable[[Layers], float],
    *,
    beam_width: int = BEAM_WIDTH,
    max_layers: int = MAX_LAYERS,
    base_candidates: Sequence[int] | None = None,
    initial: Sequence[Sequence[int]] = (),
) -> BeamSearchResult:
    """Algorithm 1 of Min et al.: grow layer sets one layer at a time, keeping the best few.

    Sets are tuples sorted in increasing order; the first element is the base layer, and a
    layer is only added if it is greater than the base (Algorithm 1, line 16). A set reached
    twice within a step (e.g. (2, 7) + 11 and (2, 11) + 7) is skipped and the loop continues
    with the next candidate (the reference code ``break``s there, silently dropping the
    remaining candidates). Scores are cached, so ``score_fn`` is called once per distinct set.
    The search stops after sets of ``max_layers`` layers or when no new set can be formed.

    Args:
        candidates: all candidate layer ids (duplicates ignored).
        score_fn: higher is better; must return a finite float.
        base_candidates: layers allowed as base (a subset of ``candidates``, e.g. those with
            enough spatial resolution); ``None`` means all candidates.
        initial: sets scored in the step of their size beside the beam's (ours, not Min et al.'s: e.g. each
            member's searched set when the candidates are several backbones' layers, whose best single layers
            can fill a narrow beam from one backbone alone); each is also grown in the next step whether the
            beam keeps it or not, so the result scores at least as well as the best initial set.
    """
    cands = sorted({int(c) for c in candidates})
    bases = cands if base_candidates is None else sorted({int(c) for c in base_candidates})
    if not cands or not bases:
        raise ValueError("beam_search: candidates and base_candidates must be non-empty")
    if not set(bases) <= set(cands):
        missing = sorted(set(bases) - set(cands))
        raise ValueError(f"beam_search: base_candidates {missing} are not in candidates")
    if beam_width < 1 or max_layers < 1:
        raise ValueError(
            f"beam_search: need beam_width >= 1 and max_layers >= 1, got {beam_width} and {max_layers}"
        )

    cache: dict[Layers, float] = {}

    def score(layers: Layers) -> float:
        if layers not in cache:
            value = float(score_fn(layers))
            if math.isnan(value):
                raise ValueError(f"beam_search: score_fn returned NaN for layers {layers}")
            cache[layers] = value
        return cache[layers]

    seeds = [tuple(sorted({int(x) for x in s})) for s in initial]
    bad = [s for s in seeds if not s or not set(s) <= set(cands) or s[0] not in bases or len(s) > max_layers]
    if bad:
        raise ValueError(f"beam_search: initial sets {bad} must be non-empty sets of candidates of at most "
                         f"{max_layers} layers whose first (base) layer is a base candidate")
    evaluated = tuple(((b,), score((b,))) for b in bases)
    beam = _top(evaluated, beam_width)
    best = beam[0]
    trace = [BeamStep(1, evaluated, beam)]

    for n_layers in range(2, max_layers + 1):
        seen: set[Layers] = set()
        step: list[Scored] = []
        for layers in [b for b, _ in beam] + [s for s in seeds if len(s) == n_layers - 1]:
            for layer in cands:
                if layer in layers or layer <= layers[0]:
                    continue
                new = tuple(sorted(layers + (layer,)))
                if new in seen:
                    continue  # duplicate of a set already scored in this step; NOT break
                seen.add(new)
                step.append((new, score(new)))
        for seed in seeds:  # a seed joins the step of its size (and its extensions the next one)
            if len(seed) == n_layers and seed not in seen:
                seen.add(seed)
                step.append((seed, score(seed)))
        if not step:
            if any(len(seed) > n_layers for seed in seeds):
                continue  # the beam cannot grow, but a larger seed is still to come
            break
        beam = _top(step, beam_width)
        trace.append(BeamStep(n_layers, tuple(step), beam))
        if beam[0][1] > best[1]:  # Algorithm 1, line 24: strict improvement only
            best = beam[0]

    return BeamSearchResult(best=best[0], best_score=best[1], trace=tuple(trace), n_evaluations=len(cache))


def _top(scored: Sequence[Scored], k: int) -> tuple[Scored, ...]:
    """Best k by score, ties broken by the set itself so the result is deterministic."""
    return tuple(sorted(scored, key=lambda s: (-s[1], s[0]))[:k])


_LAYERS_RE = re.compile(r"L(\d+(?:-\d+)*)")


def encode_layers(layers: Sequence[int]) -> str:
    """``(2, 7, 11) -> "L2-7-11"`` (for file paths only). Layers must be strictly increasing ints >= 0."""
    layers = tuple(layers)
    if not layers:
        raise ValueError("encode_layers: empty layer set")
    if any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in layers):
        raise ValueError(f"encode_layers: layers must be non-negative ints, got {layers!r}")
    if any(a >= b for a, b in zip(layers, layers[1:])):
        raise ValueError(f"encode_layers: layers must be strictly increasing, got {layers!r}")
    return "L" + "-".join(str(x) for x in layers)


def decode_layers(name: str) -> Layers:
    """``"L2-7-11" -> (2, 7, 11)``; inverse of :func:`encode_layers`."""
    match = _LAYERS_RE.fullmatch(name)
    if match is None:
        raise ValueError(f"decode_layers: {name!r} is not of the form 'L<int>-<int>-...'")
    layers = tuple(int(x) for x in match.group(1).split("-"))
    if encode_layers(layers) != name:  # rejects leading zeros and non-increasing ids
        raise ValueError(f"decode_layers: {name!r} is not a canonical layer-set name")
    return layers
