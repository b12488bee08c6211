from pipeline_lib.manifold.stage import learn
from pipeline_lib.snakemake_adapter import run_stage

out = snakemake.output
run_stage(snakemake, lambda cfg: learn(cfg, snakemake.wildcards.category, snakemake.input.features, out.store, out.kfd,
                                       out.labels, out.convergence))
