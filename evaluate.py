"""Honest full-image metrics for a trained run (docs/inference.md, "Evaluate").

    python evaluate.py --run logs/demo --records 'data/demo-val2017-*'

Unlike training's centre-crop validation, every record's whole image goes through
predict.py's overlap-tile graph (at the run's long_side, resized back) and is scored
on the valid pixels of its full mask, next to the all-background prediction, so a
network that predicts nothing cannot look good. The sweep's best threshold is tuned
on the records evaluated, so it is adopted into threshold.json only for the run's
own val_records with its default checkpoint, or with --adopt-threshold: evaluating
other data (e.g. real photos) never moves it silently.

A run of K >= 2 classes is decided by the argmax, so it has no threshold, sweep or PR
curve (those stay K = 1's); its report has the per-class table (IoU, Dice, precision,
recall), the mean IoU over the classes and with background, and the confusion matrix, all
beside the all-background prediction (core/metrics.py's rules, the 0/0 one included).
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import contextlib
import dataclasses
import functools
import hashlib
import heapq
import itertools
import os
import re
import sys

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary
from tqdm import tqdm

import predict
from core import config, metrics, rundir, summaries, tiling
from datasets import pipeline, records, shards
from utils import cli, errors
from utils.cli import UserError

v1 = tf.compat.v1

PR_THRESHOLDS = np.arange(101) / 100  # TensorBoard's i / (n - 1); holds every sweep value
SWEEP = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05 .. 0.95
EVAL_DIR = "eval"
OVERLAY_DIR = "overlays"
NAMES = {"foreground_iou": "foreground IoU", "mean_image_iou": "mean image IoU",
         "dice": "Dice", "precision": "precision", "recall": "recall",
         "pixel_accuracy": "pixel accuracy"}


@dataclasses.dataclass(frozen=True)
class Report:
    """What evaluate() measured: the report file's keys, in its order (to_json), and the
    files it wrote. Metric dicts map NAMES' keys to values."""

    checkpoint: str
    global_step: int
    records: str  # the glob evaluated
    record_files: int
    images: int
    images_without_valid_pixels: int
    valid_pixels: int
    foreground_pixels: int
    threshold: float  # the main table's
    model: dict  # metrics at `threshold`
    all_background: dict  # the same metrics for a network that predicts nothing
    sweep: list  # [{"threshold", *NAMES}] over SWEEP
    best_threshold: float
    best_threshold_iou: float
    worst_images: list  # [{"filename", "image_id", "iou"}], lowest IoU first
    best_images: list
    long_side: int
    adopted_threshold: bool  # written to threshold.json
    adoption_reason: str
    flip_test: bool = False  # --flip-test: each map averaged with its mirror image's
    # K >= 2 classes only (a K = 1 report has none of these keys). The decision is the
    # argmax: threshold and best_threshold* are None and sweep is []; model and
    # all_background hold metrics.MEANS; foreground_pixels counts every class but 0; an
    # image's "iou" in worst/best_images is its mean IoU over the classes it shows.
    classes: tuple = ()  # "background", then the run's classes: the tables' order
    per_class: list | None = None  # metrics.ClassMetrics.per_class() of the model
    all_background_per_class: list | None = None  # the same for all-background
    confusion_matrix: list | None = None  # [C][C] valid pixels, row = truth, column = predicted
    report: str = ""  # the JSON file
    overlays: tuple = ()  # overlay PNGs (--save-overlays)

    def to_json(self):
        """The report file's object: every field but the paths of what was written."""
        fields = dataclasses.asdict(self)
        del fields["report"], fields["overlays"]
        if not self.classes:
            for key in CLASS_FIELDS:
                del fields[key]
        return fields


CLASS_FIELDS = ("classes", "per_class", "all_background_per_class", "confusion_matrix")


