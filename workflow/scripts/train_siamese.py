from pipeline_lib.siamese import stage
from pipeline_lib.snakemake_adapter import run_stage

# output "init" (the seeded, untrained network for the siamese@init rows) is optional
# inputs "features" (siamese.train_on: features) and "search" (match_layers: search) are there only when used
run_stage(snakemake, lambda cfg: stage.train(cfg, snakemake.wildcards.backbone, snakemake.input.pseudo_flow,
                                             snakemake.output.weights, out_init=snakemake.output.get("init"),
                                             features=snakemake.input.get("features"),
                                             search_record=snakemake.input.get("search")))
