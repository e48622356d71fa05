"""Convert an Ultralytics / Roboflow YOLO segmentation export into sharded TFRecords.

    python convert_yolo.py --data DIR/data.yaml --split val --output data/feral_val

reads data.yaml (class names, split folders), each split's images/ and labels/
(one `class x1 y1 x2 y2 ...` row of normalised polygon points per instance) and
writes the same records and stats (datasets/shards.py) as convert_coco.py, with the
polygons rasterised by the same code (convert_coco.build_mask). Flags, masks, stats
and bad rows: docs/convert_yolo.md.

--classes names data.yaml's classes in mask-value order (the first is 1, the next 2,
...); by default every name, in data.yaml's index order. Overlapping polygons of
different classes follow convert_coco's rule: the smaller one wins, of two the same
size the later row.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import collections
import dataclasses
import hashlib
import math
import os
import re
import sys

import cv2
import numpy as np
import yaml

import convert_coco
from datasets import photos, records, shards
from utils import cli

SPLITS = {"train": "train", "val": "val", "test": "test"}  # --split -> data.yaml key
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Roboflow's polygons stray a hair past the border (rounding); one percent of a side is
# still that, anything further is a broken row.
CLIP_SLACK = 0.01
# Roboflow names each augmented copy NAME_<ext>.rf.<hash>.<ext>: NAME is the source photo.
ROBOFLOW_COPY = re.compile(r"^(?P<source>.+)_(?:jpe?g|png|bmp|webp|tiff?)\.rf\.[0-9a-f]+$",
                           re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Export:
    """data.yaml, read."""

    path: str  # the yaml file
    names: dict  # class index -> name
    root: str  # the folder split paths are relative to
    splits: dict  # data.yaml key -> its path value, as written
    sha1: str


@dataclasses.dataclass(frozen=True)
class Labels:
    """One image's label file, parsed."""

    polygons: list  # [[x1, y1, x2, y2, ...] normalised and clipped to [0, 1]] of the classes
    classes: list  # data.yaml's class index of each polygon
    other_instances: int  # rows of classes not chosen
    clipped: int  # coordinates moved back into [0, 1]
    state: str  # "labelled", "empty" or "missing"


# ---------------------------------------------------------------- data.yaml


def load_export(path):
    """The Export of a data.yaml; UserError on a missing, unsafe or ill-typed file."""
    if os.path.isdir(path):
        path = os.path.join(path, "data.yaml")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise cli.UserError(f"{path} not found: pass --data, the export's data.yaml (or the "
                            "folder holding it)") from None
    except OSError as e:
        raise cli.UserError(f"cannot read {path} ({e.strerror}): check its permissions") from None
    try:
        data = yaml.safe_load(raw)  # safe: a stranger's yaml must never build objects
    except yaml.constructor.ConstructorError as e:
        raise cli.UserError(f"{path} holds the tag {e.problem.split()[-1]}, which would "
                            "build a Python object: a safe loader refuses it and a data.yaml "
                            "never needs one; remove the tag") from None
    except yaml.YAMLError as e:
        why = " ".join(str(e).split())
        raise cli.UserError(f"{path} is not valid YAML ({why[:160]}): export the dataset "
                            "again") from None
    if not isinstance(data, dict):
        raise cli.UserError(f"{path} is not a YOLO data.yaml: its top level is not a mapping "
                            "with 'names' and split paths")
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not (isinstance(names, dict) and names
            and all(isinstance(k, int) and k >= 0 for k in names)
            and all(isinstance(v, str | int) for v in names.values())):
        raise cli.UserError(f"{path}: 'names' must be a list of class names or a mapping "
                            f"index: name, got {str(names)[:80]!r}; fix data.yaml")
    root = data.get("path", "")
    if not isinstance(root, str):
        raise cli.UserError(f"{path}: 'path' must be a folder name, got {str(root)[:80]!r}; "
                            "fix data.yaml")
    root = os.path.join(os.path.dirname(os.path.abspath(path)), root)
    splits = {}
    for key in SPLITS.values():
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise cli.UserError(f"{path}: '{key}' must be one folder of images, got "
                                f"{str(value)[:80]!r}; fix data.yaml")
        if value:
            splits[key] = value
    return Export(path, {k: str(v) for k, v in names.items()}, root, splits,
                  hashlib.sha1(raw).hexdigest())


def image_dir(export, split):
    """The split's images folder, found as Ultralytics finds it."""
    key = SPLITS[split]
    if key not in export.splits:
        raise cli.UserError(f"{export.path} names no '{key}' split: choose --split from "
                            f"{', '.join(k for k in SPLITS if SPLITS[k] in export.splits)}")
    value = export.splits[key]
    folder = os.path.normpath(os.path.join(export.root, value))
    if not os.path.exists(folder) and value.startswith("../"):
        # Roboflow writes ../train/images beside a yaml that sits next to train/
        folder = os.path.normpath(os.path.join(export.root, value[3:]))
    if not os.path.isdir(folder):
        raise cli.UserError(f"image folder {folder} ('{key}: {value}' of {export.path}) not "
                            "found: unzip the whole export, or fix data.yaml")
    return folder


