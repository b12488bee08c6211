"""Dataset adapters on fixture trees built here, and every bad-input error."""

import csv
import json

import numpy as np
import pytest
import scipy.io

from pipeline_lib.datasets import DatasetError, open_dataset
from tests.conftest import write_png

K = 4


def make_willow(root, classes=("car(G)", "duck(S)"), n=3, with_csv=True):
    rng = np.random.default_rng(0)
    rows = []
    for c in classes:
        for i in range(n):
            write_png(root / c / f"img{i}.png", 40, 60, seed=i)
            pts = np.vstack([rng.uniform(1, 60, K), rng.uniform(1, 40, K)])  # MATLAB 1-based x / y rows
            scipy.io.savemat(root / c / f"img{i}.mat", {"pts_coord": pts})
        for a in range(n):
            for b in range(n):
                if a != b:
                    pa = scipy.io.loadmat(root / c / f"img{a}.mat")["pts_coord"]
                    pb = scipy.io.loadmat(root / c / f"img{b}.mat")["pts_coord"]
                    rows.append([f"{c}/img{a}.png", f"{c}/img{b}.png", c, *pa[0], *pa[1], *pb[0], *pb[1]])
    if with_csv:
        head = ["source_image", "target_image", "category"] + [f"{p}{i}" for p in ("XA", "YA", "XB", "YB")
                                                               for i in range(1, K + 1)]
        with (root / "test_pairs.csv").open("w", newline="") as f:
            csv.writer(f).writerows([head] + rows)
    return root


def test_pf_willow_with_csv_converts_to_zero_based_and_uses_keypoint_boxes(tmp_path):
    root = make_willow(tmp_path)
    ds = open_dataset("pf-willow", root)
    assert len(ds.images) == 6 and len(ds.pairs) == 12
    p = ds.pairs[0]
    mat = scipy.io.loadmat(root / "car(G)" / "img0.mat")["pts_coord"]
    np.testing.assert_allclose(p.src_kps, mat.T - 1)
    assert p.trg_box[2] == pytest.approx(p.trg_kps[:, 0].max())
    assert {q.split for q in ds.pairs} == {"test"}


def test_pf_willow_without_csv_generates_every_ordered_pair(tmp_path):
    ds = open_dataset("pf-willow", make_willow(tmp_path, with_csv=False))
    assert len(ds.pairs) == 12
    assert len({(p.src, p.trg) for p in ds.pairs}) == 12


def test_image_disjoint_split_never_shares_images_across_splits(tmp_path):
    root = make_willow(tmp_path, n=6, with_csv=False)
    ds = open_dataset("pf-willow", root, split_mode="image_disjoint", train_fraction=0.5, val_fraction=0.2, seed=3)
    used = {s: {i for p in ds.pairs if p.split == s for i in (p.src, p.trg)} for s in ("train", "val", "test")}
    assert used["train"] and used["test"]
    assert not (used["train"] & used["test"]) and not (used["val"] & used["test"])


