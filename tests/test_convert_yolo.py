import glob
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

import convert_yolo
from datasets import records, shards
from utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERAL = os.path.join(REPO, "..", "shared", "data", "feral_cats")
H, W = 40, 60
TRI = [0.1, 0.1, 0.5, 0.2, 0.3, 0.8]
SQUARE = [0.6, 0.1, 0.9, 0.1, 0.9, 0.5, 0.6, 0.5]


def make_export(root, labels, names="['cat', 'dog']", yaml_text=None, split="valid"):
    """A Roboflow-like export: root/data.yaml, root/<split>/{images,labels}; labels maps a
    file stem to its label text (None: no label file)."""
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, text in labels.items():
        image = rng.integers(0, 255, (H, W, 3), np.uint8)
        cv2.imwrite(os.path.join(root, split, "images", stem + ".jpg"), image)
        if text is not None:
            with open(os.path.join(root, split, "labels", stem + ".txt"), "w") as f:
                f.write(text)
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write(yaml_text or f"train: ../train/images\nval: ../{split}/images\nnc: 2\n"
                f"names: {names}\n")
    return str(root)


def row(cls, coords):
    return f"{cls} " + " ".join(str(v) for v in coords) + "\n"


def read(output, split="val"):
    out = {}
    for raw in tf.data.TFRecordDataset(sorted(glob.glob(shards.shard_pattern(output, split)))):
        parsed = records.parse_example(raw)
        mask = records.decode(parsed)[1].numpy()[..., 0]
        out[parsed[records.FILENAME].numpy().decode()] = mask
    return out


def independent(polygons):
    """pycocotools straight from de-normalised points: the reference rasterisation."""
    mask = np.zeros((H, W), np.uint8)
    for p in polygons:
        pts = [v * (W if k % 2 == 0 else H) for k, v in enumerate(p)]
        mask |= mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([pts], H, W)))
    return mask


def test_masks_equal_an_independent_rasterisation_and_classes_select(tmp_path):
    data = make_export(tmp_path / "e", {"a": row(0, TRI) + row(1, SQUARE), "b": row(1, SQUARE),
                                        "c": "", "d": None})
    out = str(tmp_path / "o")
    stats = convert_yolo.convert(data, "val", ["cat"], out, progress=False)
    masks = read(out)
    assert sorted(masks) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    np.testing.assert_array_equal(masks["a.jpg"], independent([TRI]))
    assert masks["a.jpg"].sum() > 50 and not masks["b.jpg"].any()
    assert (stats["images"], stats["positive_images"], stats["negative_images"]) == (4, 1, 3)
    assert (stats["instances"], stats["other_class_instances"]) == (1, 2)
    assert (stats["empty_label_files"], stats["missing_label_files"]) == (1, 1)
    both = convert_yolo.convert(data, "val", [], str(tmp_path / "all"), progress=False)
    np.testing.assert_array_equal(read(str(tmp_path / "all"))["a.jpg"],  # cat 1, dog 2
                                  independent([TRI]) + 2 * independent([SQUARE]))
    assert (both["classes"], both["positive_images"], both["instances"]) == (["cat", "dog"], 2, 3)
    assert both["class_pixels"] == [4 * H * W - 2 * independent([SQUARE]).sum()
                                    - independent([TRI]).sum(), independent([TRI]).sum(),
                                    2 * independent([SQUARE]).sum()]
    some = convert_yolo.convert(data, "val", ["cat"], str(tmp_path / "none"), negatives=0,
                                progress=False)
    assert (some["images"], some["negative_images"]) == (1, 0)


BIG = [0.1, 0.1, 0.7, 0.1, 0.7, 0.8, 0.1, 0.8]  # overlaps SQUARE's left part
SHIFTED = [0.5, 0.1, 0.8, 0.1, 0.8, 0.5, 0.5, 0.5]  # SQUARE's size, overlapping it


