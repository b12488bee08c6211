"""Typed, frozen settings: one dataclass per config section, mirroring config/schema.yaml.

The schema is the one place a default is written (each field reads its default from it,
:func:`pipeline_lib.config.schema_default`); ``tests/unit/test_settings.py`` compares every class with its
section, key for key. A stage reads its sections through :class:`Settings`, a view of the validated config
that builds each section once, when the stage first reads it (so the record of what a stage read stays
exact, :mod:`pipeline_lib.snakemake_adapter`), and declares them with :func:`reads`: its rule's rerun
params are built from that declaration. What the keys mean: the schema's descriptions.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from .config import schema_default, section
from .kernels.soft_argmax import Subcell


@dataclass(frozen=True)
class DatasetSplitSection:
    """``dataset.split``: How pairs are split into train/val/test when the layout has no split."""

    mode: str = schema_default("dataset", "split", "mode")
    train_fraction: float = schema_default("dataset", "split", "train_fraction")
    val_fraction: float = schema_default("dataset", "split", "val_fraction")
    folds: int = schema_default("dataset", "split", "folds")
    fold: int | None = schema_default("dataset", "split", "fold")
    seed: int | None = schema_default("dataset", "split", "seed")


@dataclass(frozen=True)
class DatasetSection:
    """``dataset``."""

    name: str = schema_default("dataset", "name")
    kind: str = schema_default("dataset", "kind")
    root: str = schema_default("dataset", "root")
    pairs_csv: str = schema_default("dataset", "pairs_csv")
    categories: tuple[str, ...] = schema_default("dataset", "categories")
    on_bad_pair: str = schema_default("dataset", "on_bad_pair")
    split: DatasetSplitSection = field(default_factory=DatasetSplitSection)


@dataclass(frozen=True)
class DemoSection:
    """``demo``: The embedded default data, generated from photos that ship with scikit-image."""

    photos: tuple[str, ...] = schema_default("demo", "photos")
    images_per_category: int = schema_default("demo", "images_per_category")
    image_size: int = schema_default("demo", "image_size")
    n_keypoints: int = schema_default("demo", "n_keypoints")
    max_rotation_deg: float = schema_default("demo", "max_rotation_deg")
    scale_range: tuple[float, ...] = schema_default("demo", "scale_range")
    max_shift_fraction: float = schema_default("demo", "max_shift_fraction")
    tps_control_points: int = schema_default("demo", "tps_control_points")
    tps_jitter_fraction: float = schema_default("demo", "tps_jitter_fraction")
    photometric_jitter: float = schema_default("demo", "photometric_jitter")
    split: tuple[float, ...] = schema_default("demo", "split")


@dataclass(frozen=True)
class TrainDatasetSection:
    """``train_dataset``: the cross-dataset protocol's dataset that layer search and training read."""

    kind: str = schema_default("train_dataset", "kind")
    root: str = schema_default("train_dataset", "root")
    pairs_csv: str = schema_default("train_dataset", "pairs_csv")
    categories: tuple[str, ...] = schema_default("train_dataset", "categories")
    on_bad_pair: str = schema_default("train_dataset", "on_bad_pair")
    val_fraction: float = schema_default("train_dataset", "val_fraction")


@dataclass(frozen=True)
class ImageSection:
    """``image``."""

    longer_side: int = schema_default("image", "longer_side")


@dataclass(frozen=True)
class FeaturesSection:
    """``features``."""

    batch_size: int = schema_default("features", "batch_size")
    dtype: str = schema_default("features", "dtype")


@dataclass(frozen=True)
class NNSection:
    """``nn``."""

    layer: str = schema_default("nn", "layer")


@dataclass(frozen=True)
class HPFSection:
    """``hpf``: Hyperpixel Flow (Min et al."""

    layers: str | tuple[str, ...] = schema_default("hpf", "layers")  # "search" or the layers
    beam_width: int = schema_default("hpf", "beam_width")
    max_layers: int = schema_default("hpf", "max_layers")
    min_base_stride: float = schema_default("hpf", "min_base_stride")
    max_base_stride: float = schema_default("hpf", "max_base_stride")
    search_alpha: float = schema_default("hpf", "search_alpha")
    search_split: str = schema_default("hpf", "search_split")
    max_search_pairs: int = schema_default("hpf", "max_search_pairs")
    n_bins_per_side: int = schema_default("hpf", "n_bins_per_side")
    kernel_size: int = schema_default("hpf", "kernel_size")
    exponent: float = schema_default("hpf", "exponent")
    transfer_radius_px: float | None = schema_default("hpf", "transfer_radius_px")
    ot_epsilon: float = schema_default("hpf", "ot_epsilon")
    ot_iterations: int = schema_default("hpf", "ot_iterations")
    ot_exponent: float = schema_default("hpf", "ot_exponent")


