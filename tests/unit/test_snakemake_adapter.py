"""The glue of every workflow script: a stage that reads a config section its rule does not declare fails; every job
pins its threads and deterministic algorithms."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from snakemake.iocontainers import Params

from pipeline_lib.snakemake_adapter import RecordingConfig, UndeclaredConfigError, check_declared, run_stage


def fake_job(tmp_path, declared: dict | None, **config):
    params = Params(fromdict={"cfg": json.dumps(declared)} if declared is not None else {})
    return SimpleNamespace(rule="demo_rule", log=[str(tmp_path / "job.log")], threads=1, wildcards={}, config=config,
                           params=params)


def test_reads_are_recorded_but_iteration_and_membership_are_not():
    cfg = RecordingConfig({"seed": 0, "hpf": {"beam_width": 4}, "nn": {}})
    assert cfg["hpf"]["beam_width"] == 4 and cfg.get("seed") == 0 and "nn" in cfg
    json.dumps(cfg)  # provenance records the whole config: not a read of any section
    assert cfg.read == {"hpf", "seed"}


def test_a_stage_reading_only_declared_sections_runs(tmp_path):
    seen = []
    run_stage(fake_job(tmp_path, {"seed": 0, "hpf": {}}, seed=0, hpf={"beam_width": 4}, device="cpu", nn={}),
              lambda cfg: seen.append((cfg["seed"], cfg["hpf"]["beam_width"], cfg["device"])))
    assert seen == [(0, 4, "cpu")]  # device (where it runs) is no rerun trigger


def test_an_undeclared_section_fails_the_job_naming_it_and_the_fix(tmp_path):
    job = fake_job(tmp_path, {"seed": 0}, seed=0, hpf={"beam_width": 4})
    with pytest.raises(UndeclaredConfigError, match=r"rule demo_rule read config section\(s\) \['hpf'\].*cfg_params"):
        run_stage(job, lambda cfg: cfg["hpf"])
    assert "UndeclaredConfigError" in (tmp_path / "job.log").read_text()


def test_a_rule_without_params_may_read_only_where_it_runs(tmp_path):
    check_declared("r", {"results_dir", "threads"}, Params())
    with pytest.raises(UndeclaredConfigError, match=r"\['dataset'\]"):
        check_declared("r", {"dataset", "results_dir"}, Params())


def test_the_dataset_brings_the_training_dataset_and_the_demo_with_it():
    """cfg_params adds train_dataset beside dataset whenever one is set (the cross-dataset protocol), so reading
    it to learn that none is set is no undeclared read; the demo section's files are an input of the rule."""
    check_declared("r", {"dataset", "train_dataset", "demo"}, Params(fromdict={"cfg": json.dumps({"dataset": {}})}))
    with pytest.raises(UndeclaredConfigError, match=r"\['train_dataset'\]"):
        check_declared("r", {"train_dataset"}, Params(fromdict={"cfg": json.dumps({"seed": 0})}))


def test_fix_threads_makes_torch_deterministic_without_loading_the_compiler():
    """Every job calls fix_threads: it must set the deterministic flags (warn-only) and pin the threads, and must
    not import torch._dynamo (public use_deterministic_algorithms does: seconds of every job's start)."""
    code = ("import sys, torch; from pipeline_lib.snakemake_adapter import fix_threads; fix_threads(1); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "torch.get_num_threads(), 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "1", "False"]
