from pipeline_lib.evaluation.stage import pool_category_folds
from pipeline_lib.snakemake_adapter import run_stage

i, o, p = snakemake.input, snakemake.output, snakemake.params
run_stage(snakemake, lambda cfg: pool_category_folds(
    cfg, p.methods, snakemake.wildcards.backbone, p.folds, i.per_pair, i.metas, o.per_pair, o.folds, o.csv, o.md,
    o.png, o.html))
