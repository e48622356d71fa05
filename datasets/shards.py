"""The converters' shared output: record shards written atomically and resumably, and
the stats file beside them, which readers take back: record_classes (every reader's
class check), class_balance (--pos-weight auto), class_pixels (--class-weights auto).

convert_coco.py and convert_pets.py choose the images and how each becomes a
record (records.make_example's arguments); this module writes them as

    <output>-<split>-00000-of-0000N.tfrecord ...  shard k = the k-th contiguous slice
    <output>-<split>-progress.json                settings + finished shards, while running
    <output>-<split>-stats.json                   counts and pixel fractions, written last

A mask holds class indices (datasets/records.py): 0 background, 1..K the chosen
classes in the order given (chosen_classes checks that list), 255 ignore. The stats
name the classes and count each index's pixels ("class_pixels", K + 1 numbers);
record_classes reads that back for every reader (train, evaluate) and refuses sets
whose class lists differ.

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
# What a worker may count per image; the stats add them up. class_pixels (a list, one
# count per mask index 0..K) is added up element by element.
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
    num_classes: int = 1  # K: mask values 1..K (the stats' class_pixels has K + 1 counts)


def chosen_classes(names, valid, flag="--classes", source="", usage=False):
    """The class names a converter was given, as a tuple: name k (1-based) becomes mask
    value k. UsageError for a name given twice or more than records.MAX_CLASSES names;
    for a name not in `valid` (in the order to list them; `source` says where they come
    from) UserError, or UsageError when `usage` (a fixed set of names, not a file's)."""
    names = tuple(names)
    twice = [n for n, count in collections.Counter(names).items() if count > 1]
    if twice:
        raise cli.UsageError(f"class {twice[0]!r} is named twice in {flag}: name each class "
                             "once (its place in the list is its mask value 1, 2, ...)")
    if len(names) > records.MAX_CLASSES:
        raise cli.UsageError(f"{flag} names {len(names)} classes: a mask holds at most "
                             f"{records.MAX_CLASSES} (255 is ignore)")
    unknown = [n for n in names if n not in valid]
    if unknown:
        error = cli.UsageError if usage else cli.UserError
        raise error(f"unknown class {', '.join(map(repr, unknown))} in {flag}: valid names are "
                    f"{', '.join(map(str, valid))}" + (f" ({source})" if source else ""))
    return names


def mask_counts(mask, num_classes):
    """A worker's pixel counts of one [H, W] uint8 record mask with values 0..K and 255."""
    per_value = np.bincount(mask.ravel(), minlength=256)
    return {"foreground_pixels": int(per_value[1:num_classes + 1].sum()),
            "ignore_pixels": int(per_value[records.IGNORE]),
            "class_pixels": per_value[:num_classes + 1].tolist(), "pixels": int(mask.size)}


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


def _empty_counts(num_classes):
    return {"images": 0, "positive_images": 0, "negative_images": 0, **dict.fromkeys(COUNTS, 0),
            "class_pixels": [0] * (num_classes + 1), "skipped": collections.Counter(),
            "bytes": 0}


def _add(total, counts):
    """Add one image's or shard's counts to total (lists element by element)."""
    for key, value in counts.items():
        if key == "skipped":
            total[key].update(value)
        elif isinstance(value, list):
            total[key] = [a + b for a, b in zip(total[key], value, strict=True)]
        else:
            total[key] += value


def _write_shard(path, results, positives, skip_bad_images, bar, num_classes):
    """Write results to path atomically; returns the shard's counts."""
    counts = _empty_counts(num_classes)
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
                _add(counts, image_counts)
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
    # K is part of the resume key: shards counted by an older version lack class_pixels
    plan = {**job.plan, "num_classes": job.num_classes}
    try:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        done = _prepare_output(output, split, plan, overwrite)
        errors.write_json(progress_path(output, split), {"plan": plan, "done": done})
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
                                   job.positives, skip_bad_images, bar, job.num_classes)
            errors.write_json(progress_path(output, split), {"plan": plan, "done": done})

    stats = _summarize(job, [done[k] for k in range(num_shards)])
    errors.write_json(stats_path(output, split), stats)
    os.remove(progress_path(output, split))
    return stats


