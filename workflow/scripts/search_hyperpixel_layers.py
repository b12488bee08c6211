from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

# The trained encoder's search (rule search_gaur_layers) also gets its checkpoint, to check the store's key.
run_stage(snakemake, lambda cfg: stages.search_layers(cfg, snakemake.input.features, snakemake.output.record,
                                                      snakemake.output.trace, snakemake.output.plot,
                                                      checkpoint=snakemake.input.get("checkpoint")))
