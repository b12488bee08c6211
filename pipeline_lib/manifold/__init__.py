"""Gaur et al. (2017) manifold learning and label refinement (Algorithm 1).

Modules:

- :mod:`.kfd` -- ``KernelFisherDiscriminant`` (exact and Nystroem solvers);
- :mod:`.clustering` -- ``scalable_ward`` (Ward HAC on a sample + nearest centroid);
- :mod:`.sop_model` -- Gaussian SOP models, unary costs, model change (Eq. 5-7);
- :mod:`.graphcut` -- PyGCO wrapper with crash isolation, geodesic pairwise (Eq. 8-9);
- :mod:`.rows` -- a category's features as rows read a block of images at a time (``ImageRows``);
- :mod:`.algorithm1` -- Algorithm 1 itself: ``ManifoldConfig``, ``run_manifold`` (its loop calls the others).
- :mod:`.measures` -- ``keypoint_label_agreement``, ``keypoint_part_ami`` (part separation at keypoints).

The names below are re-exported lazily (PEP 562): importing ``pipeline_lib.manifold.graphcut``
(as the isolated graph-cut worker does) does not import scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "KernelFisherDiscriminant": "kfd",
    "scalable_ward": "clustering",
    "relabel_compact": "clustering",
    "SOPModels": "sop_model",
    "fit_sop_models": "sop_model",
    "unary_costs": "sop_model",
    "model_change": "sop_model",
    "rotate_sop_models": "sop_model",
    "GraphCutError": "graphcut",
    "refine_labels": "graphcut",
    "refine_labels_batch": "graphcut",
    "geodesic_pairwise": "graphcut",
    "grid_edges": "graphcut",
    "labeling_energy": "graphcut",
    "is_metric": "graphcut",
    "ManifoldConfig": "algorithm1",
    "ManifoldResult": "algorithm1",
    "run_manifold": "algorithm1",
    "keypoint_label_agreement": "measures",
    "keypoint_part_ami": "measures",
    "fraction_changed": "algorithm1",
    "l2_normalize": "rows",
    "prepare_features": "rows",
    "ImageRows": "rows",
    "ArrayRows": "rows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see ordinary imports
    from .algorithm1 import ManifoldConfig, ManifoldResult, fraction_changed, run_manifold
    from .clustering import relabel_compact, scalable_ward
    from .graphcut import (
        GraphCutError,
        geodesic_pairwise,
        grid_edges,
        is_metric,
        labeling_energy,
        refine_labels,
        refine_labels_batch,
    )
    from .kfd import KernelFisherDiscriminant
    from .measures import keypoint_label_agreement, keypoint_part_ami
    from .rows import ArrayRows, ImageRows, l2_normalize, prepare_features
    from .sop_model import SOPModels, fit_sop_models, model_change, rotate_sop_models, unary_costs
