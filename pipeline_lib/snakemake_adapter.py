"""Glue for ``workflow/scripts``: logging to the rule's log file, then one call into ``stages``."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable


def run_stage(smk: Any, fn: Callable[[dict], None]) -> None:
    """Attach a log handler to ``smk.log[0]`` (and stderr), then run ``fn(config)``; errors are logged
    with their message before they stop the job."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk.log:
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"rule.{smk.rule}")
    log.info("rule %s, wildcards %s", smk.rule, dict(smk.wildcards))
    try:
        fn(dict(smk.config))
    except Exception as exc:  # log the reason in the rule's log, then fail the job
        log.error("%s: %s", type(exc).__name__, exc)
        raise
    log.info("done")
