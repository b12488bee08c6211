"""Opt-in: the tiny demo through a real SLURM (profiles/slurm) gives the same results as a local run.

Needs a SLURM controller (``sudo cluster/slurm_local.sh`` starts a one-node one) and
snakemake-executor-plugin-slurm (``pip install -e ".[cluster]"``). Takes about 4 minutes on 2 cores.
Run with ``RUN_SLURM_TESTS=1 pytest tests/workflow/test_slurm.py``.
"""

import os
import subprocess

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RUN_SLURM_TESTS") != "1",
        reason="SLURM test is opt-in: set RUN_SLURM_TESTS=1 (needs a running SLURM, see cluster/slurm_local.sh, "
        "and snakemake-executor-plugin-slurm)",
    ),
]


def test_slurm_run_matches_local_run(repo):
    r = subprocess.run(["bash", str(repo / "cluster" / "run_slurm_demo.sh")], capture_output=True, text=True,
                       timeout=1800)
    out = r.stdout + r.stderr
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert r.returncode == 0 and last.startswith("PASS"), out[-5000:]
