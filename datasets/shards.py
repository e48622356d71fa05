"""The converters' shared output: record shards written atomically and resumably, and
the stats file beside them (which train.py --pos-weight auto reads back: class_balance).

convert_coco.py and convert_pets.py choose the images and how each becomes a
record (records.make_example's arguments); this module writes them as

    <output>-<split>-00000-of-0000N.tfrecord ...  shard k = the k-th contiguous slice
    <output>-<split>-progress.json                settings + finished shards, while running
    <output>-<split>-stats.json                   counts and pixel fractions, written last

Shard boundaries depend only on the record count, so the output is byte-identical
whatever the worker count. A shard is written as <name>.partial and renamed when
complete; re-running the same plan (every setting that shapes the records) after a
kill writes only the missing shards. A different plan, or a finished set (the stats
file, readers' "complete" marker, exists), is refused unless overwrite.
"""

import collections
import contextlib
import dataclasses
import functools
import glob
import importlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing import resource_tracker

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from datasets import records
from utils import cli, errors

log = logging.getLogger(__name__)

TARGET_SHARD_BYTES = 150 * 2**20  # ~100-200 MB: few files, yet enough of them to interleave
POOL_MIN_IMAGES = 1000  # one process encodes ~50-80 COCO images/s; a pool takes ~5 s to start
MASK_OVERHEAD = 1.1  # PNG masks add a few percent to the image bytes
# What a worker may count per image; the stats add them up.
COUNTS = ("instances", "crowd_regions", "foreground_pixels", "ignore_pixels", "pixels")


def shard_name(output, split, index, num_shards):
    return f"{output}-{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_pattern(output, split):
    """Glob of a conversion's shards; `.partial` files never match it."""
    return f"{output}-{split}-*.tfrecord"


def stats_path(output, split):
    return f"{output}-{split}-stats.json"


def progress_path(output, split):
    return f"{output}-{split}-progress.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """One conversion, as the converter prepared it."""

    output: str  # shard prefix
    split: str
    plan: dict  # JSON: every setting that shapes the records, incl. num_shards; resume key
    settings: dict  # copied into the stats: split, classes, category_ids, crowd, negatives, seed
    tasks: list  # encode's argument for each record, in record order
    # indices into tasks of the records that hold the classes; None: known only once
    # encoded, so a record is positive when it has foreground pixels
    positives: frozenset | None
    # Module-level worker: task -> (index, make_example args, counts, None) or
    # (index, None, None, (reason, message)) for a bad image.
    encode: Callable
    module: str  # encode's importable module name: pool workers import it
    extra: dict = dataclasses.field(default_factory=dict)  # JSON: converter-specific stats


def draw_negatives(others, num_positives, fraction, seed):
    """round(fraction * num_positives) of the sorted ids `others` (capped), drawn with seed."""
    count = min(len(others), round(fraction * num_positives))
    chosen = np.random.default_rng(seed).choice(others, count, replace=False) if count else []
    return sorted(int(i) for i in chosen)


def default_num_shards(paths):
    """Shards of ~TARGET_SHARD_BYTES for these source image files."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):  # a missing file is reported when it is read
            total += os.path.getsize(path)
    return max(1, math.ceil(total * MASK_OVERHEAD / TARGET_SHARD_BYTES))


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU limits
    except AttributeError:
        return os.cpu_count() or 1


def refuse_finished(output, split):
    stats = stats_path(output, split)
    if os.path.exists(stats):
        raise cli.UserError(f"{stats} exists, so {shard_pattern(output, split)} is a finished "
                            "conversion: pass --overwrite to redo it, or choose another --output")


# ---------------------------------------------------------------- workers


# The resource tracker takes Python's -W options: after a kill -9 of the converter it
# still removes the pool's semaphores, but without a "leaked semaphore" warning.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _init_worker():
    cv2.setNumThreads(1)  # parallelism comes from the processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # A worker whose converter was killed (kill -9) dies quietly on its next result
    # instead of printing BrokenPipeError tracebacks; workers write to no other pipe.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


