"""Hyperpixel Flow (Min et al., ICCV 2019): hyperpixels, regularized Hough matching (RHM),
keypoint transfer and beam search over layer sets. Pure tensor functions; see each module."""

from .beam_search import BeamSearchResult, BeamStep, beam_search, decode_layers, encode_layers
from .hyperpixel import build_hyperpixels, flatten_hyperpixels
from .rhm import (
    HoughSpace,
    appearance_similarity,
    assign,
    build_hough_space,
    hough_kernel,
    hough_votes,
    nn_match,
    offset_bin_ids,
    rhm,
    rhm_scores,
)
from .transfer import transfer_keypoints

__all__ = [
    "BeamSearchResult",
    "BeamStep",
    "HoughSpace",
    "appearance_similarity",
    "assign",
    "beam_search",
    "build_hough_space",
    "build_hyperpixels",
    "decode_layers",
    "encode_layers",
    "flatten_hyperpixels",
    "hough_kernel",
    "hough_votes",
    "nn_match",
    "offset_bin_ids",
    "rhm",
    "rhm_scores",
    "transfer_keypoints",
]
