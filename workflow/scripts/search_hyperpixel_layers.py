from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.search_layers(cfg, snakemake.input.features, snakemake.output.record,
                                                      snakemake.output.trace, snakemake.output.plot))
