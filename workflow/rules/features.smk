rule extract_features:
    input:
        dataset_inputs,
    output:
        store=directory(f"{FEAT_ROOT}/{{image_set}}/{FEAT_RES}/{{backbone}}.zarr"),
    wildcard_constraints:
        image_set="|".join(re.escape(k) for k in FEATURE_SOURCES),
    params:
        cfg=lambda w: cfg_params(*reads_of("pipeline_lib.features.stage:extract"),
                                 dataset_keys=("kind", "root", "pairs_csv"), source=FEATURE_SOURCES[w.image_set]),
        # a replaced image of this dataset re-extracts its store; an edited pair list does not
        images=lambda w: FINGERPRINTS["images"][FEATURE_SOURCES[w.image_set]],
    log:
        f"{LOGS}/extract_features/{{image_set}}/{FEAT_RES}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/extract_features/{{image_set}}/{FEAT_RES}/{{backbone}}.tsv"
    threads: HEAVY_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    script:
        "../scripts/extract_features.py"
