from pipeline_lib.features.stage import extract_encoder
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: extract_encoder(cfg, snakemake.input.checkpoint, snakemake.output.store))
