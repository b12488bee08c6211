"""Method-agnostic evaluation: PCK from predicted keypoints, per pair, per category and overall."""

from .pck import pck_counts, pck_threshold
from .predictions import oriented, read_predictions, write_predictions
from .summary import evaluate_predictions, summarise, write_summary_tables

__all__ = ["pck_counts", "pck_threshold", "oriented", "read_predictions", "write_predictions",
           "evaluate_predictions", "summarise", "write_summary_tables"]
