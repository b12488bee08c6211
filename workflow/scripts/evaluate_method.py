from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.evaluate(
    cfg, snakemake.wildcards.method, snakemake.wildcards.backbone, snakemake.input.predictions,
    snakemake.input.meta, snakemake.output.per_pair, snakemake.output.summary))
