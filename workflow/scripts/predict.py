from pipeline_lib.methods.stage import predict
from pipeline_lib.snakemake_adapter import run_stage

# Every feature-based method: the method is the rule's params.method or its {method} wildcard; the layer
# search record and (gaur_hpf) the checkpoint whose key the store and the record must carry, where the rule has them.
i, o = snakemake.input, snakemake.output
run_stage(snakemake, lambda cfg: predict(cfg, snakemake.params.get("method", snakemake.wildcards.get("method")),
                                         i.features, o.predictions, o.meta, search_json=i.get("search"),
                                         checkpoint=i.get("checkpoint")))
