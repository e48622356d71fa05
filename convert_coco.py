"""Convert COCO 2017 instance annotations into sharded TFRecords of image + class mask.

    python convert_coco.py --coco-dir DIR --split train2017 --classes cat --output data/cat

Flags, selection, mask values and bad-input handling: docs/convert.md. Records
are made by records.make_example and written by datasets/shards.py. Masks use only the
chosen classes' annotations, so other classes, crowds included, never leak in.

    --classes cat dog person   cat is mask value 1, dog 2, person 3 (the order given)

One class gives the records of before, bit for bit. Where instances of different
chosen classes overlap, the SMALLER instance (fewer pixels in its own rasterised mask)
wins, since a smaller object in front of a bigger one is the usual cause (a cat on a
person's lap); of two the same size, the later annotation in the file wins. Crowds
(iscrowd=1) of any chosen class never overwrite an instance: with --crowd ignore
their other pixels are 255, with positive they take the crowd's class (overlapping
crowds by the same rule), with skip they stay 0.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import contextlib
import hashlib
import io
import json
import os
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datasets import photos, records, shards
from utils import cli

CROWD_POLICIES = ("ignore", "positive", "skip")
# Real COCO geometry strays a little past the border (rounding, hand drawing);
# only errors beyond this are data bugs worth stopping for.
BOUNDS_SLACK_PX = 2.0
BOUNDS_SLACK_FRACTION = 0.01


# ---------------------------------------------------------------- annotations


def _format_problem(data):
    """What makes parsed JSON unusable as a COCO instances file, or None."""
    if not isinstance(data, dict):
        return "the top level is not a JSON object"
    required = {"images": ("id", "file_name", "height", "width"),
                "annotations": ("id", "image_id", "category_id", "segmentation"),
                "categories": ("id", "name")}
    for key, fields in required.items():
        if not isinstance(data.get(key), list):
            return f"it has no '{key}' list"
        for entry in data[key]:
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                return f"an entry of '{key}' lacks '{missing[0]}': {str(entry)[:80]}"
    return None


def load_annotations(coco_dir, split):
    """(pycocotools COCO, sha1 of the file) for DIR/annotations/instances_<split>.json."""
    if not os.path.isdir(coco_dir):
        raise cli.UserError(f"COCO directory {coco_dir} does not exist: pass --coco-dir, the "
                            f"folder that holds annotations/ and {split}/")
    path = os.path.join(coco_dir, "annotations", f"instances_{split}.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise cli.UserError(f"{path} not found: unzip annotations_trainval2017.zip into "
                            f"{coco_dir}, or check --split") from None
    except OSError as e:
        raise cli.UserError(f"cannot read {path} ({e.strerror}): check its permissions") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise cli.UserError(f"{path} is not valid JSON ({e}): download and unzip it "
                            "again") from None
    problem = _format_problem(data)
    if problem:
        raise cli.UserError(f"{path} is not a COCO instances file: {problem}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints chatter
        coco.createIndex()
    return coco, hashlib.sha1(raw).hexdigest()


def category_ids(coco, classes):
    """COCO ids of the class names, in the given order; UserError on unknown names,
    UsageError on a name given twice (shards.chosen_classes)."""
    by_name = {c["name"]: c["id"] for c in coco.dataset["categories"]}
    shards.chosen_classes(classes, sorted(by_name))
    return [by_name[c] for c in classes]


def select_images(coco, cat_ids, negatives=0.0, seed=0):
    """(positive ids holding any of cat_ids, negative ids drawn from the others), sorted."""
    positives = set()  # a union: COCO.getImgIds(catIds=[...]) would intersect
    for c in cat_ids:
        positives.update(coco.catToImgs.get(c, ()))
    unknown = positives - coco.imgs.keys()
    if unknown:
        raise cli.UserError(f"an annotation refers to image id {min(unknown)}, which is not in "
                            "the file's images: the annotation file is damaged")
    others = sorted(set(coco.imgs) - positives)
    return sorted(positives), shards.draw_negatives(others, len(positives), negatives, seed)


def _check_bounds(ann, height, width, filename):
    where = f"annotation {ann['id']} of {filename} ({width}x{height})"
    segm, bbox = ann["segmentation"], ann.get("bbox")
    sx = BOUNDS_SLACK_PX + BOUNDS_SLACK_FRACTION * width
    sy = BOUNDS_SLACK_PX + BOUNDS_SLACK_FRACTION * height
    if isinstance(segm, dict) and list(segm.get("size", ())) != [height, width]:
        raise cli.UserError(f"{where}: RLE size {segm.get('size')} is not the image's "
                            f"[height, width] [{height}, {width}]; fix the annotation file")
    for poly in segm if isinstance(segm, list) else []:
        xs, ys = poly[0::2], poly[1::2]
        if xs and (min(xs) < -sx or max(xs) > width + sx or min(ys) < -sy
                   or max(ys) > height + sy):
            raise cli.UserError(f"{where}: polygon reaches ({max(xs, key=abs)}, "
                                f"{max(ys, key=abs)}), outside the image; fix the annotation "
                                "file")
    if bbox:
        x, y, w, h = bbox
        if w < 0 or h < 0 or x < -sx or y < -sy or x + w > width + sx or y + h > height + sy:
            raise cli.UserError(f"{where}: bbox {bbox} lies outside the image; fix the "
                                "annotation file")


def ann_to_mask(ann, height, width, filename=""):
    """[H, W] bool mask of one annotation, as pycocotools' COCO.annToMask computes it."""
    try:
        _check_bounds(ann, height, width, filename)
        segm = ann["segmentation"]
        if isinstance(segm, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm["counts"], list):  # uncompressed RLE (COCO's crowds)
            rle = mask_utils.frPyObjects(segm, height, width)
        else:  # compressed RLE
            rle = segm
        return mask_utils.decode(rle).astype(bool)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise cli.UserError(f"annotation {ann['id']} of {filename} has a malformed segmentation "
                            f"({type(e).__name__}: {e}); fix or remove it") from None


