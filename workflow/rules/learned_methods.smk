# Trained methods evaluated side by side: SFNet (Lee et al. 2019), CNNGeometric (Rocco et al. 2017) and
# WeakAlign fine-tuned from it (Rocco et al. 2018), FCSS
# (Kim et al. 2017). Each trains on the training split (checkpoints beside model.pt, resumable) and
# predicts the evaluation pairs into methods/<m>/ and methods/<m>@init/, which `evaluate` turns into PCK rows.


rule train_sfnet:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/sfnet/model.pt",
        init=f"{DATA}/{{backbone}}/sfnet/init.pt",
        meta=f"{DATA}/{{backbone}}/sfnet/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/sfnet/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/sfnet/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="sfnet",
        ),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.sfnet.stage:train"), dataset_keys=("kind", "root", "split")),
    log:
        f"{LOGS}/train_sfnet/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/train_sfnet/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    script:
        "../scripts/train_sfnet.py"


rule predict_sfnet:  # sfnet and sfnet@init: trained and initial weights, one job, one prediction path
    input:
        pair_inputs,
        **trained_inputs("sfnet"),
    output:
        **trained_outputs("sfnet"),
    params:
        method="sfnet",
        cfg=cfg_params(
            *reads_of("pipeline_lib.sfnet.stage:predict"),
            dataset_keys=("kind", "root", "split"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_sfnet/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_sfnet/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict_trained.py"


rule train_cnngeometric:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/cnngeometric/model.pt",
        init=f"{DATA}/{{backbone}}/cnngeometric/init.pt",
        meta=f"{DATA}/{{backbone}}/cnngeometric/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/cnngeometric/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/cnngeometric/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="cnngeometric",
        ),
    params:
        # the network's architecture is the weakalign section's; its fine-tuning keys do not matter here
        cfg=cfg_params(
            *reads_of("pipeline_lib.weakalign.stage:train_cnngeometric"),
            dataset_keys=("kind", "root", "split"),
            drop={"weakalign": ("epochs", "lr", "batch_size", "weight_decay", "swap_prob", "flip_prob",
                                "crop_fraction", "threshold_cells", "normalise", "transfer")},
        ),
    log:
        f"{LOGS}/train_cnngeometric/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/train_cnngeometric/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    script:
        "../scripts/train_cnngeometric.py"


# cnngeometric (trained weights) and cnngeometric@init (identity heads): WeakAlign's prediction path.
rule predict_cnngeometric:
    input:
        pair_inputs,
        **trained_inputs("cnngeometric"),
    output:
        **trained_outputs("cnngeometric"),
    params:
        method="cnngeometric",
        cfg=cfg_params(
            *reads_of("pipeline_lib.weakalign.stage:predict"),
            dataset_keys=("kind", "root", "split"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_cnngeometric/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_cnngeometric/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict_trained.py"


# WeakAlign fine-tunes the CNNGeometric checkpoint (Rocco et al. 2018 Sec. 4.1).
rule train_weakalign:
    input:
        pair_inputs,
        init_from=rules.train_cnngeometric.output.weights,
    output:
        weights=f"{DATA}/{{backbone}}/weakalign/model.pt",
        init=f"{DATA}/{{backbone}}/weakalign/init.pt",
        meta=f"{DATA}/{{backbone}}/weakalign/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/weakalign/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/weakalign/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="weakalign",
        ),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.weakalign.stage:train"),
            dataset_keys=("kind", "root", "split"),
        ),
    log:
        f"{LOGS}/train_weakalign/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/train_weakalign/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    script:
        "../scripts/train_weakalign.py"


# weakalign and weakalign@init (= the CNNGeometric weights it starts from), one prediction path.
rule predict_weakalign:
    input:
        pair_inputs,
        **trained_inputs("weakalign"),
    output:
        **trained_outputs("weakalign"),
    params:
        method="weakalign",
        cfg=cfg_params(
            *reads_of("pipeline_lib.weakalign.stage:predict"),
            dataset_keys=("kind", "root", "split"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_weakalign/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_weakalign/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict_trained.py"


rule train_fcss:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/fcss/model.pt",
        init=f"{DATA}/{{backbone}}/fcss/init.pt",
        meta=f"{DATA}/{{backbone}}/fcss/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/fcss/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/fcss/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="fcss",
        ),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.fcss.stage:train"),
            dataset_keys=("kind", "root", "split"),
            drop={"fcss": ("longer_side",)},
        ),
    log:
        f"{LOGS}/train_fcss/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/train_fcss/{LOGD}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPUS,
    script:
        "../scripts/train_fcss.py"


# fcss and fcss@init (seeded random sampling patterns, ImageNet backbone), one prediction path.
rule predict_fcss:
    input:
        pair_inputs,
        **trained_inputs("fcss"),
    output:
        **trained_outputs("fcss"),
    params:
        method="fcss",
        cfg=cfg_params(
            *reads_of("pipeline_lib.fcss.stage:predict"),
            dataset_keys=("kind", "root", "split"),
            drop=SCORING_ONLY,
        ),
    log:
        f"{LOGS}/predict_fcss/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/predict_fcss/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/predict_trained.py"
