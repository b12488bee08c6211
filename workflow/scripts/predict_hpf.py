from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

# gaur_hpf (rule predict_gaur_hpf) also gets the checkpoint, to check the keys of its store and search record.
run_stage(snakemake, lambda cfg: stages.predict(cfg, snakemake.params.get("method", snakemake.wildcards.get("method")),
                                                snakemake.input.features, snakemake.output.predictions,
                                                snakemake.output.meta, search_json=snakemake.input.search,
                                                checkpoint=snakemake.input.get("checkpoint")))
