from pipeline_lib import stages
from pipeline_lib.snakemake_adapter import run_stage

run_stage(snakemake, lambda cfg: stages.aggregate(snakemake.input.summaries, snakemake.output.csv,
                                                  snakemake.output.md, snakemake.output.png,
                                                  snakemake.output.html))
