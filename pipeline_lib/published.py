"""Numbers the papers PUBLISHED, as data: quoted from /work/shared/papers (table cited per row), never ours.

PCK in percent at alpha = 0.05 / 0.1 / 0.15 (None where the source gives no value); ``ms_per_pair``
is the published inference time per pair (GPU) where a table gives one. Protocols differ between
rows and from ours (threshold box, image size, pairs): the ``protocol`` field says which.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    dataset: str
    method: str
    backbone: str
    pck: tuple[float | None, float | None, float | None]  # alpha = 0.05, 0.1, 0.15
    protocol: str
    source: str
    ms_per_pair: float | None = None


ALPHAS = (0.05, 0.1, 0.15)
BBOX = "alpha x max(h, w) of the object box"
BBOX_HW = "alpha x box height and width"
IMG = "alpha x max(h, w) of the image"

PUBLISHED = (
    # PF-WILLOW: 900 pairs, 10 classes (Min et al. evaluate it with alpha_bbox, Sec. 5).
    Published("PF-WILLOW", "HPF", "ResNet-101", (45.9, 74.4, 85.6), BBOX,
              "Min et al. 2019, Table 2 (layers searched on PF-PASCAL val)"),
    Published("PF-WILLOW", "HPF", "ResNet-50", (46.5, 72.4, 84.7), BBOX, "Min et al. 2019, Table 2"),
    Published("PF-WILLOW", "HPF hyperpixels + NN (d=1)", "ResNet-101", (None, 60.9, None), BBOX,
              "Min et al. 2019, Table 5 (ablation)"),
    Published("PF-WILLOW", "SFNet", "ResNet-101", (None, 74.0, None), BBOX_HW, "Lee et al. 2019, Table 1"),
    Published("PF-WILLOW", "WeakAlign", "ResNet-101", (37.0, 70.2, 79.9), BBOX,
              "Min et al. 2019, Table 2 (from Kim et al. 2018 [23])"),
    Published("PF-WILLOW", "WeakAlign (WS-SA)", "ResNet-101", (None, 71.0, None), BBOX_HW,
              "Lee et al. 2019, Table 1"),
    Published("PF-WILLOW", "FCSS + SIFT Flow", "VGG-16 to conv3-4 + CSS", (35.4, 53.2, 68.1), BBOX,
              "Kim et al. 2017, Tables 3-4 (Proposal Flow benchmark)"),
    Published("PF-WILLOW", "FCSS + Proposal Flow", "VGG-16 to conv3-4 + CSS", (29.5, 58.4, 71.5), BBOX,
              "Kim et al. 2017, Table 4 (Proposal Flow benchmark)"),
    Published("PF-WILLOW", "Identity mapping", "-", (12.2, 27.0, 41.7), BBOX, "Min et al. 2019, Table 2"),
    # PF-PASCAL test split (Min et al.: alpha_img; Lee et al.: box height and width).
    Published("PF-PASCAL", "HPF", "ResNet-101", (60.1, 84.8, 92.7), IMG, "Min et al. 2019, Tables 2 and 4", 63.0),
    Published("PF-PASCAL", "HPF", "ResNet-50", (60.5, 83.4, 92.1), IMG, "Min et al. 2019, Tables 2 and 4", 34.0),
    Published("PF-PASCAL", "SFNet", "ResNet-101", (None, 79.0, None), BBOX_HW, "Lee et al. 2019, Table 1"),
    Published("PF-PASCAL", "WeakAlign", "ResNet-101", (49.0, 74.8, 84.0), IMG, "Min et al. 2019, Tables 2 and 4",
              41.0),
    Published("PF-PASCAL", "WeakAlign", "ResNet-101", (None, 75.8, None),
              "alpha x image width and height", "Rocco et al. 2018, Table 2"),
    Published("PF-PASCAL", "FCSS + PF-LOM", "VGG-16 to conv3-4 + CSS", (None, 46.0, None), BBOX_HW,
              "Lee et al. 2019, Table 1"),
    Published("PF-PASCAL", "Identity mapping", "-", (12.7, 37.0, 60.8), IMG, "Min et al. 2019, Table 2"),
    # Gaur & Manjunath report no PF-WILLOW / PF-PASCAL number: keypoint transfer from the top-25 retrieved
    # training images through the Siamese network, Berkeley PASCAL 2011 keypoints, mean of 20 classes.
    Published("Berkeley PASCAL 2011 keypoints", "Gaur & Manjunath (Siamese, top-25 retrieval)", "VGG-16",
              (None, 53.1, None), "PCK as in Long et al. 2014, 20-class mean",
              "Gaur & Manjunath 2017, Table 2"),
)

__all__ = ["Published", "PUBLISHED", "ALPHAS"]
