rule search_hyperpixel_layers:
    input:
        pair_inputs,
        features=feature_stores,
    output:
        record=f"{DATA}/{{backbone}}/hpf/search.json",
        trace=f"{DATA}/{{backbone}}/hpf/search_trace.csv",
        plot=report(
            f"{DATA}/{{backbone}}/hpf/search_trace.png",
            caption="../report/search_trace.rst",
            category="Hyperpixel Flow",
            labels={"dataset": D, "backbone": "{backbone}"},
        ),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.hpf.stage:search_layers"), drop=SEARCH_ONLY_RHM),
    log:
        f"{LOGS}/search_hyperpixel_layers/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/search_hyperpixel_layers/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=GPUS,
    script:
        "../scripts/search_hyperpixel_layers.py"


rule predict_hpf:
    input:
        pair_inputs,
        features=feature_stores,
        search=rules.search_hyperpixel_layers.output.record,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/{{method}}/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/{{method}}/predict_meta.json",
    wildcard_constraints:
        method="|".join(predicted_by("predict_hpf")),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.methods.stage:predict"),
            *reads_of_rule("predict_hpf"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_hpf/{LOGD}/{{backbone}}/{{method}}.log",
    benchmark:
        f"{BENCH}/predict_hpf/{LOGD}/{{backbone}}/{{method}}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict.py"
