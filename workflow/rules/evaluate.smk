rule evaluate_method:
    input:
        pair_inputs,
        predictions=f"{DATA}/{{backbone}}/methods/{{method}}/predictions.csv",
        meta=f"{DATA}/{{backbone}}/methods/{{method}}/predict_meta.json",
    output:
        per_pair=f"{DATA}/{{backbone}}/methods/{{method}}/pck_per_pair.csv",
        summary=report(
            f"{DATA}/{{backbone}}/methods/{{method}}/pck_summary.csv",
            caption="../report/method_summary.rst",
            category="Evaluation",
            subcategory="Per method",
            labels={"dataset": D, "backbone": "{backbone}", "method": "{method}"},
        ),
    params:
        cfg=cfg_params("dataset", "evaluation", "image"),
    log:
        f"logs/evaluate_method/{D}/{{backbone}}/{{method}}.log",
    benchmark:
        f"benchmarks/evaluate_method/{D}/{{backbone}}/{{method}}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate_method.py"


rule aggregate_results:
    input:
        summaries=expand(
            f"{DATA}/{{{{backbone}}}}/methods/{{method}}/pck_summary.csv", method=evaluated_methods(config["methods"])
        ),
    output:
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
    log:
        f"logs/aggregate_results/{D}/{{backbone}}.log",
    benchmark:
        f"benchmarks/aggregate_results/{D}/{{backbone}}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/aggregate_results.py"
