"""The method registry: every method's name, the rule that predicts it, and the artifacts it needs.

One table that the config schema's ``methods`` enum, the rules' ``method`` wildcards and the workflow's
target list are built from or checked against (``tests/unit/test_method_registry.py``). It imports no
paper: a feature-based method names its predictor factory as ``"module:function"``
(:func:`predictor_factory` imports it when a prediction job runs), so the Snakefile reads this table
without loading every paper.

Every trained method is evaluated twice through the same prediction path: with its trained weights
(``<method>``) and with the weights it started from (``<method>@init``, saved by its train stage as
``init.pt`` before the first optimisation step), so every result table shows what training bought.
``gaur_hpf``'s starting point is the ImageNet encoder, i.e. the ``hpf`` row of the same table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterable

INIT_SUFFIX = "@init"

# Artifacts a method's prediction needs (besides the dataset's index).
FEATURES = "features"  # the backbone's cached feature store
SEARCH = "search"  # a hyperpixel layer search record
ENCODER = "encoder"  # the Siamese-trained encoder's feature store (keyed by its checkpoint)
PSEUDO_FLOW = "pseudo_flow"  # the manifold's pseudo ground-truth flow (Gaur et al. Sec. 4)
TRAINED = "trained"  # its own train stage: <backbone>/<method>/{init,model}.pt


@dataclass(frozen=True)
class Method:
    """One evaluated method: ``rule`` predicts it. A feature-based method names its ``predictor``
    factory ``(variant, cfg, store, search_json, device) -> (Predictor, params)``, called with
    ``runs_as`` (another method's variant on this method's store) or the method's own name; a trained
    method names the ``predict`` stage ``(cfg, backbone, weights, out_csv, meta_json, method)`` of its
    paper, run once with the trained and once with the initial weights."""

    name: str
    rule: str
    needs: tuple[str, ...]
    summary: str
    predictor: str | None = None
    runs_as: str | None = None
    predict: str | None = None
    reads: tuple[str, ...] = ()  # config sections its predictor reads besides the predict stage's own
    # A trained method's ``(cfg, backbone, weights, device, images) -> (KeypointFn, Frame | None)`` on any
    # images (``python -m pipeline_lib match``, the report's warp pictures).
    match: str | None = None
    dense_flow: bool = False  # it predicts a dense flow field (pictured as the source warped onto the target)

    @property
    def variant(self) -> str:
        return self.runs_as or self.name

    @property
    def trained(self) -> bool:
        return TRAINED in self.needs


METHODS: tuple[Method, ...] = (
    Method("nn", "predict_nn", (FEATURES,), "NN baseline on nn.layer", "pipeline_lib.methods.stage:nn_method",
           reads=("nn", "transfer")),
    Method("nn_stage_ends", "predict_nn", (FEATURES,),
           "NN on the backbone's stage-end layers (strides 8/16/32) as one hyperpixel, no search: the fixed bar",
           "pipeline_lib.methods.stage:nn_stage_ends_method", reads=("transfer",)),
    Method("nn_best_layer", "predict_hpf", (FEATURES, SEARCH),
           "NN baseline on its best single layer on the validation split", "pipeline_lib.hpf.stage:predictor",
           reads=("hpf", "transfer")),
    Method("hpf", "predict_hpf", (FEATURES, SEARCH), "RHM on beam-searched hyperpixels (Min et al. 2019)",
           "pipeline_lib.hpf.stage:predictor", reads=("hpf", "transfer")),
    Method("hpf_nn", "predict_hpf", (FEATURES, SEARCH), "NN on the same hyperpixels (what RHM adds)",
           "pipeline_lib.hpf.stage:predictor", reads=("hpf", "transfer")),
    Method("hpf_single", "predict_hpf", (FEATURES, SEARCH), "RHM on the best single layer of the search",
           "pipeline_lib.hpf.stage:predictor", reads=("hpf", "transfer")),
    Method("hpf_ot", "predict_hpf", (FEATURES, SEARCH),
           "optimal transport with RHM's Hough prior on the same hyperpixels (SCOT, Liu et al. 2020)",
           "pipeline_lib.hpf.stage:predictor", reads=("hpf", "transfer")),
    Method("hpf_ot_only", "predict_hpf", (FEATURES, SEARCH), "optimal transport alone on the same hyperpixels "
           "(what the Hough prior adds to it)", "pipeline_lib.hpf.stage:predictor", reads=("hpf", "transfer")),
    Method("siamese", "predict_siamese", (PSEUDO_FLOW, TRAINED),
           "Siamese flow network trained on pseudo ground truth (Gaur & Manjunath 2017)",
           predict="pipeline_lib.siamese.stage:predict", match="pipeline_lib.siamese.stage:match_predictor",
           dense_flow=True),
    Method("gaur_hpf", "predict_gaur_hpf", (ENCODER, SEARCH, PSEUDO_FLOW),
           "hpf on the Siamese-trained encoder's features (the full chain)", "pipeline_lib.hpf.stage:predictor",
           runs_as="hpf", reads=("hpf", "transfer")),
    Method("sfnet", "predict_sfnet", (TRAINED,), "SFNet (Lee et al. 2019)", predict="pipeline_lib.sfnet.stage:predict",
           match="pipeline_lib.sfnet.stage:match_predictor", dense_flow=True),
    Method("cnngeometric", "predict_cnngeometric", (TRAINED,),
           "CNNGeometric (Rocco et al. 2017): affine + TPS regression trained on synthetic warps",
           predict="pipeline_lib.weakalign.stage:predict", match="pipeline_lib.weakalign.stage:match_predictor",
           dense_flow=True),
    Method("weakalign", "predict_weakalign", (TRAINED,), "WeakAlign (Rocco et al. 2018), fine-tuned from cnngeometric",
           predict="pipeline_lib.weakalign.stage:predict", match="pipeline_lib.weakalign.stage:match_predictor",
           dense_flow=True),
    Method("fcss", "predict_fcss", (TRAINED,), "FCSS descriptors (Kim et al. 2017)",
           predict="pipeline_lib.fcss.stage:predict", match="pipeline_lib.fcss.stage:match_predictor"),
)
BY_NAME = {m.name: m for m in METHODS}
METHOD_NAMES = tuple(BY_NAME)
TRAINED_METHODS = tuple(m.name for m in METHODS if m.trained)
PSEUDO_GT_METHODS = frozenset(m.name for m in METHODS if PSEUDO_FLOW in m.needs)
DENSE_FLOW_METHODS = tuple(m.name for m in METHODS if m.dense_flow)


def method(name: str) -> Method:
    """The registry entry of ``name`` (``<m>@init`` gives ``<m>``'s); a clear error for an unknown one."""
    try:
        return BY_NAME[base_method(name)]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(METHOD_NAMES)}") from None


