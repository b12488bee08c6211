from pipeline_lib import pseudo_gt
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: pseudo_gt.summarise(snakemake.input.quality, snakemake.output.csv))
