from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

out = snakemake.output
run_stage(snakemake, lambda cfg: stages.learn_manifold(cfg, snakemake.wildcards.category, snakemake.input.features,
                                                       out.store, out.kfd, out.labels, out.convergence))
