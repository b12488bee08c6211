from pipeline_lib.siamese import stage
from pipeline_lib.snakemake_adapter import run_stage

# params "method" (e.g. siamese@init) is optional; the default is the trained network's "siamese"
run_stage(snakemake, lambda cfg: stage.predict(cfg, snakemake.wildcards.backbone, snakemake.input.weights,
                                               snakemake.output.predictions, snakemake.output.meta,
                                               method=snakemake.params.get("method", "siamese")))
