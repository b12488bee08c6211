"""Pseudo ground-truth flow (Gaur et al. Sec. 2.1, 5): the second stage of Gaur et al.'s chain, between the
manifold (:mod:`pipeline_lib.manifold`) and the Siamese network (:mod:`pipeline_lib.siamese`).

- :mod:`.construct` - nearest-neighbour flow in the embedding (or raw / concatenated features) with a
  confidence mask, and the references it is scored against;
- :mod:`.quality` - keypoint PCK, confident fraction and, against an exact flow, end-point error;
- :mod:`.stage` - the workflow stages: ``make`` writes ``pseudo_flow.zarr``, ``score_all`` the quality tables.
"""

from .construct import (CONFIDENCE_MODES, FEATURE_SOURCES, METRICS, matching_features, nearest_neighbours,
                        part_chance_flow, pseudo_flow, same_label_flow)
from .quality import confident_fraction, flow_quality, moved_keypoints, pair_quality

__all__ = ["pseudo_flow", "same_label_flow", "part_chance_flow", "nearest_neighbours", "matching_features",
           "FEATURE_SOURCES", "METRICS", "CONFIDENCE_MODES", "flow_quality", "moved_keypoints", "confident_fraction",
           "pair_quality"]