@dataclass(frozen=True)
class ManifoldSection:
    """``manifold``: manifold learning and label refinement (Gaur & Manjunath 2017, Algorithm 1)."""

    run: bool = schema_default("manifold", "run")
    layers: tuple[str, ...] = schema_default("manifold", "layers")
    grid_size: int = schema_default("manifold", "grid_size")
    images: str = schema_default("manifold", "images")
    relu: bool = schema_default("manifold", "relu")
    n_clusters: int = schema_default("manifold", "n_clusters")
    n_components: int | None = schema_default("manifold", "n_components")
    kernel: str = schema_default("manifold", "kernel")
    kernel_degree: int = schema_default("manifold", "kernel_degree")
    kernel_coef0: float = schema_default('manifold', 'kernel_coef0')
    kernel_gamma: float = schema_default("manifold", "kernel_gamma")
    kfd_reg: float = schema_default("manifold", "kfd_reg")
    kfd_solver: str = schema_default("manifold", "kfd_solver")
    n_anchors: int = schema_default("manifold", "n_anchors")
    max_hac_samples: int = schema_default("manifold", "max_hac_samples")
    cov_reg: float = schema_default("manifold", "cov_reg")
    pairwise_weight: float = schema_default("manifold", "pairwise_weight")
    sigma: float = schema_default("manifold", "sigma")
    diagonal_weight: float = schema_default("manifold", "diagonal_weight")
    tol: float = schema_default("manifold", "tol")
    label_tol: float = schema_default("manifold", "label_tol")
    max_iter: int = schema_default("manifold", "max_iter")
    isolate_graphcut: bool = schema_default("manifold", "isolate_graphcut")
    chunk_images: int | None = schema_default("manifold", "chunk_images")


@dataclass(frozen=True)
class PseudoFlowSection:
    """``pseudo_flow``: Pseudo ground-truth flow from the learned embedding (Gaur et al."""

    mode: str = schema_default("pseudo_flow", "mode")
    metric: str = schema_default("pseudo_flow", "metric")
    split: str = schema_default("pseudo_flow", "split")
    features: str = schema_default("pseudo_flow", "features")


@dataclass(frozen=True)
class SiameseSection:
    """``siamese``: The Siamese flow network trained on pseudo ground truth (Gaur et al."""

    input_size: int = schema_default("siamese", "input_size")
    epochs: int = schema_default("siamese", "epochs")
    lr: float = schema_default("siamese", "lr")
    batch_size: int = schema_default("siamese", "batch_size")
    freeze_backbone: bool = schema_default("siamese", "freeze_backbone")
    skip_target: bool = schema_default("siamese", "skip_target")
    encoder_lr: float | None = schema_default("siamese", "encoder_lr")
    augment: bool = schema_default("siamese", "augment")
    augment_rotation_deg: tuple[float, ...] = schema_default("siamese", "augment_rotation_deg")
    augment_scale: tuple[float, ...] = schema_default("siamese", "augment_scale")
    augment_apply_to: str = schema_default("siamese", "augment_apply_to")
    augment_draw: str = schema_default("siamese", "augment_draw")
    retrieval_top_k: int = schema_default("siamese", "retrieval_top_k")
    flow_source: str = schema_default("siamese", "flow_source")
    max_train_pairs: int = schema_default("siamese", "max_train_pairs")
    fusion: str = schema_default("siamese", "fusion")
    match_layers: str | tuple[str, ...] = schema_default("siamese", "match_layers")
    train_on: str = schema_default("siamese", "train_on")
    match_beta: float = schema_default("siamese", "match_beta")
    match_kernel_sigma_cells: float | None = schema_default("siamese", "match_kernel_sigma_cells")
    match_adapter: bool = schema_default("siamese", "match_adapter")
    flow_loss_weight: float = schema_default("siamese", "flow_loss_weight")
    match_loss_weight: float = schema_default("siamese", "match_loss_weight")
    truncation: str = schema_default("siamese", "truncation")
    truncation_fraction: float = schema_default("siamese", "truncation_fraction")


