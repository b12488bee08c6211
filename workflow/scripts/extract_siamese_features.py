from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.extract_encoder(cfg, snakemake.input.checkpoint, snakemake.output.store))