def evaluate(run_dir, records_pattern=None, checkpoint=None, threshold=0.5, batch_size=4,
             save_overlays=0, progress=True, adopt=None, max_pixels=records.DEFAULT_MAX_PIXELS,
             flip_test=False):
    """Predict every record's full image, write the report and TensorBoard, returns a Report.

    records_pattern defaults to the run's val_records; adopt: True / False, or None
    (_adoption); flip_test: average with the mirror image's map (tiling.flip_averaged).
    """
    cfg = rundir.load_config(run_dir)
    classes = config.class_names(cfg) if cfg.num_outputs > 1 else ()
    if classes and adopt:
        raise cli.UsageError(f"--adopt-threshold is for runs of one class; {run_dir} has "
                             f"{len(classes) - 1} classes, decided by the argmax: leave it out")
    records_pattern = records_pattern or cfg.val_records
    if not records_pattern:
        raise cli.UsageError("no records to evaluate: pass --records 'data/<name>-val2017-*'")
    files = pipeline.list_records(records_pattern)
    shards.record_classes([("--records", p) for p in pipeline.patterns(records_pattern)],
                          shards.RecordClasses(tuple(cfg.classes), cfg.num_classes,
                                               f"the run {run_dir}"))
    own_records = _are_val_records(files, cfg)
    requested, checkpoint = checkpoint, rundir.resolve(run_dir, checkpoint)
    if classes:
        adopt, reason = False, "K >= 2 classes are decided by the argmax: no threshold"
    else:
        adopt, reason = _adoption(adopt, own_records, run_dir, checkpoint, requested is None)
    name = EVAL_DIR if own_records else report_name(records_pattern)
    thresholds = np.concatenate([PR_THRESHOLDS, [threshold]])
    counts, names, keep = score_images(files, records_pattern, cfg, checkpoint, thresholds,
                                       batch_size, save_overlays, progress, max_pixels,
                                       flip_test)
    counts = np.stack(counts)  # [N, T + 1, 4]; K >= 2: [N, C, C]
    path = rundir.report_path(run_dir, name)
    measured = (_class_results(counts, names, classes) if classes else
                _results(counts, names, thresholds, threshold))
    listed = _listing(measured.pop("image_ious"), names, save_overlays)
    result = Report(**measured, **listed, checkpoint=checkpoint,
                    global_step=rundir.step(checkpoint), records=records_pattern,
                    record_files=len(files), long_side=cfg.long_side, adopted_threshold=adopt,
                    adoption_reason=reason, report=path, flip_test=flip_test)
    errors.write_json(path, result.to_json(), sort_keys=False)
    if adopt:
        rundir.write_threshold(run_dir, result.best_threshold, result.best_threshold_iou,
                               records_pattern, checkpoint, reason, path)
    events = rundir.events_dir(run_dir, name)
    _write_tensorboard(events, counts, result)
    if save_overlays:
        overlays = _write_overlays(os.path.join(events, OVERLAY_DIR), keep, threshold, classes)
        result = dataclasses.replace(result, overlays=tuple(overlays))
    return result


