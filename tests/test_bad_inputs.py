"""Every bad input of docs/bad_inputs.md, per command: one `error:` line, exit code, no traceback.

Most cases call the command's main() through cli.run_main in this process (an
unexpected exception would fail the test with its traceback); one case per
command also runs as a real subprocess to see exactly what a user sees. Odd
but valid images (1x1, 16-bit, grayscale, CMYK, big) must give correct results.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
import test_convert_masks  # its tiny image and mask folders
import test_convert_pets  # its tiny Oxford-IIIT Pet layout
import test_convert_yolo  # its tiny YOLO export

import convert_coco
import convert_masks
import convert_pets
import convert_yolo
import demo
import evaluate
import export
import predict
import train
from core import config, rundir
from datasets import records
from samples import drawn
from utils import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine
MAINS = {"convert_coco": convert_coco.main, "convert_pets": convert_pets.main,
         "convert_yolo": convert_yolo.main, "convert_masks": convert_masks.main,
         "drawn": drawn.main, "demo": demo.main, "train": train.main,
         "evaluate": evaluate.main, "predict": predict.main, "export": export.main}
DOC = os.path.join(ROOT, "docs", "bad_inputs.md")


def _odd_images(d):
    """Valid images of odd modes and sizes: name -> (path, height, width)."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    made = {}

    def put(name, ok_and_bytes, h, w):
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(ok_and_bytes[1].tobytes())
        made[name] = (path, h, w)

    put("one.png", cv2.imencode(".png", np.full((1, 1, 3), 200, np.uint8)), 1, 1)
    put("gray.jpg", cv2.imencode(".jpg", rng.integers(0, 255, (37, 53), dtype=np.uint8)), 37, 53)
    put("deep.png", cv2.imencode(".png", rng.integers(0, 65535, (30, 40, 3), dtype=np.uint16)),
        30, 40)
    put("alpha.png", cv2.imencode(".png", rng.integers(0, 255, (20, 25, 4), dtype=np.uint8)),
        20, 25)
    put("big.jpg", cv2.imencode(".jpg", rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)),
        1500, 2000)
    pil = pytest.importorskip("PIL.Image")
    path = os.path.join(d, "cmyk.jpg")
    pil.new("CMYK", (31, 23), (10, 200, 30, 0)).save(path, "JPEG")
    made["cmyk.jpg"] = (path, 23, 31)
    return made


