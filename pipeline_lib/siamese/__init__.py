"""Siamese flow network trained on manifold pseudo ground truth (Gaur et al. Sec. 5-6).

- ``model``: :class:`SiameseFlowNet` (weight-shared encoder, stacked bottleneck, skip decoder; optionally
  ``fusion="correlation"``: a soft-argmax matched coarse flow the decoder refines);
- ``loss``: truncated Euclidean loss (Eq. 10; T is our reading, ``truncation``), its per-batch metrics
  (``under_T``, ``epe_px``) and ``batch_loss`` for ``training.fit``;
- ``augment``: rotation/scale augmentation with consistent flow targets;
- ``data``: training pairs, flow providers and the ``batches(epoch, generator)`` factory;
- ``stored_features``: the match adapters trained on stored feature maps (``siamese.train_on: features``);
- ``predict``: keypoint transfer and the top-K retrieval protocol (``predict_by_retrieval``).

Flow everywhere: (..., H, W, 2) xy pixels, source pixel p -> target point p + F(p).
"""

from .augment import AugmentConfig, augment_pair, transform_flow
from .data import (FlowBatch, ManifoldEmbeddings, PseudoFlowStores, SiamesePairData, batch_factory,
                   demo_flow_provider, grid_flow_provider, pseudo_flow_provider)
from .loss import TRUNCATIONS, batch_loss, flow_metrics, truncated_euclidean_loss, truncation_px2
from .model import SiameseFlowNet, auto_layers
from .predict import (predict_by_retrieval, predict_keypoints, retrieve_top_k, siamese_keypoint_fn,
                      transfer_from_neighbours)

__all__ = ["AugmentConfig", "augment_pair", "transform_flow", "FlowBatch", "ManifoldEmbeddings", "PseudoFlowStores",
           "SiamesePairData", "batch_factory", "demo_flow_provider", "grid_flow_provider", "pseudo_flow_provider",
           "batch_loss", "flow_metrics", "TRUNCATIONS", "truncated_euclidean_loss", "truncation_px2", "SiameseFlowNet", "auto_layers",
           "predict_keypoints", "predict_by_retrieval", "siamese_keypoint_fn", "retrieve_top_k",
           "transfer_from_neighbours"]