def score_images(files, pattern, cfg, checkpoint, thresholds, batch_size, save_overlays,
                 progress, max_pixels=records.DEFAULT_MAX_PIXELS, flip_test=False):
    """Every record's confusion counts [T, 4] at `thresholds` (K >= 2: its confusion matrix
    [C, C] of the argmax), its (filename, id), and the extreme images for overlays;
    UserError naming an unreadable record, or the glob `pattern` (of files) when they hold
    no image. Public for benchmarks/by_size.py, which needs the per-image counts that the
    report pools."""
    several = cfg.num_outputs > 1
    graph = tf.Graph()
    with graph.as_default():
        filename = v1.placeholder(tf.string, [], name="records_file")
        dataset = tf.data.TFRecordDataset(filename).map(
            functools.partial(pipeline.decode_record, max_pixels=max_pixels),
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(1)
        iterator = v1.data.make_initializable_iterator(dataset)
        item = iterator.get_next()
        # predict.py's map and, K >= 2, its class map: the same graph, the same decision
        probabilities = tiling.probability_map(item["image"], cfg, batch_size, flip_test)
        item["pred"] = tiling.class_map(probabilities) if several else probabilities
        if not save_overlays:
            del item["image"]
        sess = v1.Session(graph=graph)
    counts, names, keep = [], [], _Extremes(save_overlays)
    with sess:
        rundir.restore(sess, checkpoint, cfg)
        bar = tqdm(unit="image", disable=not progress, file=sys.stderr)
        for path in files:
            sess.run(iterator.initializer, {filename: path})
            for index in itertools.count():
                try:
                    got = sess.run(item)
                except tf.errors.OutOfRangeError:
                    break
                except records.READ_ERRORS as e:
                    reason = records.read_error_reason(e)
                    if "-pixel cap" in reason:
                        raise UserError(f"{path}: record #{index}: "
                                        f"{records.cap_message(max_pixels)}") from None
                    raise UserError(f"{path}: record #{index} is unreadable ({reason}): "
                                    f"re-create it with {records.RECREATE_HINT}") from None
                truth = got["mask"][..., 0]
                if several:
                    c = metrics.confusion_matrix(got["pred"], truth, cfg.num_outputs)
                    iou = float(metrics.mean_ious(c))
                else:
                    c = metrics.confusion(got["pred"], truth, thresholds)
                    # images without valid pixels have no IoU
                    iou = metrics.ratios(c[-1])["foreground_iou"] if c[-1].sum() else np.nan
                counts.append(c)
                names.append((got["filename"].decode(errors="replace"), int(got["id"])))
                if save_overlays and not np.isnan(iou):
                    keep.add(iou, len(names) - 1, got)
                bar.update()
        bar.close()
    if not counts:
        raise UserError(f"records {pattern!r} hold no images: re-create them with "
                        f"{records.RECREATE_HINT}")
    return counts, names, keep


def report_name(records_pattern):
    """Report name for records other than the run's: eval-<shard stem>-<hash of the glob>."""
    stem = os.path.basename(records_pattern).split(".tfrecord")[0]
    stem = re.sub(r"[^\w.-]+", "", stem).strip("-_.") or "records"
    digest = hashlib.sha1(os.path.abspath(records_pattern).encode()).hexdigest()[:6]
    return f"{EVAL_DIR}-{stem}-{digest}"


def _are_val_records(files, cfg):
    """True when `files` are exactly the run's val_records, however the glob was spelled."""
    try:
        own = pipeline.list_records(cfg.val_records) if cfg.val_records else []
    except UserError:  # e.g. train.py ran in another directory
        return False
    return bool(own) and sorted(map(os.path.realpath, files)) == sorted(
        map(os.path.realpath, own))


def _adoption(adopt, own_records, run_dir, checkpoint, is_default):
    """(adopt the best threshold?, why): the caller's True / False, else only for the
    run's own val_records evaluated with the checkpoint predict.py would restore."""
    if adopt is not None:
        return adopt, "--adopt-threshold" if adopt else "--no-adopt-threshold"
    if not own_records:
        return False, "not the run's val_records"
    if not is_default:  # a --checkpoint: the one predict.py and export.py restore anyway?
        with contextlib.suppress(UserError):
            default = rundir.resolve(run_dir)
            is_default = os.path.abspath(default) == os.path.abspath(checkpoint)
    if not is_default:
        return False, "not the run's default checkpoint"
    return True, "the run's val_records and default checkpoint"


class _Extremes:
    """The n lowest- and n highest-IoU images seen, with their pixels for overlays."""

    def __init__(self, n):
        self.n, self.worst, self.best = n, [], []

    def add(self, iou, index, item):
        # pred: the probability [H, W], or for K >= 2 the class map
        entry = (item["image"], item["mask"][..., 0], item["pred"], item["filename"])
        # Heaps hold the entries to drop first at [0]; index breaks ties by order.
        for heap, key in ((self.worst, (-iou, -index)), (self.best, (iou, -index))):
            if len(heap) < self.n:
                heapq.heappush(heap, (key, index, entry))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, index, entry))

    def ranked(self):
        """[(kind, rank from 1, iou, entry)]: worst first, then best first."""
        worst = sorted(self.worst, key=lambda e: (-e[0][0], e[1]))
        best = sorted(self.best, key=lambda e: (-e[0][0], e[1]))
        return ([("worst", r, -k[0], e) for r, (k, _, e) in enumerate(worst, 1)]
                + [("best", r, k[0], e) for r, (k, _, e) in enumerate(best, 1)])


