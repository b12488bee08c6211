from pipeline_lib.siamese import stage
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stage.train(cfg, snakemake.wildcards.backbone, snakemake.input.pseudo_flow,
                                             snakemake.output.weights))
