"""Convert COCO 2017 instance annotations into sharded TFRecords of image + class mask.

    python convert_coco.py --coco-dir DIR --split train2017 --classes cat --output data/cat

reads DIR/annotations/instances_<split>.json (pycocotools) and DIR/<split>/*.jpg and writes

    <output>-<split>-00000-of-0000N.tfrecord ...  one tf.train.Example per image
    <output>-<split>-stats.json                   counts and pixel fractions (written last)

Records: the schema (feature keys, dtypes, meaning) lives once in records.py, whose
docstring tabulates it; every record is made by records.make_example (and then
serialized with sorted map keys, so the bytes repeat across runs). The image is the file's own bytes
when it is a 3-channel JPEG; anything else (grayscale or CMYK JPEG, PNG with
alpha or 16 bits, ...) is decoded and re-encoded losslessly as 8-bit RGB PNG.
Images are checked by decoding them, and their size must match the annotation.

Masks (uint8 PNG, same size as the image), from the annotations of the chosen
classes only, so other classes, crowds included, never leak in:
    1    union of the non-crowd instances
    255  crowd regions (iscrowd=1) with --crowd ignore (default); 1 with
         --crowd positive; left 0 with --crowd skip
    0    everything else
An instance pixel stays 1 where a crowd region overlaps it: it is labelled for
sure, and the crowd only says "some unlabelled cats are somewhere here".

Selection: every image holding an annotation (crowd or not) of any chosen class
(a union; COCO.getImgIds(catIds=[...]) would intersect), plus --negatives x that
many images holding none of them, drawn with --seed. Records are in image id
order and shard k holds the k-th contiguous slice, so the output is identical
whatever --workers is.

Stats sidecar keys: split, classes, category_ids, crowd, negatives, seed, images,
positive_images, negative_images, instances, crowd_regions (of the chosen
classes), skipped ({reason: count}), bytes_written, num_shards, shards,
records_per_shard, pixels, foreground_pixels, ignore_pixels, and
foreground_fraction / ignore_fraction (over all pixels of all written masks;
train.py --pos-weight auto reads the first), schema_version.

Atomic and resumable: a shard is written as <name>.partial and renamed when
complete; <output>-<split>-progress.json records finished shards and the
settings. Re-running the same command after a kill finishes the remaining
shards; different settings, or a finished set (the stats file exists), are
refused unless --overwrite. Readers should treat the stats file as the
"complete" marker.
"""

import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import contextlib
import functools
import glob
import hashlib
import importlib
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing import resource_tracker

import cv2
import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from tqdm import tqdm

import cli
import records

log = logging.getLogger(__name__)

CROWD_POLICIES = ("ignore", "positive", "skip")
TARGET_SHARD_BYTES = 150 * 2**20  # ~100-200 MB: few files, yet enough of them to interleave
POOL_MIN_IMAGES = 1000  # one process encodes ~50-80 COCO images/s; a pool takes ~5 s to start
MASK_OVERHEAD = 1.1  # PNG masks add a few percent to the image bytes
# Real COCO geometry strays a little past the border (rounding, hand drawing);
# only errors beyond this are data bugs worth stopping for.
BOUNDS_SLACK_PX = 2.0
BOUNDS_SLACK_FRACTION = 0.01


def shard_name(output, split, index, num_shards):
    return f"{output}-{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_pattern(output, split):
    """Glob of a conversion's shards; `.partial` files never match it."""
    return f"{output}-{split}-*.tfrecord"


def stats_path(output, split):
    return f"{output}-{split}-stats.json"


def progress_path(output, split):
    return f"{output}-{split}-progress.json"


class BadImage(Exception):
    """An image file that cannot be used; args are (reason, message)."""


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
    """COCO ids of the class names, in the given order; UserError on unknown names."""
    by_name = {c["name"]: c["id"] for c in coco.dataset["categories"]}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise cli.UserError(f"unknown class {', '.join(map(repr, unknown))}: valid names are "
                            f"{', '.join(sorted(by_name))}")
    return [by_name[c] for c in classes]