def predicted_by(rule: str) -> tuple[str, ...]:
    """Names of the methods whose predictions ``rule`` writes (its ``method`` wildcard's values)."""
    return tuple(m.name for m in METHODS if m.rule == rule)


def reads_of_rule(rule: str) -> tuple[str, ...]:
    """The config sections the predictors of ``rule``'s methods read (its rerun params add them)."""
    return tuple(sorted({r for m in METHODS if m.rule == rule for r in m.reads}))


def _load(spec: str) -> Callable:
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def predictor_factory(name: str) -> Callable:
    """The predictor factory of a feature-based method, imported from the module the registry names."""
    m = method(name)
    if m.predictor is None:
        raise ValueError(f"method '{name}' is not feature-based: rule {m.rule} predicts it with its own model")
    return _load(m.predictor)


def predict_stage(name: str) -> Callable:
    """The ``predict`` stage of a trained method, imported from its paper's stage module."""
    m = method(name)
    if m.predict is None:
        raise ValueError(f"method '{name}' has no model of its own: rule {m.rule} predicts it from cached features")
    return _load(m.predict)


def match_factory(name: str) -> Callable:
    """A trained method's factory ``(cfg, backbone, weights, device, images) -> (KeypointFn, Frame | None)`` on any
    images (every trained method has one)."""
    m = method(name)
    if m.match is None:
        raise ValueError(f"method '{name}' has no model of its own: match runs it from features")
    return _load(m.match)


def evaluated_methods(methods: Iterable[str]) -> list[str]:
    """The rows of the result table, in order: each trained method followed by its ``@init`` row."""
    out: list[str] = []
    for m in methods:
        out.append(m)
        if m in TRAINED_METHODS:
            out.append(m + INIT_SUFFIX)
    return list(dict.fromkeys(out))


# What a composite backbone (several backbones as one store, ``a+b``) can serve: methods read from cached
# features and searches; a network trained on one backbone, or the manifold of one backbone's layer, cannot.
FEATURE_ONLY_NEEDS = frozenset({FEATURES, SEARCH})


def check_backbones(backbones: Iterable[str], methods: Iterable[str], manifold_run: bool,
                    composite_sep: str = "+") -> None:
    """Refuse (ValueError naming the backbone, the methods and the fix) a composite backbone beside methods that
    train a network or read the manifold, or with ``manifold.run``."""
    composite = [b for b in backbones if composite_sep in b]
    if not composite:
        return
    single = [m for m in methods if not set(method(m).needs) <= FEATURE_ONLY_NEEDS]
    if single or manifold_run:
        feature_only = [m.name for m in METHODS if set(m.needs) <= FEATURE_ONLY_NEEDS]
        raise ValueError(f"backbones {composite} are composite (several backbones as one feature store): they serve "
                         f"the methods that read cached features ({', '.join(feature_only)}), not "
                         f"{single or ['manifold.run: true']}. Run those on single backbones in a config of their "
                         f"own, or drop them from methods (and set manifold.run: false) here.")


def base_method(row_method: str) -> str:
    """``siamese@init`` -> ``siamese``; other names unchanged."""
    return row_method[: -len(INIT_SUFFIX)] if row_method.endswith(INIT_SUFFIX) else row_method


__all__ = ["Method", "METHODS", "METHOD_NAMES", "TRAINED_METHODS", "PSEUDO_GT_METHODS", "INIT_SUFFIX", "method",
           "predicted_by", "reads_of_rule", "predictor_factory", "predict_stage", "match_factory", "evaluated_methods", "base_method",
           "check_backbones"]
