"""WeakAlign: end-to-end weakly supervised semantic alignment (Rocco, Arandjelovic, Sivic, CVPR 2018).

- :mod:`.model` - L2-normalised features, normalised correlation, affine then TPS regression (``WeakAlign``);
- :mod:`.losses` - the soft-inlier count with a warped identity mask;
- :mod:`.train` - batches factory (same-category training pairs) and loss function for ``training.fit``;
- :mod:`.predict` - keypoint transfer by the estimated transforms.

The affine and TPS maps, their composition and inverses are :mod:`pipeline_lib.kernels.warps` (its
docstring holds the coordinate conventions).
"""

from .losses import INLIER_THRESHOLD_FRACTION, WeakAlignLossConfig, identity_mask, soft_inlier_count, weakalign_loss
from .model import (CITATION, NAME, TPS_GRID_SIZE, GeometricRegression, WeakAlign, WeakAlignConfig, WeakAlignOutput,
                    build_weakalign, normalised_correlation)
from .predict import TRANSFER_MODES, estimate, predict_keypoints, weakalign_keypoint_fn
from .train import (AugmentConfig, PairBatch, WeakAlignSettings, load_pair_images, make_batches, make_loss_fn,
                    settings_from_config, train_weakalign, training_pairs)

__all__ = [
    "NAME", "CITATION", "INLIER_THRESHOLD_FRACTION", "TRANSFER_MODES", "TPS_GRID_SIZE",
    "WeakAlign", "WeakAlignConfig", "WeakAlignOutput", "WeakAlignLossConfig", "AugmentConfig", "PairBatch",
    "GeometricRegression", "build_weakalign", "normalised_correlation",
    "identity_mask", "soft_inlier_count", "weakalign_loss",
    "training_pairs", "load_pair_images", "make_batches", "make_loss_fn", "train_weakalign",
    "estimate", "predict_keypoints", "weakalign_keypoint_fn", "WeakAlignSettings",
    "settings_from_config",
]