def _summarize(job, shards):
    """The stats file; train.py --pos-weight auto reads foreground_fraction, every reader
    classes and class_pixels (record_classes), --class-weights auto class_pixels."""
    total = _empty_counts(job.num_classes)
    for counts in shards:
        _add(total, counts)
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
        # valid pixels of each mask value 0..K: len(class_pixels) - 1 is K
        "class_pixels": total["class_pixels"],
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
    path = path or _stats_for(train_records)
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


def stats_beside(pattern):
    """The stats file beside a '<output>-<split>-*' glob, or '' for any other glob."""
    path = re.sub(r"-\*[^/]*$", "-stats.json", pattern)
    return "" if path == pattern else path


def _stats_for(train_records):
    path = stats_beside(train_records)
    if not path:
        raise cli.UsageError(f"cannot find the converter's stats file from --train-records "
                             f"{train_records!r} (expected a '<output>-<split>-*' glob): "
                             "pass --stats")
    return path


@dataclasses.dataclass(frozen=True)
class RecordClasses:
    """What a record set's masks index, as its stats file says: value k (1..K) is
    names[k - 1]. K = 1 masks are "the class(es) vs background": all names are value 1,
    as in every stats file from before class indices (no class_pixels)."""

    names: tuple  # the stats' "classes"; () when they name none
    num_classes: int  # K
    where: str  # for messages: "--train-records 'data/a-*' (data/a-stats.json)"
    class_pixels: tuple = ()  # valid pixels of each value 0..K; () in older stats

    def describe(self):
        if self.num_classes == 1:
            return f"1 class ({'/'.join(self.names) or 'unnamed'})"
        return f"{self.num_classes} classes ({', '.join(self.names)})"

    def matches(self, other):
        """Same K and, for K >= 2, the same names in the same order: one-class sets of
        other names (a COCO 'cat' set, a binary-mask 'foreground' set) mix as before."""
        return self.num_classes == other.num_classes and (
            self.num_classes == 1 or self.names == other.names)


def _read_stats(path):
    """A stats file's JSON object; UserError for one that is no such thing."""
    try:
        with open(path) as f:
            stats = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise cli.UserError(f"stats file {path} is unreadable ({e}): re-run "
                            f"{records.RECREATE_HINT}") from None
    if not isinstance(stats, dict):
        raise cli.UserError(f"stats file {path} holds no JSON object: re-run "
                            f"{records.RECREATE_HINT}")
    return stats


def read_classes(path, where):
    """The RecordClasses of a stats file (`where` names the set in messages)."""
    stats = _read_stats(path)
    names, counts = stats.get("classes", []), stats.get("class_pixels")
    bad = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        bad = f"'classes' {str(names)[:60]} is not a list of names"
    elif counts is not None and not (
            isinstance(counts, list) and len(counts) >= 2 and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts)):
        bad = f"'class_pixels' {str(counts)[:60]} is not a list of 2 or more pixel counts"
    elif counts is not None and len(counts) > 2 and len(counts) - 1 != len(names):
        bad = (f"'class_pixels' counts {len(counts) - 1} classes but 'classes' names "
               f"{len(names)}")
    if bad:
        raise cli.UserError(f"stats file {path}: {bad}; re-run {records.RECREATE_HINT}")
    k = len(counts) - 1 if counts else 1  # no class_pixels: an older, merged one-class set
    return RecordClasses(tuple(names), k, f"{where} ({path})", tuple(counts or ()))


def record_classes(sets, expected=None):
    """The RecordClasses that record sets share, read from the stats beside each glob;
    the one place that class lists are compared (train.py through core/config.resolve,
    evaluate.py).

    sets: (flag, glob) pairs, e.g. ("--train-records", "data/a-*"); expected: the
    RecordClasses the sets must match (evaluate: the run's). UserError naming both
    sides when two differ. A set without a stats file (a glob of another form, or
    records not written by a converter) cannot be checked: it is taken to hold the
    classes of the others (logged), and None is returned when no set has stats.
    K = 1 sets return the names of all of them, in order (as --pos-weight auto always
    did); class_pixels are those of the first set.
    """
    found, unknown = [], []
    for flag, pattern in sets:
        path = stats_beside(pattern)
        where = f"{flag} {pattern!r}"
        if path and os.path.exists(path):
            found.append(read_classes(path, where))
        else:
            unknown.append(where)
    for other in found[1:] + ([expected] if expected and found else []):
        if not found[0].matches(other):
            fix = ("convert the records with the run's classes, in its order"
                   if other is expected else
                   "re-convert one with the same --classes (or --species), in the same order")
            raise cli.UserError(f"class lists differ: {found[0].where} holds "
                                f"{found[0].describe()}, {other.where} "
                                f"{'was trained on' if other is expected else 'holds'} "
                                f"{other.describe()}: {fix}")
    if not found:
        return None
    if unknown:
        log.warning("no stats file beside %s: its classes cannot be checked; taken to be "
                    "those of %s, %s", ", ".join(unknown), found[0].where, found[0].describe())
    if found[0].num_classes == 1:
        names = tuple(dict.fromkeys(n for c in found for n in c.names))
        return dataclasses.replace(found[0], names=names)
    return found[0]


