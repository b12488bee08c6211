from pipeline_lib.siamese import stage
from pipeline_lib.snakemake_adapter import run_stage

# output "init" (the seeded, untrained network for the siamese@init rows) is optional
run_stage(snakemake, lambda cfg: stage.train(cfg, snakemake.wildcards.backbone, snakemake.input.pseudo_flow,
                                             snakemake.output.weights, out_init=snakemake.output.get("init")))
