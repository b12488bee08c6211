rule predict_nn:
    input:
        pair_inputs,
        features=rules.extract_features.output.store,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/nn/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/nn/predict_meta.json",
    params:
        cfg=cfg_params("seed", "dataset", "nn", "evaluation", drop=SCORING_ONLY),
        method="nn",
    log:
        f"{LOGS}/predict_nn/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_nn/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPUS,
    script:
        "../scripts/predict.py"