def select_images(coco, cat_ids, negatives=0.0, seed=0):
    """(positive ids, negative ids), sorted.

    Positives hold any of cat_ids; negatives are round(negatives * #positives)
    of the other images, drawn with seed.
    """
    positives = set()
    for c in cat_ids:
        positives.update(coco.catToImgs.get(c, ()))
    unknown = positives - coco.imgs.keys()
    if unknown:
        raise cli.UserError(f"an annotation refers to image id {min(unknown)}, which is not in "
                            "the file's images: the annotation file is damaged")
    others = sorted(set(coco.imgs) - positives)
    count = min(len(others), round(negatives * len(positives)))
    chosen = np.random.default_rng(seed).choice(others, count, replace=False) if count else []
    return sorted(positives), sorted(int(i) for i in chosen)


def _check_bounds(ann, height, width, filename):
    where = f"annotation {ann['id']} of {filename} ({width}x{height})"
    segm, bbox = ann["segmentation"], ann.get("bbox")
    sx = BOUNDS_SLACK_PX + BOUNDS_SLACK_FRACTION * width
    sy = BOUNDS_SLACK_PX + BOUNDS_SLACK_FRACTION * height
    if isinstance(segm, dict) and list(segm.get("size", ())) != [height, width]:
        raise cli.UserError(f"{where}: RLE size {segm.get('size')} is not the image's "
                            f"[height, width] [{height}, {width}]; fix the annotation file")
    polygons = segm if isinstance(segm, list) else []
    for poly in polygons:
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


def build_mask(anns, height, width, crowd="ignore", filename=""):
    """[H, W] uint8 mask of the given annotations (see the module docstring)."""
    objects = np.zeros((height, width), bool)
    crowds = np.zeros((height, width), bool)
    for ann in anns:
        target = crowds if ann.get("iscrowd") else objects
        target |= ann_to_mask(ann, height, width, filename)
    mask = np.where(objects, records.FOREGROUND, records.BACKGROUND).astype(np.uint8)
    if crowd == "ignore":
        mask[crowds & ~objects] = records.IGNORE
    elif crowd == "positive":
        mask[crowds] = records.FOREGROUND
    return mask


# ---------------------------------------------------------------- images


def _jpeg_components(data):
    """Colour components in a JPEG's frame header (1 gray, 3 YCbCr/RGB, 4 CMYK), or None."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # no length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return data[i + 9] if i + 9 < len(data) else None
        i += 2 + length
    return None


def _to_rgb8(pixels):
    """OpenCV's decode ([H, W] or [H, W, C], 8 or 16 bit) to [H, W, 3] uint8 BGR."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise BadImage("unsupported", f"has {pixels.dtype} pixels; convert it to 8-bit RGB")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):  # gray (+ alpha)
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return pixels


