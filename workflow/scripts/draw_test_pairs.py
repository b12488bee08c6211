from pipeline_lib.evaluation.stage import draw_test_pairs
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: draw_test_pairs(cfg, snakemake.params.methods, snakemake.input.predictions,
                                                 snakemake.output.pictures))
