"""Every workflow rule is inspectable afterwards: it logs to <results_dir>/logs/ and records time and memory in
<results_dir>/benchmarks/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rule_blocks() -> dict[str, str]:
    """Every rule (also those under ``if FOLDS:``, dedented) and its text."""
    blocks = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for part in re.split(r"\n(?=[ ]*rule \w+:)", path.read_text()):
            m = re.match(r"( *)rule (\w+):", part.lstrip("\n"))
            if m:
                indent = m.group(1)
                blocks[m.group(2)] = "\n".join(line[len(indent):] for line in part.lstrip("\n").splitlines())
    return blocks


def derived_rules() -> set[str]:
    """Rules declared with ``use rule X as Y``."""
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"use rule \w+ as (\w+)", text))


def test_every_rule_has_a_log_and_a_benchmark():
    blocks = rule_blocks()
    assert {"generate_demo", "evaluate", "train_siamese", "make_pseudo_flow", "pool_folds"} <= set(blocks)
    for name, block in blocks.items():
        assert re.search(r"\n    log:\n\s+f\"\{LOGS\}/", block), f"rule {name} has no log under LOGS"
        assert re.search(r"\n    benchmark:\n\s+f\"\{BENCH\}/", block), f"rule {name} has no benchmark"


def test_heavy_rules_take_their_threads_from_the_config():
    """No hard-coded thread count: `threads` of the config (recorded with every artifact) decides."""
    for name, block in rule_blocks().items():
        m = re.search(r"\n    threads: (.+)\n", block)
        assert m is None or m.group(1) == "HEAVY_THREADS", f"rule {name}: threads {m.group(1)}"


def test_the_reports_workflow_description_names_every_rule_and_only_rules():
    """workflow/report/workflow.rst describes the rule graph: a renamed, added or removed rule fails here."""
    text = (ROOT / "workflow" / "report" / "workflow.rst").read_text()
    rules = set(rule_blocks()) | derived_rules()
    named = set(re.findall(r"``(\w+)``", text.split("Stages:", 1)[1].split("Backbones:", 1)[0]))
    assert rules - named == set(), f"rules missing from workflow.rst: {sorted(rules - named)}"
    assert named - rules == set(), f"workflow.rst names what is no rule: {sorted(named - rules)}"


# Stages that never touch torch's device (data, scoring, the manifold's numpy/scikit-learn code; the warp
# pictures run trained models, so draw_flow_warps is not one).
CPU_RULES = {"generate_demo", "index_dataset", "evaluate", "draw_test_pairs", "pool_folds", "learn_manifold", "summarise_manifold",
             "make_pseudo_flow", "score_pseudo_flow"}


def test_every_torch_rule_asks_for_a_gpu_when_the_resolved_device_is_cuda():
    blocks = rule_blocks()
    assert CPU_RULES <= set(blocks)
    for name, block in blocks.items():
        assert ("gpu=GPUS" in block) == (name not in CPU_RULES), name
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'config["device"] == "auto" and torch.cuda.is_available()' in common  # auto asks too, where CUDA is seen


def test_each_rules_params_are_the_sections_its_stage_declares():
    """A rule's rerun params start from ``*reads_of(stage)``, and that stage is the one its script runs."""
    from pipeline_lib.methods.registry import METHODS
    from pipeline_lib.settings import reads_of

    for name, block in rule_blocks().items():
        m = re.search(r'cfg=(?:lambda w: )?cfg_params\(\s*\*reads_of\("([\w.]+):(\w+)"\)', block)
        assert m, f"rule {name}: its params are not derived from its stage's @reads"
        module, function = m.groups()
        assert reads_of(f"{module}:{function}"), name
        script = (ROOT / "workflow" / "scripts" / re.search(r'"\.\./scripts/(\w+\.py)"', block).group(1)).read_text()
        if "predict_stage(method)" in script:  # the trained methods' one script: the registry names the stage
            method = re.search(r'method="(\w+)"', block).group(1)
            assert next(x.predict for x in METHODS if x.name == method) == f"{module}:{function}", name
        else:
            package, leaf = module.rsplit(".", 1)
            direct = re.search(rf"from {re.escape(module)} import .*\b{function}\b", script)
            via_module = re.search(rf"from {re.escape(package)} import {leaf}\b", script) and f"{leaf}.{function}(" in script
            assert direct or via_module, (name, module, function)