@dataclass(frozen=True)
class SFNetSyntheticSection:
    """``sfnet.synthetic``: Random affine warps and augmentation of the synthetic pairs (Lee et al."""

    max_rotation_deg: float = schema_default("sfnet", "synthetic", "max_rotation_deg")
    scale_range: tuple[float, ...] = schema_default("sfnet", "synthetic", "scale_range")
    max_shear: float = schema_default("sfnet", "synthetic", "max_shear")
    max_shift_fraction: float = schema_default("sfnet", "synthetic", "max_shift_fraction")
    flip_prob: float = schema_default("sfnet", "synthetic", "flip_prob")
    color_jitter: float = schema_default("sfnet", "synthetic", "color_jitter")


@dataclass(frozen=True)
class SFNetSection:
    """``sfnet``: SFNet (Lee et al."""

    layers: tuple[str, ...] = schema_default("sfnet", "layers")
    adaptation_kernel_sizes: tuple[int, ...] = schema_default("sfnet", "adaptation_kernel_sizes")
    n_adaptation_blocks: int = schema_default("sfnet", "n_adaptation_blocks")
    beta: float = schema_default("sfnet", "beta")
    kernel_sigma_cells: float = schema_default("sfnet", "kernel_sigma_cells")
    image_size: int = schema_default("sfnet", "image_size")
    train_backbone: bool = schema_default("sfnet", "train_backbone")
    lambda_mask: float = schema_default("sfnet", "lambda_mask")
    lambda_flow: float = schema_default("sfnet", "lambda_flow")
    lambda_smooth: float = schema_default("sfnet", "lambda_smooth")
    mask_source: str = schema_default("sfnet", "mask_source")
    synthetic_fraction: float = schema_default("sfnet", "synthetic_fraction")
    epochs: int = schema_default("sfnet", "epochs")
    lr: float = schema_default("sfnet", "lr")
    batch_size: int = schema_default("sfnet", "batch_size")
    weight_decay: float = schema_default("sfnet", "weight_decay")
    synthetic: SFNetSyntheticSection = field(default_factory=SFNetSyntheticSection)


@dataclass(frozen=True)
class WeakAlignSection:
    """``weakalign``: WeakAlign (Rocco et al."""

    layer: str = schema_default("weakalign", "layer")
    image_size: int = schema_default("weakalign", "image_size")
    regression_kernel_sizes: tuple[int, ...] = schema_default("weakalign", "regression_kernel_sizes")
    regression_channels: tuple[int, ...] = schema_default("weakalign", "regression_channels")
    tps_grid_size: int = schema_default("weakalign", "tps_grid_size")
    train_backbone: bool = schema_default("weakalign", "train_backbone")
    swap_prob: float = schema_default("weakalign", "swap_prob")
    flip_prob: float = schema_default("weakalign", "flip_prob")
    crop_fraction: float = schema_default("weakalign", "crop_fraction")
    threshold_cells: float | None = schema_default("weakalign", "threshold_cells")
    normalise: bool = schema_default("weakalign", "normalise")
    transfer: str = schema_default("weakalign", "transfer")
    epochs: int = schema_default("weakalign", "epochs")
    lr: float = schema_default("weakalign", "lr")
    batch_size: int = schema_default("weakalign", "batch_size")
    weight_decay: float = schema_default("weakalign", "weight_decay")


@dataclass(frozen=True)
class CNNGeometricSection:
    """``cnngeometric``: CNNGeometric (Rocco et al."""

    affine_rotation_deg: float = schema_default("cnngeometric", "affine_rotation_deg")
    affine_scale: float = schema_default("cnngeometric", "affine_scale")
    affine_translation: float = schema_default("cnngeometric", "affine_translation")
    tps_jitter: float = schema_default("cnngeometric", "tps_jitter")
    crop_factor: float = schema_default("cnngeometric", "crop_factor")
    grid_loss_points: int = schema_default("cnngeometric", "grid_loss_points")
    epochs: int = schema_default("cnngeometric", "epochs")
    lr: float = schema_default("cnngeometric", "lr")
    batch_size: int = schema_default("cnngeometric", "batch_size")
    weight_decay: float = schema_default("cnngeometric", "weight_decay")
    fixed_warps: int = schema_default("cnngeometric", "fixed_warps")


