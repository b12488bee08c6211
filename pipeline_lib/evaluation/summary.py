"""Per-pair PCK rows, their per-category/overall summary, and the result tables (CSV, Markdown, plot).

PCK values are percentages. ``pck_per_pair`` averages each pair's PCK (the usual protocol);
``pck_per_keypoint`` pools all keypoints. The category ``all`` is the overall row.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..atomic import atomic_path, write_text
from ..settings import EvaluationSection
from ..datasets.base import ImageRecord, Pair, SkippedPair
from .pck import pck_counts, pck_threshold

PER_PAIR_COLUMNS = ("method", "pair_id", "category", "split", "src", "trg", "alpha", "threshold",
                    "threshold_px", "n_keypoints", "n_correct", "pck")
SUMMARY_COLUMNS = ("method", "category", "alpha", "threshold", "pck_per_pair", "pck_per_keypoint", "n_pairs",
                   "n_keypoints", "dataset", "backbone", "direction", "split", "longer_side", "n_skipped",
                   "ms_per_pair", "protocol", "n_split_dropped")


def evaluate_predictions(method: str, pairs: Sequence[Pair], images: Mapping[str, ImageRecord],
                         preds: Mapping[str, np.ndarray], cfg: EvaluationSection) -> list[dict]:
    """One row per (pair, alpha). A pair without a prediction is an error, never silently dropped."""
    rows = []
    for p in pairs:
        if p.pair_id not in preds:
            raise KeyError(f"method '{method}' has no prediction for pair {p.pair_id}; rerun its predict rule.")
        trg = images[p.trg]
        thr = pck_threshold(cfg.threshold, p.trg_kps, p.valid, (trg.height, trg.width), p.trg_box)
        for alpha in cfg.alphas:
            n_ok, n = pck_counts(preds[p.pair_id], p.trg_kps, p.valid, thr, alpha)
            rows.append({"method": method, "pair_id": p.pair_id, "category": p.category, "split": p.split,
                         "src": p.src, "trg": p.trg, "alpha": alpha, "threshold": cfg.threshold,
                         "threshold_px": round(thr, 3), "n_keypoints": n, "n_correct": n_ok,
                         "pck": round(100.0 * n_ok / n, 4)})
    return rows


def summarise(per_pair: Iterable[Mapping], extra: Mapping | None = None) -> list[dict]:
    """Per (method, category, alpha) and per (method, 'all', alpha) summary rows."""
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in per_pair:
        groups[(r["method"], r["category"], r["alpha"], r["threshold"])].append(r)
        groups[(r["method"], "all", r["alpha"], r["threshold"])].append(r)
    out = []
    for (method, cat, alpha, thr), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all",
                                                                                   kv[0][1], kv[0][2])):
        n_kp = sum(int(r["n_keypoints"]) for r in rows)
        out.append({"method": method, "category": cat, "alpha": alpha, "threshold": thr,
                    "pck_per_pair": round(float(np.mean([float(r["pck"]) for r in rows])), 2),
                    "pck_per_keypoint": round(100.0 * sum(int(r["n_correct"]) for r in rows) / max(n_kp, 1), 2),
                    "n_pairs": len(rows), "n_keypoints": n_kp, **(extra or {})})
    return out


def account_skipped(summary: Sequence[Mapping], skipped: Sequence[SkippedPair],
                    add_vanished: bool = True, split_dropped: Mapping[str, int] | None = None) -> list[dict]:
    """Summary rows with each row's ``n_skipped``: the skipped pairs of its category (``all``: every skipped
    pair), and ``n_split_dropped``: its valid pairs the image-disjoint split left out (``split_dropped``, per
    category). ``add_vanished``: a category none of whose pairs survived (every one skipped) gets rows of its
    own (``n_pairs`` 0, PCK NaN) beside each method's ``all`` rows instead of vanishing from the table."""
    per_category = Counter(s.category for s in skipped)
    dropped = dict(split_dropped or {})

    def counts(category: str) -> dict:
        if category == "all":
            return {"n_skipped": len(skipped), "n_split_dropped": sum(dropped.values())}
        return {"n_skipped": per_category.get(category, 0), "n_split_dropped": dropped.get(category, 0)}

    out = [{**r, **counts(r["category"])} for r in summary]
    present = {r["category"] for r in summary}
    vanished = sorted(c for c in per_category if c and c not in present) if add_vanished else []
    empty = {"pck_per_pair": float("nan"), "pck_per_keypoint": float("nan"), "n_pairs": 0, "n_keypoints": 0}
    added = [{**r, **empty, "category": c, **counts(c)} for c in vanished for r in out if r["category"] == "all"]
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in out))}
    return sorted(out + added, key=lambda r: (order[r["method"]], r["category"] == "all", r["category"],
                                              float(r["alpha"])))


