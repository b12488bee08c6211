from pipeline_lib.pseudo_flow import stage
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stage.make(cfg, snakemake.wildcards.category, snakemake.input.manifold,
                                            snakemake.input.features, snakemake.output.store))