@contextlib.contextmanager
def _mapper(encode, module_name, workers):
    """An ordered map of encode over tasks: in-process for 1 worker, else a pool."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if workers > 1 and main_file and not os.path.exists(main_file):
        # e.g. "<stdin>": pool workers must re-import the main script and would die
        # and be restarted forever
        log.warning("running in one process: worker processes cannot import %s", main_file)
        workers = 1
    if workers <= 1:
        yield functools.partial(map, encode)
        return
    # Not plain fork: a child forked after TensorFlow ran ops (tests, a notebook, a
    # driver script) can deadlock on locks of TF's threads. A fork server is a fresh
    # process that imports the converter once; the workers fork from it in no time.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([module_name])
    module = importlib.import_module(module_name)  # by name: __main__ cannot be pickled
    with contextlib.ExitStack() as stack:
        with _ctrl_c_held():
            pool = stack.enter_context(ctx.Pool(workers, initializer=_init_worker))
        yield functools.partial(pool.imap, getattr(module, encode.__name__), chunksize=4)


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold Ctrl-C while processes start; it takes effect here once they are up.

    The fork server, resource tracker and workers inherit the blocked signal: a Ctrl-C
    while the fork server imported TensorFlow printed its traceback, and one midway
    through starting the pool left workers that printed theirs.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks, no fork server
        yield
        return
    pressed, previous = [], None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)
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
    refuse_finished(output, split)
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


def _empty_counts():
    return {"images": 0, "positive_images": 0, "negative_images": 0, **dict.fromkeys(COUNTS, 0),
            "skipped": collections.Counter(), "bytes": 0}


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
                    counts["skipped"][reason] += 1
                    bar.write(f"warning: skipped {message}", file=sys.stderr)
                    continue
                writer.write(records.make_example(*parts))
                counts["images"] += 1
                positive = (index in positives if positives is not None
                            else image_counts["foreground_pixels"] > 0)
                counts["positive_images" if positive else "negative_images"] += 1
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


def write(job, workers=None, overwrite=False, skip_bad_images=False, progress=True):
    """Write (or finish) the job's shards, then its stats; returns the stats dict."""
    output, split, num_shards = job.output, job.split, job.plan["num_shards"]
    try:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        done = _prepare_output(output, split, job.plan, overwrite)
        errors.write_json(progress_path(output, split), {"plan": job.plan, "done": done})
    except OSError as e:
        raise cli.UserError(f"cannot write output {output}-{split}-* ({e.strerror}): choose a "
                            "writable --output") from None

    bounds = [k * len(job.tasks) // num_shards for k in range(num_shards + 1)]
    todo = [k for k in range(num_shards) if k not in done]
    tasks = [job.tasks[i] for k in todo for i in range(bounds[k], bounds[k + 1])]
    if workers is None:  # a pool costs seconds to start (TensorFlow import): worth it only at scale
        workers = cpu_count() if len(tasks) >= POOL_MIN_IMAGES else 1
    with _mapper(job.encode, job.module, min(workers, max(1, len(tasks)))) as imap, \
            tqdm(total=len(tasks), disable=not progress, unit="img", desc=split) as bar:
        results = imap(tasks)
        for k in todo:
            shard = itertools.islice(results, bounds[k + 1] - bounds[k])
            done[k] = _write_shard(shard_name(output, split, k, num_shards), shard,
                                   job.positives, skip_bad_images, bar)
            errors.write_json(progress_path(output, split), {"plan": job.plan, "done": done})

    stats = _summarize(job, [done[k] for k in range(num_shards)])
    errors.write_json(stats_path(output, split), stats)
    os.remove(progress_path(output, split))
    return stats


def _summarize(job, shards):
    """The stats file; train.py --pos-weight auto reads foreground_fraction."""
    total = _empty_counts()
    for counts in shards:
        total["skipped"].update(counts["skipped"])
        for key in total.keys() - {"skipped"}:
            total[key] += counts[key]
    pixels = max(1, total["pixels"])
    n = job.plan["num_shards"]
    return {
        **{key: job.settings[key] for key in
           ("split", "classes", "category_ids", "crowd", "negatives", "seed")},
        **{key: total[key] for key in ("images", "positive_images", "negative_images", *COUNTS)},
        "skipped": dict(total["skipped"]), "bytes_written": total["bytes"], "num_shards": n,
        "shards": [os.path.basename(shard_name(job.output, job.split, k, n)) for k in range(n)],
        "records_per_shard": [c["images"] for c in shards],
        "foreground_fraction": total["foreground_pixels"] / pixels,
        "ignore_fraction": total["ignore_pixels"] / pixels,
        "schema_version": records.SCHEMA_VERSION,
        **job.extra,
    }


@dataclasses.dataclass
class ClassBalance:
    """What train.py --pos-weight auto takes from a stats file."""

    path: str  # the stats file read
    foreground_fraction: float  # f, over the records' valid pixels
    classes: tuple  # what the records were made for; () when the stats do not say
    pixels: int = 1  # valid pixels the fraction is over (the combined sets' weights)

    @property
    def pos_weight(self):
        return (1.0 - self.foreground_fraction) / self.foreground_fraction


def class_balance(train_records, path=""):
    """The ClassBalance in `path`, by default the stats file beside the train_records glob
    (data/cat-train2017-*... -> data/cat-train2017-stats.json).

    Several globs (a tuple) without `path`: the stats beside each, combined over the
    sets' pixels (their foreground pixels over all their valid pixels), so a set of big
    photos counts for its pixels, as in one glob over all of them. The sampling weights
    are not in it: they change how often a set's records come, not what they hold.
    """
    if not isinstance(train_records, str) and not path:
        parts = [class_balance(pattern) for pattern in train_records]
        pixels = [p.pixels for p in parts]
        fraction = sum(p.foreground_fraction * n for p, n in zip(parts, pixels)) / sum(pixels)
        classes = tuple(dict.fromkeys(c for p in parts for c in p.classes))
        return ClassBalance(",".join(p.path for p in parts), fraction, classes, sum(pixels))
    if not isinstance(train_records, str):
        train_records = train_records[0]  # --stats names the one file for all the sets
    if not path:
        path = re.sub(r"-\*[^/]*$", "-stats.json", train_records)
        if path == train_records:
            raise cli.UsageError(f"cannot find the converter's stats file from --train-records "
                                 f"{train_records!r} (expected a '<output>-<split>-*' glob): "
                                 "pass --stats")
    try:
        with open(path) as f:
            stats = json.load(f)
        fraction = float(stats["foreground_fraction"])
    except FileNotFoundError:
        raise cli.UserError(f"stats file {path} is missing: {' / '.join(records.CONVERTERS)} "
                            "write it next to the shards; pass --stats or a number for "
                            "--pos-weight") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise cli.UserError(f"stats file {path} is unreadable or has no number "
                            f"'foreground_fraction' ({e}): re-run "
                            f"{records.RECREATE_HINT}") from None
    if not 0.0 < fraction < 1.0:
        raise cli.UserError(f"{path}: foreground_fraction {fraction} gives no class balance; "
                            "pass a number for --pos-weight")
    pixels = stats.get("pixels")
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels <= 0:
        pixels = 1  # stats without a pixel count: such sets weigh equally
    return ClassBalance(path, fraction, tuple(stats.get("classes") or ()), pixels)


def summary(stats, output, regions="crowd regions", flag="--crowd"):
    """A few human lines about a finished conversion; `flag` set what `regions` became."""
    skipped = sum(stats["skipped"].values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(stats["skipped"].items()))
    return "\n".join([
        f"wrote {stats['images']} images ({stats['positive_images']} with "
        f"{'/'.join(stats['classes'])}, {stats['negative_images']} negatives), "
        f"{stats['instances']} instances, {stats['crowd_regions']} {regions} "
        f"({flag} {stats['crowd']})",
        f"skipped {skipped} images" + (f" ({why})" if why else ""),
        f"{stats['bytes_written'] / 2**20:.1f} MB in {stats['num_shards']} shards: "
        f"{shard_pattern(output, stats['split'])}",
        f"foreground {stats['foreground_fraction']:.2%} of pixels, ignore "
        f"{stats['ignore_fraction']:.2%}; stats in {stats_path(output, stats['split'])}",
    ])


def add_flags(parser, negatives_help, skip_help, negatives_default=0.0):
    """The flags every converter shares, defined once: sharding, workers, negatives, the
    seed that draws them, overwrite, bad images and the progress bar. A converter whose
    source marks its own negatives keeps them all by default (negatives_default None)."""
    a = parser.add_argument
    default = "all" if negatives_default is None else f"{negatives_default:g}"
    a("--num-shards", type=cli.positive_int,
      help="number of shards (default: sized to ~150 MB each)")
    a("--workers", type=cli.positive_int,
      help=f"encoding processes (default: the CPU count, or 1 below {POOL_MIN_IMAGES} images)")
    a("--negatives", type=cli.non_negative_float, default=negatives_default, metavar="FRACTION",
      help=f"{negatives_help}, as a fraction of the positive count (default: {default})")
    a("--seed", type=cli.non_negative_int, default=0,
      help="seed for choosing negatives (default: 0)")
    a("--overwrite", action="store_true", help="replace existing output")
    a("--skip-bad-images", action="store_true", help=f"{skip_help} instead of stopping")
    a("--no-progress", action="store_true", help="no progress bar")