def read_image(path, height, width):
    """(encoded bytes, "jpeg" | "png") for the record; raises BadImage(reason, message)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImage("missing", f"image {path} not found: restore it (unzip the split's "
                       "images again)") from None
    except OSError as e:
        raise BadImage("unreadable", f"cannot read image {path} ({e.strerror})") from None
    try:  # OpenCV raises rather than returning None on an empty buffer
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None:
        raise BadImage("corrupt", f"image {path} is corrupt or truncated: download it again")
    if pixels.shape[:2] != (height, width):
        raise BadImage("size_mismatch", f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} "
                       f"but the annotations say {width}x{height}: wrong file or annotations")
    if pixels.ndim == 3 and pixels.dtype == np.uint8 and _jpeg_components(data) == 3:
        return data, "jpeg"
    try:
        bgr = _to_rgb8(pixels)
    except BadImage as e:
        raise BadImage(e.args[0], f"image {path} {e.args[1]}") from None
    return cv2.imencode(".png", bgr)[1].tobytes(), "png"


def encode_image(task):
    """Worker: (index, make_example args, counts, None), or (index, None, None, (reason, msg))."""
    index, image_dir, img, anns, crowd = task
    height, width, name = int(img["height"]), int(img["width"]), img["file_name"]
    try:
        data, fmt = read_image(os.path.join(image_dir, name), height, width)
    except BadImage as e:
        return index, None, None, e.args
    mask = build_mask(anns, height, width, crowd, name)
    counts = {"instances": sum(not a.get("iscrowd") for a in anns),
              "crowd_regions": sum(bool(a.get("iscrowd")) for a in anns),
              "foreground_pixels": int(np.count_nonzero(mask == records.FOREGROUND)),
              "ignore_pixels": int(np.count_nonzero(mask == records.IGNORE)),
              "pixels": height * width}
    png = cv2.imencode(".png", mask)[1].tobytes()
    return index, (data, fmt, height, width, int(img["id"]), name, png), counts, None


def _init_worker():
    cv2.setNumThreads(1)  # parallelism comes from the processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


@contextlib.contextmanager
def _mapper(workers):
    """An ordered map of encode_image over tasks: in-process for 1 worker, else a pool."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if workers > 1 and main_file and not os.path.exists(main_file):
        # e.g. "<stdin>": pool workers must re-import the main script and would die
        # and be restarted forever
        log.warning("running in one process: worker processes cannot import %s", main_file)
        workers = 1
    if workers <= 1:
        yield functools.partial(map, encode_image)
        return
    # Not plain fork: a child forked after TensorFlow ran ops (tests, a notebook, a
    # driver script) can deadlock on locks of TF's threads. A fork server is a fresh
    # process that imports this module once; the workers fork from it in no time.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["convert_coco"])
    module = importlib.import_module("convert_coco")  # by name: __main__ cannot be pickled
    with contextlib.ExitStack() as stack:
        with _ctrl_c_held():
            pool = stack.enter_context(ctx.Pool(workers, initializer=module._init_worker))
        yield functools.partial(pool.imap, module.encode_image, chunksize=4)


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold Ctrl-C while processes start; it takes effect here once they are up.

    The fork server and the workers inherit the blocked signal and never see a
    Ctrl-C: one landing while the fork server imported TensorFlow, for seconds,
    printed its traceback, and one stopping this process midway through starting
    the pool left workers that printed theirs. (The resource tracker of
    multiprocessing starts the same way.)
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks, no fork server
        yield
        return
    pressed, previous = [], None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    resource_tracker.ensure_running()  # first: starting, it unblocks SIGINT in its caller
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if pressed and callable(previous):
        previous(signal.SIGINT, None)  # default_int_handler: KeyboardInterrupt


# ---------------------------------------------------------------- output


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _refuse_finished(output, split):
    stats = stats_path(output, split)
    if os.path.exists(stats):
        raise cli.UserError(f"{stats} exists, so {shard_pattern(output, split)} is a finished "
                            "conversion: pass --overwrite to redo it, or choose another --output")


def _prepare_output(output, split, plan, overwrite):
    """Shard stats already finished by an interrupted run of this same plan."""
    prefix = glob.escape(output) + f"-{split}-"
    old = glob.glob(prefix + "*.tfrecord") + glob.glob(prefix + "*.tfrecord.partial")
    stats, progress = stats_path(output, split), progress_path(output, split)
    if overwrite:
        for path in old + [stats, progress]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return {}
    _refuse_finished(output, split)
    state = None
    with contextlib.suppress(OSError, ValueError):
        with open(progress) as f:
            state = json.load(f)
    if isinstance(state, dict) and state.get("plan") == plan:
        done = {int(k): v for k, v in state.get("done", {}).items()
                if os.path.exists(shard_name(output, split, int(k), plan["num_shards"]))}
        log.info("resuming an interrupted conversion: %d of %d shards already done",
                 len(done), plan["num_shards"])
        return done
    if old or state is not None:
        raise cli.UserError(f"{shard_pattern(output, split)} holds shards of an unfinished "
                            "conversion with other settings: pass --overwrite to replace them, "
                            "or choose another --output")
    return {}


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU limits
    except AttributeError:
        return os.cpu_count() or 1


def _default_num_shards(image_dir, coco, ids):
    total = 0
    for i in ids:
        with contextlib.suppress(OSError):  # a missing file is reported when it is read
            total += os.path.getsize(os.path.join(image_dir, coco.imgs[i]["file_name"]))
    return max(1, math.ceil(total * MASK_OVERHEAD / TARGET_SHARD_BYTES))