def rewrite_csv_cell(root, row, col, value):
    rows = list(csv.reader((root / "test_pairs.csv").open()))
    rows[row][rows[0].index(col)] = value
    with (root / "test_pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "car(G)" / "img1.png").unlink(), r"image file missing: .*img1\.png"),
    (lambda r: (r / "car(G)" / "img1.png").write_bytes(b"not a png"), r"corrupt or not an image: .*img1\.png"),
    (lambda r: rewrite_csv_cell(r, 1, "XA2", "nan"), r"test_pairs\.csv, row 2 .*NaN"),
    (lambda r: rewrite_csv_cell(r, 1, "XB1", "1000"), r"test_pairs\.csv, row 2 .*outside the 60x40 image"),
    (lambda r: rewrite_csv_cell(r, 1, "target_image", "car(G)/ghost.png"), r"row 2: image file missing: .*ghost\.png"),
])
def test_bad_input_errors_name_the_file_and_row(tmp_path, breakage, message):
    root = make_willow(tmp_path)
    breakage(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset("pf-willow", root)


def test_keypoint_count_mismatch_and_empty_category(tmp_path):
    root = make_willow(tmp_path, with_csv=False)
    scipy.io.savemat(root / "car(G)" / "img2.mat", {"pts_coord": np.ones((2, K + 1)) * 5})
    with pytest.raises(DatasetError, match="keypoint count mismatch"):
        open_dataset("pf-willow", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty category: .*empty"):
        open_dataset("pf-willow", root)


def edit_csv(root, edit):
    path = root / "test_pairs.csv"
    path.write_bytes(edit(path.read_bytes()))


@pytest.mark.parametrize("edit, message", [
    # Latin-1 bytes: named as not UTF-8, with the byte and the fix (was a raw UnicodeDecodeError)
    (lambda b: b.replace(b"car(G)/img0.png", "car(G)/img\xe90.png".encode("latin-1"), 1),
     r"test_pairs\.csv: not UTF-8 text \(byte \d+.*save the file as UTF-8"),
    # a missing column is the header's fault, line 1 (was blamed on row 2)
    (lambda b: b.replace(b"source_image,", b"src,", 1), r"line 1 \(header\): missing column\(s\) \['source_image'\]"),
    # a short row is named as such (was "NaN")
    (lambda b: b.replace(b"\r\n", b"\n").replace(b"\n", b"\n" + b",".join(b.split(b"\n")[1].split(b",")[:5]) + b"\n", 1),
     r"test_pairs\.csv, row 2: 5 fields where the header has \d+"),
])
def test_csv_file_problems_are_named(tmp_path, edit, message):
    root = make_willow(tmp_path)
    edit_csv(root, edit)
    with pytest.raises(DatasetError, match=message):
        open_dataset("pf-willow", root)


def test_a_utf8_byte_order_mark_is_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: it is read, not "malformed row ('source_image')"."""
    root = make_willow(tmp_path)
    plain = open_dataset("pf-willow", root)
    edit_csv(root, lambda b: b"\xef\xbb\xbf" + b)
    assert [p.pair_id for p in open_dataset("pf-willow", root).pairs] == [p.pair_id for p in plain.pairs]


@pytest.mark.parametrize("with_csv", [True, False])
def test_skip_mode_skips_the_pairs_of_an_unreadable_image(tmp_path, with_csv):
    """A zero-byte image stops the run in error mode; in skip mode exactly its pairs are skipped, each naming it."""
    root = make_willow(tmp_path, with_csv=with_csv)
    (root / "car(G)" / "img1.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"corrupt or not an image: .*img1\.png"):
        open_dataset("pf-willow", root)
    ds = open_dataset("pf-willow", root, on_bad_pair="skip")
    assert len(ds.pairs) == 8 and len(ds.skipped) == 4  # 4 of car(G)'s 6 ordered pairs involve img1
    assert all("img1.png" in s.reason and s.category == "car(G)" for s in ds.skipped) and "car(G)/img1" not in ds.images


def test_skip_mode_reports_what_it_skipped(tmp_path):
    root = make_willow(tmp_path)
    rewrite_csv_cell(root, 1, "XA2", "nan")
    ds = open_dataset("pf-willow", root, on_bad_pair="skip")
    assert len(ds.pairs) == 11 and len(ds.skipped) == 1
    assert "NaN" in ds.skipped[0].reason and ds.skipped[0].category == "car(G)"  # row 1 is a car(G) pair


def test_a_category_whose_images_are_all_unreadable_is_still_counted_as_skipped(tmp_path):
    root = make_willow(tmp_path)
    for i in range(3):
        (root / "duck(S)" / f"img{i}.png").write_bytes(b"")
    ds = open_dataset("pf-willow", root, on_bad_pair="skip")
    assert {p.category for p in ds.pairs} == {"car(G)"}
    assert [s.category for s in ds.skipped] == ["duck(S)"] * 6


def test_pairs_dropped_by_the_image_disjoint_split_are_counted(tmp_path):
    root = make_willow(tmp_path, n=5)
    ds = open_dataset("pf-willow", root, split_mode="image_disjoint", train_fraction=0.4, val_fraction=0.2)
    assert ds.n_split_dropped > 0 and len(ds.pairs) + ds.n_split_dropped == 2 * 5 * 4
    for c in ("car(G)", "duck(S)"):  # counted per category: each category's kept and dropped pairs make its 20
        assert sum(p.category == c for p in ds.pairs) + ds.split_dropped.get(c, 0) == 5 * 4
    assert open_dataset("pf-willow", root).n_split_dropped == 0


def test_pf_pascal_layout(tmp_path):
    (tmp_path / "Annotations" / "car").mkdir(parents=True)
    for i, name in enumerate(["2008_000001", "2008_000002", "2008_000003"]):
        write_png(tmp_path / "JPEGImages" / f"{name}.jpg", 50, 70, seed=i)
        kps = np.array([[5, 5], [20, 30], [np.nan, np.nan]]) + i
        scipy.io.savemat(tmp_path / "Annotations" / "car" / f"{name}.mat", {"kps": kps, "bbox": [[2, 3, 60, 45]]})
    for split, pairs in (("trn", [(1, 2)]), ("test", [(1, 3), (2, 3)])):
        with (tmp_path / f"{split}_pairs.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source_image", "target_image", "class", "flip"])
            for a, b in pairs:
                w.writerow([f"JPEGImages/2008_00000{a}.jpg", f"JPEGImages/2008_00000{b}.jpg", 7, 0])
    ds = open_dataset("pf-pascal", tmp_path, split_mode="given")
    assert sorted(p.split for p in ds.pairs) == ["test", "test", "train"]
    p = ds.pairs[0]
    assert p.category == "car" and p.valid.tolist() == [True, True, False]
    np.testing.assert_allclose(p.src_kps[0], [4, 4])  # 1-based -> 0-based
    np.testing.assert_allclose(p.trg_box, [1, 2, 59, 44])


def test_spair_layout(tmp_path):
    for i in range(2):
        write_png(tmp_path / "JPEGImages" / "cat" / f"im{i}.jpg", 30, 40, seed=i)
    ann = {"src_imname": "im0.jpg", "trg_imname": "im1.jpg", "category": "cat",
           "src_kps": [[1, 2], [10, 12]], "trg_kps": [[3, 4], [20, 22]],
           "src_bndbox": [0, 0, 20, 20], "trg_bndbox": [1, 1, 30, 25]}
    (tmp_path / "PairAnnotation" / "test").mkdir(parents=True)
    (tmp_path / "PairAnnotation" / "test" / "000001-im0-im1:cat.json").write_text(json.dumps(ann))
    ds = open_dataset("spair", tmp_path, split_mode="given")
    (p,) = ds.pairs
    assert (p.src, p.trg, p.split) == ("cat/im0", "cat/im1", "test")
    np.testing.assert_allclose(p.trg_kps, [[3, 4], [20, 22]])
    np.testing.assert_allclose(p.trg_box, [1, 1, 30, 25])


def test_unknown_kind():
    with pytest.raises(DatasetError, match="unknown dataset kind 'caltech'"):
        open_dataset("caltech", ".")


def test_16_bit_greyscale_png_keeps_its_contrast(tmp_path):
    """A 16-bit PNG must not load as almost white (Pillow's convert('RGB') clips mode I;16)."""
    from PIL import Image

    from pipeline_lib.datasets import load_rgb

    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert abs(int(rgb[..., 0].mean()) - 127) <= 2 and rgb.min() == 0 and rgb.max() == 255


def damage_pixels(path):
    """Corrupt a PNG's compressed pixels and fix up the chunk CRC: Pillow's verify() still passes it."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    body = at + 4
    data[body + 2:body + length] = bytes(b ^ 0x5A for b in data[body + 2:body + length])  # keep the zlib header
    data[body + length:body + length + 4] = struct.pack(">I", zlib.crc32(bytes(data[at:body + length])))
    path.write_bytes(bytes(data))


def test_damage_that_passes_verify_is_named_when_the_image_is_decoded(tmp_path):
    """Pillow's verify() checks the PNG chunks' CRCs, not the compressed pixels: a corrupted IDAT with a fixed-up
    CRC passes it and used to fail later in feature extraction with no file name."""
    from PIL import Image

    from pipeline_lib.datasets import load_rgb
    from pipeline_lib.datasets.base import image_size

    path = tmp_path / "damaged.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    damage_pixels(path)
    assert image_size(path) == (32, 32)  # verify() passes
    with pytest.raises(DatasetError, match=r"corrupt: .*damaged\.png cannot be decoded"):
        load_rgb(path)
    with pytest.raises(DatasetError, match=r"corrupt: .*damaged\.png cannot be decoded"):
        image_size(path, decode=True)


@pytest.mark.parametrize("with_csv", [True, False])
def test_skip_mode_skips_the_pairs_of_an_image_whose_pixels_are_damaged(tmp_path, with_csv):
    """Damage that verify() passes: error mode builds the index (feature extraction names the file later); skip mode
    decodes every image once, so the image and exactly its pairs are skipped instead of stopping extraction."""
    root = make_willow(tmp_path, with_csv=with_csv)
    damage_pixels(root / "car(G)" / "img1.png")
    assert len(open_dataset("pf-willow", root).pairs) == 12
    ds = open_dataset("pf-willow", root, on_bad_pair="skip")
    assert len(ds.pairs) == 8 and len(ds.skipped) == 4 and "car(G)/img1" not in ds.images
    assert all("img1.png cannot be decoded" in s.reason and s.category == "car(G)" for s in ds.skipped)


def test_folder_skip_mode_leaves_out_an_image_whose_pixels_are_damaged(tmp_path):
    for i in range(3):
        write_png(tmp_path / "cats" / f"im{i}.png", 30, 40, seed=i)
    damage_pixels(tmp_path / "cats" / "im2.png")
    index = open_dataset("folder", tmp_path, split_mode="given", on_bad_pair="skip")
    assert sorted(index.images) == ["cats/im0", "cats/im1"] and len(index.pairs) == 2
    assert "im2.png cannot be decoded" in index.skipped[0].reason


def _rewrite_rows(csv_path, edit):
    rows = list(csv.reader(csv_path.open()))
    rows = [rows[0]] + edit(rows[1:])
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_pair_listed_twice_is_refused_naming_both_rows(tmp_path):
    root = make_willow(tmp_path)
    _rewrite_rows(root / "test_pairs.csv", lambda rows: rows + [rows[0]])
    with pytest.raises(DatasetError, match=r"listed twice \(first at .*row 2\)"):
        open_dataset("pf-willow", root)
    ds = open_dataset("pf-willow", root, on_bad_pair="skip")
    assert len(ds.pairs) == 12 and len(ds.skipped) == 1


def test_a_self_pair_is_refused(tmp_path):
    root = make_willow(tmp_path)
    _rewrite_rows(root / "test_pairs.csv", lambda rows: [[rows[0][0], rows[0][0], *rows[0][2:]]] + rows[1:])
    with pytest.raises(DatasetError, match="same image"):
        open_dataset("pf-willow", root)


def test_the_category_column_must_name_the_images_class(tmp_path):
    root = make_willow(tmp_path)
    _rewrite_rows(root / "test_pairs.csv", lambda rows: [[rows[0][0], rows[0][1], "duck(S)", *rows[0][3:]]] + rows[1:])
    with pytest.raises(DatasetError, match="category column says 'duck"):
        open_dataset("pf-willow", root)
    _rewrite_rows(root / "test_pairs.csv", lambda rows: [[rows[0][0], rows[0][1], "3", *rows[0][3:]]] + rows[1:])
    assert len(open_dataset("pf-willow", root).pairs) == 12  # a numeric class id is accepted


def test_a_pair_across_two_categories_is_refused(tmp_path):
    root = make_willow(tmp_path)
    _rewrite_rows(root / "test_pairs.csv",
                  lambda rows: [[rows[0][0], "duck(S)/img1.png", "", *rows[0][3:]]] + rows[1:])
    with pytest.raises(DatasetError, match="joins categories"):
        open_dataset("pf-willow", root)


def test_hidden_and_archive_folders_are_not_categories(tmp_path):
    root = make_willow(tmp_path)
    (root / ".ipynb_checkpoints").mkdir()
    (root / "__MACOSX").mkdir()
    ds = open_dataset("pf-willow", root)
    assert ds.categories() == ["car(G)", "duck(S)"]


def test_a_folder_of_unlabelled_images_pairs_every_two_images_of_a_category(tmp_path):
    for c, n in (("cats", 3), ("dogs", 2)):
        for i in range(n):
            write_png(tmp_path / c / f"im{i}{'.jpg' if i == 1 else '.png'}", 30, 40, seed=i)
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    index = open_dataset("folder", tmp_path, split_mode="given")
    assert sorted(index.images) == ["cats/im0", "cats/im1", "cats/im2", "dogs/im0", "dogs/im1"]
    assert len(index.pairs) == 3 * 2 + 2 * 1 and {p.split for p in index.pairs} == {"train"}
    assert all(p.src_kps.shape == (0, 2) and p.category == p.src.split("/")[0] for p in index.pairs)
    assert len(open_dataset("folder", tmp_path).pairs) == 8  # the split-free view (feature extraction) too
    with pytest.raises(DatasetError, match="split.mode: given"):
        open_dataset("folder", tmp_path, split_mode="image_disjoint", train_fraction=0.5, val_fraction=0.2)
    with pytest.raises(DatasetError, match="leave pairs_csv empty"):
        open_dataset("folder", tmp_path, pairs_csv="pairs.csv", split_mode="given")
    write_png(tmp_path / "dogs" / "im1.png", 30, 40, seed=3)
    with pytest.raises(DatasetError, match=r"dogs/im1\.png and .*dogs/im1\.jpg share the name 'dogs/im1'"):
        open_dataset("folder", tmp_path, split_mode="given")
    (tmp_path / "dogs" / "im1.png").unlink()
    (tmp_path / "dogs" / "im1.jpg").write_bytes(b"")  # a zero-byte image
    with pytest.raises(DatasetError, match=r"dogs/im1\.jpg.*on_bad_pair: skip"):
        open_dataset("folder", tmp_path, split_mode="given")
    with pytest.raises(DatasetError, match=r"dogs holds 1 readable image"):  # skipping it leaves dogs one image
        open_dataset("folder", tmp_path, split_mode="given", on_bad_pair="skip")
    write_png(tmp_path / "dogs" / "im2.png", 30, 40, seed=5)
    index = open_dataset("folder", tmp_path, split_mode="given", on_bad_pair="skip")
    assert "dogs/im1" not in index.images and len(index.skipped) == 1 and len(index.pairs) == 6 + 2
