from pipeline_lib.evaluation.stage import draw_flow_warps
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: draw_flow_warps(cfg, snakemake.wildcards.backbone, snakemake.params.methods,
                                                 snakemake.input.weights, snakemake.output.pictures))
