rule learn_manifold:
    input:
        pair_inputs,
        features=feature_stores,
    output:
        store=directory(f"{BASE}/{{backbone}}/manifold/{{category}}/manifold.zarr"),
        kfd=f"{BASE}/{{backbone}}/manifold/{{category}}/kfd.pkl",
        labels=report(
            f"{BASE}/{{backbone}}/manifold/{{category}}/label_maps.png",
            caption="../report/label_maps.rst",
            category="Manifold learning",
            subcategory="{category}",
        ),
        convergence=report(
            f"{BASE}/{{backbone}}/manifold/{{category}}/convergence.png",
            caption="../report/convergence.rst",
            category="Manifold learning",
            subcategory="{category}",
        ),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.manifold.stage:learn"),
            dataset_keys=("kind", "root", "pairs_csv", "split"),
        ),
    log:
        f"{LOGS}/learn_manifold/{D}/{{backbone}}/{{category}}.log",
    benchmark:
        f"{BENCH}/learn_manifold/{D}/{{backbone}}/{{category}}.tsv"
    threads: HEAVY_THREADS
    priority: CHAIN_PRIORITY
    resources:
        mem_mb=16000,
        runtime=60,
    script:
        "../scripts/learn_manifold.py"


rule summarise_manifold:
    input:
        pair_inputs,
        stores=lambda w: manifold_outputs(w.backbone),
    output:
        csv=f"{BASE}/{{backbone}}/manifold/summary.csv",
    params:
        # the keypoints of the images, at which it scores the labels
        cfg=cfg_params(
            *reads_of("pipeline_lib.manifold.stage:summarise"),
            dataset_keys=("kind", "root", "pairs_csv", "split"),
        ),
    log:
        f"{LOGS}/summarise_manifold/{D}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/summarise_manifold/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/summarise_manifold.py"