def test_classes_in_the_order_given_and_the_smaller_polygon_wins(tmp_path):
    big, small = independent([BIG]), independent([SQUARE])
    assert small.sum() < big.sum() and (big & small).any()
    labels = {"a": row(0, SQUARE) + row(1, BIG), "b": row(1, BIG) + row(0, SQUARE)}
    data = make_export(tmp_path / "e", labels)
    stats = convert_yolo.convert(data, "val", ["dog", "cat"], str(tmp_path / "o"),
                                 progress=False)
    assert (stats["classes"], stats["category_ids"]) == (["dog", "cat"], [1, 0])
    want = np.where(small > 0, 2, np.where(big > 0, 1, 0))  # dog 1, cat 2; the cat is smaller
    for mask in read(str(tmp_path / "o")).values():  # whatever the row order
        np.testing.assert_array_equal(mask, want)
    assert stats["class_pixels"] == [2 * int((want == v).sum()) for v in (0, 1, 2)]


def test_polygons_of_one_size_the_later_row_wins(tmp_path):
    first, second = independent([SQUARE]), independent([SHIFTED])
    assert first.sum() == second.sum() and (first & second).any()
    data = make_export(tmp_path / "e", {"a": row(0, SQUARE) + row(1, SHIFTED),
                                        "b": row(1, SHIFTED) + row(0, SQUARE)})
    convert_yolo.convert(data, "val", [], str(tmp_path / "o"), progress=False)
    masks = read(str(tmp_path / "o"))
    both = (first & second) > 0
    assert (masks["a.jpg"][both] == 2).all() and (masks["b.jpg"][both] == 1).all()
    for mask in masks.values():
        assert (mask[(first > 0) & ~both] == 1).all() and (mask[(second > 0) & ~both] == 2).all()


