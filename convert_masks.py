"""Convert folders of images and mask PNGs (Pytorch-UNet, Carvana, Pascal VOC) into
sharded TFRecords of image + class mask.

    python convert_masks.py --images DIR --masks DIR --output data/carvana
    python convert_masks.py --voc VOCdevkit/VOC2012 --split train --classes cat=8

matches each image to the mask of the same file stem and writes the same records and
stats (datasets/shards.py) as convert_coco.py. Mask kinds, flags and bad files:
docs/convert_masks.md.

    --classes cat=8 dog=12   source index 8 becomes mask value 1, 12 becomes 2 (the
                             order given); every other index 0, --ignore 255
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import dataclasses
import hashlib
import os
import sys

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets import photos, records, shards
from utils import cli

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".gif", ".bmp", ".tif", ".tiff")
VOC_CLASSES = {"cat": 8}  # --voc's default: VOC's class 8
VOC_VOID = 255  # VOC's object borders and unlabelled pixels
VOC_NUM_CLASSES = 21  # background + 20 classes


@dataclasses.dataclass(frozen=True)
class MaskRule:
    """How mask values become the record's 0 / 1..K / 255."""

    foreground: tuple  # source index of value 1, 2, ...; () = a binary mask (0/255 or 0/1)
    ignore: int | None  # the index that becomes 255, or None
    num_classes: int | None  # indices >= this (other than ignore) are unknown; None = any


def parse_classes(items):
    """{name: index} of --classes name=index ..., in the order given; UsageError on a
    malformed item, a name given twice or an index given two names."""
    pairs = []
    for item in items:
        name, sep, index = item.partition("=")
        if not (sep and name and index.isdigit() and int(index) <= 255):
            raise cli.UsageError(f"--classes takes name=index with index 0..255, got {item!r} "
                                 "(e.g. --classes cat=8)")
        pairs.append((name, int(index)))
    names = [name for name, _ in pairs]
    shards.chosen_classes(names, names)
    return check_classes(dict(pairs))


def check_classes(classes):
    """{name: index} as given; UsageError for one source index named twice."""
    seen = {}
    for name, index in classes.items():
        if index in seen:
            raise cli.UsageError(f"--classes gives index {index} two names, {seen[index]!r} "
                                 f"and {name!r}: one index is one class")
        seen[index] = name
    return classes


# ---------------------------------------------------------------- pairs


def _stems(folder, suffixes, what, flag):
    if not os.path.isdir(folder):
        raise cli.UserError(f"{what} folder {folder} does not exist: check {flag}")
    found = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() in suffixes:
            found.setdefault(stem, f)
    return found


def read_split_list(path):
    """Stems listed one a line (VOC's ImageSets/Segmentation/<split>.txt)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise cli.UserError(f"split list {path} not found: check --split-list or "
                            "--split") from None
    except (OSError, UnicodeDecodeError) as e:
        raise cli.UserError(f"cannot read split list {path} ({e}): it should be text, one "
                            "image stem a line") from None
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def pairs(images, masks, split_list=None, mask_suffix=""):
    """[(stem, image path, mask path or None)] sorted by stem."""
    image_files = _stems(images, IMAGE_SUFFIXES, "image", "--images")
    mask_files = _stems(masks, MASK_SUFFIXES, "mask", "--masks")
    stems = sorted(image_files)
    if split_list:
        listed = read_split_list(split_list)
        absent = [s for s in listed if s not in image_files]
        if absent:
            raise cli.UserError(f"{absent[0]} of {split_list} has no image in {images} "
                                f"({len(absent)} listed stems have none): wrong --images or "
                                "split list")
        stems = sorted(set(listed))
    if not stems:
        raise cli.UserError(f"image folder {images} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [(s, os.path.join(images, image_files[s]),
             os.path.join(masks, mask_files[s + mask_suffix])
             if s + mask_suffix in mask_files else None) for s in stems]


# ---------------------------------------------------------------- masks


def read_mask(path):
    """[H, W] integer array of a mask: palette PNGs by index (not colour), grey as is."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"))
                if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
                    raise photos.BadImage("bad_mask", f"mask {path} is a colour image: save "
                                          "class indices as a palette or grey PNG")
                return rgb[..., 0]
            if im.mode == "LA":
                return np.asarray(im.convert("L"))
            return np.asarray(im)  # P: palette indices; L, 1, I, I;16: values
    except FileNotFoundError:
        raise photos.BadImage("missing_mask", f"mask {path} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise photos.BadImage("bad_mask", f"mask {path} is corrupt or not an image ({e}): "
                              "restore it") from None


