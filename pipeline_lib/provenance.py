"""What is recorded next to every artifact: the config that made it, the seed, library versions."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any, Mapping

TRACKED_PACKAGES = ("pipeline_lib", "torch", "torchvision", "numpy", "scikit-learn", "zarr", "snakemake",
                    "gco-wrapper", "efficientnet-lite-pytorch")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(config: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """A JSON-able record: {config, seed, versions, torch threads}; ``seed`` None for an artifact that draws
    nothing at random. No timestamps, so reruns are byte-identical."""
    import torch

    return {"config": dict(config), "seed": None if seed is None else int(seed), "versions": library_versions(),
            "torch_threads": torch.get_num_threads()}
