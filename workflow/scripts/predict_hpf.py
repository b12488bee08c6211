from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.predict(cfg, snakemake.wildcards.method, snakemake.input.features,
                                                snakemake.output.predictions, snakemake.output.meta,
                                                search_json=snakemake.input.search))
