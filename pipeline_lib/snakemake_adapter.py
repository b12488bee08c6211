"""Glue for ``workflow/scripts``: logging to the rule's log file, then one call into ``stages``."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from .stage_io import fold_view


def fix_threads(n: int) -> int:
    """Reproducible numerics: torch uses exactly the rule's ``threads`` (a float reduction's result
    depends on how it is split over threads, so an unpinned count differs between a laptop, a cluster
    node and a job sharing its node), and deterministic algorithms where torch has them."""
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return n


def trained_and_init(smk: Any, method: str) -> tuple[tuple[str, str, str, str], ...]:
    """(weights, predictions, meta, row name) of a trained method's two rows, from a predict rule
    declared with ``trained_inputs``/``trained_outputs``: trained weights first, then ``<method>@init``."""
    from .methods.registry import INIT_SUFFIX

    i, o = smk.input, smk.output
    return ((i.weights, o.predictions, o.meta, method),
            (i.init, o.init_predictions, o.init_meta, method + INIT_SUFFIX))


def run_stage(smk: Any, fn: Callable[[dict], None]) -> None:
    """Attach a log handler to ``smk.log[0]`` (and stderr), pin torch's thread count to the rule's
    ``threads``, then run ``fn(config)``; errors are logged with their message before they stop the job."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"rule.{smk.rule}")
    log.info("rule %s, wildcards %s, torch threads %d", smk.rule, dict(smk.wildcards), fix_threads(smk.threads))
    try:
        # A category fold's job (wildcard ``fold``) sees its fold's split; every other job the dataset's.
        fn(fold_view(dict(smk.config), dict(smk.wildcards).get("fold")))
    except Exception as exc:  # log the reason in the rule's log, then fail the job
        log.error("%s: %s", type(exc).__name__, exc)
        raise
    log.info("done")
