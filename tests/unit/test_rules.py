"""Every workflow rule is inspectable afterwards: it logs to <results_dir>/logs/ and records time and memory in
<results_dir>/benchmarks/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for part in re.split(r"\n(?=rule \w+:)", path.read_text()):
            m = re.match(r"rule (\w+):", part.strip())
            if m:
                blocks[m.group(1)] = part
    return blocks


def test_every_rule_has_a_log_and_a_benchmark():
    blocks = rule_blocks()
    assert {"generate_demo", "evaluate", "train_siamese", "make_pseudo_flow"} <= set(blocks)
    for name, block in blocks.items():
        assert re.search(r"\n    log:\n\s+f\"\{LOGS\}/", block), f"rule {name} has no log under LOGS"
        assert re.search(r"\n    benchmark:\n\s+f\"\{BENCH\}/", block), f"rule {name} has no benchmark"


def test_heavy_rules_take_their_threads_from_the_config():
    """No hard-coded thread count: `threads` of the config (recorded with every artifact) decides."""
    for name, block in rule_blocks().items():
        m = re.search(r"\n    threads: (.+)\n", block)
        assert m is None or m.group(1) == "HEAVY_THREADS", f"rule {name}: threads {m.group(1)}"
