import pytest
import yaml

from pipeline_lib.evaluation.summary import SUMMARY_COLUMNS, write_csv
from pipeline_lib.published import ALPHAS, PUBLISHED
from pipeline_lib.readme_results import END, START, published_table, update_readme


def test_results_section_is_generated_from_the_summary_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "res"), "dataset": {"name": "toy"}}))
    rows = [{"method": m, "category": c, "alpha": a, "threshold": "bbox", "pck_per_pair": v + a * 100,
             "pck_per_keypoint": v, "n_pairs": 4, "n_keypoints": 40, "dataset": "toy", "backbone": "bb",
             "direction": "source_to_target", "split": "test", "longer_side": 300, "n_skipped": 0,
             "ms_per_pair": 12.5}
            for m, v in (("nn", 10.0), ("hpf", 30.0)) for c in ("cat", "all") for a in (0.05, 0.1, 0.15)]
    write_csv(tmp_path / "res" / "toy" / "efficientnet_lite0" / "pck_summary.csv", rows, SUMMARY_COLUMNS)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold text\n{END}\ntail\n")
    update_readme(readme, [cfg, tmp_path / "c.yaml"])
    text = readme.read_text()
    assert "old text" not in text and text.endswith(f"{END}\ntail\n")
    assert "| hpf | bb | 35.0 | 40.0 | 45.0 | 12.5 | 4 |" in text
    assert "#### Ours: toy (" in text
    assert "| PF-WILLOW | HPF (published) | ResNet-101 | 45.9 | 74.4 | 85.6 | - |" in text
    assert "Protocol: PCK averaged per pair, threshold alpha x max side of the target object box" in text


def test_published_numbers_are_labelled_data_with_backbone_and_source():
    table = published_table()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| dataset |")]
    assert len(rows) == len(PUBLISHED) and all("(published) |" in ln for ln in rows) and len(ALPHAS) == 3
    for r in PUBLISHED:
        assert r.backbone and r.source and r.protocol and len(r.pck) == 3
        assert all(v is None or 0 < v < 100 for v in r.pck)
        known = [v for v in r.pck if v is not None]
        assert known == sorted(known)  # PCK grows with alpha
    # Spot checks against the papers' tables (Min et al. Tables 2 and 4; Lee et al. Table 1; Kim et al. Table 4).
    assert "| PF-PASCAL | HPF (published) | ResNet-101 | 60.1 | 84.8 | 92.7 | 63.0 |" in table
    assert "| PF-WILLOW | SFNet (published) | ResNet-101 | - | 74.0 | - | - |" in table
    assert "| PF-WILLOW | FCSS + Proposal Flow (published) | VGG-16 to conv3-4 + CSS | 29.5 | 58.4 | 71.5 |" in table


def test_missing_markers_are_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no results markers"):
        update_readme(readme, [])
