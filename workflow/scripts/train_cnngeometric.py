from pipeline_lib.weakalign import stage
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stage.train_cnngeometric(cfg, snakemake.wildcards.backbone, snakemake.output.weights,
                                                          out_init=snakemake.output.init))