def _empty_counts():
    return {"images": 0, "positive_images": 0, "negative_images": 0, "instances": 0,
            "crowd_regions": 0, "foreground_pixels": 0, "ignore_pixels": 0, "pixels": 0,
            "skipped": {}, "bytes": 0}


def _write_shard(path, results, positives, skip_bad_images, bar):
    """Write results to path atomically; returns the shard's counts."""
    counts = _empty_counts()
    part = path + ".partial"
    try:
        with tf.io.TFRecordWriter(part) as writer:
            for index, parts, image_counts, bad in results:
                bar.update()
                if bad:
                    reason, message = bad
                    if not skip_bad_images:
                        raise cli.UserError(f"{message}, or pass --skip-bad-images")
                    counts["skipped"][reason] = counts["skipped"].get(reason, 0) + 1
                    bar.write(f"warning: skipped {message}", file=sys.stderr)
                    continue
                writer.write(records.make_example(*parts))
                counts["images"] += 1
                counts["positive_images" if index in positives else "negative_images"] += 1
                for key, value in image_counts.items():
                    counts[key] += value
        os.replace(part, path)
    except (tf.errors.OpError, OSError) as e:
        why = e.message if isinstance(e, tf.errors.OpError) else e.strerror
        raise cli.UserError(f"cannot write {part} ({why}): check free space and "
                            "permissions, or choose another --output") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(part)
    counts["bytes"] = os.path.getsize(path)
    return counts


