from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.summarise_manifold(snakemake.input.stores, snakemake.output.csv))
