from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.index_dataset(cfg, snakemake.output.pairs, snakemake.output.meta))