def _results(counts, names, thresholds, threshold):
    """Report's measured fields from the counts [N, T + 1, 4] of N images, and image_ious
    [N] (NaN: not ranked) for _listing."""
    main = counts[:, -1]
    total = main.sum(axis=0)
    sweep = []
    for t in SWEEP:
        i = int(np.flatnonzero(PR_THRESHOLDS == t)[0])
        row = metrics.summarize(counts[:, i])
        sweep.append({"threshold": float(t), **{k: row[k] for k in NAMES}})
    best = max(sweep, key=lambda r: (r["foreground_iou"], -abs(r["threshold"] - 0.5)))
    valid = main.sum(axis=1) > 0
    ious = np.where(valid, metrics.rates(main)["foreground_iou"], np.nan)
    return {
        "images": len(names),
        "images_without_valid_pixels": int((~valid).sum()),
        "valid_pixels": int(total.sum()),
        "foreground_pixels": int(total[0] + total[2]),
        "threshold": float(threshold),
        "model": metrics.summarize(main),
        "all_background": metrics.summarize(metrics.all_background(main)),
        "sweep": sweep,
        "best_threshold": best["threshold"],
        "best_threshold_iou": best["foreground_iou"],
        "image_ious": ious,
    }


def _class_results(matrices, names, classes):
    """Report's measured fields for K >= 2 from the confusion matrices [N, C, C] of N
    images (classes: their C names), and image_ious [N] (mean IoU; NaN: not ranked)."""
    total = matrices.sum(axis=0)
    model = metrics.class_metrics(total, classes)
    baseline = metrics.class_metrics(metrics.class_all_background(total), classes)
    return {
        "images": len(names),
        "images_without_valid_pixels": int((matrices.sum(axis=(1, 2)) == 0).sum()),
        "valid_pixels": int(total.sum()),
        "foreground_pixels": int(total[1:].sum()),
        "threshold": None,
        "model": {k: getattr(model, k) for k in metrics.MEANS},
        "all_background": {k: getattr(baseline, k) for k in metrics.MEANS},
        "sweep": [],
        "best_threshold": None,
        "best_threshold_iou": None,
        "classes": tuple(classes),
        "per_class": model.per_class(),
        "all_background_per_class": baseline.per_class(),
        "confusion_matrix": [list(row) for row in model.confusion],
        "image_ious": metrics.mean_ious(matrices),
    }


def _listing(ious, names, n_list):
    """worst_images and best_images: the max(n_list, 5) lowest- and highest-IoU images of
    those with an IoU (not NaN), [{"filename", "image_id", "iou"}]."""
    order = [i for i in np.argsort(ious, kind="stable") if not np.isnan(ious[i])]
    n_list = max(n_list, 5)

    def listing(indices):
        return [{"filename": names[i][0], "image_id": names[i][1],
                 "iou": float(ious[i])} for i in indices]

    return {"worst_images": listing(order[:n_list]), "best_images": listing(order[::-1][:n_list])}


