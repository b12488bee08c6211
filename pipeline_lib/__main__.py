"""Command line: ``python -m pipeline_lib {match,inspect,summary,readme-results} ...`` (also installed as ``pipeline-lib``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .datasets import DatasetError
from .inspect import describe, save_feature_picture
from .match import DEFAULT_GRID, DEFAULT_METHOD, DEFAULT_WARP_STEP, MatchError, match_images, parse_points
from .readme_results import update_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline-lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="describe an artifact (Zarr store, CSV, JSON); optionally save a picture")
    p.add_argument("path")
    p.add_argument("--image", help="image id for --save (default: the first image)")
    p.add_argument("--layer", help="layer for --save (default: the backbone's default layer)")
    p.add_argument("--save", metavar="PNG", help="save a PCA colouring of one image's feature map")
    p.add_argument("--groups", type=int, default=5, help="how many sub-groups to list per group")
    s = sub.add_parser("summary", help="print the result tables of a finished run")
    s.add_argument("--configfile", default="config/config.yaml")
    m = sub.add_parser("match", help="match points of one image into another with a method of a finished run")
    m.add_argument("source")
    m.add_argument("target")
    m.add_argument("--method", default=DEFAULT_METHOD, help=f"method (default {DEFAULT_METHOD}: its searched layers)")
    m.add_argument("--configfile", default="config/config.yaml", help="the run's config (device, image size, method settings)")
    m.add_argument("--run-dir", help="directory with <backbone>/hpf/search.json or <backbone>/<method>/model.pt "
                                     "(default: <results_dir>/<dataset> of the config)")
    m.add_argument("--backbone", help="backbone (default: the config's first)")
    m.add_argument("--points", help="source points 'x,y;x,y' or a CSV with x and y columns (original pixels)")
    m.add_argument("--grid", type=int, default=DEFAULT_GRID, help="points per side of the source grid when no --points")
    m.add_argument("--out", help="output directory (default: <results_dir>/match/<source>__<target>/<method>)")
    m.add_argument("--warp-step", type=int, default=DEFAULT_WARP_STEP,
                   help="warp.png: target pixels this far apart matched back into the source (0 = no warp.png)")
    r = sub.add_parser("readme-results", help="regenerate README.md's results section from the result files")
    r.add_argument("configs", nargs="*", default=["config/config.yaml", "config/demo-stack.yaml",
                                                   "config/pf-willow.yaml", "config/pf-willow-split.yaml",
                                                   "config/pf-willow-folds.yaml"])
    r.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)

    if args.command == "readme-results":
        update_readme(args.readme, args.configs)
        print(f"updated the results section of {args.readme} from {', '.join(args.configs)}")
        return 0

    if args.command == "match":
        try:
            cfg = load_config(args.configfile)
            points = parse_points(args.points) if args.points else None
            res = match_images(cfg, args.source, args.target, args.method, points, args.grid, args.run_dir,
                               args.backbone, args.out, args.configfile, args.warp_step)
        except (MatchError, DatasetError, ConfigError) as exc:
            print(f"match: {exc}", file=sys.stderr)
            return 2
        warp = f", warp {res.out_dir / 'warp.png'}" if args.warp_step else ""
        print(f"{len(res.src_points)} points matched with {args.method}: {res.out_dir / 'matches.csv'}, "
              f"picture {res.out_dir / 'match.png'}{warp}, record {res.out_dir / 'meta.json'}")
        return 0

    if args.command == "inspect":
        print(describe(args.path, args.groups))
        if args.save:
            what = save_feature_picture(args.path, args.image, args.layer, args.save)
            print(f"saved {args.save} ({what})")
        return 0
    cfg = load_config(args.configfile)
    base = Path(cfg["results_dir"]) / cfg["dataset"]["name"]
    for b in cfg["backbones"]:
        md = base / b / "pck_summary.md"
        if not md.is_file():
            print(f"{md} not found: run the workflow first (make run).", file=sys.stderr)
            return 1
        print(f"\n## {cfg['dataset']['name']} / {b}\n\n{md.read_text()}")
        print(f"tables: {base / b / 'pck_summary.csv'} (per pair: {base / b}/methods/*/pck_per_pair.csv)")
        print(f"artifacts: {base / b}/ (features cache: {cfg['results_dir']}/features/); "
              f"logs: {cfg['results_dir']}/logs/; HTML report: `make report` -> report.html; "
              f"inspect any artifact: python -m pipeline_lib inspect PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
