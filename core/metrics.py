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
"""

import numpy as np
import tensorflow as tf

from datasets import records

RATIOS = ("foreground_iou", "dice", "precision", "recall", "pixel_accuracy")


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
