from pipeline_lib.weakalign import stage
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stage.train(cfg, snakemake.wildcards.backbone, snakemake.output.weights,
                                             init_from=snakemake.input.init_from, out_init=snakemake.output.init))