def _write_tensorboard(log_dir, counts, result):
    """At the checkpoint's step: log_dir/model the PR curve over all valid pixels and the
    table's scalars, log_dir/baseline the all-background ones under the same eval/ tags,
    so TensorBoard draws the two as lines of one chart (as train.py's val/ and baseline/).
    K >= 2: the per-class scalars and the confusion_matrix image instead of the PR curve."""
    if result.classes:
        _write_class_tensorboard(log_dir, counts.sum(axis=0), result)
        return
    tp, fp, fn, tn = counts[:, : len(PR_THRESHOLDS)].sum(axis=0).T
    # TensorBoard's own convention for 0/0: 0, as its streaming PR op computes it.
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    step = result.global_step
    model = {**result.model, "best_threshold": result.best_threshold}
    with tf.Graph().as_default():
        for name, scalars in (("model", model), ("baseline", result.all_background)):
            writer = v1.summary.FileWriter(os.path.join(log_dir, name))
            if name == "model":
                writer.add_summary(pr_summary.raw_data_pb(
                    "foreground", true_positive_counts=tp, false_positive_counts=fp,
                    true_negative_counts=tn, false_negative_counts=fn, precision=precision,
                    recall=recall, num_thresholds=len(PR_THRESHOLDS),
                    description="Full-image foreground precision/recall over valid pixels"),
                    step)
            writer.add_summary(v1.Summary(value=[
                v1.Summary.Value(tag=f"eval/{k}", simple_value=v) for k, v in scalars.items()]),
                step)
            writer.close()


def _write_class_tensorboard(log_dir, total, result):
    model = metrics.class_metrics(total, result.classes)
    baseline = metrics.class_metrics(metrics.class_all_background(total), result.classes)
    with tf.Graph().as_default():
        for name, each in (("model", model), ("baseline", baseline)):
            writer = v1.summary.FileWriter(os.path.join(log_dir, name))
            values = [v1.Summary.Value(tag=f"eval/{k}", simple_value=v)
                      for k, v in each.scalars().items()]
            if name == "model":
                values.append(summaries.image_value(
                    "eval/confusion_matrix", summaries.confusion_image(model.confusion)))
            writer.add_summary(v1.Summary(value=values), result.global_step)
            writer.close()


def _write_overlays(out_dir, keep, threshold, classes=()):
    """Write overlays into a fresh directory that replaces the old one when complete.
    K >= 2 (classes: the run's class names): predict.class_overlay of the class map."""
    written = []
    with errors.atomic_dir(out_dir) as tmp:
        os.makedirs(tmp)
        for kind, rank, iou, (image, truth, pred, filename) in keep.ranked():
            stem = os.path.splitext(os.path.basename(filename.decode(errors="replace")))[0]
            name = f"{kind}-{rank:02d}-iou{iou:.3f}-{stem}.png"
            if classes:  # the truth's outline: every class, the 255 pixels left out
                drawn = predict.class_overlay(image, pred, classes, (truth != records.BACKGROUND)
                                              & (truth != records.IGNORE))
            else:
                drawn = predict.overlay(image, pred >= threshold, truth == records.FOREGROUND)
            predict.write_png(os.path.join(tmp, name), drawn)
            written.append(os.path.join(out_dir, name))
    return written


def format_table(result):
    """The printed report: metrics vs. all-background, the sweep, the best threshold
    (K >= 2: format_class_table)."""
    if result.classes:
        return format_class_table(result)
    m, b = result.model, result.all_background
    fg = result.foreground_pixels / max(result.valid_pixels, 1)
    lines = [f"{result.images} images, {result.valid_pixels:,} valid pixels "
             f"({100 * fg:.1f}% foreground), {os.path.basename(result.checkpoint)}, "
             f"threshold {result.threshold:g}",
             f"{'':16}{'model':>8}{'all-background':>16}"]
    lines += [f"{label:16}{m[key]:8.4f}{b[key]:16.4f}" for key, label in NAMES.items()]
    lines.append(f"{'threshold':>10}{'precision':>11}{'recall':>8}{'IoU':>8}")
    lines += [f"{r['threshold']:10.2f}{r['precision']:11.4f}{r['recall']:8.4f}"
              f"{r['foreground_iou']:8.4f}" for r in result.sweep]
    lines.append(f"best threshold {result.best_threshold:.2f} "
                 f"(IoU {result.best_threshold_iou:.4f})")
    return "\n".join(lines)


