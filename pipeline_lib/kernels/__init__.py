"""Tensor kernels shared by the papers: pure functions, each written once, owned by no paper.

- :mod:`.grids` - pixel and cell grids, pixel <-> normalised (``grid_sample``) coordinates, cell centres;
- :mod:`.correlation` - L2 normalisation and dense correlation of two feature maps;
- :mod:`.soft_argmax` - kernel soft argmax and the matches of a correlation (SFNet, Lee et al. 2019);
- :mod:`.sampling` - bilinear / nearest / confidence-masked sampling of maps at points;
- :mod:`.flow` - dense flow resampling: grid flow to image flow, between resolutions;
- :mod:`.warps` - affine maps and thin-plate splines, their composition and inverses (Newton);
- :mod:`.hyperpixels` - hyperpixels: per-layer L2-normalised maps stacked on the base grid (Min et al. 2019).

Paper packages import these; this package imports no paper (``tests/unit/test_import_graph.py``).
Coordinate conventions are those of ``pipeline_lib/__init__.py``.
"""
