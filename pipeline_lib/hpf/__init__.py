"""Hyperpixel Flow (Min et al., ICCV 2019): regularized Hough matching (RHM), keypoint transfer and beam
search over layer sets. Pure tensor functions; see each module. Hyperpixels themselves, shared with Gaur
et al.'s chain, are :mod:`pipeline_lib.kernels.hyperpixels`."""

from .beam_search import BeamSearchResult, BeamStep, beam_search, decode_layers, encode_layers
from ..kernels.rhm import (
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
from ..kernels.keypoint_transfer import transfer_keypoints

__all__ = [
    "BeamSearchResult",
    "BeamStep",
    "HoughSpace",
    "appearance_similarity",
    "assign",
    "beam_search",
    "build_hough_space",
    "decode_layers",
    "encode_layers",
    "hough_kernel",
    "hough_votes",
    "nn_match",
    "offset_bin_ids",
    "rhm",
    "rhm_scores",
    "transfer_keypoints",
]