@dataclass(frozen=True)
class FcssTrainSection:
    """``fcss.train``: Weak supervision (Kim et al."""

    longer_side: int = schema_default("fcss", "train", "longer_side")
    region: str = schema_default("fcss", "train", "region")
    n_samples: int = schema_default("fcss", "train", "n_samples")
    positive_fraction: float = schema_default("fcss", "train", "positive_fraction")
    margin: float = schema_default("fcss", "train", "margin")
    tolerance_cells: float = schema_default("fcss", "train", "tolerance_cells")
    both_directions: bool = schema_default("fcss", "train", "both_directions")
    max_pairs: int = schema_default("fcss", "train", "max_pairs")


@dataclass(frozen=True)
class FCSSSection:
    """``fcss``: FCSS descriptors (Kim et al."""

    layers: tuple[str, ...] = schema_default("fcss", "layers")
    n_patterns: int = schema_default("fcss", "n_patterns")
    init_shift_std_cells: tuple[float, ...] = schema_default("fcss", "init_shift_std_cells")
    lambda_init: float = schema_default("fcss", "lambda_init")
    pool_size: int = schema_default("fcss", "pool_size")
    train_backbone: bool = schema_default("fcss", "train_backbone")
    longer_side: int = schema_default("fcss", "longer_side")
    matcher: str = schema_default("fcss", "matcher")
    epochs: int = schema_default("fcss", "epochs")
    lr: float = schema_default("fcss", "lr")
    shift_lr: float | None = schema_default("fcss", "shift_lr")
    batch_size: int = schema_default("fcss", "batch_size")
    weight_decay: float = schema_default("fcss", "weight_decay")
    train: FcssTrainSection = field(default_factory=FcssTrainSection)


@dataclass(frozen=True)
class EvaluationSection:
    """``evaluation``."""

    alphas: tuple[float, ...] = schema_default("evaluation", "alphas")
    threshold: str = schema_default("evaluation", "threshold")
    direction: str = schema_default("evaluation", "direction")
    split: str = schema_default("evaluation", "split")
    unseen: str = schema_default("evaluation", "unseen")


@dataclass(frozen=True)
class TransferSection:
    """``transfer``: Where the training-free matchers put a keypoint in the target (cell centre or sub-cell)."""

    target: str = schema_default("transfer", "target")
    beta: float = schema_default("transfer", "beta")
    radius_cells: int = schema_default("transfer", "radius_cells")

    def subcell(self) -> Subcell | None:
        """The sub-cell refinement of the matchers, or None for cell centres."""
        return Subcell(self.beta, self.radius_cells) if self.target == "soft_argmax" else None


@dataclass(frozen=True)
class PicturesSection:
    """``pictures``: Pictures of evaluation pairs: every method's predictions, every dense flow's warp."""

    per_category: int = schema_default("pictures", "per_category")
    warp_step: int = schema_default("pictures", "warp_step")


