from pipeline_lib.datasets.stage import generate_demo
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: generate_demo(cfg, snakemake.output[0]))
