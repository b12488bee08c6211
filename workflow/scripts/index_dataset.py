from pipeline_lib.datasets.stage import index_dataset
from pipeline_lib.snakemake_adapter import run_stage
from pipeline_lib.stage_io import dataset_files

# the dataset's index freezes the validated dataset (output `frozen`); a category fold's index reads it
run_stage(snakemake, lambda cfg: index_dataset(cfg, snakemake.output.pairs, snakemake.output.meta,
                                               files=dataset_files(cfg),
                                               frozen=getattr(snakemake.output, "frozen", None)))