def _png_header_only(w, h):
    """A tiny PNG that claims w x h pixels (a decompression bomb's header)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * (w + 1) * 2)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A demo COCO dir, its records, a tiny trained run, and good/odd/bad image files."""
    d = tmp_path_factory.mktemp("world")
    coco = str(d / "coco")
    drawn.generate(coco, seed=2, num_train=3, num_val=2)
    out = str(d / "data" / "cat")
    for split in ("train2017", "val2017"):
        convert_coco.convert(coco, split, output=out, progress=False)
    run = str(d / "run")
    train.train(config.Config(train_records=out + "-train2017-*", val_records="",
                              run_dir=run, depth=1, base_filters=4, input_size=44,
                              batch_size=2, max_steps=2, seed=1, log_every=1))
    images = str(d / "images")
    odd = _odd_images(images)
    bad = {"text.jpg": b"this is not an image\n", "empty.png": b"",
           "trunc.jpg": open(odd["big.jpg"][0], "rb").read()[:3000]}
    bad["bomb.png"] = _png_header_only(100_000, 100_000)
    for name, content in bad.items():
        with open(os.path.join(images, name), "wb") as f:
            f.write(content)
    other_schema = str(d / "other-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(other_schema) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "image/raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
            .SerializeToString())
    malformed = str(d / "malformed-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(malformed) as w:
        w.write(b"\n\xa4")  # frames fine, but is no Example proto (found by test_fuzz)
    empty_shard = str(d / "empty-00000-of-00001.tfrecord")
    open(empty_shard, "wb").close()
    pets = test_convert_pets.make_pets(d / "pets")
    yolo = test_convert_yolo.make_export(d / "yolo", {"a": test_convert_yolo.row(
        0, test_convert_yolo.TRI), "b": ""}, names="['cat']")
    masks = d / "masks"
    test_convert_masks.photo(masks / "images", "a")
    os.makedirs(masks / "masks")
    cv2.imwrite(str(masks / "masks" / "a.png"), test_convert_masks.values(1, [0, 8]))
    return {"dir": str(d), "coco": coco, "pets": pets, "yolo": yolo, "masks": str(masks),
            "train": out + "-train2017-*",
            "val": out + "-val2017-*", "run": run, "images": images, "odd": odd,
            "other_schema": other_schema, "empty_shard": empty_shard, "malformed": malformed}


def copy_run(world, tmp_path, edit=None):
    run = str(tmp_path / "run")
    shutil.copytree(world["run"], run)
    if edit:
        edit(run)
    return run


def k_class_run(world, tmp_path):
    """The world's run relabelled as a cat/dog run (K = 2): enough for the flag checks,
    which come before any checkpoint is restored."""
    return copy_run(world, tmp_path, lambda r: set_config(r, classes=["cat", "dog"],
                                                           num_outputs=3))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def set_config(run, **changes):
    path = os.path.join(run, rundir.RUN_CONFIG)
    cfg = json.load(open(path))
    cfg.update(changes)
    write(path, json.dumps(cfg))


def world_copy(world, tmp_path, key, edit):
    """A copy of the world's "coco" or "pets" dir, changed by edit(copy); returns the copy."""
    copy = str(tmp_path / key)
    shutil.copytree(world[key], copy)
    edit(copy)
    return copy


def ann_path(coco, split="train2017"):
    return os.path.join(coco, "annotations", f"instances_{split}.json")


def first_image(coco):
    doc = json.load(open(ann_path(coco)))
    return os.path.join(coco, "train2017", doc["images"][0]["file_name"])


def yolo_args(w, t, label=None, yaml_text=None):
    """A copy of the world's YOLO export with a.txt's second row `label` or data.yaml
    replaced by `yaml_text`; the convert_yolo.py flags that read it."""
    copy = str(t / "yolo")
    shutil.copytree(w["yolo"], copy)
    if label is not None:
        with open(os.path.join(copy, "valid", "labels", "a.txt"), "a") as f:
            f.write(label)
    if yaml_text is not None:
        write(os.path.join(copy, "data.yaml"), yaml_text)
    return ["--data", copy, "--split", "val", "--output", str(t / "o"), "--no-progress"]


def masks_args(w, t, mask=None, extra=()):
    """A copy of the world's image and mask folders with masks/a.png replaced by `mask`
    (False: removed); the convert_masks.py flags that read it."""
    copy = t / "masks"
    shutil.copytree(w["masks"], copy)
    if mask is False:
        os.remove(copy / "masks" / "a.png")
    elif mask is not None:
        cv2.imwrite(str(copy / "masks" / "a.png"), mask)
    return ["--images", str(copy / "images"), "--masks", str(copy / "masks"),
            "--output", str(t / "o"), "--no-progress", *extra]


def pets_args(pets, tmp_path):
    return ["--pets-dir", pets, "--output", str(tmp_path / "o"), "--no-progress"]


T = {"--depth": "1", "--base-filters": "4", "--input-size": "44", "--batch-size": "2",
     "--max-steps": "2", "--val-records": ""}


def stats_of(t, name, classes, class_pixels, records_from=None):
    """A glob t/<name>-*, with a stats file beside it naming `classes` (and the records of
    records_from copied there, for a reader that lists them first)."""
    write(str(t / f"{name}-stats.json"), json.dumps(
        {"classes": list(classes), "class_pixels": class_pixels, "foreground_fraction": 0.5,
         "pixels": sum(class_pixels)}))
    if records_from:
        shutil.copy(records_from.replace("*", "00000-of-00001.tfrecord"),
                    str(t / f"{name}-00000-of-00001.tfrecord"))
    return str(t / f"{name}-*")


def tiny(w, tmp, **extra):
    args = {"--train-records": w["train"], "--run-dir": str(tmp / "newrun"), **T, **extra}
    return [x for k, v in args.items() for x in (k, v)]


# (case id, command, what is wrong, argv(world, tmp_path), exit code, words in the error)
CASES = [
    # ---------------------------------------------------------------- convert_coco
    ("convert-no-coco-dir-flag", "convert_coco", "--coco-dir missing",
     lambda w, t: [], 2, "--coco-dir"),
    ("convert-missing-dir", "convert_coco", "COCO directory does not exist",
     lambda w, t: ["--coco-dir", str(t / "nope")], 1, "does not exist"),
    ("convert-missing-annotations", "convert_coco", "annotation file missing",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco", lambda c: os.remove(ann_path(c))),
                   "--output", str(t / "o")], 1, "not found"),
    ("convert-empty-annotations", "convert_coco", "annotation file empty",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco", lambda c: write(ann_path(c), "")),
                   "--output", str(t / "o")], 1, "not valid JSON"),
    ("convert-malformed-json", "convert_coco", "annotation file is broken JSON",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco",
                                            lambda c: write(ann_path(c), '{"images": [')),
                   "--output", str(t / "o")], 1, "not valid JSON"),
    ("convert-not-coco", "convert_coco", "JSON that is not a COCO instances file",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco", lambda c: write(ann_path(c), "[1, 2]")),
                   "--output", str(t / "o")], 1, "not a COCO instances file"),
    ("convert-class-named-twice", "convert_coco", "--classes names a class twice",
     lambda w, t: ["--coco-dir", w["coco"], "--classes", "cat", "dog", "cat", "--output",
                   str(t / "o")], 2, "class 'cat' is named twice in --classes"),
    ("convert-unknown-class", "convert_coco", "unknown class name",
     lambda w, t: ["--coco-dir", w["coco"], "--classes", "unicorn", "--output", str(t / "o")],
     1, "unknown class 'unicorn'"),
    ("convert-bad-split", "convert_coco", "split that does not exist",
     lambda w, t: ["--coco-dir", w["coco"], "--split", "test2099", "--output", str(t / "o")],
     1, "instances_test2099.json not found"),
    ("convert-num-shards-0", "convert_coco", "--num-shards 0",
     lambda w, t: ["--coco-dir", w["coco"], "--num-shards", "0"], 2, "positive integer"),
    ("convert-num-shards-text", "convert_coco", "--num-shards abc",
     lambda w, t: ["--coco-dir", w["coco"], "--num-shards", "abc"], 2,
     "--num-shards: must be a positive integer, got abc"),
    ("convert-negatives-negative", "convert_coco", "--negatives -1",
     lambda w, t: ["--coco-dir", w["coco"], "--negatives", "-1"], 2, "must be >= 0"),
    ("convert-bad-crowd", "convert_coco", "--crowd bogus",
     lambda w, t: ["--coco-dir", w["coco"], "--crowd", "bogus"], 2, "invalid choice"),
    ("convert-missing-image", "convert_coco", "an image file is missing",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco", lambda c: os.remove(first_image(c))),
                   "--output", str(t / "o")], 1, "not found"),
    ("convert-corrupt-image", "convert_coco", "an image file is not a JPEG",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco",
                                            lambda c: write(first_image(c), "garbage")),
                   "--output", str(t / "o")], 1, "corrupt or truncated"),
    ("convert-empty-image", "convert_coco", "an image file is empty (0 bytes)",
     lambda w, t: ["--coco-dir", world_copy(w, t, "coco", lambda c: write(first_image(c), "")),
                   "--output", str(t / "o")], 1, "corrupt or truncated"),
    ("convert-finished-output", "convert_coco", "output already converted, no --overwrite",
     lambda w, t: ["--coco-dir", w["coco"], "--output", w["train"][:-len("-train2017-*")]],
     1, "--overwrite"),
    ("convert-unknown-flag", "convert_coco", "unknown flag",
     lambda w, t: ["--coco-dir", w["coco"], "--frobnicate"], 2, "unrecognized arguments"),
    # ---------------------------------------------------------------- convert_yolo
    ("yolo-missing-yaml", "convert_yolo", "data.yaml does not exist",
     lambda w, t: ["--data", str(t / "nope.yaml")], 1, "nope.yaml not found"),
    ("yolo-not-yaml", "convert_yolo", "data.yaml is broken YAML",
     lambda w, t: yolo_args(w, t, yaml_text="names: [cat\n"), 1, "is not valid YAML"),
    ("yolo-unsafe-yaml", "convert_yolo", "data.yaml holds a tag that builds a Python object",
     lambda w, t: yolo_args(w, t, yaml_text="!!python/object/apply:os.system ['true']\n"), 1,
     "a safe loader refuses"),
    ("yolo-names-wrong-type", "convert_yolo", "data.yaml's names is a string",
     lambda w, t: yolo_args(w, t, yaml_text="names: cat\nval: valid/images\n"), 1,
     "'names' must be a list"),
    ("yolo-split-wrong-type", "convert_yolo", "data.yaml's val is a list",
     lambda w, t: yolo_args(w, t, yaml_text="names: [cat]\nval: [a, b]\n"), 1,
     "'val' must be one folder"),
    ("yolo-no-such-split", "convert_yolo", "--split test, which data.yaml does not name",
     lambda w, t: yolo_args(w, t)[:2] + ["--split", "test"], 1, "names no 'test' split"),
    ("yolo-missing-images", "convert_yolo", "the split's image folder is missing",
     lambda w, t: yolo_args(w, t, yaml_text="names: [cat]\nval: nowhere/images\n"), 1,
     "not found: unzip the whole export"),
    ("yolo-class-named-twice", "convert_yolo", "--classes names a class twice",
     lambda w, t: yolo_args(w, t) + ["--classes", "cat,cat"], 2,
     "class 'cat' is named twice in --classes"),
    ("yolo-unknown-class", "convert_yolo", "--classes names no class of data.yaml",
     lambda w, t: yolo_args(w, t) + ["--classes", "unicorn"], 1, "unknown class 'unicorn'"),
    ("yolo-box-row", "convert_yolo", "a box-only row (detection export)",
     lambda w, t: yolo_args(w, t, "0 0.5 0.5 0.2 0.2\n"), 1, "a box (class x y w h)"),
    ("yolo-odd-coordinates", "convert_yolo", "a row with an odd number of coordinates",
     lambda w, t: yolo_args(w, t, "0 0.1 0.1 0.5 0.2 0.3\n"), 1, "an odd number"),
    ("yolo-few-points", "convert_yolo", "a polygon of fewer than 3 points",
     lambda w, t: yolo_args(w, t, "0 0.1 0.1\n"), 1, "a polygon needs at least 3"),
    ("yolo-class-beyond-names", "convert_yolo", "a class index beyond names",
     lambda w, t: yolo_args(w, t, "4 0.1 0.1 0.5 0.2 0.3 0.8\n"), 1, "class 4 is not an index"),
    ("yolo-non-number", "convert_yolo", "a row holding a non-number",
     lambda w, t: yolo_args(w, t, "0 0.1 x 0.5 0.2 0.3 0.8\n"), 1, "holds a non-number"),
    ("yolo-far-outside", "convert_yolo", "a coordinate far outside [0, 1]",
     lambda w, t: yolo_args(w, t, "0 0.1 0.1 1.5 0.2 0.3 0.8\n"), 1,
     "lies outside the image"),
    # ---------------------------------------------------------------- convert_masks
    ("masks-no-folders", "convert_masks", "neither --images/--masks nor --voc",
     lambda w, t: ["--output", str(t / "o")], 2, "pass --images and --masks, or --voc"),
    ("masks-missing-dir", "convert_masks", "the image folder does not exist",
     lambda w, t: ["--images", str(t / "nope"), "--masks", str(t), "--output", str(t / "o")],
     1, "does not exist: check --images"),
    ("masks-class-named-twice", "convert_masks", "--classes names a class twice",
     lambda w, t: masks_args(w, t, extra=["--classes", "cat=8", "cat=3"]), 2,
     "class 'cat' is named twice in --classes"),
    ("masks-index-named-twice", "convert_masks", "--classes gives one index two names",
     lambda w, t: masks_args(w, t, extra=["--classes", "cat=8", "kitty=8"]), 2,
     "--classes gives index 8 two names, 'cat' and 'kitty'"),
    ("masks-bad-classes-flag", "convert_masks", "--classes cat (no =index)",
     lambda w, t: masks_args(w, t, extra=["--classes", "cat"]), 2, "--classes takes name=index"),
    ("masks-no-mask", "convert_masks", "an image with no mask",
     lambda w, t: masks_args(w, t, False), 1, "has no mask of the same stem"),
    ("masks-size-mismatch", "convert_masks", "a mask of another size than its image",
     lambda w, t: masks_args(w, t, np.zeros((4, 4), np.uint8)), 1,
     "but its image is 16x12"),
    ("masks-not-binary", "convert_masks", "a binary mask holding other values",
     lambda w, t: masks_args(w, t), 1, "not a binary mask"),
    ("masks-unknown-index", "convert_masks", "an index at or beyond --num-classes",
     lambda w, t: masks_args(w, t, extra=["--classes", "cat=8", "--num-classes", "5"]), 1,
     "beyond --num-classes 5"),
    ("masks-colour-mask", "convert_masks", "a colour (RGB) mask",
     lambda w, t: masks_args(w, t, np.dstack([np.zeros((12, 16), np.uint8)] * 2
                                             + [np.full((12, 16), 9, np.uint8)]),
                             ["--classes", "cat=8"]), 1, "is a colour image"),
    ("masks-split-list-stranger", "convert_masks", "a split list naming a stem with no image",
     lambda w, t: (write(str(t / "list.txt"), "zzz\n"),
                   masks_args(w, t, extra=["--split-list", str(t / "list.txt")]))[1], 1,
     "zzz of"),
    # ---------------------------------------------------------------- convert_pets
    ("pets-missing-dir", "convert_pets", "Oxford-IIIT Pet directory does not exist",
     lambda w, t: pets_args(str(t / "nope"), t), 1, "does not exist"),
    ("pets-missing-list", "convert_pets", "annotations/list.txt missing",
     lambda w, t: pets_args(world_copy(w, t, "pets", lambda p: os.remove(
         os.path.join(p, "annotations", "list.txt"))), t), 1, "list.txt not found"),
    ("pets-malformed-list", "convert_pets", "a line of trainval.txt is not 'NAME ID SPECIES BREED'",
     lambda w, t: pets_args(world_copy(w, t, "pets", lambda p: write(
         os.path.join(p, "annotations", "trainval.txt"), "Abyssinian_1 one\n")), t), 1,
     "is malformed"),
    ("pets-unknown-species", "convert_pets", "--species bird",
     lambda w, t: pets_args(w["pets"], t) + ["--species", "bird"], 2,
     "unknown class 'bird' in --species"),
    ("pets-species-named-twice", "convert_pets", "--species cat dog cat",
     lambda w, t: pets_args(w["pets"], t) + ["--species", "cat", "dog", "cat"], 2,
     "class 'cat' is named twice in --species"),
    ("pets-missing-trimap", "convert_pets", "a photo's trimap is missing",
     lambda w, t: pets_args(world_copy(w, t, "pets", lambda p: os.remove(os.path.join(
         p, "annotations", "trimaps", "Abyssinian_1.png"))), t), 1, "not found"),
    ("pets-wrong-size-trimap", "convert_pets", "a trimap of another size than its photo",
     lambda w, t: pets_args(world_copy(w, t, "pets", lambda p: cv2.imwrite(os.path.join(
         p, "annotations", "trimaps", "Abyssinian_1.png"), np.full((5, 5), 2, np.uint8))), t),
     1, "but its image is"),
    ("pets-corrupt-image", "convert_pets", "a photo file is not an image",
     lambda w, t: pets_args(world_copy(w, t, "pets", lambda p: write(
         os.path.join(p, "images", "Abyssinian_1.jpg"), "garbage")), t), 1, "Abyssinian_1.jpg"),
    ("pets-bad-border", "convert_pets", "--border maybe",
     lambda w, t: pets_args(w["pets"], t) + ["--border", "maybe"], 2, "invalid choice"),
    ("pets-unknown-flag", "convert_pets", "unknown flag",
     lambda w, t: pets_args(w["pets"], t) + ["--frobnicate"], 2, "unrecognized arguments"),
    # ---------------------------------------------------------------- samples.drawn
    ("demo-num-train-0", "drawn", "--num-train 0",
     lambda w, t: ["--out", str(t / "d"), "--num-train", "0"], 2, "positive integer"),
    ("demo-num-val-text", "drawn", "--num-val many",
     lambda w, t: ["--out", str(t / "d"), "--num-val", "many"], 2,
     "--num-val: must be a positive integer, got many"),
    ("demo-negative-seed", "drawn", "--seed -1",
     lambda w, t: ["--out", str(t / "d"), "--seed", "-1"], 2, "must be >= 0"),
    ("demo-out-is-a-file", "drawn", "--out names an existing file",
     lambda w, t: (write(str(t / "f"), "x"), ["--out", str(t / "f"), "--num-train", "1",
                                              "--num-val", "1"])[1], 1, "cannot write"),
    # ---------------------------------------------------------------- demo
    ("demo-scenes-not-an-export", "demo", "--scenes names a folder without data.yaml",
     lambda w, t: ["--scenes", str(t), "--data-dir", str(t / "data")], 1,
     "so it is not a YOLO segmentation export"),
    ("demo-scenes-no-val-split", "demo", "--scenes export whose data.yaml names no val split",
     lambda w, t: ["--scenes", yolo_args(w, t, yaml_text="names: [cat]\ntrain: valid/images\n")[1],
                   "--data-dir", str(t / "data")], 1, "names no 'val' split"),
    ("demo-scenes-missing-train", "demo", "--scenes export without its train/ folder",
     lambda w, t: ["--scenes", yolo_args(w, t)[1], "--data-dir", str(t / "data")], 1,
     "not found: unzip the whole export"),
    ("demo-scenes-with-drawn", "demo", "--scenes with --dataset drawn",
     lambda w, t: ["--dataset", "drawn", "--scenes", str(t)], 2, "--scenes replaces"),
    ("demo-unknown-class", "demo", "--classes cat horse",
     lambda w, t: ["--classes", "cat", "horse", "--data-dir", str(t / "data")], 2,
     "unknown class 'horse' in --classes: valid names are cat, dog"),
    ("demo-class-twice", "demo", "--classes cat cat",
     lambda w, t: ["--classes", "cat", "cat", "--data-dir", str(t / "data")], 2,
     "class 'cat' is named twice in --classes"),
    ("demo-scenes-with-classes", "demo", "--scenes with --classes cat dog",
     lambda w, t: ["--scenes", str(t), "--classes", "cat", "dog", "--data-dir",
                   str(t / "data")], 2, "other classes than cat train on the pet photos alone"),
    ("demo-encoder-weights-missing", "demo", "--encoder-weights names no file",
     lambda w, t: ["--encoder-weights", str(t / "vgg.h5"), "--data-dir", str(t / "data")], 1,
     "vgg.h5 does not exist: pass a Keras VGG16 weights file"),
    ("demo-encoder-weights-and-from-scratch", "demo", "--encoder-weights with --from-scratch",
     lambda w, t: ["--encoder-weights", str(t / "vgg.h5"), "--from-scratch"], 2,
     "--encoder-weights starts from VGG16's weights and --from-scratch from none: pass one of "
     "the two"),
    # ---------------------------------------------------------------- train
    ("train-invalid-input-size", "train", "--input-size not valid for the depth",
     lambda w, t: tiny(w, t, **{"--input-size": "45"}), 2, "nearest valid sizes"),
    ("train-batch-size-0", "train", "--batch-size 0",
     lambda w, t: tiny(w, t, **{"--batch-size": "0"}), 2, "positive integer"),
    ("train-negative-lr", "train", "--learning-rate -1",
     lambda w, t: tiny(w, t, **{"--learning-rate": "-1"}), 2, "positive number"),
    ("train-nan-lr", "train", "--learning-rate nan",
     lambda w, t: tiny(w, t, **{"--learning-rate": "nan"}), 2, "positive number"),
    ("train-bad-schedule", "train", "--lr-schedule bogus",
     lambda w, t: tiny(w, t, **{"--lr-schedule": "bogus"}), 2, "invalid choice"),
    ("train-bad-on-nan", "train", "--on-nan maybe",
     lambda w, t: tiny(w, t, **{"--on-nan": "maybe"}), 2, "invalid choice"),
    ("train-run-name-path", "train", "--run-name with a slash",
     lambda w, t: ["--run-name", "a/b", "--train-records", w["train"]], 2, "plain name"),
    ("train-class-lists-differ", "train", "sets whose stats name other class lists",
     lambda w, t: tiny(w, t, **{"--val-records": stats_of(t, "v", ["dog", "cat"],
                                                          [6, 3, 1])}), 1,
     "class lists differ: --train-records '"),
    ("train-class-weights-count", "train", "--class-weights not one per value 0..K",
     lambda w, t: tiny(w, t, **{"--train-records": stats_of(t, "a", ["cat", "dog"], [6, 3, 1]),
                                "--class-weights": "1,2"}), 2,
     "--class-weights gives 2 weight(s) for 2 classes + background: give 3"),
    ("train-class-weights-one-class", "train", "--class-weights with one-class records",
     lambda w, t: tiny(w, t, **{"--class-weights": "auto"}), 2,
     "--class-weights weighs the classes of records of 2 or more classes; these hold one"),
    ("train-class-weights-not-positive", "train", "--class-weights 0,1,2",
     lambda w, t: tiny(w, t, **{"--class-weights": "0,1,2"}), 2,
     "argument --class-weights: must be 'auto' or a comma list of positive numbers"),
    ("train-pos-weight-many-classes", "train", "--pos-weight with records of 2 classes",
     lambda w, t: tiny(w, t, **{"--train-records": stats_of(t, "a", ["cat", "dog"], [6, 3, 1]),
                                "--pos-weight": "2"}), 2,
     "--pos-weight weighs the one class of one-class records; these hold 2 (cat, dog)"),
    ("train-pos-weight-0", "train", "--pos-weight 0",
     lambda w, t: tiny(w, t, **{"--pos-weight": "0"}), 2, "positive number"),
    ("train-weights-count", "train", "--train-weights not one per --train-records set",
     lambda w, t: tiny(w, t) + ["--train-records", w["train"], "--train-weights", "3,1,1"],
     2, "gives 3 weight(s) for 2 --train-records sets"),
    ("train-weight-not-positive", "train", "a --train-weights weight of 0 or below",
     lambda w, t: tiny(w, t) + ["--train-records", w["train"], "--train-weights", "3,0"],
     2, "must be a comma list of positive numbers"),
    ("train-long-side-range-order", "train", "--long-side-range with MIN above MAX",
     lambda w, t: tiny(w, t, **{"--long-side-range": "192,96"}), 2,
     "must be two whole numbers MIN,MAX with 0 < MIN <= MAX"),
    ("train-encoder-weights-without-vgg16", "train", "--encoder-weights with the U-Net encoder",
     lambda w, t: tiny(w, t, **{"--encoder-weights": str(t / "vgg.h5")}), 2,
     "--encoder-weights is for --encoder vgg16"),
    ("train-vgg16-too-deep", "train", "--encoder vgg16 with --depth 5",
     lambda w, t: tiny(w, t, **{"--encoder": "vgg16", "--depth": "5"}), 2,
     "--depth 5 is too deep for --encoder vgg16"),
    ("train-encoder-weights-not-hdf5", "train", "--encoder-weights names a file that is not HDF5",
     lambda w, t: (t / "vgg.h5").write_text("no") and tiny(
         w, t, **{"--encoder": "vgg16", "--input-size": "64", "--encoder-weights":
                  str(t / "vgg.h5")}), 1, "is not an HDF5 weights file"),
    ("train-efficientnet-weights-not-torch", "train", "--encoder efficientnet-lite0 "
     "--encoder-weights names a file that torch.save did not write",
     lambda w, t: (t / "eff.pth").write_text("no") and tiny(
         w, t, **{"--encoder": "efficientnet-lite0", "--input-size": "64", "--encoder-weights":
                  str(t / "eff.pth")}), 1,
     "it is neither a zip nor a legacy torch.save file: pass EfficientNet-Lite0's ImageNet "
     "state dict"),
    ("train-imagenet-weights-for-vgg16", "train", "--encoder-weights imagenet for vgg16",
     lambda w, t: tiny(w, t, **{"--encoder": "vgg16", "--input-size": "64",
                                "--encoder-weights": "imagenet"}), 1,
     "--encoder-weights imagenet is for --encoder efficientnet-lite0"),
    ("train-efficientnet-too-deep", "train", "--encoder efficientnet-lite0 with --depth 6",
     lambda w, t: tiny(w, t, **{"--encoder": "efficientnet-lite0", "--depth": "6"}), 2,
     "--depth 6 is too deep for --encoder efficientnet-lite0: EfficientNet-Lite0 has 6 levels"),
    ("train-efficientnet-input-size", "train", "--encoder efficientnet-lite0 with an input size "
     "that is not a multiple of 2**depth",
     lambda w, t: tiny(w, t, **{"--encoder": "efficientnet-lite0", "--input-size": "45"}), 2,
     "--input-size 45 is not valid for a depth-1 U-Net with an efficientnet-lite0 encoder; the "
     "nearest valid sizes are 44 (below) and 46 (above)"),
    ("train-foreground-windows-above-1", "train", "--foreground-windows above 1",
     lambda w, t: tiny(w, t, **{"--foreground-windows": "1.5"}), 2, "must be in [0, 1]"),
    ("train-copy-paste-scale-one-number", "train", "--copy-paste-scale not MIN,MAX",
     lambda w, t: tiny(w, t, **{"--copy-paste-scale": "0.5"}), 2,
     "must be two numbers MIN,MAX"),
    ("train-no-records", "train", "no file matches --train-records",
     lambda w, t: tiny(w, t, **{"--train-records": str(t / "none-*")}), 1, "no record files"),
    ("train-empty-shard", "train", "a 0-byte shard",
     lambda w, t: tiny(w, t, **{"--train-records": w["empty_shard"]}), 1,
     "hold no readable examples"),
    ("train-other-schema", "train", "records of a different schema",
     lambda w, t: tiny(w, t, **{"--train-records": w["other_schema"]}), 1,
     "record #0 at byte offset 0 is corrupt"),
    ("train-malformed-example", "train", "a record that is not an Example proto",
     lambda w, t: tiny(w, t, **{"--train-records": w["malformed"]}), 1,
     "not a tf.train.Example"),
    ("train-truncated-shard", "train", "a shard cut in the middle",
     lambda w, t: tiny(w, t, **{"--train-records": _cut(w, t)}), 1,
     "truncated record"),
    ("train-stats-missing", "train", "--pos-weight auto without the stats file",
     lambda w, t: tiny(w, t, **{"--pos-weight": "auto", "--stats": str(t / "no.json")}), 1,
     "is missing"),
    ("train-stats-malformed", "train", "--pos-weight auto with a broken stats file",
     lambda w, t: (write(str(t / "s.json"), "{"), tiny(w, t, **{
         "--pos-weight": "auto", "--stats": str(t / "s.json")}))[1], 1, "unreadable"),
    ("train-config-vs-checkpoint", "train", "resume with another network than the checkpoint",
     lambda w, t: tiny(w, t, **{"--run-dir": copy_run(w, t), "--base-filters": "8"}), 1,
     "another network"),
    ("train-malformed-run-config", "train", "resume a run dir whose config.json is broken",
     lambda w, t: tiny(w, t, **{"--run-dir": copy_run(w, t, lambda r: write(
         os.path.join(r, rundir.RUN_CONFIG), "{oops"))}), 1, "not valid JSON"),
    ("train-unknown-flag", "train", "unknown flag",
     lambda w, t: ["--frobnicate", "3"], 2, "unrecognized arguments"),
    # ---------------------------------------------------------------- evaluate
    ("evaluate-no-run-flag", "evaluate", "--run missing",
     lambda w, t: [], 2, "--run"),
    ("evaluate-missing-run", "evaluate", "run directory does not exist",
     lambda w, t: ["--run", str(t / "nope")], 1, "does not exist"),
    ("evaluate-not-a-run", "evaluate", "directory without config.json",
     lambda w, t: ["--run", str(t)], 1, "is missing"),
    ("evaluate-config-unknown-keys", "evaluate", "config.json with unknown keys",
     lambda w, t: ["--run", copy_run(w, t, lambda r: set_config(r, colour="red")),
                   "--records", w["val"]], 1, "unknown keys"),
    ("evaluate-threshold-2", "evaluate", "--threshold 2",
     lambda w, t: ["--run", w["run"], "--threshold", "2"], 2, "must be in [0, 1]"),
    ("evaluate-no-records", "evaluate", "run without val records and no --records",
     lambda w, t: ["--run", w["run"]], 2, "no records to evaluate"),
    ("evaluate-other-classes", "evaluate", "records of other classes than the run's",
     lambda w, t: ["--run", w["run"], "--records",
                   stats_of(t, "two", ["cat", "dog"], [6, 3, 1], w["val"])], 1,
     "class lists differ: --records '"),
    ("evaluate-records-missing", "evaluate", "--records matches nothing",
     lambda w, t: ["--run", w["run"], "--records", str(t / "x-*")], 1, "no record files"),
    ("evaluate-other-schema", "evaluate", "records of a different schema",
     lambda w, t: ["--run", w["run"], "--records", w["other_schema"], "--no-progress"], 1,
     "record #0 is unreadable"),
    ("evaluate-over-the-cap", "evaluate", "a record's image over --max-pixels",
     lambda w, t: ["--run", w["run"], "--records", w["val"], "--max-pixels", "10",
                   "--no-progress"], 1, "record #0: image is over the 10-pixel cap"),
    ("evaluate-malformed-example", "evaluate", "a record that is not an Example proto",
     lambda w, t: ["--run", w["run"], "--records", w["malformed"], "--no-progress"], 1,
     "record #0 is unreadable"),
    ("evaluate-no-checkpoint", "evaluate", "run dir without checkpoints",
     lambda w, t: ["--run", copy_run(w, t, _drop_checkpoints), "--records", w["val"]], 1,
     "no checkpoint"),
    ("evaluate-config-vs-checkpoint", "evaluate", "config.json does not match the checkpoint",
     lambda w, t: ["--run", copy_run(w, t, lambda r: set_config(r, base_filters=8)),
                   "--records", w["val"]], 1, "does not match config.json"),
    ("evaluate-bad-checkpoint-flag", "evaluate", "--checkpoint that does not exist",
     lambda w, t: ["--run", w["run"], "--records", w["val"], "--checkpoint",
                   str(t / "model.ckpt-9")], 1, "not found"),
    ("evaluate-adopt-threshold-k-classes", "evaluate", "--adopt-threshold on a run of K >= 2",
     lambda w, t: ["--run", k_class_run(w, t), "--records", w["val"], "--adopt-threshold"], 2,
     "--adopt-threshold is for runs of one class"),
    ("evaluate-classes-vs-outputs", "evaluate", "config.json's classes do not match num_outputs",
     lambda w, t: ["--run", copy_run(w, t, lambda r: set_config(r, classes=["cat", "dog"],
                                                                num_outputs=4)),
                   "--records", w["val"]], 1, "num_outputs=4 for the 2 classes ['cat', 'dog']"),
    # ---------------------------------------------------------------- predict
    ("predict-no-inputs", "predict", "no image arguments",
     lambda w, t: ["--run", w["run"]], 2, "required: inputs"),
    ("predict-missing-image", "predict", "image path does not exist",
     lambda w, t: ["--run", w["run"], str(t / "no.jpg"), "--out", str(t / "p")], 1,
     "no such file"),
    ("predict-empty-dir", "predict", "directory with no images",
     lambda w, t: ["--run", w["run"], str(t), "--out", str(t / "p")], 1, "has no .jpg"),
    ("predict-not-an-image", "predict", "a text file named .jpg",
     lambda w, t: ["--run", w["run"], os.path.join(w["images"], "text.jpg"), "--out",
                   str(t / "p"), "--no-progress"], 1, "not a readable JPEG/PNG image (Unknown"),
    ("predict-empty-image", "predict", "a 0-byte .png",
     lambda w, t: ["--run", w["run"], os.path.join(w["images"], "empty.png"), "--out",
                   str(t / "p"), "--no-progress"], 1, "Input is empty"),
    ("predict-truncated-jpeg", "predict", "a JPEG cut short",
     lambda w, t: ["--run", w["run"], os.path.join(w["images"], "trunc.jpg"), "--out",
                   str(t / "p"), "--no-progress"], 1, "Invalid JPEG data"),
    ("predict-huge-png", "predict", "a PNG claiming 100000x100000 pixels",
     lambda w, t: ["--run", w["run"], os.path.join(w["images"], "bomb.png"), "--out",
                   str(t / "p"), "--no-progress"], 1,
     "image is over the 40,000,000-pixel cap: shrink it, or raise the cap with --max-pixels"),
    ("predict-over-the-cap", "predict", "an image over --max-pixels",
     lambda w, t: ["--run", w["run"], w["odd"]["gray.jpg"][0], "--out", str(t / "p"),
                   "--max-pixels", "10", "--no-progress"], 1, "over the 10-pixel cap"),
    ("predict-threshold-negative", "predict", "--threshold -0.1",
     lambda w, t: ["--run", w["run"], w["images"], "--threshold", "-0.1"], 2,
     "must be in [0, 1]"),
    ("predict-batch-size-0", "predict", "--batch-size 0",
     lambda w, t: ["--run", w["run"], w["images"], "--batch-size", "0"], 2, "positive integer"),
    ("predict-broken-eval-json", "predict", "run's eval.json is broken",
     lambda w, t: ["--run", copy_run(w, t, lambda r: write(os.path.join(r, rundir.EVAL_JSON),
                                                            "[")), w["images"]], 1,
     "not a valid evaluate.py result"),
    ("predict-config-vs-checkpoint", "predict", "config.json does not match the checkpoint",
     lambda w, t: ["--run", copy_run(w, t, lambda r: set_config(r, depth=2, input_size=92)),
                   w["odd"]["one.png"][0], "--out", str(t / "p")], 1,
     "does not match config.json"),
    ("predict-class-not-in-run", "predict", "--class not one of the run's classes",
     lambda w, t: ["--run", k_class_run(w, t), w["images"], "--class", "horse"], 2,
     "--class 'horse' is not one of the run's classes (cat, dog): pass one of them"),
    ("predict-class-one-class-run", "predict", "--class on a run of one class",
     lambda w, t: ["--run", w["run"], w["images"], "--class", "cat"], 2,
     "--class needs a run of several classes"),
    ("predict-threshold-k-classes", "predict", "--threshold on a run of K >= 2 classes",
     lambda w, t: ["--run", k_class_run(w, t), w["images"], "--threshold", "0.3"], 2,
     "--threshold is for runs of one class"),
    # ---------------------------------------------------------------- export
    ("export-no-out", "export", "--out missing",
     lambda w, t: ["--run", w["run"]], 2, "--out"),
    ("export-out-exists", "export", "--out exists, no --overwrite",
     lambda w, t: ["--run", w["run"], "--out", str(t)], 1, "--overwrite"),
    ("export-out-is-the-run", "export", "--out is the run directory, with --overwrite",
     lambda w, t: ["--run", w["run"], "--out", w["run"], "--overwrite"], 1,
     "would destroy it: choose an --out outside the run"),
    ("export-out-contains-the-run", "export", "--out contains the run directory",
     lambda w, t: ["--run", w["run"], "--out", os.path.dirname(w["run"]), "--overwrite"], 1,
     "would destroy it"),
    ("export-overwrite-not-a-saved-model", "export", "--overwrite onto a non-SavedModel dir",
     lambda w, t: ["--run", w["run"], "--out", str(t), "--overwrite"], 1,
     "is not a SavedModel (no saved_model.pb), so --overwrite will not replace it"),
    ("export-missing-run", "export", "run directory does not exist",
     lambda w, t: ["--run", str(t / "nope"), "--out", str(t / "m")], 1, "does not exist"),
    ("export-threshold-5", "export", "--threshold 5",
     lambda w, t: ["--run", w["run"], "--out", str(t / "m"), "--threshold", "5"], 2,
     "must be in [0, 1]"),
    ("export-config-vs-checkpoint", "export", "config.json does not match the checkpoint",
     lambda w, t: ["--run", copy_run(w, t, lambda r: set_config(r, base_filters=8)),
                   "--out", str(t / "m")], 1, "does not match config.json"),
    ("export-threshold-k-classes", "export", "--threshold on a run of K >= 2 classes",
     lambda w, t: ["--run", k_class_run(w, t), "--out", str(t / "m"), "--threshold", "0.3"], 2,
     "--threshold is for runs of one class"),
]