def _cell(value, width, digits=4):
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def format_class_table(result):
    """The printed K >= 2 report: per-class table, means vs. all-background, confusion."""
    fg = result.foreground_pixels / max(result.valid_pixels, 1)
    width = max(12, *(len(n) + 2 for n in result.classes))
    lines = [f"{result.images} images, {result.valid_pixels:,} valid pixels "
             f"({100 * fg:.1f}% of the classes), {os.path.basename(result.checkpoint)}, "
             "decision argmax",
             f"{'class':{width}}{'IoU':>8}{'Dice':>8}{'precision':>11}{'recall':>8}"
             f"{'pixels':>10}{'all-bg IoU':>12}"]
    for row, base in zip(result.per_class, result.all_background_per_class):
        lines.append(f"{row['class']:{width}}{_cell(row['iou'], 8)}{_cell(row['dice'], 8)}"
                     f"{_cell(row['precision'], 11)}{_cell(row['recall'], 8)}"
                     f"{row['truth_pixels']:10d}{_cell(base['iou'], 12)}")
    lines.append(f"{'':28}{'model':>8}{'all-background':>16}")
    for key, label in (("mean_iou", "mean IoU (classes)"),
                       ("mean_iou_with_background", "mean IoU (with background)"),
                       ("pixel_accuracy", "pixel accuracy")):
        lines.append(f"{label:28}{_cell(result.model[key], 8)}"
                     f"{_cell(result.all_background[key], 16)}")
    lines.append("confusion matrix (valid pixels; rows: truth, columns: predicted)")
    lines.append(f"{'':{width}}" + "".join(f"{n:>{width}}" for n in result.classes))
    for name, row in zip(result.classes, result.confusion_matrix):
        lines.append(f"{name:{width}}" + "".join(f"{v:{width}d}" for v in row))
    if any(row[k] is None for row in result.per_class for k in metrics.CLASS_RATIOS):
        lines.append("n/a: a class neither in the truth nor predicted has no score and is "
                     "left out of the means")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Full-image metrics, threshold sweep and PR curve for a trained run.")
    cli.add_run_flags(parser, "threshold for the main table (default: %(default)s)", 0.5)
    parser.add_argument("--records", help="glob of record shards (default: the run's "
                        "val_records); quote it")
    parser.add_argument("--save-overlays", type=cli.non_negative_int, default=0, metavar="N",
                        help="write overlays of the N worst and N best images by IoU")
    parser.add_argument("--adopt-threshold", action=argparse.BooleanOptionalAction,
                        help="make the best threshold the run's default for predict.py and "
                        "export.py (default: only when evaluating the run's val_records with "
                        "its default checkpoint)")
    cli.add_max_pixels_flag(parser, records.DEFAULT_MAX_PIXELS,
                            "refuse a record whose image is larger than this many pixels")
    parser.add_argument("--flip-test", action="store_true", help="test-time flip: average "
                        "each image's probabilities with its left-right mirror's (2x the time)")
    args = parser.parse_args(argv)
    result = evaluate(args.run_dir, args.records, args.checkpoint, args.threshold,
                      args.batch_size, args.save_overlays, progress=not args.no_progress,
                      adopt=args.adopt_threshold, max_pixels=args.max_pixels,
                      flip_test=args.flip_test)
    print(format_table(result))
    print(f"wrote {result.report} and TensorBoard {os.path.splitext(result.report)[0]}")
    if result.classes:
        pass  # the argmax decides: no threshold to adopt
    elif result.adopted_threshold:
        print(f"adopted threshold {result.best_threshold:.2f} ({result.adoption_reason}) "
              f"into {rundir.threshold_path(args.run_dir)}: predict.py and "
              "export.py now default to it")
    else:
        print(f"threshold {result.best_threshold:.2f} not adopted "
              f"({result.adoption_reason}): predict.py and export.py keep the run's "
              "threshold; pass --adopt-threshold to adopt it")
    if result.overlays:
        print(f"overlays in {os.path.dirname(result.overlays[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
