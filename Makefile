# Two commands do everything: `make run` (demo workflow) and `make test` (all tests).
# Both create or update the virtual environment in .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CORES  ?= 2
CONFIG ?= config/config.yaml
# Bytecode is compiled on first import (pip --no-compile) and kept: a job does not recompile what the last one imported.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv run test test-quick demo-stack pf-willow pf-willow-split pf-willow-folds readme-results report bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

## Run the whole workflow on the embedded demo data, then print the result table.
run: venv
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete
	@$(BIN)/python -m pipeline_lib summary --configfile $(CONFIG)

## Run every test (CI runs this).
test: venv
	$(BIN)/python -m pytest -q

## Quick subset: everything but the end-to-end workflow runs.
test-quick: venv
	$(BIN)/python -m pytest -q -m "not slow"

## The paper's Siamese architecture (stack fusion, Eq. 10) on the demo, beside nn.
demo-stack: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo-stack.yaml
	@$(BIN)/python -m pipeline_lib summary --configfile config/demo-stack.yaml

## The same workflow on the real PF-WILLOW copy in ../shared/data.
pf-willow: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/pf-willow.yaml
	@$(BIN)/python -m pipeline_lib summary --configfile config/pf-willow.yaml

## PF-WILLOW with an image-disjoint train/val/test split (layer search, trained methods).
pf-willow-split: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/pf-willow-split.yaml
	@$(BIN)/python -m pipeline_lib summary --configfile config/pf-willow-split.yaml

## PF-WILLOW in category folds: every method on all 630 pairs, each fold searching/training on the other classes.
pf-willow-folds: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/pf-willow-folds.yaml
	@$(BIN)/python -m pipeline_lib summary --configfile config/pf-willow-folds.yaml

## Regenerate README.md's results section from the result files.
readme-results: venv
	$(BIN)/python -m pipeline_lib readme-results

## Self-contained HTML report of the last run.
report: venv
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report report.html

bench: venv
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf results logs benchmarks .snakemake report.html