def _cut(w, t):
    src = w["train"].replace("*", "00000-of-00001.tfrecord")
    dst = str(t / "cut-00000-of-00001.tfrecord")
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[:len(data) // 2])
    return dst


def _drop_checkpoints(run):
    for name in os.listdir(run):
        if name.startswith(("model.ckpt", "checkpoint")) or name == rundir.BEST_DIR:
            path = os.path.join(run, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def error_lines(stderr):
    """The `error:` lines, less predict's closing count (it reports each bad image, then
    "error: N of M inputs failed" so a batch shows every failure)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    if len(lines) > 1 and " inputs failed: " in lines[-1]:
        lines.pop()
    return lines


# Known gaps, each needing a change in a file this test does not own.
KNOWN_GAPS = {}
PARAMS = [pytest.param(c, id=c[0], marks=pytest.mark.xfail(reason=KNOWN_GAPS[c[0]],
                                                           strict=True))
          if c[0] in KNOWN_GAPS else pytest.param(c, id=c[0]) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_is_one_clear_error_line(world, tmp_path, capsys, monkeypatch, case):
    name, command, _, argv, code, words = case
    monkeypatch.chdir(tmp_path)  # defaults like logs/ and predictions/ land here
    args = argv(world, tmp_path)
    capsys.readouterr()
    got = cli.run_main(MAINS[command], args)
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert got == code, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert words in errors[0], errors[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["convert-unknown-class", "demo-num-train-0",
                                  "train-other-schema", "evaluate-config-vs-checkpoint",
                                  "predict-not-an-image", "export-out-exists"])
def test_as_a_subprocess_exactly_one_error_line(world, tmp_path, name):
    _, command, _, argv, code, words = next(c for c in CASES if c[0] == name)
    script = ([os.path.join(ROOT, f"{command}.py")] if command != "drawn"
              else ["-m", "samples.drawn"])
    done = subprocess.run([sys.executable, *script, *argv(world, tmp_path)], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT})
    errors = error_lines(done.stderr)
    assert done.returncode == code, done.stderr[-2000:]
    assert len(errors) == 1 and words in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_every_case_is_in_the_docs_table():
    text = open(DOC).read()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in text]
    assert not missing, f"add these cases to {DOC}: {missing}"


# ---------------------------------------------------------------- odd but valid images


@pytest.mark.parametrize("name", ["one.png", "gray.jpg", "deep.png", "alpha.png", "cmyk.jpg",
                                  "big.jpg"])
def test_predict_handles_odd_images_at_full_size(world, tmp_path, name):
    path, h, w = world["odd"][name]
    result = predict.predict(world["run"], [path], str(tmp_path / "p"), threshold=0.5,
                             progress=False)
    assert result["failed"] == []
    mask = cv2.imread(result["written"][0], cv2.IMREAD_UNCHANGED)
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}


def test_convert_handles_odd_images(world, tmp_path):
    """1x1, 16-bit, RGBA and CMYK sources become records of the right size and RGB pixels."""
    coco = str(tmp_path / "coco")
    os.makedirs(os.path.join(coco, "annotations"))
    shutil.copytree(world["images"], os.path.join(coco, "train2017"))
    images, anns = [], []
    for i, name in enumerate(["one.png", "gray.jpg", "deep.png", "alpha.png", "cmyk.jpg"]):
        _, h, w = world["odd"][name]
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 17, "iscrowd": 0,
                     "segmentation": [[0, 0, w, 0, w, h, 0, h]], "area": w * h,
                     "bbox": [0, 0, w, h]})
    write(ann_path(coco), json.dumps({"images": images, "annotations": anns,
                                      "categories": [{"id": 17, "name": "cat"}]}))
    out = str(tmp_path / "cat")
    stats = convert_coco.convert(coco, "train2017", output=out, progress=False)
    assert stats["images"] == 5 and stats["skipped"] == {}
    got = {}
    for raw in tf.data.TFRecordDataset(out + "-train2017-00000-of-00001.tfrecord"):
        parsed = records.parse_example(raw)
        image, mask = records.decode(parsed)
        got[parsed[records.FILENAME].numpy().decode()] = (image.shape, mask.numpy())
    for name, (shape, mask) in got.items():
        _, h, w = world["odd"][name]
        assert tuple(shape) == (h, w, 3) and mask.shape == (h, w, 1)
        assert (mask == records.FOREGROUND).all()  # the polygon covers the whole image
