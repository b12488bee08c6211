# Gaur & Manjunath: pseudo ground-truth flow between the images of a category from its manifold's labels,
# and its quality against the truth.
rule make_pseudo_flow:
    input:
        pair_inputs,
        manifold=rules.learn_manifold.output.store,
        features=feature_stores,
    output:
        store=directory(f"{BASE}/{{backbone}}/pseudo_flow/{{category}}/pseudo_flow.zarr"),
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.pseudo_flow.stage:make"),
            dataset_keys=("kind", "root", "pairs_csv", "split"),
        ),
    log:
        f"{LOGS}/make_pseudo_flow/{D}/{{backbone}}/{{category}}.log",
    benchmark:
        f"{BENCH}/make_pseudo_flow/{D}/{{backbone}}/{{category}}.tsv"
    priority: CHAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/make_pseudo_flow.py"


def per_category(backbone, path):
    """``path`` under pseudo_flow/ or manifold/ of every category (one scoring job reads them all)."""
    return expand(f"{BASE}/{backbone}/{path}", category=categories(config))


# The stored pseudo flows against the truth, beside the other constructions and the part-level references,
# then their summary; a rule of its own, so new evaluation settings rescore without rewriting the Siamese
# network's targets. One job for all categories: scoring takes seconds, a job's imports several.
rule score_pseudo_flow:
    input:
        pair_inputs,
        manifold=lambda w: per_category(w.backbone, "manifold/{category}/manifold.zarr"),
        features=feature_stores,
        pseudo_flow=lambda w: per_category(w.backbone, "pseudo_flow/{category}/pseudo_flow.zarr"),
    output:
        quality=expand(f"{BASE}/{{{{backbone}}}}/pseudo_flow/{{category}}/quality.csv", category=categories(config)),
        csv=f"{BASE}/{{backbone}}/pseudo_flow/quality_summary.csv",
    params:
        cfg=cfg_params(
            *reads_of("pipeline_lib.pseudo_flow.stage:score_all"),
            dataset_keys=("kind", "root", "pairs_csv", "split"),
        ),
        categories=categories(config),
    log:
        f"{LOGS}/score_pseudo_flow/{D}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/score_pseudo_flow/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/score_pseudo_flow.py"
