rule generate_demo:
    output:
        directory(f"{BASE}/data"),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.datasets.stage:generate_demo")),
    log:
        f"{LOGS}/generate_demo/{D}.log",
    benchmark:
        f"{BENCH}/generate_demo/{D}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/generate_demo.py"


rule index_dataset:
    input:
        dataset_inputs,
    output:
        pairs=f"{BASE}/index/pairs.csv",
        meta=f"{BASE}/index/meta.json",
        # the validated dataset, frozen: every later stage reads it, never the live annotation files
        frozen=f"{BASE}/index/dataset.json",
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.datasets.stage:index_dataset")),
        # the content of every file of the dataset: an edited image, annotation or pair list reruns the
        # index and everything after it (a params change); an unchanged copy reruns nothing
        data=FINGERPRINTS["data"],
        index_format=FROZEN_FORMAT,  # a new layout of index/dataset.json rewrites it
    log:
        f"{LOGS}/index_dataset/{D}.log",
    benchmark:
        f"{BENCH}/index_dataset/{D}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/index_dataset.py"


if FOLDS:

    # Each fold's own index (its split: the fold's categories test, the others train/val), for inspection
    # and as the per-fold stages' input.
    use rule index_dataset as index_fold with:
        input:
            dataset_inputs,
            frozen=f"{BASE}/index/dataset.json",
        output:
            pairs=f"{DATA}/index/pairs.csv",
            meta=f"{DATA}/index/meta.json",
        log:
            f"{LOGS}/index_dataset/{LOGD}.log",
        benchmark:
            f"{BENCH}/index_dataset/{LOGD}.tsv"
