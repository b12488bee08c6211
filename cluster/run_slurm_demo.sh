#!/usr/bin/env bash
# Run the tiny demo workflow twice, once locally (profiles/local) and once through SLURM
# (profiles/slurm), each in its own fresh working directory, and check that both give the same
# results. Prints "PASS" (exit 0) or "FAIL: ..." (exit 1) as its last line.
#
#   cluster/run_slurm_demo.sh                # needs a running SLURM (cluster/slurm_local.sh, root)
#   KEEP_WORKDIRS=1 cluster/run_slurm_demo.sh   # keep both working directories (kept anyway on FAIL)
#   DEMO_WORKDIR=/shared/tmp/x cluster/run_slurm_demo.sh   # on a real cluster: a directory every node sees
#   cluster/run_slurm_demo.sh --slurm-status-command squeue  # extra arguments go to the SLURM run only
#
# The config is TINY from tests/workflow/test_workflow.py (2 photos x 3 images, 64 px, methods nn
# and hpf, hpf max_layers 2, beam width 2, CPU). Nothing of the checkout's own results/ is read or
# copied: both runs start from an empty working directory (snakemake -s Snakefile -d WORKDIR).
# Compared: results/tiny/efficientnet_lite0/pck_summary.csv (all columns but the ms_per_pair
# timing) and every methods/*/predictions.csv (byte for byte).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$REPO/.venv/bin}"
PYTHON="$VENV_BIN/python"
SNAKEMAKE="$VENV_BIN/snakemake"
# The jobs SLURM starts inherit this environment (sbatch --export=ALL): put the venv first.
export PATH="$VENV_BIN:$PATH"

say() { printf '[run_slurm_demo] %s\n' "$*"; }
fail() { say "workdirs kept: $WORK"; echo "FAIL: $*"; exit 1; }

[[ -x "$SNAKEMAKE" ]] || { echo "FAIL: $SNAKEMAKE not found (make venv)"; exit 1; }
"$PYTHON" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || { echo "FAIL: snakemake-executor-plugin-slurm missing: $VENV_BIN/pip install -e '$REPO[cluster]'"; exit 1; }

# --- SLURM up? (a no-op when it is; starting it needs root) ----------------------------------------
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    if [[ $EUID -eq 0 ]]; then
        "$REPO/cluster/slurm_local.sh"
    else
        echo "FAIL: no SLURM controller answers (start one: sudo $REPO/cluster/slurm_local.sh)"; exit 1
    fi
fi

WORK="${DEMO_WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/slurm_demo.XXXXXX")}"
mkdir -p "$WORK"
for d in local slurm; do
    [[ -e "$WORK/$d" ]] && { echo "FAIL: $WORK/$d exists; use an empty DEMO_WORKDIR"; exit 1; }
done
mkdir -p "$WORK/local" "$WORK/slurm"
CONFIG="$WORK/tiny.yaml"
# One source of truth for the tiny config: the workflow test's TINY.
"$PYTHON" - "$REPO" "$CONFIG" <<'EOF'
import sys, yaml
sys.path.insert(0, sys.argv[1])
from tests.workflow.test_workflow import TINY
open(sys.argv[2], "w").write(yaml.safe_dump(TINY))
EOF
say "workdir $WORK (config $CONFIG)"

run() {  # run NAME PROFILE [extra snakemake args...]
    local name=$1 profile=$2; shift 2
    local t0=$SECONDS
    say "$name: snakemake --profile profiles/$profile -d $WORK/$name"
    if ! (cd "$REPO" && "$SNAKEMAKE" -s "$REPO/Snakefile" -d "$WORK/$name" --profile "$REPO/profiles/$profile" \
            --configfile "$CONFIG" "$@") >"$WORK/$name.log" 2>&1; then
        tail -n 40 "$WORK/$name.log"
        fail "$name run failed (full log: $WORK/$name.log)"
    fi
    say "$name: done in $((SECONDS - t0)) s (log: $WORK/$name.log)"
}

START="$(date +%Y-%m-%dT%H:%M:%S)"
run local local
# Demo only: poll SLURM every few seconds instead of the plugin's 40 s (tiny jobs, one node).
run slurm slurm --slurm-init-seconds-before-status-checks 5 "$@"

# --- Did the jobs really go through SLURM? ---------------------------------------------------------
n_submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.log" || true)
say "slurm: $n_submitted job submissions in the snakemake log"
((n_submitted > 0)) || fail "the slurm run submitted no SLURM job (see $WORK/slurm.log)"
if sacct -n >/dev/null 2>&1; then
    say "slurm: sacct since $START:"
    sacct -X -S "$START" -o JobID,Partition,Account,AllocCPUS,ReqMem,State,Elapsed | sed 's/^/    /'
fi

# --- Compare ---------------------------------------------------------------------------------------
"$PYTHON" - "$WORK/local" "$WORK/slurm" <<'EOF' || fail "results differ (see above)"
import csv, sys
from pathlib import Path

local, slurm = Path(sys.argv[1]), Path(sys.argv[2])
base = Path("results/tiny/efficientnet_lite0")
problems = []

def table(root):
    rows = list(csv.DictReader((root / base / "pck_summary.csv").open()))
    if not rows:
        problems.append(f"{root / base / 'pck_summary.csv'} is empty")
    return [{k: v for k, v in r.items() if k != "ms_per_pair"} for r in rows]

a, b = table(local), table(slurm)
if a != b:
    problems.append(f"pck_summary.csv differs ({len(a)} vs {len(b)} rows)")
    for i, (ra, rb) in enumerate(zip(a, b)):
        diff = {k: (ra.get(k), rb.get(k)) for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k)}
        if diff:
            print(f"  row {i}: {diff}")
else:
    print(f"  pck_summary.csv: {len(a)} rows identical (ms_per_pair ignored)")

preds_local = sorted(p.relative_to(local) for p in (local / base / "methods").glob("*/predictions.csv"))
preds_slurm = sorted(p.relative_to(slurm) for p in (slurm / base / "methods").glob("*/predictions.csv"))
if not preds_local or preds_local != preds_slurm:
    problems.append(f"prediction files differ: {preds_local} vs {preds_slurm}")
for rel in preds_local:
    if (local / rel).read_bytes() != (slurm / rel).read_bytes():
        problems.append(f"{rel} differs")
    else:
        n = sum(1 for _ in (local / rel).open()) - 1
        print(f"  {rel}: identical ({n} rows)")

for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF

if [[ "${KEEP_WORKDIRS:-0}" == 1 || -n "${DEMO_WORKDIR:-}" ]]; then
    say "workdirs kept: $WORK/local $WORK/slurm"
else
    rm -rf "$WORK"
fi
echo "PASS: local and SLURM runs give identical PCK tables (ms_per_pair aside) and predictions"
