import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from samples import drawn
from utils import cli

CAT, DOG = 17, 18


def _coco(root, split):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.path.join(root, "annotations", f"instances_{split}.json"))


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _cats(coco, image_id, crowd=False):
    return [a for a in coco.imgToAnns[image_id]
            if a["category_id"] == CAT and bool(a["iscrowd"]) == crowd]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    drawn.generate(root, seed=3, num_train=6, num_val=4)
    return root


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo_default"))
    drawn.generate(root)
    return root


def test_layout_and_coco_structure(small):
    assert sorted(os.listdir(os.path.join(small, "annotations"))) == [
        "instances_train2017.json", "instances_val2017.json"]
    seen_ids = set()
    for split, count in (("train2017", 6), ("val2017", 4)):
        with open(os.path.join(small, "annotations", f"instances_{split}.json")) as f:
            doc = json.load(f)
        assert set(doc) == {"info", "licenses", "images", "annotations", "categories"}
        assert len(doc["images"]) == count
        assert sorted(os.listdir(os.path.join(small, split))) == sorted(
            i["file_name"] for i in doc["images"])
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        assert len(cats) == 80 and max(cats) == 90
        assert (cats[1], cats[3], cats[17], cats[18], cats[88]) == (
            "person", "car", "cat", "dog", "teddy bear")
        for img in doc["images"]:
            assert img["file_name"] == f"{img['id']:012d}.jpg"
            pixels = cv2.imread(os.path.join(small, split, img["file_name"]),
                                cv2.IMREAD_UNCHANGED)
            assert pixels.shape[:2] == (img["height"], img["width"])
            assert img["id"] not in seen_ids
            seen_ids.add(img["id"])
        ann_ids = [a["id"] for a in doc["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        assert {a["category_id"] for a in doc["annotations"]} <= set(cats)


def test_annotations_match_pycocotools(small):
    for split in ("train2017", "val2017"):
        coco = _coco(small, split)
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            h, w = img["height"], img["width"]
            mask = coco.annToMask(ann)
            assert ann["area"] == mask.sum() > 0
            rle = mask_utils.encode(np.asfortranarray(mask))
            assert ann["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist(), abs=0.01)
            segm = ann["segmentation"]
            if ann["iscrowd"]:  # COCO's uncompressed RLE
                assert segm["size"] == [h, w] and isinstance(segm["counts"], list)
                assert sum(segm["counts"]) == h * w
            else:
                for poly in segm:
                    assert len(poly) >= 6 and len(poly) % 2 == 0
                    assert 0 <= min(poly[0::2]) and max(poly[0::2]) <= w
                    assert 0 <= min(poly[1::2]) and max(poly[1::2]) <= h


def test_showcase_images_come_first(small):
    coco = _coco(small, "train2017")
    ids = sorted(coco.imgs)
    assert len(_cats(coco, ids[0])) >= 2
    assert coco.imgs[ids[0]]["height"] >= 600 and coco.imgs[ids[0]]["width"] >= 640  # > 572
    crowds = [a for a in coco.imgToAnns[ids[1]] if a["iscrowd"]]
    assert sorted(a["category_id"] for a in crowds) == [1, CAT]  # a person crowd too
    assert _cats(coco, ids[2]) == [] and DOG in [a["category_id"] for a in coco.imgToAnns[ids[2]]]
    gray = cv2.imread(os.path.join(small, "train2017", coco.imgs[ids[3]]["file_name"]),
                      cv2.IMREAD_UNCHANGED)
    assert gray.ndim == 2


def test_default_dataset_has_the_promised_mix(default):
    coco = _coco(default, "train2017")
    images = list(coco.imgs.values())
    assert len(images) == drawn.NUM_TRAIN
    sides = [s for i in images for s in (i["height"], i["width"])]
    assert 200 <= min(sides) < 572 < max(sides) <= 800
    counts = [len(_cats(coco, i["id"])) for i in images]
    assert sum(c == 0 for c in counts) >= 5
    assert sum(c >= 2 for c in counts) >= 10
    assert sum(c >= 1 for c in counts) >= 0.75 * len(images)
    gray = sum(cv2.imread(os.path.join(default, "train2017", i["file_name"]),
                          cv2.IMREAD_UNCHANGED).ndim == 2 for i in images)
    assert 0.05 * len(images) <= gray <= 0.3 * len(images)
    others = {a["category_id"] for a in coco.dataset["annotations"]} - {CAT}
    assert {1, 3, 18} <= others
    assert len(_coco(default, "val2017").imgs) == drawn.NUM_VAL


def test_cats_are_drawn_where_annotated(small):
    """Tabby stripes: far more fine texture inside a cat's mask than on the background."""
    coco = _coco(small, "train2017")
    checked = 0
    for img in coco.imgs.values():
        gray = cv2.imread(os.path.join(small, "train2017", img["file_name"]),
                          cv2.IMREAD_GRAYSCALE).astype(np.float32)
        edges = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
        anns = coco.imgToAnns[img["id"]]
        objects = np.zeros(gray.shape, np.uint8)
        for a in anns:
            objects |= coco.annToMask(a)
        background = cv2.dilate(objects, np.ones((7, 7), np.uint8)) == 0
        for a in _cats(coco, img["id"]):
            inside = cv2.erode(coco.annToMask(a), np.ones((7, 7), np.uint8)) > 0
            if inside.sum() > 200:
                assert edges[inside].mean() > 4 * edges[background].mean()
                checked += 1
    assert checked >= 4


def test_same_seed_same_bytes_and_prefix_stable(tmp_path):
    a, b, c, d = (str(tmp_path / n) for n in "abcd")
    drawn.generate(a, seed=5, num_train=3, num_val=2)
    drawn.generate(b, seed=5, num_train=3, num_val=2)
    drawn.generate(c, seed=6, num_train=3, num_val=2)
    drawn.generate(d, seed=5, num_train=5, num_val=2)
    fa, fc, fd = _files(a), _files(c), _files(d)
    assert fa == _files(b)
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa)
    assert all(fd[k] == v for k, v in fa.items() if k.endswith(".jpg"))


def test_rle_counts_are_cocos_uncompressed_form():
    rng = np.random.default_rng(0)
    for first in (0, 1):
        mask = (rng.random((13, 7)) < 0.5).astype(np.uint8)
        mask[0, 0] = first
        counts = drawn._rle_counts(mask)
        assert sum(counts) == mask.size and (counts[0] == 0) == bool(first)
        rle = mask_utils.frPyObjects({"counts": counts, "size": [13, 7]}, 13, 7)
        np.testing.assert_array_equal(mask_utils.decode(rle), mask)
        assert rle["counts"] == mask_utils.encode(np.asfortranarray(mask))["counts"]


def test_cli_writes_dataset(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert cli.run_main(drawn.main, ["--out", out, "--num-train", "2", "--num-val", "1",
                                         "--seed", "1"]) == 0
    assert "wrote 2 train2017 and 1 val2017 images" in capsys.readouterr().out
    assert len(os.listdir(os.path.join(out, "train2017"))) == 2
    assert len(os.listdir(os.path.join(out, "val2017"))) == 1


@pytest.mark.parametrize("argv,code,words", [
    (["--num-train", "0"], 2, "--num-train"),
    (["--seed", "x"], 2, "--seed"),
    (["--out", "FILE/demo"], 1, "writable --out"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, code, words):
    (tmp_path / "FILE").write_text("not a directory")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x")]
    assert cli.run_main(drawn.main, argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_every_split_holds_cats_and_dogs_for_a_three_class_conversion(tmp_path):
    root = str(tmp_path / "tiny")
    drawn.generate(root, seed=5, num_train=3, num_val=3)
    for split in drawn.SPLITS:
        coco = _coco(root, split)
        first = drawn.FIRST_IMAGE_ID[split]
        assert len(_cats(coco, first)) >= 2
        assert any(a["category_id"] == DOG and not a["iscrowd"]
                   for a in coco.imgToAnns[first + 2])
