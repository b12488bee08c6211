from pipeline_lib.sfnet import stage
from pipeline_lib.snakemake_adapter import run_stage, trained_and_init


def predict_both(cfg):
    for weights, predictions, meta, method in trained_and_init(snakemake, "sfnet"):
        stage.predict(cfg, snakemake.wildcards.backbone, weights, predictions, meta, method=method)


run_stage(snakemake, predict_both)
