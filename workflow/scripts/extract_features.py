from pipeline_lib.features.stage import extract
from pipeline_lib.snakemake_adapter import run_stage
from pipeline_lib.stage_io import feature_sources

# the store of one dataset's images: wildcard image_set is its cache key (stage_io.feature_sources)
run_stage(snakemake, lambda cfg: extract(cfg, snakemake.wildcards.backbone, snakemake.output.store,
                                         section=feature_sources(cfg)[snakemake.wildcards.image_set]))
