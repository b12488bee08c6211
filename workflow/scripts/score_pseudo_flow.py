from pipeline_lib import pseudo_gt
from pipeline_lib.snakemake_adapter import run_stage


def score_all(cfg):
    i, o = snakemake.input, snakemake.output
    for cat, manifold, store, quality in zip(snakemake.params.categories, i.manifold, i.pseudo_flow, o.quality):
        pseudo_gt.score(cfg, cat, manifold, i.features, store, quality)
    pseudo_gt.summarise(o.quality, o.csv)


run_stage(snakemake, score_all)
