"""core/metrics.py: confusion counts and the ratios, one set of keys everywhere."""

import numpy as np
import pytest
import tensorflow as tf

from core import metrics
from datasets import records

F, B, X = records.FOREGROUND, records.BACKGROUND, records.IGNORE


def test_confusion_counts_valid_pixels_and_includes_the_threshold():
    prob = np.array([[0.9, 0.5, 0.2], [0.7, 0.1, 0.5]], np.float32)
    truth = np.array([[F, F, F], [B, B, X]], np.uint8)
    counts = metrics.confusion(prob, truth, [0.0, 0.5, 0.8, 1.0])
    np.testing.assert_array_equal(counts, [[3, 2, 0, 0],    # everything foreground
                                           [2, 1, 1, 1],    # 0.5 itself is foreground
                                           [1, 0, 2, 2],
                                           [0, 0, 3, 2]])
    assert counts.dtype == np.int64


def test_rates_exact_values_and_empty_conventions():
    r = metrics.rates(np.array([[6, 2, 4, 88], [0, 0, 0, 10], [0, 0, 5, 5], [0, 3, 0, 7]]))
    np.testing.assert_allclose(r["foreground_iou"], [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(r["dice"], [12 / 18, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(r["precision"], [0.75, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(r["recall"], [0.6, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(r["pixel_accuracy"], [0.94, 1.0, 0.5, 0.7])


def test_ratios_of_one_count_agree_with_rates_of_many():
    cases = [(6, 2, 4, 88), (0, 0, 0, 10), (0, 0, 5, 5), (0, 3, 0, 7)]
    many = metrics.rates(np.array(cases))
    for i, counts in enumerate(cases):
        one = metrics.ratios(np.array(counts))
        assert set(one) == set(metrics.RATIOS)
        for key in metrics.RATIOS:
            assert one[key] == pytest.approx(float(many[key][i]))


def test_summarize_dataset_level_vs_mean_image_iou():
    per_image = np.array([[1, 0, 1, 8],     # IoU 0.5
                          [9, 1, 0, 0],     # IoU 0.9
                          [0, 0, 0, 10],    # empty and predicted empty: 1.0
                          [0, 0, 0, 0]])    # all ignore: not in the mean
    s = metrics.summarize(per_image)
    assert s["foreground_iou"] == pytest.approx(10 / 12)
    assert s["mean_image_iou"] == pytest.approx((0.5 + 0.9 + 1.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(28 / 30)
    base = metrics.summarize(metrics.all_background(per_image))
    assert base == pytest.approx({"foreground_iou": 0.0, "dice": 0.0, "precision": 0.0,
                                  "recall": 0.0, "pixel_accuracy": 19 / 30,
                                  "mean_image_iou": (0 + 0 + 1) / 3})


def test_ratios_exact():
    m = metrics.ratios([6, 2, 4, 88])
    assert m == pytest.approx({"foreground_iou": 0.5, "dice": 12 / 18, "precision": 0.75,
                               "recall": 0.6, "pixel_accuracy": 0.94})
    # Nothing to find and nothing found is perfect; predicting nothing when there is
    # something to find scores zero.
    assert metrics.ratios([0, 0, 0, 5])["foreground_iou"] == 1.0
    assert metrics.ratios([0, 0, 3, 5]) == pytest.approx(
        {"foreground_iou": 0.0, "dice": 0.0, "precision": 0.0, "recall": 0.0,
         "pixel_accuracy": 5 / 8})


def test_confusion_counts_op_ignores_255():
    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0], np.float32).reshape(1, 1, 5, 1)
    masks = np.array([1, 0, 0, 1, 255], np.uint8).reshape(1, 1, 5, 1)
    counts = metrics.confusion_counts(tf.constant(logits), tf.constant(masks)).numpy()
    assert counts.tolist() == [1, 1, 1, 1]  # tp, fp, fn, tn; the 255 pixel is in none
