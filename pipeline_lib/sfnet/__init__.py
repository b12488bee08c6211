"""SFNet: object-aware semantic flow learnt from foreground masks (Lee, Kim, Ponce, Ham, CVPR 2019).

- :mod:`.model` - adaptation layers, L2-normalised correlation, kernel soft argmax (``SFNet``; the
  kernels, with beta and sigma, are :mod:`pipeline_lib.kernels.correlation` and ``.soft_argmax``);
- :mod:`.losses` - mask consistency, flow consistency, smoothness (Lee et al. Eq. 4);
- :mod:`.synthetic` - training pairs: an image and its random affine warp, masks and exact flow;
- :mod:`.train` - batches factory and loss function for :func:`pipeline_lib.training.fit`;
- :mod:`.predict` - keypoint transfer through the dense flow.

Coordinate conventions are in the :mod:`.model` docstring.
"""

from .losses import LAMBDA_FLOW, LAMBDA_MASK, LAMBDA_SMOOTH, SFNetLossConfig, sfnet_loss
from .model import CITATION, NAME, SFNet, SFNetConfig, SFNetOutput, build_sfnet
from .predict import dense_flow, predict_keypoints, sfnet_keypoint_fn
from .synthetic import SyntheticBatch, SyntheticConfig, exact_flow, make_pairs, random_affine
from .train import (SFNetSettings, image_mask, load_images, make_batches, make_loss_fn, settings_from_config,
                    train_sfnet, training_image_ids)

__all__ = [
    "NAME", "CITATION", "LAMBDA_MASK", "LAMBDA_FLOW", "LAMBDA_SMOOTH",
    "SFNet", "SFNetConfig", "SFNetOutput", "SFNetLossConfig", "SyntheticConfig", "SyntheticBatch",
    "build_sfnet", "sfnet_loss",
    "make_pairs", "random_affine", "exact_flow", "training_image_ids", "load_images", "image_mask",
    "make_batches", "make_loss_fn", "train_sfnet", "predict_keypoints", "dense_flow",
    "sfnet_keypoint_fn", "SFNetSettings", "settings_from_config",
]
