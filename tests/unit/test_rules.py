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


# Stages that never touch torch's device (data, scoring, the manifold's numpy/scikit-learn code).
CPU_RULES = {"generate_demo", "index_dataset", "evaluate", "pool_folds", "learn_manifold", "summarise_manifold",
             "make_pseudo_flow", "score_pseudo_flow"}


def test_every_torch_rule_asks_for_a_gpu_when_the_resolved_device_is_cuda():
    blocks = rule_blocks()
    assert CPU_RULES <= set(blocks)
    for name, block in blocks.items():
        assert ("gpu=GPUS" in block) == (name not in CPU_RULES), name
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'config["device"] == "auto" and torch.cuda.is_available()' in common  # auto asks too, where CUDA is seen
