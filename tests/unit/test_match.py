"""`python -m pipeline_lib match`: two images of one's own through a method of a finished run. On two demo images
(a known warp apart) the matches land near the true points; missing run artifacts and bad points are clear errors."""

import csv
import json

import numpy as np
import pytest
import yaml

from pipeline_lib.__main__ import main
from pipeline_lib.config import validate_config
from pipeline_lib.kernels.image_warp import warp_grid, warp_source
from pipeline_lib.match import MatchError, grid_points, match_images, parse_points


@pytest.fixture(scope="module")
def demo_pair(tiny_demo_store):
    """Source and target image paths of a demo pair (128 px) and its true keypoints (original pixels)."""
    index, store = tiny_demo_store
    moved = lambda p: np.median(np.linalg.norm(p.src_kps[p.valid] - p.trg_kps[p.valid], axis=1))  # noqa: E731
    p = max((p for p in index.pairs if p.valid.sum() >= 6), key=moved)  # the pair whose points moved most
    return index.images[p.src].path, index.images[p.trg].path, p.src_kps[p.valid], p.trg_kps[p.valid], store


def config(tmp_path, **extra):
    return validate_config({"results_dir": str(tmp_path / "results"), "device": "cpu", "image": {"longer_side": 128},
                            **extra})


def test_nn_recovers_the_known_warp_of_two_demo_images(demo_pair, tmp_path):
    src, trg, src_kps, trg_kps, _ = demo_pair
    res = match_images(config(tmp_path), src, trg, "nn", points=src_kps, out_dir=tmp_path / "out")
    err = np.linalg.norm(res.trg_points - trg_kps, axis=1)
    still = np.linalg.norm(src_kps - trg_kps, axis=1)  # the error of predicting no motion
    assert np.median(err) < 0.08 * 128 and np.median(err) < 0.5 * np.median(still), (err, still)
    rows = list(csv.DictReader((tmp_path / "out" / "matches.csv").open()))
    assert len(rows) == len(src_kps) and float(rows[0]["src_x"]) == pytest.approx(src_kps[0, 0], abs=1e-3)
    assert (tmp_path / "out" / "match.png").stat().st_size > 0 and (tmp_path / "out" / "warp.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["method"] == "nn"


def test_hpf_uses_the_runs_searched_layers_and_says_how_to_make_them(demo_pair, tmp_path):
    src, trg, src_kps, trg_kps, store = demo_pair
    cfg = config(tmp_path)
    run = tmp_path / "results" / "demo"
    with pytest.raises(MatchError, match=r"snakemake --cores 2 --configfile .* .*hpf/search\.json.*search_hyperpixel_layers"):
        match_images(cfg, src, trg, "hpf", points=src_kps, run_dir=run)
    deep = store.layer_names[-3:]
    record = run / "efficientnet_lite0" / "hpf" / "search.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"best_layers": deep, "best_single_rhm": deep[:1], "layer_names": store.layer_names}))
    res = match_images(cfg, src, trg, "hpf", points=src_kps, run_dir=run, out_dir=tmp_path / "hpf")
    assert res.artifacts["params"]["layers"] == deep and res.artifacts["search"] == str(record)
    assert np.isfinite(res.trg_points).all() and res.trg_points.shape == trg_kps.shape


def test_methods_match_cannot_run_and_points_outside_the_image_are_refused(demo_pair, tmp_path):
    src, trg, *_ = demo_pair
    with pytest.raises(MatchError, match="unknown method 'nope'"):
        match_images(config(tmp_path), src, trg, "nope")
    with pytest.raises(MatchError, match=r"chain/search\.json not found.*search_gaur_layers"):
        match_images(config(tmp_path), src, trg, "gaur_hpf", run_dir=tmp_path / "run")
    with pytest.raises(MatchError, match="outside"):
        match_images(config(tmp_path), src, trg, "nn", points=np.array([[500.0, 3.0]]))
    with pytest.raises(MatchError, match="--warp-step must be >= 0"):
        match_images(config(tmp_path), src, trg, "nn", warp_step=-1)
    with pytest.raises(MatchError, match="target image not found"):
        match_images(config(tmp_path), src, tmp_path / "nope.png", "nn")
    folds = config(tmp_path, dataset={"name": "f", "kind": "demo", "split": {"mode": "category_folds", "folds": 2}})
    with pytest.raises(MatchError, match="--run-dir .*/f/folds/fold0"):
        match_images(folds, src, trg, "hpf")


def test_points_parse_from_a_list_or_a_csv_and_name_a_bad_row(tmp_path):
    assert parse_points("1,2; 3.5,4").tolist() == [[1, 2], [3.5, 4]]
    f = tmp_path / "p.csv"
    f.write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(MatchError, match=r"p\.csv, row 3"):
        parse_points(str(f))
    f.write_text("x,y\n1,2\n3,4\n")
    assert parse_points(str(f)).tolist() == [[1, 2], [3, 4]]
    g = grid_points((20, 40), 2)
    assert g.tolist() == [[9.5, 4.5], [29.5, 4.5], [9.5, 14.5], [29.5, 14.5]]


def test_the_command_line_writes_the_matches_and_reports_errors(demo_pair, tmp_path, capsys):
    src, trg, *_ = demo_pair
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "r"), "device": "cpu", "image": {"longer_side": 128}}))
    out = tmp_path / "cli"
    assert main(["match", str(src), str(trg), "--method", "nn", "--configfile", str(cfg_file), "--out", str(out),
                 "--points", "10,10;40,60"]) == 0
    assert "2 points matched with nn" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "matches.csv").open()))) == 2
    assert main(["match", str(src), str(trg), "--method", "nn", "--configfile", str(cfg_file), "--points", "10;x"]) == 2
    assert "is not 'x,y'" in capsys.readouterr().err


def test_the_warp_of_a_known_translation_moves_the_source_by_it():
    """Target pixel p matched to source pixel p + (3, 2): the warped source at p is the source at p + (3, 2)."""
    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    grid = warp_grid((40, 50), 4)
    assert grid[0].tolist() == [0, 0] and grid[-1].tolist() == [49, 39]
    back = grid + (3.0, 2.0)
    warped = warp_source(src, back, (40, 50), 4)
    assert warped.shape == src.shape
    np.testing.assert_array_equal(warped[:38, :47], src[2:, 3:])
    assert (warped[38:, :] == 0).all() and (warped[:, 47:] == 0).all()  # matched outside the source: black
    back[5] = np.nan  # a missing match blacks out its neighbourhood, never smears
    assert (warp_source(src, back, (40, 50), 4)[0, 20] == 0).all()