def convert(coco_dir, split, classes=("cat",), output="data/cat", num_shards=None, workers=None,
            crowd="ignore", negatives=0.0, seed=0, overwrite=False, skip_bad_images=False,
            progress=True):
    """Convert one split (see the module docstring); returns the stats dict it also saves."""
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    if crowd not in CROWD_POLICIES:
        raise cli.UsageError(f"crowd policy must be one of {', '.join(CROWD_POLICIES)}, "
                             f"got {crowd!r}")
    if not classes or negatives < 0 or (num_shards is not None and num_shards < 1):
        raise cli.UsageError("need at least one class, negatives >= 0 and num_shards >= 1")
    if not overwrite:
        _refuse_finished(output, split)  # before spending ~20 s loading COCO's train JSON
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
    num_shards = num_shards or _default_num_shards(image_dir, coco, ids)
    plan = {"annotations_sha1": digest, "split": split, "classes": list(classes),
            "category_ids": cat_ids, "crowd": crowd, "negatives": negatives, "seed": seed,
            "num_shards": num_shards, "images": len(ids),
            "schema_version": records.SCHEMA_VERSION}  # not skip_bad_images: the fix it suggests

    try:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        done = _prepare_output(output, split, plan, overwrite)
        _write_json(progress_path(output, split), {"plan": plan, "done": done})
    except OSError as e:
        raise cli.UserError(f"cannot write output {output}-{split}-* ({e.strerror}): choose a "
                            "writable --output") from None

    bounds = [k * len(ids) // num_shards for k in range(num_shards + 1)]
    todo = [k for k in range(num_shards) if k not in done]
    wanted = set(cat_ids)
    tasks = [(i, image_dir, coco.imgs[ids[i]],
              [a for a in coco.imgToAnns[ids[i]] if a["category_id"] in wanted], crowd)
             for k in todo for i in range(bounds[k], bounds[k + 1])]
    if workers is None:  # a pool costs seconds to start (TensorFlow import): worth it only at scale
        workers = _cpu_count() if len(tasks) >= POOL_MIN_IMAGES else 1
    positive_ids = set(positives)
    positive_set = {i for i, image_id in enumerate(ids) if image_id in positive_ids}
    with _mapper(min(workers, max(1, len(tasks)))) as imap, \
            tqdm(total=len(tasks), disable=not progress, unit="img", desc=split) as bar:
        results = imap(tasks)
        for k in todo:
            shard = itertools.islice(results, bounds[k + 1] - bounds[k])
            done[k] = _write_shard(shard_name(output, split, k, num_shards), shard,
                                   positive_set, skip_bad_images, bar)
            _write_json(progress_path(output, split), {"plan": plan, "done": done})

    stats = _summarize(plan, [done[k] for k in range(num_shards)], output)
    _write_json(stats_path(output, split), stats)
    os.remove(progress_path(output, split))
    return stats


def _summarize(plan, shards, output):
    total = _empty_counts()
    for counts in shards:
        for key, value in counts.items():
            if key == "skipped":
                for reason, n in value.items():
                    total["skipped"][reason] = total["skipped"].get(reason, 0) + n
            else:
                total[key] += value
    pixels = max(1, total["pixels"])
    n, split = plan["num_shards"], plan["split"]
    return {
        "split": split, "classes": plan["classes"], "category_ids": plan["category_ids"],
        "crowd": plan["crowd"], "negatives": plan["negatives"], "seed": plan["seed"],
        "images": total["images"], "positive_images": total["positive_images"],
        "negative_images": total["negative_images"], "instances": total["instances"],
        "crowd_regions": total["crowd_regions"], "skipped": total["skipped"],
        "bytes_written": total["bytes"], "num_shards": n,
        "shards": [os.path.basename(shard_name(output, split, k, n)) for k in range(n)],
        "records_per_shard": [c["images"] for c in shards],
        "pixels": total["pixels"], "foreground_pixels": total["foreground_pixels"],
        "ignore_pixels": total["ignore_pixels"],
        "foreground_fraction": total["foreground_pixels"] / pixels,
        "ignore_fraction": total["ignore_pixels"] / pixels,
        "schema_version": records.SCHEMA_VERSION,
    }


def summary(stats, output):
    """A few human lines about a finished conversion."""
    skipped = sum(stats["skipped"].values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(stats["skipped"].items()))
    return "\n".join([
        f"wrote {stats['images']} images ({stats['positive_images']} with "
        f"{'/'.join(stats['classes'])}, {stats['negative_images']} negatives), "
        f"{stats['instances']} instances, {stats['crowd_regions']} crowd regions "
        f"(--crowd {stats['crowd']})",
        f"skipped {skipped} images" + (f" ({why})" if why else ""),
        f"{stats['bytes_written'] / 2**20:.1f} MB in {stats['num_shards']} shards: "
        f"{shard_pattern(output, stats['split'])}",
        f"foreground {stats['foreground_fraction']:.2%} of pixels, ignore "
        f"{stats['ignore_fraction']:.2%}; stats in {stats_path(output, stats['split'])}",
    ])


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv=None):
    p = cli.ArgumentParser(description="Convert COCO instance annotations into TFRecords of "
                           "image + class mask for training the U-Net.")
    p.add_argument("--coco-dir", required=True,
                   help="folder holding annotations/ and the split's image folder")
    p.add_argument("--split", default="train2017",
                   help="train2017 or val2017 (default: train2017)")
    p.add_argument("--classes", nargs="+", default=["cat"], metavar="NAME",
                   help="COCO category names, space or comma separated; quote names with "
                   "spaces (default: cat)")
    p.add_argument("--output", help="output prefix (default: data/<classes>)")
    p.add_argument("--num-shards", type=cli.positive_int,
                   help="number of shards (default: sized to ~150 MB each)")
    p.add_argument("--workers", type=cli.positive_int,
                   help=f"encoding processes (default: the CPU count, or 1 below "
                   f"{POOL_MIN_IMAGES} images)")
    p.add_argument("--crowd", choices=CROWD_POLICIES, default="ignore",
                   help="crowd regions of the classes: 255 ignore, 1 positive, or skip (stay "
                   "0) (default: ignore)")
    p.add_argument("--negatives", type=non_negative_float, default=0.0, metavar="FRACTION",
                   help="add this many images without the classes, as a fraction of the "
                   "positive count (default: 0)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="seed for choosing negatives (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip and count missing or corrupt images instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    classes = [c.strip() for arg in args.classes for c in arg.split(",") if c.strip()]
    output = args.output or os.path.join("data", "_".join(c.replace(" ", "-") for c in classes))
    cli.setup_logging()
    stats = convert(args.coco_dir, args.split, classes, output, args.num_shards, args.workers,
                    args.crowd, args.negatives, args.seed, args.overwrite,
                    args.skip_bad_images, progress=not args.no_progress)
    print(summary(stats, output))


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
