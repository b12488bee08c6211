rule extract_features:
    input:
        dataset_inputs,
    output:
        store=directory(f"{FEAT}/{{backbone}}.zarr"),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.features.stage:extract"),
            dataset_keys=("kind", "root", "pairs_csv"),
        ),
        images=FINGERPRINTS["images"],  # a replaced image re-extracts; an edited pair list does not
    log:
        f"{LOGS}/extract_features/{FEAT_ID}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/extract_features/{FEAT_ID}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/extract_features.py"
