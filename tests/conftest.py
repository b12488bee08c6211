"""Shared fixtures: repository paths, the real-data location and small fixture trees."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PF_WILLOW = Path(os.environ.get("PF_WILLOW_ROOT", REPO.parent / "shared" / "data" / "pf-willow"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread, which also avoids oversubscribing a shared CPU (use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def pf_willow_root() -> Path:
    if not (PF_WILLOW / "test_pairs.csv").is_file():
        pytest.skip(f"real PF-WILLOW data not found at {PF_WILLOW} (set PF_WILLOW_ROOT)")
    return PF_WILLOW


def write_png(path: Path, h: int = 40, w: int = 60, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="session")
def tiny_demo_store(tmp_path_factory):
    """A tiny generated demo (2 photos x 3 images, 128 px) and its Lite0 feature store."""
    import torch

    from pipeline_lib.backbones import build_backbone
    from pipeline_lib.datasets import demo_synthesis, open_dataset
    from pipeline_lib.features import FeatureStore, extract_features
    from pipeline_lib.settings import DemoSection

    root = tmp_path_factory.mktemp("tiny_demo")
    demo_synthesis.generate(root / "data", DemoSection(photos=("chelsea", "astronaut"), images_per_category=3,
                                             image_size=128, n_keypoints=8), seed=2)
    index = open_dataset("demo", root / "data", split_mode="given")
    extract_features(index, build_backbone("efficientnet_lite0"), root / "f.zarr", 128, 3, torch.device("cpu"))
    return index, FeatureStore(root / "f.zarr")
