rule extract_features:
    input:
        dataset_inputs,
        pairs=rules.index_dataset.output.pairs,
    output:
        store=directory(f"{DATA}/{{backbone}}/features.zarr"),
    params:
        cfg=cfg_params("seed", "dataset", "image", "features", "weights"),
    log:
        f"logs/extract_features/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/extract_features/{D}/{{backbone}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    script:
        "../scripts/extract_features.py"
