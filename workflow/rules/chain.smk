# The full chain (Gaur et al. + Min et al.): features of the Siamese-trained encoder, their layer search, gaur_hpf.
# The encoder's store is keyed by the sha256 of model.pt; search and predict refuse a store of another checkpoint.
rule extract_siamese_features:
    input:
        dataset_inputs,
        checkpoint=rules.train_siamese.output.weights,
    output:
        store=directory(f"{DATA}/{{backbone}}/chain/features.zarr"),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.features.stage:extract_encoder"),
            dataset_keys=("kind", "root", "pairs_csv"),
        ),
    log:
        f"{LOGS}/extract_siamese_features/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/extract_siamese_features/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/extract_siamese_features.py"


rule search_gaur_layers:
    input:
        pair_inputs,
        features=rules.extract_siamese_features.output.store,
        checkpoint=rules.train_siamese.output.weights,
    output:
        record=f"{DATA}/{{backbone}}/chain/search.json",
        trace=f"{DATA}/{{backbone}}/chain/search_trace.csv",
        plot=report(
            f"{DATA}/{{backbone}}/chain/search_trace.png",
            caption="../report/search_trace.rst",
            category="Full chain (gaur_hpf)",
            labels={"dataset": D, "backbone": "{backbone}"},
        ),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.hpf.stage:search_layers"), drop=SEARCH_ONLY_RHM),
    log:
        f"{LOGS}/search_gaur_layers/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/search_gaur_layers/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=GPUS,
    script:
        "../scripts/search_hyperpixel_layers.py"


rule predict_gaur_hpf:
    input:
        pair_inputs,
        features=rules.extract_siamese_features.output.store,
        search=rules.search_gaur_layers.output.record,
        checkpoint=rules.train_siamese.output.weights,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/gaur_hpf/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/gaur_hpf/predict_meta.json",
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.methods.stage:predict"),
            *reads_of_rule("predict_gaur_hpf"),
            drop=SCORING_ONLY,
        ),
        method="gaur_hpf",
    log:
        f"{LOGS}/predict_gaur_hpf/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_gaur_hpf/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict.py"
