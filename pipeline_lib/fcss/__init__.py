"""FCSS: fully convolutional self-similarity descriptors (Kim et al., CVPR 2017).

- :mod:`.css`: the CSS layer (learned shift pairs, exp gating, max pooling, L2 norm);
- :mod:`.model`: CSS layers after chosen backbone layers, concatenated (``FCSS``, ``build_fcss``);
- :mod:`.loss`: the correspondence contrastive loss (Eq. 13);
- :mod:`.supervision`: forward-backward NN consistency inside object regions (Sec. 3.4);
- :mod:`.train`: loss function and batches for :func:`pipeline_lib.training.fit`;
- :mod:`.predict`: keypoint transfer by nearest neighbour on FCSS descriptors (``DescriptorFrame``, for
  :func:`pipeline_lib.pair_prediction.predict_pairs`).
"""

from .css import CSSLayer, self_similarity, shifted
from .loss import MARGIN, contrastive_loss
from .model import FCSS, FCSSConfig, build_fcss
from .predict import DescriptorFrame, describe, predict_keypoints
from .supervision import ConsistencySets, consistency_sets, mutual_nearest, nearest_neighbours, sample_pairs
from .train import (FCSSTrainConfig, TrainBatch, TrainPair, build_training_pairs, make_batches, make_loss_fn,
                    train_fcss)

__all__ = ["CSSLayer", "self_similarity", "shifted", "MARGIN", "contrastive_loss", "FCSS", "FCSSConfig",
           "build_fcss", "DescriptorFrame", "describe", "predict_keypoints",
           "ConsistencySets", "consistency_sets", "mutual_nearest", "nearest_neighbours", "sample_pairs",
           "FCSSTrainConfig", "TrainBatch", "TrainPair", "build_training_pairs", "make_batches", "make_loss_fn",
           "train_fcss"]
