from pipeline_lib.manifold.stage import summarise
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: summarise(cfg, snakemake.input.stores, snakemake.output.csv))
