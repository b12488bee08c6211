"""Beam search over layer sets (Min et al. Algorithm 1) with toy scoring functions."""

from itertools import combinations

import pytest

from pipeline_lib.hpf import beam_search, decode_layers, encode_layers

CANDIDATES = list(range(8))
WEIGHT = {0: 1.0, 1: 0.5, 2: 2.0, 3: -1.0, 4: 0.2, 5: -0.5, 6: 0.1, 7: -2.0}
INTERACTION = {(2, 5): 3.0, (4, 6): 1.0, (0, 2): -2.5}
PER_LAYER_COST = 0.3


def additive_score(layers):
    """Additive unary weights, pairwise interaction terms and a per-layer cost."""
    unary = sum(WEIGHT[x] for x in layers)
    pairs = sum(v for (a, b), v in INTERACTION.items() if a in layers and b in layers)
    return unary + pairs - PER_LAYER_COST * len(layers)


class CountingScore:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, layers):
        self.calls.append(layers)
        return self.fn(layers)


def test_finds_known_optimum_of_toy_score():
    # brute force over every subset: the optimum is (1, 2, 4, 5, 6) with score 4.8
    subsets = [c for k in range(1, 9) for c in combinations(CANDIDATES, k)]
    brute = max(subsets, key=additive_score)
    assert brute == (1, 2, 4, 5, 6)
    result = beam_search(CANDIDATES, additive_score)
    assert result.best == brute
    assert result.best_score == pytest.approx(4.8)


def test_beam_width_depth_and_single_evaluation_per_set():
    score = CountingScore(additive_score)
    result = beam_search(CANDIDATES, score, beam_width=3, max_layers=4)
    assert len(result.trace) == 4
    for step in result.trace:
        assert len(step.kept) <= 3
        assert all(len(s) == step.n_layers for s, _ in step.evaluated)
        assert all(list(s) == sorted(set(s)) for s, _ in step.evaluated)
    assert max(len(s) for step in result.trace for s, _ in step.evaluated) == 4
    # every distinct set is scored exactly once
    assert len(score.calls) == len(set(score.calls)) == result.n_evaluations
    assert {s for step in result.trace for s, _ in step.evaluated} == set(score.calls)


def test_each_step_expands_every_kept_set_with_every_larger_layer():
    result = beam_search(CANDIDATES, additive_score, beam_width=4, max_layers=5)
    for prev, step in zip(result.trace, result.trace[1:]):
        expected = {
            tuple(sorted(s + (x,))) for s, _ in prev.kept for x in CANDIDATES if x not in s and x > s[0]
        }
        assert {s for s, _ in step.evaluated} == expected
        assert len(step.evaluated) == len(expected)  # no duplicates kept


def test_duplicate_set_is_skipped_with_continue_not_break():
    # Beam after step 2 is [(0, 1), (0, 2)]. Expanding (0, 2) first meets (0, 1, 2), already
    # produced by (0, 1); the reference code `break`s there and never scores (0, 2, 4).
    table = {(0,): 0.0, (0, 1): 2.0, (0, 2): 1.9, (0, 2, 4): 10.0}
    result = beam_search(range(5), lambda s: table.get(s, 1.0 if len(s) == 3 else 0.0),
                         beam_width=2, max_layers=3, base_candidates=[0])
    assert result.best == (0, 2, 4)
    assert result.best_score == 10.0
    assert [s for s, _ in result.trace[-1].evaluated] == [
        (0, 1, 2), (0, 1, 3), (0, 1, 4), (0, 2, 3), (0, 2, 4)
    ]


def test_base_candidates_and_stop_when_no_candidate_remains():
    result = beam_search([0, 1, 2], lambda s: float(len(s)), base_candidates=[0], max_layers=8)
    assert [step.n_layers for step in result.trace] == [1, 2, 3]
    assert result.best == (0, 1, 2)
    assert all(s[0] == 0 for step in result.trace for s, _ in step.evaluated)


def test_ties_keep_the_earlier_smaller_set():
    result = beam_search([0, 1, 2], lambda s: 1.0)
    assert result.best == (0,)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        beam_search([], additive_score)
    with pytest.raises(ValueError):
        beam_search([0, 1], additive_score, base_candidates=[5])
    with pytest.raises(ValueError):
        beam_search([0, 1], additive_score, beam_width=0)
    with pytest.raises(ValueError):
        beam_search([0, 1], lambda s: float("nan"))


@pytest.mark.parametrize("layers", [(2, 7, 11), (0,), (0, 8, 20, 21, 26, 28, 29, 30)])
def test_encode_decode_round_trip(layers):
    name = encode_layers(layers)
    assert decode_layers(name) == layers
    assert encode_layers((2, 7, 11)) == "L2-7-11"


@pytest.mark.parametrize("name", ["", "L", "2-7", "L2-7-", "L7-2", "L02-7", "L2,7", "l2-7"])
def test_decode_rejects_malformed_names(name):
    with pytest.raises(ValueError):
        decode_layers(name)


@pytest.mark.parametrize("layers", [(), (7, 2), (2, 2), (-1, 3), (1.5, 2)])
def test_encode_rejects_bad_layer_sets(layers):
    with pytest.raises(ValueError):
        encode_layers(layers)


def test_initial_sets_reach_an_optimum_a_narrow_beam_misses():
    """Two "backbones": layers 0-3 are strong alone but weak together, 4-7 weak alone but strong as a set (as
    Lite2's single layers against Lite0's searched set). Width 1 follows 0-3 and misses the set; seeded with it,
    the search scores it, grows it, and ends at least as high."""
    def score(layers):
        strong_alone = sum(1.0 for x in layers if x < 4) / len(layers) ** 2
        team = 1.5 * (sum(1 for x in layers if x >= 4) - 1) if all(x >= 4 for x in layers) else 0.0
        return strong_alone + team

    plain = beam_search(CANDIDATES, score, beam_width=1, max_layers=4)
    assert plain.best == (0,) and plain.best_score == 1.0
    counted = CountingScore(score)
    seeded = beam_search(CANDIDATES, counted, beam_width=1, max_layers=4, initial=[(5, 4)])
    assert seeded.best == (4, 5, 6, 7) and seeded.best_score == pytest.approx(4.5)  # grown from the seed
    assert seeded.best_score >= score((4, 5))
    assert (4, 5) in [s for s, _ in seeded.trace[1].evaluated]  # scored in the step of its size
    assert all(len(s) == st.n_layers for st in seeded.trace for s, _ in st.evaluated)
    assert len(counted.calls) == len(set(counted.calls))  # still one call per distinct set


def test_initial_sets_are_checked():
    for bad in ([()], [(0, 99)], [tuple(range(8))]):
        with pytest.raises(ValueError, match="initial sets"):
            beam_search(CANDIDATES, additive_score, max_layers=4, initial=bad)
    with pytest.raises(ValueError, match="initial sets"):
        beam_search(CANDIDATES, additive_score, base_candidates=[0, 1], initial=[(2, 3)])
    assert beam_search(CANDIDATES, additive_score, initial=[]) == beam_search(CANDIDATES, additive_score)
