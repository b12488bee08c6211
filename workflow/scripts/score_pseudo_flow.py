from pipeline_lib.pseudo_flow import stage
from pipeline_lib.snakemake_adapter import run_stage

i, o = snakemake.input, snakemake.output
run_stage(snakemake, lambda cfg: stage.score_all(cfg, snakemake.params.categories, i.manifold, i.features,
                                                 i.pseudo_flow, o.quality, o.csv))