def label_dir(folder):
    """labels/ for an images/ folder: the last 'images' component becomes 'labels'."""
    parts = folder.split(os.sep)
    if "images" not in parts:
        raise cli.UserError(f"image folder {folder} has no 'images' component, so its labels/ "
                            "folder cannot be found: keep the export's images/ and labels/")
    i = len(parts) - 1 - parts[::-1].index("images")
    return os.sep.join(parts[:i] + ["labels"] + parts[i + 1:])


def class_indices(export, classes):
    """data.yaml indices of --classes names, in the order given (mask values 1, 2, ...;
    default: all names in index order); UserError on unknown names, UsageError on a
    name given twice (shards.chosen_classes)."""
    if not classes:
        return sorted(export.names)
    by_name = {name: i for i, name in sorted(export.names.items())}
    shards.chosen_classes(classes, list(by_name), source=export.path)
    return [by_name[c] for c in classes]


# ---------------------------------------------------------------- labels


def parse_labels(path, names, wanted):
    """Labels of one label file; UserError naming file and line on a malformed row."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except FileNotFoundError:
        return Labels([], [], 0, 0, "missing")
    except UnicodeDecodeError:
        raise cli.UserError(f"label file {path} is not text: export the dataset again") from None
    except OSError as e:
        raise cli.UserError(f"cannot read label file {path} ({e.strerror})") from None
    polygons, kinds, others, clipped = [], [], 0, 0
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number} of {path}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise cli.UserError(f"{where}: {line.strip()[:60]!r} holds a non-number; a row is "
                                "'class x1 y1 x2 y2 ...'") from None
        cls, coords = values[0], values[1:]
        if not (cls.is_integer() and 0 <= cls and int(cls) in names):
            raise cli.UserError(f"{where}: class {fields[0]} is not an index of data.yaml's "
                                f"names (0..{max(names)}); fix the row or the names")
        if len(coords) == 4:
            raise cli.UserError(f"{where}: a box (class x y w h), not a polygon: this is a "
                                "detection export, which holds no masks; export the dataset "
                                "in a segmentation format")
        if len(coords) % 2:
            raise cli.UserError(f"{where}: {len(coords)} coordinates, an odd number: a polygon "
                                "is x y pairs; fix the row")
        if len(coords) < 6:
            raise cli.UserError(f"{where}: {len(coords) // 2} point(s), a polygon needs at "
                                "least 3; fix or remove the row")
        if not all(math.isfinite(v) and -CLIP_SLACK <= v <= 1 + CLIP_SLACK for v in coords):
            worst = max(coords, key=lambda v: abs(v - 0.5) if math.isfinite(v) else math.inf)
            raise cli.UserError(f"{where}: coordinate {worst} lies outside the image (more "
                                f"than {CLIP_SLACK} beyond [0, 1]); fix the row")
        if int(cls) not in wanted:
            others += 1
            continue
        clipped += sum(not 0.0 <= v <= 1.0 for v in coords)
        polygons.append([min(1.0, max(0.0, v)) for v in coords])
        kinds.append(int(cls))
    return Labels(polygons, kinds, others, clipped,
                  "labelled" if polygons or others else "empty")


def source_of(filename):
    """The source photo's stem of a Roboflow augmented copy, else the file's own stem."""
    stem = os.path.splitext(filename)[0]
    match = ROBOFLOW_COPY.match(stem)
    return match["source"] if match else stem


# ---------------------------------------------------------------- images


def encode_image(task):
    """Worker: (index, make_example args, counts, None), or (index, None, None, (reason, msg))."""
    index, path, image_id, polygons, kinds, class_index = task
    try:
        data, pixels = photos.decode(path, restore="unzip the export again")
        height, width = pixels.shape[:2]
        encoded, fmt = photos.record_image(path, data, pixels)
    except photos.BadImage as e:
        return index, None, None, e.args
    scale = np.array([width, height])
    anns = [{"id": k, "category_id": c,
             "segmentation": [(np.asarray(p).reshape(-1, 2) * scale).ravel().tolist()]}
            for k, (p, c) in enumerate(zip(polygons, kinds))]  # pixels, as COCO's polygons
    name = os.path.basename(path)
    mask = convert_coco.build_mask(anns, height, width, "ignore", name, class_index)
    counts = {"instances": len(polygons), **shards.mask_counts(mask, len(class_index))}
    png = cv2.imencode(".png", mask)[1].tobytes()
    return index, (encoded, fmt, height, width, image_id, name, png), counts, None


# ---------------------------------------------------------------- conversion


def convert(data, split="train", classes=(), output=None, num_shards=None, workers=None,
            negatives=None, seed=0, overwrite=False, skip_bad_images=False, progress=True):
    """Convert one split (docs/convert_yolo.md); returns the stats dict it also saves.

    classes: names (default all); negatives: None keeps every photo without them, a
    fraction keeps that many per positive photo."""
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    if split not in SPLITS:
        raise cli.UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if (negatives is not None and negatives < 0) or (num_shards is not None and num_shards < 1):
        raise cli.UsageError("need negatives >= 0 and num_shards >= 1")
    export = load_export(data)
    wanted = class_indices(export, classes)
    names = [export.names[i] for i in wanted]
    output = output or os.path.join("data", "yolo_" + "_".join(n.replace(" ", "-") for n in names))
    if not overwrite:
        shards.refuse_finished(output, split)
    folder = image_dir(export, split)
    labels_folder = label_dir(folder)
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise cli.UserError(f"image folder {folder} holds no images: unzip the whole export")
    digest = hashlib.sha1(export.sha1.encode())
    parsed = []
    for f in files:
        label_path = os.path.join(labels_folder, os.path.splitext(f)[0] + ".txt")
        labels = parse_labels(label_path, export.names, set(wanted))
        parsed.append(labels)
        digest.update(f"\0{f}\0{labels.polygons}\0{labels.classes}".encode())
    positives = [i for i, labels in enumerate(parsed) if labels.polygons]
    if not positives:
        raise cli.UserError(f"no label file of {folder} holds any of {', '.join(names)}: check "
                            "--classes and --split")
    others = [i for i, labels in enumerate(parsed) if not labels.polygons]
    chosen = sorted(positives + (others if negatives is None else
                                 shards.draw_negatives(others, len(positives), negatives, seed)))
    num_shards = num_shards or shards.default_num_shards(
        os.path.join(folder, files[i]) for i in chosen)
    settings = {"split": split, "classes": names, "category_ids": wanted, "crowd": "none",
                "negatives": "all" if negatives is None else negatives, "seed": seed}
    plan = {**settings, "annotations_sha1": digest.hexdigest(), "num_shards": num_shards,
            "images": len(chosen), "schema_version": records.SCHEMA_VERSION}
    # image id = the photo's place in the split's sorted file list, so it never changes
    # with --classes or --negatives
    class_index = {c: k for k, c in enumerate(wanted, 1)}  # data.yaml index -> mask value
    tasks = [(k, os.path.join(folder, files[i]), i + 1, parsed[i].polygons, parsed[i].classes,
              class_index) for k, i in enumerate(chosen)]
    copies = collections.Counter(source_of(files[i]) for i in chosen)
    states = collections.Counter(parsed[i].state for i in chosen)
    extra = {"data_yaml": os.path.abspath(export.path), "image_folder": folder,
             "empty_label_files": states["empty"], "missing_label_files": states["missing"],
             "other_class_instances": sum(parsed[i].other_instances for i in chosen),
             "clipped_coordinates": sum(parsed[i].clipped for i in chosen),
             "sources": len(copies), "max_copies_per_source": max(copies.values()),
             "sources_with_copies": sum(n > 1 for n in copies.values())}
    positive_set = set(positives)
    job = shards.Job(output, split, plan, settings, tasks,
                     frozenset(k for k, i in enumerate(chosen) if i in positive_set),
                     encode_image, "convert_yolo", extra, num_classes=len(wanted))
    return shards.write(job, workers, overwrite, skip_bad_images, progress)


def summary(stats, output):
    """shards.summary plus what only a YOLO export has."""
    return "\n".join([
        shards.summary(stats, output, regions="ignore regions", flag="YOLO has"),
        f"{stats['empty_label_files']} empty and {stats['missing_label_files']} missing label "
        f"files (negatives), {stats['clipped_coordinates']} coordinates clipped into [0, 1]",
        f"{stats['sources']} source photos, up to {stats['max_copies_per_source']} copies of "
        f"one ({stats['sources_with_copies']} sources repeat)",
    ])


def main(argv=None):
    p = cli.ArgumentParser(description="Convert a YOLO segmentation export (Ultralytics, "
                           "Roboflow) into TFRecords of image + class mask for the U-Net.")
    p.add_argument("--data", required=True,
                   help="the export's data.yaml, or the folder holding it")
    p.add_argument("--split", choices=tuple(SPLITS), default="train",
                   help="which of data.yaml's train / val / test folders (default: train)")
    p.add_argument("--classes", nargs="+", default=[], metavar="NAME",
                   help="class names of data.yaml, space or comma separated; the first is "
                   "mask value 1, the next 2, ... (default: every name, in data.yaml's order)")
    p.add_argument("--output", help="output prefix (default: data/yolo_<classes>)")
    shards.add_flags(p, "keep this many photos without the classes (empty, missing or "
                     "other-class label files)", "skip and count missing or corrupt images",
                     negatives_default=None)
    args = p.parse_args(argv)
    classes = [c.strip() for arg in args.classes for c in arg.split(",") if c.strip()]
    cli.setup_logging()
    export = load_export(args.data)
    output = args.output or os.path.join("data", "yolo_" + "_".join(
        export.names[i].replace(" ", "-") for i in class_indices(export, classes)))
    stats = convert(args.data, args.split, classes, output, args.num_shards, args.workers,
                    args.negatives, args.seed, args.overwrite, args.skip_bad_images,
                    progress=not args.no_progress)
    print(summary(stats, output))


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
