from pipeline_lib.methods.registry import predict_stage
from pipeline_lib.snakemake_adapter import run_stage, trained_and_init

# A trained method (params.method): its paper's predict stage, once with the trained weights (row <method>)
# and once with the weights training started from (row <method>@init), through the same prediction path.
method = snakemake.params.method


def predict_both(cfg):
    predict = predict_stage(method)
    for weights, predictions, meta, row in trained_and_init(snakemake, method):
        predict(cfg, snakemake.wildcards.backbone, weights, predictions, meta, method=row)


run_stage(snakemake, predict_both)
