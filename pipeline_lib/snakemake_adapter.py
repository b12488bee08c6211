"""Glue for ``workflow/scripts``: logging to the rule's log file, then one call into a stage function."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable

import torch

from .methods.registry import INIT_SUFFIX
from .protocols import fold_view

# cuBLAS is deterministic only with a fixed workspace (torch docs, "Reproducibility"; CUDA >= 10.2).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def fix_threads(n: int) -> int:
    """Reproducible numerics: torch uses exactly the rule's ``threads`` (a float reduction's result
    depends on how it is split over threads, so an unpinned count differs between a laptop, a cluster
    node and a job sharing its node), and deterministic algorithms where torch has them (on CUDA, cuBLAS
    needs a fixed workspace for that, set before its first use; cuDNN's autotuner stays off)."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    use_deterministic_algorithms()
    return n


def use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its cost: the public function
    imports the inductor compiler (torch._dynamo, ~2.5 s of every job's start on 2 cores) only to set the
    compiler's own flag. Nothing here compiles, so the ATen flag is set directly unless the compiler is
    already loaded, in which case the public function sets both."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def trained_and_init(smk: Any, method: str) -> tuple[tuple[str, str, str, str], ...]:
    """(weights, predictions, meta, row name) of a trained method's two rows, from a predict rule
    declared with ``trained_inputs``/``trained_outputs``: trained weights first, then ``<method>@init``."""
    i, o = smk.input, smk.output
    return ((i.weights, o.predictions, o.meta, method),
            (i.init, o.init_predictions, o.init_meta, method + INIT_SUFFIX))


# Top-level keys that say where and how a job runs, not what it computes: never rerun triggers.
EXECUTION_KEYS = frozenset({"results_dir", "device", "threads"})


class RecordingConfig(dict):
    """A config that records which top-level sections were read (``read``): what a stage really used."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


class UndeclaredConfigError(RuntimeError):
    """A stage read a config section that its rule's rerun ``params`` do not include."""


def check_declared(rule: str, read: set[str], params: Any) -> None:
    """Every section a stage read must be in its rule's ``params.cfg`` (the rerun trigger), else a change of
    it would leave the rule's outputs stale."""
    declared = set(json.loads(params.get("cfg") or "{}"))
    if "dataset" in declared:
        # cfg_params adds the training dataset to the dataset whenever one is set; the demo section makes the
        # demo's files, an input of every rule that reads the dataset (common.smk dataset_inputs), which rerun it
        declared |= {"train_dataset", "demo"}
    undeclared = sorted(set(read) - declared - EXECUTION_KEYS)
    if undeclared:
        raise UndeclaredConfigError(
            f"rule {rule} read config section(s) {undeclared} that its params do not declare, so changing them "
            f"would not rerun it; add them to the rule's cfg_params(...) in workflow/rules/ (declared: "
            f"{sorted(declared)}).")


def run_stage(smk: Any, fn: Callable[[dict], None]) -> None:
    """Attach a log handler to ``smk.log[0]`` (and stderr), pin torch's thread count to the rule's
    ``threads``, then run ``fn(config)``; errors are logged with their message before they stop the job.
    A stage that read a config section its rule's ``params.cfg`` does not declare fails the job
    (:func:`check_declared`): its outputs could go stale."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"rule.{smk.rule}")
    log.info("rule %s, wildcards %s, torch threads %d", smk.rule, dict(smk.wildcards), fix_threads(smk.threads))
    try:
        # A category fold's job (wildcard ``fold``) sees its fold's split; every other job the dataset's.
        cfg = RecordingConfig(fold_view(dict(smk.config), dict(smk.wildcards).get("fold")))
        fn(cfg)
        check_declared(smk.rule, cfg.read, smk.params)
    except Exception as exc:  # log the reason in the rule's log, then fail the job
        log.error("%s: %s", type(exc).__name__, exc)
        raise
    log.info("done")
