from pipeline_lib.weakalign import stage
from pipeline_lib.snakemake_adapter import run_stage

# CNNGeometric predicts through WeakAlign's path with its own weights; params "method" names the row
run_stage(snakemake, lambda cfg: stage.predict(cfg, snakemake.wildcards.backbone, snakemake.input.weights,
                                               snakemake.output.predictions, snakemake.output.meta,
                                               method=snakemake.params.get("method", "cnngeometric")))