@dataclasses.dataclass(frozen=True)
class ClassPixels:
    """What train.py --class-weights auto takes from the stats: each mask value's valid
    pixels over all training sets."""

    path: str  # the stats file(s) read, comma separated
    pixels: tuple  # n_0 .. n_K

    def median_frequency_weights(self):
        """Median-frequency balancing (Eigen & Fergus 2015): w_c = median(f) / f_c with
        f_c = n_c / sum(n), the median over the values present (n_c > 0). Because sum(n)
        cancels, w_c = median(n present) / n_c. A value absent from the training data has
        no pixel to weigh: it gets 1."""
        present = [n for n in self.pixels if n > 0]
        median = float(np.median(present))
        return tuple(median / n if n > 0 else 1.0 for n in self.pixels)


def class_pixels(train_records, num_classes, path=""):
    """The ClassPixels of `path`, by default of the stats beside each training glob
    (summed: one set's pixels count as much as another's, as in one glob over all of
    them); UserError for a missing file or one without K + 1 class_pixels."""
    paths = [path] if path else [_stats_for(p) for p in
                                 ((train_records,) if isinstance(train_records, str)
                                  else train_records)]
    total = np.zeros(num_classes + 1, np.int64)
    for stats_file in paths:
        if not os.path.exists(stats_file):
            raise cli.UserError(f"stats file {stats_file} is missing: "
                                f"{' / '.join(records.CONVERTERS)} write it next to the "
                                "shards; pass --stats or numbers for --class-weights")
        classes = read_classes(stats_file, "--class-weights auto")
        if len(classes.class_pixels) != num_classes + 1:
            raise cli.UserError(f"stats file {stats_file} has no class_pixels for "
                                f"{num_classes} classes + background (it counts "
                                f"{len(classes.class_pixels) or 'none'}): re-run "
                                f"{records.RECREATE_HINT}, or pass numbers for "
                                "--class-weights")
        total += classes.class_pixels
    if not total.any():
        raise cli.UserError(f"stats {', '.join(paths)} count no valid pixel: pass numbers for "
                            "--class-weights")
    return ClassPixels(",".join(paths), tuple(int(n) for n in total))


def summary(stats, output, regions="crowd regions", flag="--crowd"):
    """A few human lines about a finished conversion; `flag` set what `regions` became."""
    skipped = sum(stats["skipped"].values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(stats["skipped"].items()))
    counts = stats.get("class_pixels", ())
    per_class = ""
    if len(counts) > 2:  # K >= 2: the mask value of each class, and its share
        valid = max(1, sum(counts))
        per_class = "; of valid pixels " + ", ".join(f"{k} {name} {counts[k] / valid:.2%}"
                                     for k, name in enumerate(stats["classes"], 1))
    return "\n".join([
        f"wrote {stats['images']} images ({stats['positive_images']} with "
        f"{'/'.join(stats['classes'])}, {stats['negative_images']} negatives), "
        f"{stats['instances']} instances, {stats['crowd_regions']} {regions} "
        f"({flag} {stats['crowd']})",
        f"skipped {skipped} images" + (f" ({why})" if why else ""),
        f"{stats['bytes_written'] / 2**20:.1f} MB in {stats['num_shards']} shards: "
        f"{shard_pattern(output, stats['split'])}",
        f"foreground {stats['foreground_fraction']:.2%} of pixels, ignore "
        f"{stats['ignore_fraction']:.2%}{per_class}; stats in "
        f"{stats_path(output, stats['split'])}",
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
