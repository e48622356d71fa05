import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import convert_coco
from core import config
from datasets import records, shards
from samples import drawn
from utils import cli

CAT, DOG, PERSON = 17, 18, 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_TINY = os.path.join(REPO, "..", "shared", "data", "coco_tiny")
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def _coco(root, split="train2017"):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.path.join(root, "annotations", f"instances_{split}.json"))


def read_records(output, split="train2017"):
    """Every record of a conversion, in file then record order, via plain tf.data."""
    files = sorted(glob.glob(shards.shard_pattern(output, split)))
    out = []
    for raw in tf.data.TFRecordDataset(files):
        parsed = records.parse_example(raw)
        image, mask = records.decode(parsed)
        out.append({"id": int(parsed[records.IMAGE_ID]),
                    "filename": parsed[records.FILENAME].numpy().decode(),
                    "format": parsed[records.FORMAT].numpy().decode(),
                    "height": int(parsed[records.HEIGHT]), "width": int(parsed[records.WIDTH]),
                    "bytes": parsed[records.IMAGE].numpy(),
                    "image": image.numpy(), "mask": mask.numpy()[..., 0]})
    return out


def _winners(layers, shape):
    """[H, W] value of the winning (mask, value) layer per pixel, 0 where none: fewest
    pixels first, then the later layer (an argmin, not the converter's painting)."""
    if not layers:
        return np.zeros(shape, np.uint8)
    n = len(layers)
    keys = np.stack([np.where(m, int(m.sum()) * n - i, np.inf) for i, (m, _) in
                     enumerate(layers)])
    values = np.array([0] + [v for _, v in layers], np.uint8)
    won = np.argmin(keys, 0) + 1
    return values[np.where(np.isinf(keys.min(0)), 0, won)]


def expected_mask(coco, image_id, cat_ids=(CAT,), crowd="ignore"):
    """The mask rule computed independently with pycocotools' annToMask: category
    cat_ids[k] is value k + 1; of overlapping instances the one of fewest pixels wins,
    of two the same size the later; crowds only where no instance is."""
    img = coco.imgs[image_id]
    value = {c: k for k, c in enumerate(cat_ids, 1)}
    instances, crowds = [], []
    for ann in coco.imgToAnns[image_id]:
        if ann["category_id"] in value:
            m = coco.annToMask(ann).astype(bool)
            (crowds if ann["iscrowd"] else instances).append((m, value[ann["category_id"]]))
    shape = (img["height"], img["width"])
    mask = _winners(instances, shape)
    free = mask == 0
    if crowd == "ignore":
        for m, _ in crowds:
            mask[m & free] = 255
    elif crowd == "positive":
        mask[free] = _winners(crowds, shape)[free]
    return mask


def holding(coco, cat_ids):
    return sorted({a["image_id"] for a in coco.dataset["annotations"]
                   if a["category_id"] in cat_ids})


