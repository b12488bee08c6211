"""WeakAlign: end-to-end weakly supervised semantic alignment (Rocco, Arandjelovic, Sivic, CVPR 2018).

- :mod:`.model` - L2-normalised features, normalised correlation, affine then TPS regression (``WeakAlign``);
- :mod:`.geometry` - affine and 3x3 TPS maps, grids, their composition and inverses (torch);
- :mod:`.losses` - the soft-inlier count with a warped identity mask;
- :mod:`.train` - batches factory (same-category training pairs) and loss function for ``training.fit``;
- :mod:`.predict` - keypoint transfer by the estimated transforms.

Coordinate conventions are in the :mod:`.geometry` docstring.
"""

from ..sfnet.predict import predict_pairs
from .geometry import (affine_grid, affine_points, composed_grid, composed_points, identity_affine, identity_tps,
                       inverse_composed_points, invert_affine, invert_tps_points, tps_control_points, tps_grid,
                       tps_points)
from .losses import INLIER_THRESHOLD_FRACTION, WeakAlignLossConfig, identity_mask, soft_inlier_count, weakalign_loss
from .model import (CITATION, NAME, GeometricRegression, WeakAlign, WeakAlignConfig, WeakAlignOutput,
                    build_weakalign, normalised_correlation)
from .predict import TRANSFER_MODES, estimate, predict_keypoints, weakalign_keypoint_fn
from .train import (AugmentConfig, PairBatch, WeakAlignSettings, load_pair_images, make_batches, make_loss_fn,
                    settings_from_config, train_weakalign, training_pairs)

__all__ = [
    "NAME", "CITATION", "INLIER_THRESHOLD_FRACTION", "TRANSFER_MODES",
    "WeakAlign", "WeakAlignConfig", "WeakAlignOutput", "WeakAlignLossConfig", "AugmentConfig", "PairBatch",
    "GeometricRegression", "build_weakalign", "normalised_correlation",
    "affine_grid", "affine_points", "invert_affine", "identity_affine", "identity_tps", "tps_control_points",
    "tps_points", "tps_grid", "composed_points", "composed_grid", "invert_tps_points", "inverse_composed_points",
    "identity_mask", "soft_inlier_count", "weakalign_loss",
    "training_pairs", "load_pair_images", "make_batches", "make_loss_fn", "train_weakalign",
    "estimate", "predict_keypoints", "weakalign_keypoint_fn", "predict_pairs", "WeakAlignSettings",
    "settings_from_config",
]
