# Every evaluated row of the table (each trained method also with its @init weights), in table order.
EVALUATED = evaluated_methods(config["methods"])
# The configured methods with a dense flow (pictured as the source warped onto the target).
FLOW_METHODS = [m for m in config["methods"] if m in DENSE_FLOW_METHODS]


def method_files(name):
    """One file per evaluated method under methods/<method>/ (backbone left as a wildcard)."""
    return expand(f"{DATA_WILD}/{{{{backbone}}}}/methods/{{method}}/{name}", method=EVALUATED)


# PCK of every method in one job: the dataset is indexed once and no process starts per method (the
# evaluation itself takes milliseconds per method); per-method files stay in methods/<method>/.
rule evaluate:
    input:
        pair_inputs,
        predictions=method_files("predictions.csv"),
        metas=method_files("predict_meta.json"),
    output:
        per_pair=method_files("pck_per_pair.csv"),
        summaries=method_files("pck_summary.csv"),
        csv=f"{DATA}/{{backbone}}/pck_summary.csv",
        md=f"{DATA}/{{backbone}}/pck_summary.md",
        png=report(
            f"{DATA}/{{backbone}}/pck_summary.png",
            caption="../report/pck_summary.rst",
            category="Evaluation",
            subcategory="Summary",
            labels={"dataset": D, "backbone": "{backbone}", "what": "plot"},
        ),
        html=report(
            f"{DATA}/{{backbone}}/pck_summary.html",
            caption="../report/pck_summary_table.rst",
            category="Evaluation",
            subcategory="Summary",
            labels={"dataset": D, "backbone": "{backbone}", "what": "table"},
        ),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.evaluation.stage:evaluate_and_aggregate")),
        methods=EVALUATED,
    log:
        f"{LOGS}/evaluate/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/evaluate/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate.py"


# Pictures of the first evaluation pairs of each category: every method's predictions against the truth.
rule draw_test_pairs:
    input:
        pair_inputs,
        predictions=method_files("predictions.csv"),
    output:
        pictures=report(
            directory(f"{DATA}/{{backbone}}/pictures"),
            patterns=["{category}.png"],
            caption="../report/test_pairs.rst",
            category="Evaluation",
            subcategory="Test pairs",
            labels={"dataset": D, "backbone": "{backbone}", "category": "{category}"},
        ),
    params:
        cfg=cfg_params(*reads_of("pipeline_lib.evaluation.stage:draw_test_pairs")),
        methods=EVALUATED,
    log:
        f"{LOGS}/draw_test_pairs/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/draw_test_pairs/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/draw_test_pairs.py"


# The same pairs' source warped onto the target by every dense-flow method's trained model (its matches of the
# target's pixels back into the source): what a flow looks like, beside what it scores.
rule draw_flow_warps:
    input:
        pair_inputs,
        weights=expand(f"{DATA_WILD}/{{{{backbone}}}}/{{method}}/model.pt", method=FLOW_METHODS),
    output:
        pictures=report(
            directory(f"{DATA}/{{backbone}}/warps"),
            patterns=["{category}.png"],
            caption="../report/flow_warps.rst",
            category="Evaluation",
            subcategory="Dense flows",
            labels={"dataset": D, "backbone": "{backbone}", "category": "{category}"},
        ),
    params:
        # each method's model is built from its own section: the sections its predict stage reads
        cfg=cfg_params(
            *reads_of("pipeline_lib.evaluation.stage:draw_flow_warps"),
            *(k for m in FLOW_METHODS for k in reads_of(method_entry(m).predict)),
            drop=SCORING_ONLY,
        ),
        methods=FLOW_METHODS,
    log:
        f"{LOGS}/draw_flow_warps/{LOGD}/{{backbone}}.log",
    benchmark:
        f"{BENCH}/draw_flow_warps/{LOGD}/{{backbone}}.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=GPUS,
    script:
        "../scripts/draw_flow_warps.py"


if FOLDS:

    # Category folds: every fold's test pairs pooled into the dataset's tables (each pair tested exactly once;
    # the job checks it against the dataset's index), rows marked protocol category_folds, folds listed.
    rule pool_folds:
        input:
            index=f"{BASE}/index/pairs.csv",
            per_pair=expand(f"{DATA}/{{{{backbone}}}}/methods/{{method}}/pck_per_pair.csv", fold=FOLDS,
                            method=EVALUATED),
            metas=expand(f"{DATA}/{{{{backbone}}}}/methods/{{method}}/predict_meta.json", fold=FOLDS,
                         method=EVALUATED),
        output:
            per_pair=expand(f"{BASE}/{{{{backbone}}}}/methods/{{method}}/pck_per_pair.csv", method=EVALUATED),
            folds=f"{BASE}/{{backbone}}/folds.csv",
            csv=f"{BASE}/{{backbone}}/pck_summary.csv",
            md=f"{BASE}/{{backbone}}/pck_summary.md",
            png=report(
                f"{BASE}/{{backbone}}/pck_summary.png",
                caption="../report/pck_summary.rst",
                category="Evaluation",
                subcategory="Summary",
                labels={"dataset": D, "backbone": "{backbone}", "what": "plot"},
            ),
            html=report(
                f"{BASE}/{{backbone}}/pck_summary.html",
                caption="../report/pck_summary_table.rst",
                category="Evaluation",
                subcategory="Summary",
                labels={"dataset": D, "backbone": "{backbone}", "what": "table"},
            ),
        params:
            cfg=cfg_params(*reads_of("pipeline_lib.evaluation.stage:pool_category_folds")),
            methods=EVALUATED,
            folds=FOLDS,
        log:
            f"{LOGS}/pool_folds/{D}/{{backbone}}.log",
        benchmark:
            f"{BENCH}/pool_folds/{D}/{{backbone}}.tsv"
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/pool_folds.py"
