def pseudo_flow_outputs(backbone):
    """The make_pseudo_flow stores of every category: the Siamese network's training targets."""
    return expand(f"{BASE}/{backbone}/pseudo_flow/{{category}}/pseudo_flow.zarr", category=categories(config))


def siamese_extra_inputs(wildcards):
    """The backbone's feature store (siamese.train_on: features) and the hpf layer search (match_layers: search)."""
    sc = config["siamese"]
    extra = {}
    if sc.get("train_on") == "features":
        extra["features"] = feature_stores(wildcards)
    if sc.get("match_layers") == "search":
        extra["search"] = rules.search_hyperpixel_layers.output.record.format(**dict(wildcards.items()))
    return extra


rule train_siamese:
    input:
        unpack(siamese_extra_inputs),
        pair_inputs,
        pseudo_flow=lambda w: pseudo_flow_outputs(w.backbone),
    output:
        weights=f"{DATA}/{{backbone}}/siamese/model.pt",
        init=f"{DATA}/{{backbone}}/siamese/init.pt",
        log_csv=f"{DATA}/{{backbone}}/siamese/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/siamese/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="siamese",
        ),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.siamese.stage:train"),
            dataset_keys=("kind", "root", "split"),
            drop={"siamese": ("retrieval_top_k",)},  # a prediction-only key: never retrains
        ),
    log:
        f"{LOGS}/train_siamese/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/train_siamese/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    priority: CHAIN_PRIORITY
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    script:
        "../scripts/train_siamese.py"


# siamese (trained weights) and siamese@init (the weights training started from), one prediction path.
rule predict_siamese:
    input:
        pair_inputs,
        **trained_inputs("siamese"),
    output:
        **trained_outputs("siamese"),
    params:
        method="siamese",
        cfg=cfg_params(
            *reads_of("pipeline_lib.siamese.stage:predict"),
            dataset_keys=("kind", "root", "split"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_siamese/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_siamese/{LOGD}/{{backbone}}.tsv"
    priority: CHAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict_trained.py"