def to_record_mask(values, rule, path):
    """[H, W] uint8 0 / 1..K / 255 of a mask's values; raises BadImage("unknown_index")."""
    values = values.astype(np.int64)
    present = set(np.unique(values).tolist())
    if not rule.foreground:  # binary: 0/255 or 0/1
        if not (present <= {0, 255} or present <= {0, 1}):
            raise photos.BadImage("unknown_index", f"mask {path} holds values "
                                  f"{sorted(present)[:6]}, not a binary mask (0/255 or 0/1): "
                                  "pass --classes name=index for a class-index mask")
        return np.where(values > 0, records.FOREGROUND, records.BACKGROUND).astype(np.uint8)
    if rule.num_classes is not None:
        unknown = sorted(v for v in present if v >= rule.num_classes and v != rule.ignore)
        if unknown:
            raise photos.BadImage("unknown_index", f"mask {path} holds index {unknown[0]}, "
                                  f"beyond --num-classes {rule.num_classes}: wrong mask folder "
                                  "or --num-classes")
    mask = np.full(values.shape, records.BACKGROUND, np.uint8)
    for k, index in enumerate(rule.foreground, 1):
        mask[values == index] = k
    if rule.ignore is not None:
        mask[values == rule.ignore] = records.IGNORE
    return mask


# ---------------------------------------------------------------- images


def encode_image(task):
    """Worker: (index, make_example args, counts, None), or (index, None, None, (reason, msg))."""
    index, image_path, mask_path, image_id, rule = task
    try:
        if mask_path is None:
            raise photos.BadImage("missing_mask", f"image {image_path} has no mask of the same "
                                  "stem in --masks (check --mask-suffix)")
        data, pixels = photos.decode(image_path, restore="copy it again")
        height, width = pixels.shape[:2]
        values = read_mask(mask_path)
        if values.shape[:2] != (height, width):
            raise photos.BadImage("size_mismatch", f"mask {mask_path} is {values.shape[1]}x"
                                  f"{values.shape[0]} but its image is {width}x{height}: wrong "
                                  "file or a resized mask")
        mask = to_record_mask(values, rule, mask_path)
        encoded, fmt = photos.record_image(image_path, data, pixels)
    except photos.BadImage as e:
        return index, None, None, e.args
    counts = shards.mask_counts(mask, max(1, len(rule.foreground)))
    counts["instances"] = int(counts["foreground_pixels"] > 0)
    png = cv2.imencode(".png", mask)[1].tobytes()
    name = os.path.basename(image_path)
    return index, (encoded, fmt, height, width, image_id, name, png), counts, None


# ---------------------------------------------------------------- conversion


def convert(images, masks, output, split="train", classes=None, split_list=None, ignore=None,
            num_classes=None, mask_suffix="", num_shards=None, workers=None, overwrite=False,
            skip_bad_images=False, progress=True):
    """Convert one folder pair (docs/convert_masks.md); returns the stats dict it also saves.

    classes: {name: index} of a class-index mask (index of the k-th name -> value k),
    or None for binary masks."""
    classes = check_classes(dict(classes or {}))
    if ignore is not None and not 0 <= ignore <= 255:
        raise cli.UsageError(f"--ignore must be a mask index 0..255, got {ignore}")
    if ignore is not None and ignore in classes.values():
        raise cli.UsageError(f"--ignore {ignore} is also a --classes index: choose one")
    if num_shards is not None and num_shards < 1:
        raise cli.UsageError("need num_shards >= 1")
    if not overwrite:
        shards.refuse_finished(output, split)
    found = pairs(images, masks, split_list, mask_suffix)
    rule = MaskRule(tuple(classes.values()), ignore, num_classes)
    num_shards = num_shards or shards.default_num_shards(p for _, p, _ in found)
    digest = hashlib.sha1()
    for stem, _, mask_path in found:
        size = os.path.getsize(mask_path) if mask_path else -1
        digest.update(f"\0{stem}\0{mask_path}\0{size}".encode())
    settings = {"split": split, "classes": list(classes) or ["foreground"],
                "category_ids": list(rule.foreground) or [1], "crowd": "none",
                "negatives": "all", "seed": 0}
    plan = {**settings, "annotations_sha1": digest.hexdigest(), "ignore": ignore,
            "num_classes": num_classes, "num_shards": num_shards, "images": len(found),
            "schema_version": records.SCHEMA_VERSION}
    tasks = [(i, image_path, mask_path, i + 1, rule)
             for i, (_, image_path, mask_path) in enumerate(found)]
    extra = {"images_folder": os.path.abspath(images), "masks_folder": os.path.abspath(masks),
             "ignore": ignore, "mask_kind": "index" if classes else "binary"}
    # positives None: whether a mask holds foreground is known only once it is read
    job = shards.Job(output, split, plan, settings, tasks, None, encode_image, "convert_masks",
                     extra, num_classes=max(1, len(classes)))
    return shards.write(job, workers, overwrite, skip_bad_images, progress)


