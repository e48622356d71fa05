"""Segmentation metrics: confusion counts over valid pixels and the ratios made from them.

Every count is (tp, fp, fn, tn) over the valid pixels (mask != 255); every ratio is
dataset-level when the counts are summed first. One set of keys, RATIOS, serves
training's validation, evaluate.py's reports, demo.py and the TensorBoard tags:

    foreground_iou   tp / (tp + fp + fn)
    dice             2 tp / (2 tp + fp + fn)
    precision        tp / (tp + fp)
    recall           tp / (tp + fn)
    pixel_accuracy   (tp + tn) / all

A ratio with nothing to find and nothing found (0/0) counts as perfect, so an
empty set does not read as a failure; precision of an empty prediction where
there was something to find (and recall of a prediction where there was
nothing) is 0.

Several classes (K >= 2; the network's C = K + 1 outputs are background and the classes)
are scored from the confusion matrix [C, C] over valid pixels: row = true class, column =
predicted class (the argmax), entry = pixels. For each class c, tp = M[c, c], fp = its
column's other entries, fn = its row's, and CLASS_RATIOS are the ratios above with these:

    iou, dice, precision, recall   per class, background included (index 0)
    mean_iou                       mean IoU over the K chosen classes (the headline, mIoU)
    mean_iou_with_background       mean IoU over all C
    pixel_accuracy                 trace / all valid pixels

The 0/0 rule for several classes: a class absent from both the truth and the prediction
has no score at all, NaN here (None in JSON), and is left out of the means, as VOC and
Cityscapes score mIoU; counting it as perfect, as K = 1 does, would lift the mean of a
small set with classes it never shows. A class present in only one of the two scores 0
where its denominator is 0 (precision with nothing predicted, recall with nothing to
find), as for K = 1. The means are NaN (None) only when no class is present at all.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from datasets import records

RATIOS = ("foreground_iou", "dice", "precision", "recall", "pixel_accuracy")
CLASS_RATIOS = ("iou", "dice", "precision", "recall")  # per class, for K >= 2
MEANS = ("mean_iou", "mean_iou_with_background", "pixel_accuracy")  # K >= 2 headline values


def confusion_counts(logits, masks):
    """[4] int64 tensor (tp, fp, fn, tn) over valid pixels at probability 0.5 (logit 0).

    logits: [B, h, w, 1] float; masks: [B, h, w, 1] uint8 (0, 1, 255 = ignore).
    """
    valid = tf.not_equal(masks, records.IGNORE)
    truth = tf.equal(masks, records.FOREGROUND)
    pred = logits > 0.0

    def count(x):
        return tf.reduce_sum(tf.cast(x & valid, tf.int64))

    return tf.stack([count(pred & truth), count(pred & ~truth),
                     count(~pred & truth), count(~pred & ~truth)])


def confusion(prob, truth, thresholds):
    """int64 [T, 4] (tp, fp, fn, tn) over valid pixels, predicting p >= each threshold.

    prob: float [H, W]; truth: uint8 [H, W] of records.BACKGROUND / FOREGROUND /
    IGNORE (IGNORE pixels are not counted).
    """
    prob = np.asarray(prob)
    valid = truth != records.IGNORE
    fg = valid & (truth == records.FOREGROUND)
    pos, neg = np.sort(prob[fg]), np.sort(prob[valid & ~fg])
    # Compare in prob's dtype, as predict.py's `prob >= threshold` does.
    t = np.asarray(thresholds, dtype=prob.dtype)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return np.stack([tp, fp, pos.size - tp, neg.size - fp], axis=-1).astype(np.int64)


def _ratio(num, den, empty):
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.maximum(den, 1), empty)


def rates(counts):
    """The RATIOS of [..., 4] (tp, fp, fn, tn) counts, as float arrays of shape [...]."""
    tp, fp, fn, tn = np.moveaxis(np.asarray(counts), -1, 0)
    return {
        "foreground_iou": _ratio(tp, tp + fp + fn, 1.0),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, np.where(fn == 0, 1.0, 0.0)),
        "recall": _ratio(tp, tp + fn, np.where(fp == 0, 1.0, 0.0)),
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def ratios(counts):
    """The RATIOS of one [4] count vector, as Python floats."""
    return {k: float(v) for k, v in rates(counts).items()}


def all_background(counts):
    """Counts [..., 4] of the prediction 'background everywhere' on the same pixels."""
    tp, fp, fn, tn = np.moveaxis(np.asarray(counts), -1, 0)
    return np.stack([0 * tp, 0 * fp, tp + fn, fp + tn], axis=-1)


def summarize(per_image):
    """The metrics table row for per-image counts int [N, 4].

    Dataset-level ratios of the summed counts, plus the mean per-image IoU over
    images that have any valid pixel.
    """
    per_image = np.asarray(per_image, np.int64).reshape(-1, 4)
    out = ratios(per_image.sum(axis=0))
    has_valid = per_image.sum(axis=1) > 0
    ious = rates(per_image[has_valid])["foreground_iou"]
    out["mean_image_iou"] = float(ious.mean()) if ious.size else 1.0
    return out


# ---------------------------------------------------------------- several classes (K >= 2)


def class_confusion(logits, masks):
    """int64 [C, C] tensor: valid pixels of true class i (row) predicted as j (column, the
    argmax). logits: [B, h, w, C] float; masks: [B, h, w, 1] uint8 (0..C-1, 255 = ignore)."""
    index = masks[..., 0]
    valid = tf.not_equal(index, records.IGNORE)
    truth = tf.boolean_mask(tf.cast(index, tf.int64), valid)
    pred = tf.boolean_mask(tf.argmax(logits, axis=-1), valid)
    return tf.math.confusion_matrix(truth, pred, num_classes=logits.shape[-1], dtype=tf.int64)


def confusion_matrix(pred, truth, num_classes):
    """int64 [C, C] of class maps pred and truth (uint8 [H, W]; truth's 255 not counted),
    as class_confusion counts them."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    valid = truth != records.IGNORE
    cells = truth[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(cells, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def class_rates(matrix):
    """CLASS_RATIOS of confusion matrices [..., C, C] as float arrays [..., C]; NaN for a
    class absent from truth and prediction (the module's 0/0 rule)."""
    m = np.asarray(matrix, np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    truth, pred = m.sum(axis=-1), m.sum(axis=-2)
    fp, fn = pred - tp, truth - tp
    absent = truth + pred == 0

    def ratio(num, den):
        return np.where(absent, np.nan, _ratio(num, den, 0.0))

    return {"iou": ratio(tp, tp + fp + fn), "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def one_vs_rest(matrix, k):
    """[tp, fp, fn, tn] (Python ints) of class k against all the others, from one confusion
    matrix [C, C]: the K = 1 counts of a mask whose foreground is class k."""
    m = np.asarray(matrix, np.int64)
    tp = int(m[k, k])
    fp, fn = int(m[:, k].sum()) - tp, int(m[k, :].sum()) - tp
    return [tp, fp, fn, int(m.sum()) - tp - fp - fn]


def _nanmean(x, axis=-1):
    """Mean over the non-NaN entries; NaN where there are none (without numpy's warning)."""
    x = np.asarray(x, np.float64)
    n = (~np.isnan(x)).sum(axis=axis)
    total = np.where(np.isnan(x), 0.0, x).sum(axis=axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def mean_ious(matrix):
    """mIoU over the classes 1..K (background left out) of matrices [..., C, C] -> [...]."""
    return _nanmean(class_rates(matrix)["iou"][..., 1:])


def class_all_background(matrix):
    """Confusion matrix [..., C, C] of the prediction 'background everywhere' on the same
    pixels: every row's pixels in column 0."""
    m = np.asarray(matrix)
    out = np.zeros_like(m)
    out[..., 0] = m.sum(axis=-1)
    return out


def _value(x):
    return None if np.isnan(x) else float(x)


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """The K >= 2 metrics of one confusion matrix; None where the 0/0 rule leaves no score."""

    names: tuple  # "background", then the run's classes in order: index = class value
    iou: tuple  # per class (float or None), in names' order; so are dice, precision, recall
    dice: tuple
    precision: tuple
    recall: tuple
    truth_pixels: tuple  # valid pixels of each true class
    predicted_pixels: tuple  # valid pixels predicted as each class
    mean_iou: float | None  # over the K classes
    mean_iou_with_background: float | None  # over all C
    pixel_accuracy: float | None  # None without valid pixels
    confusion: tuple  # [C][C] ints, row = truth, column = prediction

    def scalars(self):
        """{tag: float}: MEANS, then <ratio>/<class> for every class with a score (the
        TensorBoard tags and train.py's ValMetrics.model)."""
        out = {k: getattr(self, k) for k in MEANS}
        for key in CLASS_RATIOS:
            out.update({f"{key}/{name}": v for name, v in zip(self.names, getattr(self, key))})
        return {k: v for k, v in out.items() if v is not None}

    def per_class(self):
        """[{"class", "index", *CLASS_RATIOS, "truth_pixels", "predicted_pixels"}]: the table."""
        return [{"class": name, "index": i, **{k: getattr(self, k)[i] for k in CLASS_RATIOS},
                 "truth_pixels": self.truth_pixels[i],
                 "predicted_pixels": self.predicted_pixels[i]}
                for i, name in enumerate(self.names)]


def class_metrics(matrix, names):
    """ClassMetrics of one confusion matrix [C, C]; names: the C class names."""
    m = np.asarray(matrix, np.int64)
    if m.shape != (len(names), len(names)):
        raise ValueError(f"a {m.shape} confusion matrix for {len(names)} classes")
    r = class_rates(m)
    total = int(m.sum())
    return ClassMetrics(
        names=tuple(names), **{k: tuple(_value(v) for v in r[k]) for k in CLASS_RATIOS},
        truth_pixels=tuple(int(v) for v in m.sum(axis=1)),
        predicted_pixels=tuple(int(v) for v in m.sum(axis=0)),
        mean_iou=_value(_nanmean(r["iou"][1:])),
        mean_iou_with_background=_value(_nanmean(r["iou"])),
        pixel_accuracy=float(np.trace(m) / total) if total else None,
        confusion=tuple(tuple(int(v) for v in row) for row in m))