def test_a_class_named_twice_or_unknown_is_one_line(tmp_path, capsys):
    data = make_export(tmp_path / "e", {"a": row(0, TRI)})
    argv = ["--data", data, "--split", "val", "--output", str(tmp_path / "o")]
    assert cli.run_main(convert_yolo.main, argv + ["--classes", "cat", "dog", "cat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class 'cat' is named twice in --classes" in err
    assert cli.run_main(convert_yolo.main, argv + ["--classes", "unicorn"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown class 'unicorn' in --classes: valid names are " \
        f"cat, dog ({data}" in err


def test_names_as_a_dict_path_key_and_ultralytics_relative_paths(tmp_path):
    root = tmp_path / "e"
    make_export(root, {"a": row(3, TRI)}, yaml_text="path: .\nval: valid/images\n"
                "names:\n  3: cat\n")
    stats = convert_yolo.convert(str(root / "data.yaml"), "val", ["cat"], str(tmp_path / "o"),
                                 progress=False)
    assert stats["category_ids"] == [3] and stats["instances"] == 1


def test_slightly_outside_is_clipped_and_counted(tmp_path):
    coords = [-0.005, 0.1, 1.004, 0.2, 0.3, 1.0]
    data = make_export(tmp_path / "e", {"a": row(0, coords)})
    stats = convert_yolo.convert(data, "val", ["cat"], str(tmp_path / "o"), progress=False)
    assert stats["clipped_coordinates"] == 2
    clipped = [0.0, 0.1, 1.0, 0.2, 0.3, 1.0]
    np.testing.assert_array_equal(read(str(tmp_path / "o"))["a.jpg"], independent([clipped]))


@pytest.mark.parametrize("text, words", [
    ("0 0.5 0.5 0.2 0.2\n", "a box (class x y w h)"),
    ("0 0.1 0.1 0.5 0.2 0.3\n", "5 coordinates, an odd number"),
    ("0 0.1 0.1\n", "1 point(s), a polygon needs at least 3"),
    ("7 0.1 0.1 0.5 0.2 0.3 0.8\n", "class 7 is not an index"),
    ("0 0.1 abc 0.5 0.2 0.3 0.8\n", "holds a non-number"),
    ("0 0.1 0.1 1.5 0.2 0.3 0.8\n", "coordinate 1.5 lies outside the image"),
])
def test_each_malformed_row_is_refused_naming_file_and_line(tmp_path, text, words):
    data = make_export(tmp_path / "e", {"a": row(0, TRI) + text})
    with pytest.raises(cli.UserError) as e:
        convert_yolo.convert(data, "val", [], str(tmp_path / "o"), progress=False)
    assert words in str(e.value) and "line 2 of " in str(e.value)
    assert str(e.value).count("a.txt") == 1


@pytest.mark.parametrize("yaml_text, words", [
    ("names: cat\nval: valid/images\n", "'names' must be a list"),
    ("names: [cat]\nval: [a, b]\n", "'val' must be one folder"),
    ("names: [cat]\npath: 3\nval: valid/images\n", "'path' must be a folder"),
    ("- just\n- a list\n", "not a YOLO data.yaml"),
    ("names: [cat\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "a safe loader refuses"),
])
def test_a_bad_yaml_is_one_clear_line(tmp_path, yaml_text, words):
    data = make_export(tmp_path / "e", {"a": row(0, TRI)}, yaml_text=yaml_text)
    with pytest.raises(cli.UserError) as e:
        convert_yolo.convert(data, "val", [], str(tmp_path / "o"), progress=False)
    assert words in str(e.value)


def test_roboflow_copies_are_counted_per_source(tmp_path):
    labels = {f"cat1_jpg.rf.{h}": row(0, TRI) for h in ("aa11", "bb22", "cc33")}
    labels["cat2_jpeg.rf.dd44"] = row(0, TRI)
    labels["plain"] = row(0, TRI)
    stats = convert_yolo.convert(make_export(tmp_path / "e", labels), "val", [],
                                 str(tmp_path / "o"), progress=False)
    assert (stats["sources"], stats["max_copies_per_source"], stats["sources_with_copies"]) == \
        (3, 3, 1)


def test_an_interrupted_conversion_resumes(tmp_path, monkeypatch):
    labels = {f"p{i}": row(0, TRI) for i in range(6)}
    data = make_export(tmp_path / "e", labels)
    fresh = str(tmp_path / "fresh")
    convert_yolo.convert(data, "val", [], fresh, num_shards=3, progress=False)
    out = str(tmp_path / "o")
    real, calls = shards._write_shard, []

    def dies_on_the_second(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(shards, "_write_shard", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        convert_yolo.convert(data, "val", [], out, num_shards=3, progress=False)
    monkeypatch.setattr(shards, "_write_shard", real)
    first = shards.shard_name(out, "val", 0, 3)
    before = os.stat(first).st_mtime_ns
    stats = convert_yolo.convert(data, "val", [], out, num_shards=3, progress=False)
    assert os.stat(first).st_mtime_ns == before and stats["images"] == 6
    for k in range(3):
        with open(shards.shard_name(out, "val", k, 3), "rb") as a, \
                open(shards.shard_name(fresh, "val", k, 3), "rb") as b:
            assert a.read() == b.read()


@pytest.mark.skipif(not os.path.isdir(FERAL), reason="no ../shared/data/feral_cats")
def test_feral_cats_valid_counts_match_the_label_files(tmp_path):
    folder = os.path.join(FERAL, "valid", "images")
    stems = [os.path.splitext(f)[0] for f in os.listdir(folder)]
    rows = {}
    for s in stems:
        path = os.path.join(FERAL, "valid", "labels", s + ".txt")
        with open(path) if os.path.exists(path) else open(os.devnull) as f:
            rows[s] = sum(1 for line in f if line.split())
    stats = convert_yolo.convert(FERAL, "val", ["cat"], str(tmp_path / "f"), progress=False)
    assert stats["images"] == len(stems) == 195
    assert stats["instances"] == sum(rows.values())
    assert stats["negative_images"] == sum(n == 0 for n in rows.values())
    assert stats["classes"] == ["cat"] and stats["skipped"] == {}
