from pipeline_lib.features.stage import extract
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: extract(cfg, snakemake.wildcards.backbone, snakemake.output.store))