def main(argv=None):
    p = cli.ArgumentParser(description="Convert folders of images and mask PNGs into "
                           "TFRecords of image + class mask for the U-Net.")
    p.add_argument("--images", help="folder of images")
    p.add_argument("--masks", help="folder of masks, one per image, of the same file stem")
    p.add_argument("--voc", metavar="DIR", help="a Pascal VOC folder (JPEGImages/, "
                   "SegmentationClass/, ImageSets/Segmentation/); sets --images, --masks, "
                   f"--split-list, --ignore {VOC_VOID}, --num-classes {VOC_NUM_CLASSES} and by "
                   "default --classes cat=8")
    p.add_argument("--split", default="train",
                   help="the output's split name; with --voc, also ImageSets/Segmentation/"
                   "<split>.txt (default: train)")
    p.add_argument("--split-list", metavar="FILE",
                   help="text file of image stems to convert, one a line (default: all images)")
    p.add_argument("--classes", nargs="+", metavar="NAME=INDEX",
                   help="class-index masks: the first index becomes mask value 1, the next "
                   "2, ... (default: binary masks, 0/255 or 0/1)")
    p.add_argument("--ignore", type=cli.non_negative_int, metavar="INDEX",
                   help="mask index that becomes 255 ignore (default: none)")
    p.add_argument("--num-classes", type=cli.positive_int,
                   help="indices from this up (except --ignore) are errors (default: any "
                   "index is allowed; others than --classes become background)")
    p.add_argument("--mask-suffix", default="",
                   help="mask stem = image stem + this, e.g. _mask (default: none)")
    p.add_argument("--output", required=True, help="output prefix, e.g. data/voc_cat")
    shards.add_flags(p, "no effect: every image is kept, and one whose mask holds no "
                     "foreground is a negative",
                     "skip and count missing or corrupt images, missing masks, masks of "
                     "another size and unknown indices")
    args = p.parse_args(argv)
    classes = parse_classes(args.classes) if args.classes else None
    images, masks, split_list, ignore = args.images, args.masks, args.split_list, args.ignore
    num_classes = args.num_classes
    if args.voc:
        if images or masks:
            raise cli.UsageError("--voc sets --images and --masks: pass one or the other")
        images = os.path.join(args.voc, "JPEGImages")
        masks = os.path.join(args.voc, "SegmentationClass")
        split_list = split_list or os.path.join(args.voc, "ImageSets", "Segmentation",
                                                f"{args.split}.txt")
        ignore = VOC_VOID if ignore is None else ignore
        num_classes = num_classes or VOC_NUM_CLASSES
        classes = classes or dict(VOC_CLASSES)
    elif not (images and masks):
        raise cli.UsageError("pass --images and --masks, or --voc (see convert_masks.py --help)")
    cli.setup_logging()
    stats = convert(images, masks, args.output, args.split, classes, split_list, ignore,
                    num_classes, args.mask_suffix, args.num_shards, args.workers,
                    args.overwrite, args.skip_bad_images, progress=not args.no_progress)
    print(shards.summary(stats, args.output, regions="ignore regions", flag="masks have"))


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
