from pipeline_lib import pseudo_gt
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: pseudo_gt.make(cfg, snakemake.wildcards.category, snakemake.input.manifold,
                                                snakemake.input.features, snakemake.output.store))
