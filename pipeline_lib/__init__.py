"""Dense semantic correspondence pipeline (Gaur & Manjunath 2017, Hyperpixel Flow and baselines).

Coordinate conventions, used everywhere in the package:

- keypoints: (K, 2) float arrays/tensors in xy pixel coordinates; pixel centres at integers
  (0-based), so a keypoint at column 3, row 5 is (3.0, 5.0);
- image sizes: (H, W); feature maps: (C, h, w); dense flow: (H, W, 2) xy displacement;
- feature cell (i, j) of an (h, w) map on an (H, W) image is centred at
  ((j + 0.5) * W / w - 0.5, (i + 0.5) * H / h - 0.5)  (see ``pipeline_lib.kernels.grids.cell_centres``);
- invalid or padded entries are marked by boolean masks, never by sentinel values.
"""

__version__ = "0.1.0"