def _paint(layers, height, width):
    """[H, W] uint8 of (bool mask, value) layers: the smallest mask wins where they
    overlap, of equal ones the later (painted largest first; the sort is stable)."""
    out = np.zeros((height, width), np.uint8)
    for mask, value in sorted(layers, key=lambda layer: -int(layer[0].sum())):
        out[mask] = value
    return out


def build_mask(anns, height, width, crowd="ignore", filename="", class_index=None):
    """[H, W] uint8 mask of one image's annotations of the chosen classes.

    class_index: COCO category id -> mask value 1..K (None: every annotation is 1).
    Instances take their class, the smaller one winning an overlap (module docstring);
    crowds become 255 / their class / 0 by policy (ignore / positive / skip) where no
    instance is: an instance pixel is labelled for sure, and a crowd only says "some
    unlabelled cats are somewhere here".
    """
    instances, crowds = [], []
    for ann in anns:
        value = class_index[ann["category_id"]] if class_index else records.FOREGROUND
        (crowds if ann.get("iscrowd") else instances).append(
            (ann_to_mask(ann, height, width, filename), value))
    mask = _paint(instances, height, width)
    if crowds and crowd != "skip":
        free = mask == records.BACKGROUND
        if crowd == "ignore":
            mask[free & np.logical_or.reduce([m for m, _ in crowds])] = records.IGNORE
        else:
            mask[free] = _paint(crowds, height, width)[free]
    return mask


# ---------------------------------------------------------------- images


def encode_image(task):
    """Worker: (index, make_example args, counts, None), or (index, None, None, (reason, msg))."""
    index, image_dir, img, anns, crowd, class_index = task
    height, width, name = int(img["height"]), int(img["width"]), img["file_name"]
    path = os.path.join(image_dir, name)
    try:
        data, pixels = photos.decode(path, restore="unzip the split's images again")
        if pixels.shape[:2] != (height, width):
            raise photos.BadImage("size_mismatch", f"image {path} is {pixels.shape[1]}x"
                                  f"{pixels.shape[0]} but the annotations say {width}x{height}: "
                                  "wrong file or annotations")
        data, fmt = photos.record_image(path, data, pixels)
    except photos.BadImage as e:
        return index, None, None, e.args
    mask = build_mask(anns, height, width, crowd, name, class_index)
    counts = {"instances": sum(not a.get("iscrowd") for a in anns),
              "crowd_regions": sum(bool(a.get("iscrowd")) for a in anns),
              **shards.mask_counts(mask, len(class_index))}
    png = cv2.imencode(".png", mask)[1].tobytes()
    return index, (data, fmt, height, width, int(img["id"]), name, png), counts, None