def shard_bytes(output, split="train2017"):
    out = {}
    for path in sorted(glob.glob(shards.shard_pattern(output, split))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def run(coco_dir, output, **kw):
    kw.setdefault("workers", 1)
    return convert_coco.convert(coco_dir, "train2017", output=str(output), progress=False, **kw)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    drawn.generate(root, seed=0, num_train=10, num_val=2)
    return root


@pytest.fixture()
def demo_copy(demo, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(demo, tmp_path / "coco")


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """A clean 3-shard conversion to compare interrupted and parallel runs against."""
    out = tmp_path_factory.mktemp("ref") / "cat"
    stats = run(demo, out, num_shards=3)
    return shard_bytes(out), stats


# ---------------------------------------------------------------- round trip


def test_round_trip_matches_files_and_pycocotools(demo, tmp_path):
    out = tmp_path / "data" / "cat"
    stats = run(demo, out)
    coco = _coco(demo)
    recs = read_records(str(out))
    assert [r["id"] for r in recs] == holding(coco, {CAT})
    formats = set()
    for r in recs:
        img = coco.imgs[r["id"]]
        assert (r["filename"], r["height"], r["width"]) == (
            img["file_name"], img["height"], img["width"])
        path = os.path.join(demo, "train2017", img["file_name"])
        with open(path, "rb") as f:
            source = f.read()
        pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if pixels.ndim == 3:  # a 3-channel JPEG travels untouched
            assert r["format"] == "jpeg" and r["bytes"] == source
        else:  # grayscale: lossless PNG of exactly the decoded pixels, as RGB
            assert r["format"] == "png"
            np.testing.assert_array_equal(r["image"], np.repeat(pixels[..., None], 3, 2))
        formats.add(r["format"])
        np.testing.assert_array_equal(r["mask"], expected_mask(coco, r["id"]))
    assert formats == {"jpeg", "png"}  # the demo has grayscale showcases

    masks = [expected_mask(coco, r["id"]) for r in recs]
    pixels = sum(m.size for m in masks)
    cats = [a for a in coco.dataset["annotations"] if a["category_id"] == CAT]
    assert stats["images"] == stats["positive_images"] == len(recs)
    assert stats["negative_images"] == 0 and stats["skipped"] == {}
    assert stats["instances"] == sum(not a["iscrowd"] for a in cats)
    assert stats["crowd_regions"] == sum(a["iscrowd"] for a in cats) == 1
    assert stats["foreground_fraction"] == sum((m == 1).sum() for m in masks) / pixels
    assert stats["ignore_fraction"] == sum((m == 255).sum() for m in masks) / pixels > 0
    assert (stats["classes"], stats["category_ids"], stats["num_shards"]) == (["cat"], [17], 1)
    assert stats["bytes_written"] == os.path.getsize(
        str(out) + "-train2017-00000-of-00001.tfrecord")
    with open(shards.stats_path(str(out), "train2017")) as f:
        assert json.load(f) == stats
    assert sorted(os.listdir(tmp_path / "data")) == [
        "cat-train2017-00000-of-00001.tfrecord", "cat-train2017-stats.json"]


# The old converter's shards (f597f67, before class indices) of the drawn dataset, seed 0,
# 10 train images, one shard, at the pinned versions: one class must give them bit for bit.
OLD_SHARDS = {("cat", "ignore"): "a47da52515c3330b09f3f1fc9eed53f5f0868bc8cca9ca4ece46a8ad8227e27a",
              ("person", "positive"):
              "d5e915bb163a32c7a52da70b5f62505496f84cec17818290d1256783bcb6f3da"}


@pytest.mark.parametrize("name,crowd", sorted(OLD_SHARDS))
def test_one_class_gives_the_old_converters_records_bit_for_bit(demo, tmp_path, name, crowd):
    stats = run(demo, tmp_path / name, classes=(name,), crowd=crowd, num_shards=1)
    (data,) = shard_bytes(str(tmp_path / name)).values()
    assert hashlib.sha256(data).hexdigest() == OLD_SHARDS[name, crowd]
    assert len(stats["class_pixels"]) == 2  # K = 1


def test_two_classes_get_values_1_and_2_in_the_order_given(demo, tmp_path):
    """The drawn dataset as a 3-class (background, cat, dog) conversion."""
    coco = _coco(demo)
    by_order = {}
    for order in (("cat", "dog"), ("dog", "cat")):
        out = tmp_path / "_".join(order)
        stats = run(demo, out, classes=order)
        recs = read_records(str(out))
        assert [r["id"] for r in recs] == holding(coco, {CAT, DOG})  # a union of the images
        ids = tuple({"cat": CAT, "dog": DOG}[c] for c in order)
        for r in recs:
            np.testing.assert_array_equal(r["mask"], expected_mask(coco, r["id"], ids))
        masks = [r["mask"] for r in recs]
        assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) == {0, 1, 2, 255}
        counts = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
        assert stats["class_pixels"] == counts[:3].tolist()  # valid pixels per value, exact
        assert stats["foreground_pixels"] == counts[1] + counts[2]
        assert stats["ignore_pixels"] == counts[255]
        assert (stats["classes"], stats["category_ids"]) == (list(order), list(ids))
        by_order[order] = masks
    swap = np.arange(256, dtype=np.uint8)
    swap[[1, 2]] = 2, 1
    for a, b in zip(by_order["cat", "dog"], by_order["dog", "cat"]):
        np.testing.assert_array_equal(swap[a], b)  # only the values trade places
    # train.py's view of them: 3 outputs, the names, median-frequency weights of the counts
    cfg = config.resolve(config.Config(train_records=str(tmp_path / "cat_dog-train2017-*"),
                                       val_records="", class_weights="auto", seed=0,
                                       run_dir=str(tmp_path / "run")))
    n = sum(np.bincount(m.ravel(), minlength=256) for m in by_order["cat", "dog"])[:3]
    assert (cfg.classes, cfg.num_outputs) == (("cat", "dog"), 3)
    assert cfg.class_weights == tuple(float(np.median(n)) / c for c in n)


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_overlap_the_smaller_instance_wins_then_the_later_one():
    # a big class-1 square (0..8) and a small class-2 square (5..9) overlapping at 5..8
    anns = [{"id": 1, "category_id": CAT, "segmentation": _square(0, 0, 8, 8)},
            {"id": 2, "category_id": DOG, "segmentation": _square(5, 5, 9, 9)}]
    values = {CAT: 1, DOG: 2}
    big = convert_coco.ann_to_mask(anns[0], 10, 12)
    small = convert_coco.ann_to_mask(anns[1], 10, 12)
    assert small.sum() < big.sum() and (small & big).sum() > 0
    want = np.zeros((10, 12), np.uint8)
    want[big] = 1
    want[small] = 2
    for order in (anns, anns[::-1]):  # annotation order does not matter between sizes
        got = convert_coco.build_mask(order, 10, 12, class_index=values)
        np.testing.assert_array_equal(got, want)
    # the same size: the later annotation wins the shared pixels
    twins = [{"id": 1, "category_id": CAT, "segmentation": _square(0, 0, 6, 6)},
             {"id": 2, "category_id": DOG, "segmentation": _square(3, 3, 9, 9)}]
    first, second = (convert_coco.ann_to_mask(a, 10, 12) for a in twins)
    assert first.sum() == second.sum() and (first & second).sum() > 0
    for order, last in ((twins, 2), (twins[::-1], 1)):
        got = convert_coco.build_mask(order, 10, 12, class_index=values)
        np.testing.assert_array_equal(got[first & second], last)
        np.testing.assert_array_equal(got[first & ~second], 1)
        np.testing.assert_array_equal(got[second & ~first], 2)
        assert got[~(first | second)].max() == 0


def test_crowds_of_either_class_are_ignored_and_never_cover_an_instance():
    inst = {"id": 1, "category_id": CAT, "iscrowd": 0, "segmentation": _square(0, 0, 4, 4)}
    cat_crowd = {"id": 2, "category_id": CAT, "iscrowd": 1, "segmentation": _square(3, 0, 7, 4)}
    dog_crowd = {"id": 3, "category_id": DOG, "iscrowd": 1, "segmentation": _square(0, 6, 11, 9)}
    anns = [inst, cat_crowd, dog_crowd]
    m = {a["id"]: convert_coco.ann_to_mask(a, 10, 12) for a in anns}
    values = {CAT: 1, DOG: 2}
    got = convert_coco.build_mask(anns, 10, 12, "ignore", class_index=values)
    np.testing.assert_array_equal(got[m[1]], 1)
    np.testing.assert_array_equal(got[m[2] & ~m[1]], 255)  # a cat crowd
    np.testing.assert_array_equal(got[m[3]], 255)  # a dog crowd
    assert got[~(m[1] | m[2] | m[3])].max() == 0
    positive = convert_coco.build_mask(anns, 10, 12, "positive", class_index=values)
    np.testing.assert_array_equal(positive[m[1] | m[2]], 1)
    np.testing.assert_array_equal(positive[m[3]], 2)  # a crowd takes its class
    skip = convert_coco.build_mask(anns, 10, 12, "skip", class_index=values)
    np.testing.assert_array_equal(skip, m[1].astype(np.uint8))


@pytest.mark.parametrize("crowd", ["ignore", "positive", "skip"])
def test_crowd_policies_and_no_leaks(demo, tmp_path, crowd):
    out = tmp_path / "cat"
    run(demo, out, crowd=crowd)
    coco = _coco(demo)
    crowd_image = drawn.FIRST_IMAGE_ID["train2017"] + 1  # the crowd showcase
    rec = {r["id"]: r for r in read_records(str(out))}[crowd_image]
    anns = coco.imgToAnns[crowd_image]
    cat_crowd = coco.annToMask(next(a for a in anns if a["iscrowd"] and a["category_id"] == CAT))
    people = coco.annToMask(next(a for a in anns if a["iscrowd"] and a["category_id"] == PERSON))
    value = {"ignore": 255, "positive": 1, "skip": 0}[crowd]
    assert set(np.unique(rec["mask"][cat_crowd > 0])) == {value}
    assert set(np.unique(rec["mask"][people > 0])) == {0}  # other classes' crowds never leak
    np.testing.assert_array_equal(rec["mask"], expected_mask(coco, crowd_image, crowd=crowd))


def test_instance_pixels_win_over_an_overlapping_crowd():
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    crowd = np.zeros((10, 12), np.uint8)
    crowd[5:10, 5:12] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    compressed = {"counts": rle["counts"].decode(), "size": [10, 12]}  # the string form
    anns = [{"id": 1, "segmentation": square, "iscrowd": 0},
            {"id": 2, "segmentation": compressed, "iscrowd": 1}]
    inst = convert_coco.ann_to_mask(anns[0], 10, 12)
    assert 20 < inst.sum() < 50
    got = convert_coco.build_mask(anns, 10, 12, "ignore")
    np.testing.assert_array_equal(got[inst], 1)
    np.testing.assert_array_equal(got[(crowd > 0) & ~inst], 255)
    assert got[~inst & (crowd == 0)].max() == 0
    assert set(np.unique(convert_coco.build_mask(anns, 10, 12, "positive"))) == {0, 1}
    np.testing.assert_array_equal(convert_coco.build_mask(anns, 10, 12, "skip"), inst)


# ---------------------------------------------------------------- selection


def test_negatives_are_added_and_empty(demo, tmp_path):
    coco = _coco(demo)
    positives = holding(coco, {CAT})
    others = sorted(set(coco.imgs) - set(positives))
    assert others  # the demo has images without cats
    stats = run(demo, tmp_path / "cat", negatives=10.0)  # more than exist: take them all
    recs = read_records(str(tmp_path / "cat"))
    assert [r["id"] for r in recs] == sorted(positives + others)
    assert stats["negative_images"] == len(others)
    assert stats["positive_images"] == len(positives)
    for r in recs:
        if r["id"] in others:
            assert r["mask"].max() == 0


def test_negative_choice_follows_the_seed():
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 4, "width": 4} for i in range(1, 41)]
    anns = [{"id": i, "image_id": i, "category_id": CAT, "iscrowd": 0, "area": 1.0,
             "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 0, 1, 1]]} for i in (3, 7, 9, 20)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": CAT, "name": "cat"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    pos, neg = convert_coco.select_images(coco, [CAT], negatives=0.5, seed=1)
    assert pos == [3, 7, 9, 20] and len(neg) == 2 and not set(neg) & set(pos)
    assert convert_coco.select_images(coco, [CAT], 0.5, seed=1)[1] == neg
    assert len({tuple(convert_coco.select_images(coco, [CAT], 0.5, s)[1]) for s in range(6)}) > 1
    assert convert_coco.select_images(coco, [CAT], 0.0, 1)[1] == []


# ---------------------------------------------------------------- determinism, atomicity


def test_records_identical_whatever_the_worker_count(demo, reference, tmp_path):
    ref_bytes, ref_stats = reference
    stats = run(demo, tmp_path / "cat", num_shards=3, workers=2)
    assert shard_bytes(str(tmp_path / "cat")) == ref_bytes
    assert stats == ref_stats
    n = stats["images"]
    assert len(ref_bytes) == 3  # contiguous slices in id order:
    assert stats["records_per_shard"] == [(k + 1) * n // 3 - k * n // 3 for k in range(3)]


def test_refuses_existing_output_unless_overwrite(demo, reference, tmp_path):
    out = tmp_path / "cat"
    run(demo, out, num_shards=2)
    with pytest.raises(cli.UserError, match="--overwrite"):
        run(demo, out, num_shards=3)
    run(demo, out, num_shards=3, overwrite=True)  # stale 2-shard files must go
    assert shard_bytes(str(out)) == reference[0]


def test_crash_mid_shard_then_rerun_finishes_the_job(demo, reference, tmp_path, monkeypatch):
    out = str(tmp_path / "cat")
    real, calls = records.make_example, []

    def crash_on_fourth(*args):
        calls.append(1)
        if len(calls) == 4:  # inside shard 1: shards hold about a third of 8-9 records
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(records, "make_example", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run(demo, out, num_shards=3)
    monkeypatch.setattr(records, "make_example", real)
    left = sorted(os.listdir(tmp_path))
    assert left == ["cat-train2017-00000-of-00003.tfrecord", "cat-train2017-progress.json"]
    assert shard_bytes(out)["cat-train2017-00000-of-00003.tfrecord"] == reference[0][
        "cat-train2017-00000-of-00003.tfrecord"]
    with pytest.raises(cli.UserError, match="other settings"):
        run(demo, out, num_shards=3, crowd="skip")
    stats = run(demo, out, num_shards=3)
    assert shard_bytes(out) == reference[0] and stats == reference[1]
    assert not os.path.exists(shards.progress_path(out, "train2017"))


def killed_at_record(n, demo, out, workers):
    """A script converting the demo that SIGKILLs itself when record n is serialised."""
    return (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "import convert_coco\nfrom datasets import records\n"
        "real, n = records.make_example, [0]\n"
        "def die(*a):\n"
        "    n[0] += 1\n"
        f"    if n[0] == {n}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a)\n"
        "records.make_example = die\n"
        f"convert_coco.main(['--coco-dir', {demo!r}, '--output', {out!r}, '--num-shards', '3',"
        f" '--workers', '{workers}', '--no-progress'])\n")


def test_sigkill_leaves_only_complete_shards(demo, reference, tmp_path):
    out = str(tmp_path / "cat")
    script = killed_at_record(7, demo, out, workers=1)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9
    assert sorted(os.listdir(tmp_path)) == [
        "cat-train2017-00000-of-00003.tfrecord", "cat-train2017-00001-of-00003.tfrecord",
        "cat-train2017-00002-of-00003.tfrecord.partial", "cat-train2017-progress.json"]
    got = shard_bytes(out)
    assert got == {k: v for k, v in reference[0].items() if k in got}
    assert cli.run_main(convert_coco.main, ["--coco-dir", demo, "--output", out, "--num-shards",
                                            "3", "--workers", "1", "--no-progress"]) == 0
    assert shard_bytes(out) == reference[0]
    assert not glob.glob(out + "*.partial")


def test_sigkill_of_a_pooled_conversion_leaves_quiet_workers(demo, reference, tmp_path):
    out = str(tmp_path / "cat")
    # At record 4 the workers are encoding ahead: their results meet a dead pipe.
    script = killed_at_record(4, demo, out, workers=2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # Returns once every holder of stderr (workers, fork server, resource tracker) exited.
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == -9
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert "leaked" not in proc.stderr, proc.stderr
    assert cli.run_main(convert_coco.main, ["--coco-dir", demo, "--output", out, "--num-shards",
                                            "3", "--workers", "1", "--no-progress"]) == 0
    assert shard_bytes(out) == reference[0]


def test_ctrl_c_during_a_pooled_conversion_is_one_line(demo, tmp_path):
    out = str(tmp_path / "cat")
    script = (
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "import convert_coco\nfrom datasets import records\nfrom utils import cli\n"
        "real, n = records.make_example, [0]\n"
        "def pause(*a):\n"
        "    n[0] += 1\n"
        "    if n[0] == 4:  # in shard 1, the workers encoding ahead\n"
        "        print('paused', flush=True)\n"
        "        sys.stdin.read()  # until the test's Ctrl-C\n"
        "    return real(*a)\n"
        "records.make_example = pause\n"
        f"sys.exit(cli.run_main(convert_coco.main, ['--coco-dir', {demo!r}, '--output', {out!r},"
        " '--num-shards', '3', '--workers', '2', '--no-progress']))\n")
    # A session of its own: Ctrl-C in a terminal signals every process of the command.
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            start_new_session=True)
    try:
        paused = proc.stdout.readline()
        if paused == "paused\n":
            os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=HANG_GUARD)[1]
    finally:
        proc.kill()  # only if it hung
    assert paused == "paused\n", err
    assert proc.returncode == cli.EXIT_INTERRUPTED and err == "interrupted\n"
    assert sorted(os.listdir(tmp_path)) == ["cat-train2017-00000-of-00003.tfrecord",
                                            "cat-train2017-progress.json"]


# ---------------------------------------------------------------- image formats


def test_non_rgb_jpeg_sources_become_rgb_png(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    rgb = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30))  # [30, 40, 3]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sources = {
        "rgb.jpg": cv2.imencode(".jpg", rgb)[1].tobytes(),
        "gray.jpg": cv2.imencode(".jpg", gray)[1].tobytes(),
        "rgba.png": cv2.imencode(".png", np.dstack([rgb[..., ::-1], gray]))[1].tobytes(),
        "deep.png": cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257 + 100)[1]
        .tobytes(),
        "gray.png": cv2.imencode(".png", gray)[1].tobytes(),
    }
    buf = io.BytesIO()
    pil.fromarray(rgb).convert("CMYK").save(buf, "JPEG")
    sources["cmyk.jpg"] = buf.getvalue()
    os.makedirs(tmp_path / "coco" / "annotations")
    os.makedirs(tmp_path / "coco" / "train2017")
    images, anns = [], []
    for i, (name, data) in enumerate(sorted(sources.items()), 1):
        (tmp_path / "coco" / "train2017" / name).write_bytes(data)
        images.append({"id": i, "file_name": name, "height": 30, "width": 40})
        anns.append({"id": i, "image_id": i, "category_id": CAT, "iscrowd": 0, "area": 1.0,
                     "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]})
    doc = {"images": images, "annotations": anns, "categories": [{"id": CAT, "name": "cat"}]}
    (tmp_path / "coco" / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    run(str(tmp_path / "coco"), tmp_path / "cat")
    recs = {r["filename"]: r for r in read_records(str(tmp_path / "cat"))}
    assert {n: r["format"] for n, r in recs.items()} == {
        "cmyk.jpg": "png", "deep.png": "png", "gray.jpg": "png", "gray.png": "png",
        "rgb.jpg": "jpeg", "rgba.png": "png"}
    assert recs["rgb.jpg"]["bytes"] == sources["rgb.jpg"]

    def decoded(name, flag=cv2.IMREAD_UNCHANGED):
        return cv2.imdecode(np.frombuffer(sources[name], np.uint8), flag)

    np.testing.assert_array_equal(recs["rgba.png"]["image"], rgb)  # alpha dropped
    np.testing.assert_array_equal(recs["deep.png"]["image"],
                                  ((rgb.astype(np.int32) * 257 + 100 + 128) // 257))
    np.testing.assert_array_equal(recs["gray.png"]["image"], np.dstack([gray] * 3))
    np.testing.assert_array_equal(recs["gray.jpg"]["image"],
                                  np.dstack([decoded("gray.jpg")] * 3))
    np.testing.assert_array_equal(recs["cmyk.jpg"]["image"],
                                  decoded("cmyk.jpg", cv2.IMREAD_COLOR)[..., ::-1])
    assert np.abs(recs["cmyk.jpg"]["image"].astype(int) - rgb).mean() < 8  # colours survive
    for r in recs.values():
        assert r["mask"].sum() == 100 and r["mask"][5:15, 5:15].min() == 1


# ---------------------------------------------------------------- bad input


def _edit_json(root, edit):
    path = os.path.join(root, "annotations", "instances_train2017.json")
    with open(path) as f:
        doc = json.load(f)
    edit(doc)
    with open(path, "w") as f:
        json.dump(doc, f)


def _first_cat_image(root):
    coco = _coco(root)
    return coco.imgs[holding(coco, {CAT})[0]]


def _cli(capsys, *argv):
    """Run the CLI; returns (exit code, the stderr text)."""
    code = cli.run_main(convert_coco.main, list(argv) + ["--no-progress", "--workers", "1"])
    return code, capsys.readouterr().err


def _damage(root, how):
    """Damage a copy of the demo dataset; returns the file name the error must mention."""
    ann_path = os.path.join(root, "annotations", "instances_train2017.json")
    img = _first_cat_image(root)
    img_path = os.path.join(root, "train2017", img["file_name"])
    if how == "no annotations":
        os.remove(ann_path)
        return ann_path
    if how == "malformed json":
        with open(ann_path, "r+") as f:
            f.truncate(1000)
        return ann_path
    if how == "not coco":
        with open(ann_path, "w") as f:
            json.dump({"images": 3}, f)
        return ann_path
    if how == "missing image":
        os.remove(img_path)
    elif how == "corrupt image":
        with open(img_path, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    elif how == "empty image":
        open(img_path, "wb").close()
    elif how == "truncated image":
        with open(img_path, "r+b") as f:
            f.truncate(os.path.getsize(img_path) // 2)
    elif how == "size mismatch":
        _edit_json(root, lambda d: next(i for i in d["images"] if i["id"] == img["id"])
                   .update(height=img["height"] + 10))
    return img["file_name"]


@pytest.mark.parametrize("how,words", [
    ("no annotations", "annotations_trainval2017.zip"),
    ("malformed json", "not valid JSON"),
    ("not coco", "not a COCO instances file"),
    ("missing image", "not found"),
    ("corrupt image", "corrupt"),
    ("truncated image", "corrupt or truncated"),
    ("empty image", "corrupt or truncated"),
    ("size mismatch", "the annotations say"),
])
def test_bad_input_is_one_clear_line(demo_copy, tmp_path, capsys, how, words):
    name = _damage(str(demo_copy), how)
    out = str(tmp_path / "out" / "cat")
    code, err = _cli(capsys, "--coco-dir", str(demo_copy), "--output", out)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert words in err and name in err
    assert not glob.glob(out + "*.tfrecord") and not glob.glob(out + "*stats.json")


@pytest.mark.parametrize("how,reason", [("missing image", "missing"),
                                        ("corrupt image", "corrupt"),
                                        ("size mismatch", "size_mismatch")])
def test_skip_bad_images_counts_them(demo, demo_copy, tmp_path, how, reason):
    name = _damage(str(demo_copy), how)
    stats = run(str(demo_copy), tmp_path / "cat", skip_bad_images=True)
    assert stats["skipped"] == {reason: 1}
    recs = read_records(str(tmp_path / "cat"))
    assert name not in [r["filename"] for r in recs]
    assert len(recs) == stats["images"] == len(holding(_coco(demo), {CAT})) - 1


def test_bad_image_mid_run_then_skip_resumes(demo, demo_copy, reference, tmp_path):
    coco = _coco(str(demo_copy))
    last = coco.imgs[holding(coco, {CAT})[-1]]  # in the last of 3 shards
    os.remove(os.path.join(demo_copy, "train2017", last["file_name"]))
    out = str(tmp_path / "cat")
    with pytest.raises(cli.UserError, match=f"{last['file_name']} not found.*--skip-bad-images"):
        run(str(demo_copy), out, num_shards=3)
    first = out + "-train2017-00000-of-00003.tfrecord"
    before = os.stat(first).st_mtime_ns
    stats = run(str(demo_copy), out, num_shards=3, skip_bad_images=True)  # the suggested fix
    assert os.stat(first).st_mtime_ns == before  # finished shards are kept, not redone
    assert stats["skipped"] == {"missing": 1} and stats["images"] == reference[1]["images"] - 1
    got, ref = shard_bytes(out), reference[0]
    assert [got[k] == ref[k] for k in sorted(ref)] == [True, True, False]


@pytest.mark.parametrize("where", ["polygon", "bbox"])
def test_out_of_bounds_annotation_names_it(demo_copy, capsys, tmp_path, where):
    img = _first_cat_image(str(demo_copy))

    def push_out(doc):
        ann = next(a for a in doc["annotations"]
                   if a["image_id"] == img["id"] and a["category_id"] == CAT)
        if where == "polygon":
            ann["segmentation"][0][0] = 5000.0
        else:
            ann["bbox"][2] = img["width"] * 2
        push_out.ann_id = ann["id"]

    _edit_json(str(demo_copy), push_out)
    code, err = _cli(capsys, "--coco-dir", str(demo_copy), "--output", str(tmp_path / "cat"))
    assert code == 1 and err.count("\n") == 1
    assert f"annotation {push_out.ann_id} of {img['file_name']}" in err and "outside" in err


def test_class_and_selection_errors(demo, capsys, tmp_path):
    out = str(tmp_path / "x")
    code, err = _cli(capsys, "--coco-dir", demo, "--output", out, "--classes", "kitten")
    assert code == 1 and "unknown class 'kitten'" in err and "cat, cell phone" in err
    code, err = _cli(capsys, "--coco-dir", demo, "--output", out, "--classes", "toaster")
    assert code == 1 and "no image of train2017 holds any of toaster" in err
    code, err = _cli(capsys, "--coco-dir", demo, "--output", out, "--classes", "cat", "dog,cat")
    assert code == 2 and err.count("\n") == 1
    assert "class 'cat' is named twice in --classes: name each class once" in err
    code, err = _cli(capsys, "--coco-dir", str(tmp_path / "nowhere"), "--output", out)
    assert code == 1 and "does not exist" in err


def test_unwritable_output_is_a_clear_error(demo, capsys, tmp_path):
    (tmp_path / "file").write_text("a file, not a directory")
    code, err = _cli(capsys, "--coco-dir", demo, "--output", str(tmp_path / "file" / "cat"))
    assert code == 1 and "writable --output" in err and err.count("\n") == 1
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = _cli(capsys, "--coco-dir", demo, "--output", str(locked / "cat"))
        assert code == 1 and "writable --output" in err


@pytest.mark.parametrize("argv,words", [
    (["--crowd", "maybe"], "--crowd"),
    (["--negatives", "-1"], "--negatives"),
    (["--num-shards", "0"], "--num-shards"),
    ([], "--coco-dir"),
])
def test_bad_flags_exit_2(demo, capsys, argv, words):
    if argv:
        argv = argv + ["--coco-dir", demo]
    assert cli.run_main(convert_coco.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_cli_summary_and_comma_classes(demo, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output is data/<classes>
    code = cli.run_main(convert_coco.main, ["--coco-dir", demo, "--classes", "cat,dog",
                                            "--no-progress", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0
    stats = json.loads((tmp_path / "data" / "cat_dog-train2017-stats.json").read_text())
    assert f"wrote {stats['images']} images ({stats['positive_images']} with cat/dog, 0 " \
           "negatives)" in out
    assert "skipped 0 images" in out and "data/cat_dog-train2017-*.tfrecord" in out


# ---------------------------------------------------------------- real COCO


@pytest.mark.skipif(not os.path.isdir(COCO_TINY), reason="no ../shared/data/coco_tiny")
@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_real_coco_subset_matches_pycocotools(tmp_path, split):
    out = str(tmp_path / "cat")
    stats = convert_coco.convert(COCO_TINY, split, output=out, workers=2, progress=False)
    coco = _coco(COCO_TINY, split)
    recs = read_records(out, split)
    assert [r["id"] for r in recs] == holding(coco, {CAT}) and recs
    for r in recs:
        np.testing.assert_array_equal(r["mask"], expected_mask(coco, r["id"]))
        with open(os.path.join(COCO_TINY, split, r["filename"]), "rb") as f:
            assert r["bytes"] == f.read()
    assert stats["instances"] == sum(a["category_id"] == CAT and not a["iscrowd"]
                                     for a in coco.dataset["annotations"])
