rule learn_manifold:
    input:
        pair_inputs,
        features=rules.extract_features.output.store,
    output:
        store=directory(f"{DATA}/{{backbone}}/manifold/{{category}}/manifold.zarr"),
        kfd=f"{DATA}/{{backbone}}/manifold/{{category}}/kfd.pkl",
        labels=report(
            f"{DATA}/{{backbone}}/manifold/{{category}}/label_maps.png",
            caption="../report/label_maps.rst",
            category="Manifold learning",
            subcategory="{category}",
        ),
        convergence=report(
            f"{DATA}/{{backbone}}/manifold/{{category}}/convergence.png",
            caption="../report/convergence.rst",
            category="Manifold learning",
            subcategory="{category}",
        ),
    params:
        cfg=cfg_params("seed", "manifold", dataset_keys=("kind", "root", "pairs_csv", "split")),
    log:
        f"logs/learn_manifold/{D}/{{backbone}}/{{category}}.log",
    benchmark:
        f"benchmarks/learn_manifold/{D}/{{backbone}}/{{category}}.tsv"
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
        csv=f"{DATA}/{{backbone}}/manifold/summary.csv",
    log:
        f"logs/summarise_manifold/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/summarise_manifold/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/summarise_manifold.py"


rule make_pseudo_flow:
    input:
        pair_inputs,
        manifold=rules.learn_manifold.output.store,
        features=rules.extract_features.output.store,
    output:
        store=directory(f"{DATA}/{{backbone}}/pseudo_flow/{{category}}/pseudo_flow.zarr"),
        quality=f"{DATA}/{{backbone}}/pseudo_flow/{{category}}/quality.csv",
    params:
        cfg=cfg_params("seed", "pseudo_flow", "evaluation", dataset_keys=("kind", "root", "pairs_csv", "split")),
    log:
        f"logs/make_pseudo_flow/{D}/{{backbone}}/{{category}}.log",
    benchmark:
        f"benchmarks/make_pseudo_flow/{D}/{{backbone}}/{{category}}.tsv"
    priority: CHAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/make_pseudo_flow.py"


rule summarise_pseudo_flow:
    input:
        quality=lambda w: expand(
            f"{DATA}/{w.backbone}/pseudo_flow/{{category}}/quality.csv", category=categories(config)
        ),
    output:
        csv=f"{DATA}/{{backbone}}/pseudo_flow/quality_summary.csv",
    log:
        f"logs/summarise_pseudo_flow/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/summarise_pseudo_flow/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/summarise_pseudo_flow.py"
