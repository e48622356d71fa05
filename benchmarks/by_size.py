"""Where a run loses its IoU: held-out photos binned by how much of each is cat.

    python -m benchmarks.by_size --run-dir runs/base --checkpoint runs/base \
        --records 'data/scenes-val-*' [--threshold 0.5] [--output by_size.json]

The quality benchmark's IoU pools every pixel of a set, so large cats weigh most and a
missed small cat barely shows. This splits the photos by their foreground fraction (the
share of a photo's valid pixels that is cat; BINS) and prints, per bin: the photos, their
pooled IoU at the threshold (the model's, as evaluate.py scores it), the bin's shares of
the set's missed (false-negative) and false (false-positive) pixels, and the scale
ceiling: the pooled IoU of the true mask itself, shrunk to the run's long side as the
network sees its photo (area averaging), enlarged back bilinearly and cut at 0.5, as
tiling.probability_map does with the network's map. That is what a network exactly right
at its scale would score: the part of the loss that no training at that scale can win.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import dataclasses
import sys

import numpy as np
import tensorflow as tf

import evaluate
from core import metrics, rundir
from datasets import pipeline, records
from utils import cli, errors

# Foreground-fraction edges: a bin holds the photos with low < fraction <= high; photos
# with no cat pixel (negatives) get a bin of their own, (0, 0].
BINS = (0.0, 0.02, 0.05, 0.15, 0.40, 1.0)


@dataclasses.dataclass(frozen=True)
class Bin:
    low: float  # foreground fraction in (low, high]; low == high == 0: photos without a cat
    high: float
    photos: int
    iou: float | None  # pooled over the bin's pixels; None without a cat pixel
    ceiling_iou: float | None  # the true masks' round trip through the run's scale
    missed_share: float  # of the whole set's false-negative pixels (the bins sum to 1)
    false_share: float  # of its false-positive pixels


def _iou(counts):
    """metrics' foreground IoU of (tp, fp, fn, tn), None where there is no cat to find."""
    return metrics.ratios(counts)["foreground_iou"] if counts[0] + counts[2] else None


def _share(part, whole):
    return float(part / whole) if whole else 0.0


def bins_of(model, ceiling, edges=BINS):
    """[N, 4] int (tp, fp, fn, tn) of the model and of the scale ceiling, one row per photo
    in the same order -> [Bin], the negatives' first when there are any, then one per
    edge pair that holds a photo. Photos without a valid pixel are in no bin."""
    model, ceiling = np.asarray(model, np.int64), np.asarray(ceiling, np.int64)
    valid = model.sum(axis=1)
    fraction = np.where(valid > 0, (model[:, 0] + model[:, 2]) / np.maximum(valid, 1), 0.0)
    ranges = [(0.0, 0.0, (valid > 0) & (fraction == 0))] + [
        (low, high, (fraction > low) & (fraction <= high)) for low, high in zip(edges, edges[1:])]
    total = model.sum(axis=0)
    out = []
    for low, high, chosen in ranges:
        if not chosen.any():
            continue
        counts = model[chosen].sum(axis=0)
        out.append(Bin(low, high, int(chosen.sum()), _iou(counts),
                       _iou(ceiling[chosen].sum(axis=0)), _share(counts[2], total[2]),
                       _share(counts[1], total[1])))
    return out


def ceiling_counts(files, long_side, threshold=0.5):
    """[N, 4] int64: each record's true mask shrunk to long_side (0: the photo as stored),
    enlarged back and cut at threshold, counted against itself (metrics.confusion)."""
    out = []
    for path in files:
        for item in tf.data.TFRecordDataset(path).map(pipeline.decode_record):
            truth = item["mask"]  # uint8 [H, W, 1]
            soft = tf.cast(truth == records.FOREGROUND, tf.float32)
            if long_side:
                shape = tf.shape(truth)[:2]
                small = tf.image.resize(soft, pipeline.scaled_size(shape, long_side), "area")
                soft = tf.image.resize(small, shape, "bilinear")
            out.append(metrics.confusion(soft.numpy()[..., 0], truth.numpy()[..., 0],
                                         [threshold])[0])
    return np.array(out, np.int64).reshape(-1, 4)


def by_size(run_dir, records_pattern, checkpoint=None, threshold=0.5, batch_size=4):
    """[Bin] of run_dir's checkpoint (evaluate.py's default when None) on the records."""
    cfg = rundir.load_config(run_dir)
    if cfg.num_outputs > 1:
        raise cli.UsageError(f"{run_dir} has several classes: this splits the foreground of a "
                             "run of one class; pass such a run")
    files = pipeline.list_records(records_pattern)
    model, _, _ = evaluate.score_images(files, records_pattern, cfg,
                                        rundir.resolve(run_dir, checkpoint), [threshold],
                                        batch_size, 0, False)
    return bins_of(np.stack(model)[:, 0], ceiling_counts(files, cfg.long_side, threshold))


def _cell(value):
    return "-" if value is None else f"{value:.3f}"


def format_table(bins):
    lines = ["cat share of photo   photos   IoU  ceiling  missed  false",
             "------------------   ------  -----  -------  ------  -----"]
    for b in bins:
        span = "no cat" if b.high == 0 else f"{b.low:.0%} - {b.high:.0%}"
        lines.append(f"{span:<18}   {b.photos:>6}  {_cell(b.iou):>5}  {_cell(b.ceiling_iou):>7}"
                     f"  {b.missed_share:>6.1%}  {b.false_share:>5.1%}")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.ArgumentParser(
        description="A run's pooled IoU and its scale ceiling per cat size.")
    cli.add_run_flags(parser, "probability threshold (default: %(default)s)", 0.5,
                      progress=False)
    parser.add_argument("--records", required=True, help="records to score; quote the glob")
    parser.add_argument("--output", help="also write the bins as JSON here")
    args = parser.parse_args(argv)
    bins = by_size(args.run_dir, args.records, args.checkpoint, args.threshold,
                   args.batch_size)
    print(format_table(bins))
    if args.output:
        errors.write_json(args.output, {"records": args.records, "threshold": args.threshold,
                                        "bins": [dataclasses.asdict(b) for b in bins]})
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