class Settings:
    """The typed view of a validated config: ``Settings(cfg).hpf`` is the ``hpf`` section as an
    :class:`HPFSection`, built when first read; top-level scalars are properties."""

    def __init__(self, cfg: Mapping[str, Any]):
        self._cfg = cfg

    @property
    def seed(self) -> int:
        return int(self._cfg["seed"])

    @property
    def split_seed(self) -> int:
        """The seed of the dataset split: ``dataset.split.seed``, or the top-level ``seed`` when that is null."""
        own = self.dataset.split.seed
        return self.seed if own is None else int(own)

    @property
    def device(self) -> str:
        return self._cfg["device"]

    @property
    def weights(self) -> dict[str, str]:
        return dict(self._cfg["weights"])

    @property
    def backbones(self) -> tuple[str, ...]:
        return tuple(self._cfg["backbones"])

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._cfg["methods"])

    @cached_property
    def dataset(self) -> DatasetSection:
        return section(DatasetSection, self._cfg["dataset"])

    @cached_property
    def demo(self) -> DemoSection:
        return section(DemoSection, self._cfg["demo"])

    @cached_property
    def train_dataset(self) -> TrainDatasetSection:
        return section(TrainDatasetSection, self._cfg["train_dataset"])

    @cached_property
    def image(self) -> ImageSection:
        return section(ImageSection, self._cfg["image"])

    @cached_property
    def features(self) -> FeaturesSection:
        return section(FeaturesSection, self._cfg["features"])

    @cached_property
    def nn(self) -> NNSection:
        return section(NNSection, self._cfg["nn"])

    @cached_property
    def hpf(self) -> HPFSection:
        return section(HPFSection, self._cfg["hpf"])

    @cached_property
    def manifold(self) -> ManifoldSection:
        return section(ManifoldSection, self._cfg["manifold"])

    @cached_property
    def pseudo_flow(self) -> PseudoFlowSection:
        return section(PseudoFlowSection, self._cfg["pseudo_flow"])

    @cached_property
    def siamese(self) -> SiameseSection:
        return section(SiameseSection, self._cfg["siamese"])

    @cached_property
    def sfnet(self) -> SFNetSection:
        return section(SFNetSection, self._cfg["sfnet"])

    @cached_property
    def weakalign(self) -> WeakAlignSection:
        return section(WeakAlignSection, self._cfg["weakalign"])

    @cached_property
    def cnngeometric(self) -> CNNGeometricSection:
        return section(CNNGeometricSection, self._cfg["cnngeometric"])

    @cached_property
    def fcss(self) -> FCSSSection:
        return section(FCSSSection, self._cfg["fcss"])

    @cached_property
    def evaluation(self) -> EvaluationSection:
        return section(EvaluationSection, self._cfg["evaluation"])

    @cached_property
    def pictures(self) -> PicturesSection:
        return section(PicturesSection, self._cfg["pictures"])

    @cached_property
    def transfer(self) -> TransferSection:
        return section(TransferSection, self._cfg["transfer"])


def reads(*sections: str) -> Callable[[Callable], Callable]:
    """Declare the top-level config sections (and keys) a stage function reads: its rule's rerun ``params``
    are built from this declaration (:func:`reads_of` in ``workflow/rules/*.smk``), and ``run_stage`` fails a
    job whose stage read a section that is not declared."""

    def mark(fn: Callable) -> Callable:
        fn.config_sections = sections
        return fn

    return mark


@functools.cache
def _declarations(path: Path) -> dict[str, tuple[str, ...] | None]:
    """Function name -> the sections its ``@reads(...)`` names (None without one), of a module's source."""
    out: dict[str, tuple[str, ...] | None] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            calls = [d for d in node.decorator_list
                     if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "reads"]
            out[node.name] = tuple(ast.literal_eval(a) for a in calls[0].args) if calls else None
    return out


def reads_of(spec: str) -> tuple[str, ...]:
    """The sections that ``"package.module:function"`` declares with :func:`reads`, read from its source
    without importing it (the Snakefile calls this while it parses)."""
    module, function = spec.split(":")
    parts = module.split(".")
    if parts[0] != __package__:
        raise ValueError(f"{spec}: not a stage of {__package__}")
    path = Path(__file__).parent.joinpath(*parts[1:]).with_suffix(".py")
    found = _declarations(path)
    if function not in found:
        raise ValueError(f"{spec}: no function {function} in {path}")
    if found[function] is None:
        raise ValueError(f"{spec} ({path}) declares no @reads(...): say which config sections it reads")
    return found[function]


# Section name -> its class (the test walks this; stages use :class:`Settings`).
SECTIONS: dict[str, type] = {"dataset": DatasetSection, "demo": DemoSection, "train_dataset": TrainDatasetSection,
                             "image": ImageSection, "features": FeaturesSection, "nn": NNSection, "hpf": HPFSection,
                             "manifold": ManifoldSection, "pseudo_flow": PseudoFlowSection,
                             "siamese": SiameseSection, "sfnet": SFNetSection, "weakalign": WeakAlignSection,
                             "cnngeometric": CNNGeometricSection, "fcss": FCSSSection,
                             "evaluation": EvaluationSection, "pictures": PicturesSection, "transfer": TransferSection}
