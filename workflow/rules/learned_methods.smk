# Trained methods evaluated side by side: SFNet (Lee et al. 2019), WeakAlign (Rocco et al. 2018), FCSS
# (Kim et al. 2017). Each trains on the training split (checkpoints beside model.pt, resumable) and
# predicts the evaluation pairs into methods/<m>/, which evaluate_method turns into PCK rows.


rule train_sfnet:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/sfnet/model.pt",
        meta=f"{DATA}/{{backbone}}/sfnet/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/sfnet/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/sfnet/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="sfnet",
        ),
    params:
        cfg=cfg_params("seed", "weights", "sfnet", dataset_keys=("kind", "root", "split")),
    log:
        f"logs/train_sfnet/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/train_sfnet/{D}/{{backbone}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/train_sfnet.py"


rule predict_sfnet:
    input:
        pair_inputs,
        weights=rules.train_sfnet.output.weights,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/sfnet/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/sfnet/predict_meta.json",
    params:
        cfg=cfg_params("seed", "weights", "sfnet", "evaluation", dataset_keys=("kind", "root", "split")),
    log:
        f"logs/predict_sfnet/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/predict_sfnet/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/predict_sfnet.py"


rule train_weakalign:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/weakalign/model.pt",
        meta=f"{DATA}/{{backbone}}/weakalign/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/weakalign/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/weakalign/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="weakalign",
        ),
    params:
        cfg=cfg_params("seed", "weights", "weakalign", dataset_keys=("kind", "root", "split")),
    log:
        f"logs/train_weakalign/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/train_weakalign/{D}/{{backbone}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/train_weakalign.py"


rule predict_weakalign:
    input:
        pair_inputs,
        weights=rules.train_weakalign.output.weights,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/weakalign/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/weakalign/predict_meta.json",
    params:
        cfg=cfg_params("seed", "weights", "weakalign", "evaluation", dataset_keys=("kind", "root", "split")),
    log:
        f"logs/predict_weakalign/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/predict_weakalign/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/predict_weakalign.py"


rule train_fcss:
    input:
        pair_inputs,
    output:
        weights=f"{DATA}/{{backbone}}/fcss/model.pt",
        meta=f"{DATA}/{{backbone}}/fcss/train_meta.json",
        log_csv=f"{DATA}/{{backbone}}/fcss/train_log.csv",
        curve=report(
            f"{DATA}/{{backbone}}/fcss/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
            subcategory="fcss",
        ),
    params:
        cfg=cfg_params("seed", "weights", "fcss", dataset_keys=("kind", "root", "split"), drop={"fcss": ("longer_side",)}),
    log:
        f"logs/train_fcss/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/train_fcss/{D}/{{backbone}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/train_fcss.py"


rule predict_fcss:
    input:
        pair_inputs,
        weights=rules.train_fcss.output.weights,
    output:
        predictions=f"{DATA}/{{backbone}}/methods/fcss/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/fcss/predict_meta.json",
    params:
        cfg=cfg_params("seed", "weights", "fcss", "evaluation", "image", dataset_keys=("kind", "root", "split")),
    log:
        f"logs/predict_fcss/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/predict_fcss/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/predict_fcss.py"