def pool_folds(per_pair_by_fold: Mapping[str, Sequence[Mapping]], expected_pairs: Sequence[str]) -> list[dict]:
    """One method's per-pair rows of every fold, pooled, each row marked with its ``fold``: every pair of
    ``expected_pairs`` (the dataset's) must be tested in exactly one fold, else ValueError naming the pair."""
    where: dict[str, str] = {}
    out: list[dict] = []
    for fold, rows in per_pair_by_fold.items():
        for r in rows:
            other = where.setdefault(r["pair_id"], fold)
            if other != fold:
                raise ValueError(f"pair {r['pair_id']} is tested in {other} and in {fold}; category folds must "
                                 f"test every pair once.")
            out.append({**r, "fold": fold})
    missing = sorted(set(expected_pairs) - set(where))
    extra = sorted(set(where) - set(expected_pairs))
    if missing or extra:
        raise ValueError(f"the folds' test pairs are not the dataset's pairs: {len(missing)} never tested "
                         f"(e.g. {missing[:3]}), {len(extra)} not in the index (e.g. {extra[:3]}); rerun the folds.")
    return out


def _csv_text(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[Mapping], columns: Sequence[str]) -> None:
    write_text(path, _csv_text(rows, columns))


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def _cell(row: Mapping | None) -> str:
    """A category's PCK cell: blank when the method has no row, '-' when every pair of it was skipped."""
    if row is None:
        return ""
    return "-" if int(row["n_pairs"]) == 0 else f"{float(row['pck_per_pair']):.1f}"


def markdown_table(summary: Sequence[Mapping]) -> str:
    """Methods as rows, PCK@alpha (per pair) on 'all' and each category as columns."""
    alphas = sorted({float(r["alpha"]) for r in summary})
    cats = sorted({r["category"] for r in summary} - {"all"})
    methods = list(dict.fromkeys(r["method"] for r in summary))
    get = {(r["method"], r["category"], float(r["alpha"])): r for r in summary}
    head = ["method"] + [f"all @{a:g}" for a in alphas] + [f"{c} @{alphas[len(alphas) // 2]:g}" for c in cats]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mid = alphas[len(alphas) // 2]
    for m in methods:
        cells = [m] + [f"{float(get[(m, 'all', a)]['pck_per_pair']):.1f}" for a in alphas]
        cells += [_cell(get.get((m, c, mid))) for c in cats]
        lines.append("| " + " | ".join(cells) + " |")
    first = next((r for r in summary if r["category"] == "all"), summary[0] if summary else {})
    proto = (f"PCK (%) averaged per pair; threshold: alpha x max side of the target "
             f"{'object box' if first.get('threshold') == 'bbox' else 'image'}; direction: "
             f"{first.get('direction', '?')}; protocol: {first.get('protocol') or '?'}, split: "
             f"{first.get('split', '?')}; images resized to longer side "
             f"{first.get('longer_side', '?')} px; pairs: {first.get('n_pairs', '?')} (skipped: {first.get('n_skipped', 0)}"
             f"{dropped_note(first)}).")
    return "\n".join(lines) + "\n\n" + proto + "\n"


def dropped_note(row: Mapping) -> str:
    """``; N left out by the image-disjoint split`` where a summary row says so, else ``""`` (older tables
    lack the column)."""
    n = int(float(row.get("n_split_dropped") or 0))
    return f"; {n} left out by the image-disjoint split" if n else ""


def write_summary_tables(summary: Sequence[Mapping], csv_path: str | Path, md_path: str | Path,
                         png_path: str | Path | None = None, html_path: str | Path | None = None) -> None:
    write_csv(csv_path, summary, SUMMARY_COLUMNS)
    write_text(md_path, markdown_table(summary))
    if png_path is not None:
        plot_summary(summary, png_path)
    if html_path is not None:
        write_text(html_path, html_table(summary))


def html_table(summary: Sequence[Mapping]) -> str:
    """The full summary as a standalone HTML table (shown inline by ``snakemake --report``)."""
    from html import escape

    head = "".join(f"<th>{escape(c)}</th>" for c in SUMMARY_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in SUMMARY_COLUMNS) + "</tr>"
                   for r in summary)
    style = "table{border-collapse:collapse;font:12px sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" \
           f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"


def plot_summary(summary: Sequence[Mapping], path: str | Path) -> None:
    """Grouped bars: PCK per category (middle alpha), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({float(r["alpha"]) for r in summary})
    mid = alphas[len(alphas) // 2]
    rows = [r for r in summary if float(r["alpha"]) == mid]
    cats = sorted({r["category"] for r in rows} - {"all"}) + ["all"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    val = {(r["method"], r["category"]): float(r["pck_per_pair"]) for r in rows if int(r["n_pairs"]) > 0}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cats) * max(1, len(methods)) / 2), 4))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(cats))
    for i, m in enumerate(methods):
        ax.bar(x + i * width, [val.get((m, c), 0) for c in cats], width, label=m)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, cats, rotation=30, ha="right")
    ax.set_ylabel(f"PCK@{mid:g} (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
