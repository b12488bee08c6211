"""Describe any artifact of the workflow (Zarr store, CSV, JSON) and draw one image's entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from .features import FeatureStore
from .training import load_checkpoint

MAX_ATTR_CHARS = 600


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_ATTR_CHARS else text[:MAX_ATTR_CHARS] + f"... ({len(text)} chars)"


def describe(path: str | Path, max_groups: int = 5) -> str:
    """A text description: arrays (shape, dtype, chunks), attributes and the config that made it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".csv":
        lines = path.read_text().splitlines()
        return f"{path}: CSV, {len(lines) - 1} rows\n" + "\n".join(lines[:12])
    if path.suffix == ".json":
        return f"{path}: JSON\n" + json.dumps(json.loads(path.read_text()), indent=2)[:4000]
    if path.suffix == ".pt":
        return describe_checkpoint(path)
    root = zarr.open(str(path), mode="r")
    out = [f"{path}: Zarr {'group' if isinstance(root, zarr.Group) else 'array'}"]
    for k, v in dict(root.attrs).items():
        out.append(f"  @{k} = {_short(v)}")
    if isinstance(root, zarr.Array):
        out.append(f"  shape={root.shape} dtype={root.dtype} chunks={root.chunks}")
        return "\n".join(out)
    _walk(root, out, "  ", max_groups)
    return "\n".join(out)


def describe_checkpoint(path: Path, max_tensors: int = 12) -> str:
    """A torch checkpoint (final weights or a training checkpoint): metadata, epoch, loss history,
    and the shapes of the first ``max_tensors`` weights."""
    state = load_checkpoint(path)
    weights = state.get("model", {})
    n_params = sum(int(t.numel()) for t in weights.values() if hasattr(t, "numel"))
    out = [f"{path}: torch checkpoint, {len(weights)} tensors, {n_params:,} values"]
    for key in ("meta", "epoch", "fingerprint"):
        if key in state:
            out.append(f"  @{key} = {_short(state[key])}")
    for h in state.get("history", []):
        out.append(f"  epoch {h['epoch']}: loss {h['loss']:.5f} ({h['n_batches']} batches, {h['seconds']} s)")
    for i, (name, t) in enumerate(weights.items()):
        if i == max_tensors:
            out.append(f"  ... {len(weights) - max_tensors} more tensors")
            break
        out.append(f"  {name}: {tuple(t.shape)} {t.dtype}")
    return "\n".join(out)


def _walk(group, out: list[str], indent: str, max_groups: int) -> None:
    members = sorted(group.members(), key=lambda kv: kv[0])
    subgroups = [(k, v) for k, v in members if isinstance(v, zarr.Group)]
    for k, v in members:
        if isinstance(v, zarr.Array):
            out.append(f"{indent}{k}: shape={v.shape} dtype={v.dtype} chunks={v.chunks}")
    for i, (k, v) in enumerate(subgroups):
        if i == max_groups:
            out.append(f"{indent}... {len(subgroups) - max_groups} more groups")
            break
        attrs = {a: _short(b) for a, b in dict(v.attrs).items()}
        out.append(f"{indent}{k}/ {attrs if attrs else ''}")
        _walk(v, out, indent + "  ", max_groups)


def pca_rgb(feat: np.ndarray) -> np.ndarray:
    """(C, h, w) features -> (h, w, 3) colours from their first three principal components."""
    c, h, w = feat.shape
    x = feat.reshape(c, -1).T
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    p = x @ vt[:3].T
    if p.shape[1] < 3:
        p = np.pad(p, ((0, 0), (0, 3 - p.shape[1])))
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    return np.clip((p - lo) / np.maximum(hi - lo, 1e-8), 0, 1).reshape(h, w, 3)


def save_feature_picture(store_path: str | Path, image_id: str | None, layer: str | None, out_png: str | Path) -> str:
    """Save the image beside a PCA colouring of one layer of its features; returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = FeatureStore(store_path)
    image_id = image_id or store.image_ids[0]
    layer = store.resolve_layer(layer or "auto")
    feat = store.get(image_id, [layer])[layer]
    fig, ax = plt.subplots(1, 1, figsize=(4, 4))
    ax.imshow(pca_rgb(feat), interpolation="nearest")
    ax.set_title(f"{image_id}\n{layer} {tuple(feat.shape)} (PCA)", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return f"{image_id} / {layer}"
