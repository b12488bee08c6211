from pipeline_lib.evaluation.stage import evaluate_and_aggregate
from pipeline_lib.snakemake_adapter import run_stage

out = snakemake.output
run_stage(snakemake, lambda cfg: evaluate_and_aggregate(
    cfg, snakemake.params.methods, snakemake.wildcards.backbone, snakemake.input.predictions,
    snakemake.input.metas, out.per_pair, out.summaries, out.csv, out.md, out.png, out.html))
