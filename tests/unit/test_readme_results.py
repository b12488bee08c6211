import pytest
import yaml

from pipeline_lib.evaluation.summary import SUMMARY_COLUMNS, write_csv
from pipeline_lib.readme_results import END, START, update_readme


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
    assert "HPF (published) | ResNet-101 | 45.9 | 74.4 | 85.6" in text


def test_missing_markers_are_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no results markers"):
        update_readme(readme, [])