# ---------------------------------------------------------------- conversion


def convert(coco_dir, split, classes=("cat",), output="data/cat", num_shards=None, workers=None,
            crowd="ignore", negatives=0.0, seed=0, overwrite=False, skip_bad_images=False,
            progress=True):
    """Convert one split (docs/convert.md); returns the stats dict it also saves."""
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    if crowd not in CROWD_POLICIES:
        raise cli.UsageError(f"crowd policy must be one of {', '.join(CROWD_POLICIES)}, "
                             f"got {crowd!r}")
    if not classes or negatives < 0 or (num_shards is not None and num_shards < 1):
        raise cli.UsageError("need at least one class, negatives >= 0 and num_shards >= 1")
    shards.chosen_classes(classes, classes)  # a name twice: before ~20 s of loading COCO
    if not overwrite:
        shards.refuse_finished(output, split)  # before spending ~20 s loading COCO's train JSON
    coco, digest = load_annotations(coco_dir, split)
    cat_ids = category_ids(coco, classes)
    positives, negative_ids = select_images(coco, cat_ids, negatives, seed)
    if not positives:
        raise cli.UserError(f"no image of {split} holds any of {', '.join(classes)}: check "
                            "--classes and --split")
    ids = sorted(positives + negative_ids)
    image_dir = os.path.join(coco_dir, split)
    if not os.path.isdir(image_dir):
        raise cli.UserError(f"image folder {image_dir} not found: unzip {split}.zip into "
                            f"{coco_dir}")
    num_shards = num_shards or shards.default_num_shards(
        os.path.join(image_dir, coco.imgs[i]["file_name"]) for i in ids)
    settings = {"split": split, "classes": list(classes), "category_ids": cat_ids,
                "crowd": crowd, "negatives": negatives, "seed": seed}
    plan = {**settings, "annotations_sha1": digest, "num_shards": num_shards,
            "images": len(ids),
            "schema_version": records.SCHEMA_VERSION}  # not skip_bad_images: the fix it suggests
    class_index = {c: k for k, c in enumerate(cat_ids, 1)}  # the order given
    tasks = [(i, image_dir, coco.imgs[image_id],
              [a for a in coco.imgToAnns[image_id] if a["category_id"] in class_index], crowd,
              class_index)
             for i, image_id in enumerate(ids)]
    positive_ids = set(positives)
    job = shards.Job(output, split, plan, settings, tasks,
                     frozenset(i for i, image_id in enumerate(ids) if image_id in positive_ids),
                     encode_image, "convert_coco", num_classes=len(classes))
    return shards.write(job, workers, overwrite, skip_bad_images, progress)


def main(argv=None):
    p = cli.ArgumentParser(description="Convert COCO instance annotations into TFRecords of "
                           "image + class mask for training the U-Net.")
    p.add_argument("--coco-dir", required=True,
                   help="folder holding annotations/ and the split's image folder")
    p.add_argument("--split", default="train2017",
                   help="train2017 or val2017 (default: train2017)")
    p.add_argument("--classes", nargs="+", default=["cat"], metavar="NAME",
                   help="COCO category names, space or comma separated; quote names with "
                   "spaces; the first is mask value 1, the next 2, ... (default: cat)")
    p.add_argument("--output", help="output prefix (default: data/<classes>)")
    p.add_argument("--crowd", choices=CROWD_POLICIES, default="ignore",
                   help="crowd regions of the classes: 255 ignore, positive (their class), or "
                   "skip (stay 0) (default: ignore)")
    shards.add_flags(p, "add this many images without the classes",
                     "skip and count missing or corrupt images")
    args = p.parse_args(argv)
    classes = [c.strip() for arg in args.classes for c in arg.split(",") if c.strip()]
    output = args.output or os.path.join("data", "_".join(c.replace(" ", "-") for c in classes))
    cli.setup_logging()
    stats = convert(args.coco_dir, args.split, classes, output, args.num_shards, args.workers,
                    args.crowd, args.negatives, args.seed, args.overwrite,
                    args.skip_bad_images, progress=not args.no_progress)
    print(shards.summary(stats, output))


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
