import filecmp
import os

import cv2
import numpy as np
import pytest

from samples import make_scenes_sample as maker
from utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "samples", "feral_cats")
SHARED = os.path.join(REPO, "..", "shared", "data", "feral_cats")
MAX_BYTES = 12 * 2**20


def make_source(root, counts, size=(640, 640)):
    """A YOLO export: counts = {split: photos}; every other photo has one triangle."""
    root = str(root)
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        os.makedirs(os.path.join(root, split, "images"))
        os.makedirs(os.path.join(root, split, "labels"))
        for i in range(n):
            image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), size[::-1])
            cv2.imwrite(os.path.join(root, split, "images", f"p{i:03d}_jpg.rf.{i}.jpg"), image)
            if i % 2 == 0:
                with open(os.path.join(root, split, "labels", f"p{i:03d}_jpg.rf.{i}.txt"),
                          "w") as f:
                    f.write("0 0.1 0.1 0.9 0.1 0.5 0.8\n")
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("train: ../train/images\nval: ../valid/images\n\nnc: 1\nnames: ['cat']\n")
    with open(os.path.join(root, maker.ATTRIBUTION), "w") as f:
        f.write("License: Public Domain\n")
    return root


def test_pick_spreads_evenly_and_keeps_all_when_fewer():
    assert maker.pick([f"{i}" for i in range(10)], 5) == ["0", "2", "4", "6", "8"]
    assert maker.pick(["b", "a"], 5) == ["a", "b"]


def test_make_sample_downscales_copies_labels_and_writes_the_yaml(tmp_path):
    source = make_source(tmp_path / "src", {"train": 6, "valid": 4})
    out = str(tmp_path / "out")
    made = maker.make_sample(source, out, {"train": 3, "valid": 2}, longest=64)
    assert made.photos == {"train": 3, "valid": 2} and made.bytes > 0
    images = sorted(os.listdir(os.path.join(out, "train", "images")))
    assert images == ["p000_jpg.rf.0.jpg", "p002_jpg.rf.2.jpg", "p004_jpg.rf.4.jpg"]
    assert cv2.imread(os.path.join(out, "train", "images", images[0])).shape == (64, 64, 3)
    labels = sorted(os.listdir(os.path.join(out, "train", "labels")))
    assert labels == ["p000_jpg.rf.0.txt", "p002_jpg.rf.2.txt", "p004_jpg.rf.4.txt"]
    assert filecmp.cmp(os.path.join(out, "train", "labels", labels[0]),
                       os.path.join(source, "train", "labels", labels[0]), shallow=False)
    made = maker.make_sample(source, str(tmp_path / "neg"), {"train": 2}, longest=64)
    # photo p003 (odd) has no label file in the source: a negative, and so in the sample
    assert sorted(os.listdir(tmp_path / "neg" / "train" / "images")) == [
        "p000_jpg.rf.0.jpg", "p003_jpg.rf.3.jpg"]
    assert os.listdir(tmp_path / "neg" / "train" / "labels") == ["p000_jpg.rf.0.txt"]
    with open(os.path.join(out, "data.yaml")) as f:
        assert f.read() == "train: train/images\nval: valid/images\nnc: 1\nnames: ['cat']\n"
    assert os.path.exists(os.path.join(out, maker.ATTRIBUTION))


def test_existing_sample_needs_overwrite(tmp_path):
    source = make_source(tmp_path / "src", {"train": 2, "valid": 2})
    out = str(tmp_path / "out")
    maker.make_sample(source, out, {"train": 1, "valid": 1})
    with pytest.raises(cli.UserError, match="pass --overwrite"):
        maker.make_sample(source, out, {"train": 1, "valid": 1})
    maker.make_sample(source, out, {"train": 2, "valid": 1}, overwrite=True)
    assert len(os.listdir(os.path.join(out, "train", "images"))) == 2


def test_source_without_yaml_is_one_line(tmp_path):
    with pytest.raises(cli.UserError, match="data.yaml"):
        maker.make_sample(str(tmp_path), str(tmp_path / "out"))


def test_the_embedded_sample_is_small_and_complete():
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(SAMPLE) for f in fs)
    assert total <= MAX_BYTES
    for split, count in maker.SPLITS.items():
        images = os.listdir(os.path.join(SAMPLE, split, "images"))
        assert len(images) == count
        stems = {os.path.splitext(n)[0] for n in images}
        labels = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(SAMPLE, split, "labels"))}
        assert labels <= stems


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs ../shared/data/feral_cats")
def test_the_script_recreates_the_embedded_sample(tmp_path):
    out = str(tmp_path / "feral_cats")
    maker.make_sample(SHARED, out)
    for split in maker.SPLITS:
        for kind in ("images", "labels"):
            ours = sorted(os.listdir(os.path.join(SAMPLE, split, kind)))
            assert ours == sorted(os.listdir(os.path.join(out, split, kind)))
        for name in os.listdir(os.path.join(SAMPLE, split, "labels")):
            assert filecmp.cmp(os.path.join(SAMPLE, split, "labels", name),
                               os.path.join(out, split, "labels", name), shallow=False)
    assert filecmp.cmp(os.path.join(SAMPLE, "data.yaml"), os.path.join(out, "data.yaml"),
                       shallow=False)
