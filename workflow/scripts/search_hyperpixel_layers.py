from pipeline_lib.hpf.stage import search_layers
from pipeline_lib.snakemake_adapter import run_stage

o = snakemake.output
run_stage(snakemake, lambda cfg: search_layers(cfg, snakemake.input.features, o.record, o.trace, o.plot,
                                               checkpoint=snakemake.input.get("checkpoint")))
