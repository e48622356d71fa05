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


# ---------------------------------------------------------------- several classes (K >= 2)

# 4 classes: background, 1, 2, and 3 absent from truth and prediction; one ignored pixel.
TRUTH = np.array([[0, 0, 1, 1, 2], [2, X, 0, 1, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 1, 0], [1, 2, 0, 0, 0]], np.uint8)
MATRIX = [[3, 1, 0, 0],   # true background: 3 right, 1 taken for class 1
          [1, 2, 0, 0],   # class 1: 2 right, 1 missed
          [1, 1, 0, 0],   # class 2: never found
          [0, 0, 0, 0]]   # class 3: nowhere
NAMES = ("background", "cat", "dog", "bird")


def test_confusion_matrix_counts_valid_pixels_rows_truth_columns_prediction():
    m = metrics.confusion_matrix(PRED, TRUTH, 4)
    assert m.dtype == np.int64 and m.tolist() == MATRIX
    found = PRED.copy()
    found[1, 0] = 2  # the dog pixel taken for a cat is found after all
    assert metrics.confusion_matrix(found, TRUTH, 4)[2].tolist() == [1, 0, 1, 0]


def test_class_confusion_op_is_the_argmax_and_equals_the_numpy_count():
    logits = np.eye(4, dtype=np.float32)[PRED] * 3.0 - 1.0  # [2, 5, 4], argmax = PRED
    logits[TRUTH == X] = [9.0, 0, 0, 0]  # an ignored pixel counts nowhere, whatever it says
    m = metrics.class_confusion(tf.constant(logits[None]), tf.constant(TRUTH[None, ..., None]))
    assert m.numpy().tolist() == MATRIX


def test_class_metrics_exact_values_and_the_absent_class():
    m = metrics.class_metrics(MATRIX, NAMES)
    # IoU tp / (tp + fp + fn): background 3 / (3 + 2 + 1), cat 2 / (2 + 2 + 1), dog 0 / 2.
    assert m.iou == pytest.approx((0.5, 0.4, 0.0, None))
    assert m.iou[3] is None  # 0/0: no score ...
    assert m.mean_iou == pytest.approx((0.4 + 0.0) / 2)  # ... and left out of the mean
    assert m.mean_iou_with_background == pytest.approx((0.5 + 0.4 + 0.0) / 3)
    assert m.dice == pytest.approx((6 / 9, 4 / 7, 0.0, None))
    assert m.precision == pytest.approx((3 / 5, 2 / 4, 0.0, None))  # dog: nothing predicted
    assert m.recall == pytest.approx((3 / 4, 2 / 3, 0.0, None))
    assert m.pixel_accuracy == pytest.approx(5 / 9)
    assert m.truth_pixels == (4, 3, 2, 0) and m.predicted_pixels == (5, 4, 0, 0)
    assert m.confusion == tuple(tuple(row) for row in MATRIX)
    scalars = m.scalars()
    assert scalars["mean_iou"] == pytest.approx(0.2) and scalars["iou/cat"] == pytest.approx(0.4)
    assert "iou/bird" not in scalars and "recall/bird" not in scalars  # no chart point for 0/0
    assert m.per_class()[2] == {"class": "dog", "index": 2, "iou": 0.0, "dice": 0.0,
                                "precision": 0.0, "recall": 0.0, "truth_pixels": 2,
                                "predicted_pixels": 0}


def test_all_background_baseline_of_a_confusion_matrix():
    base = metrics.class_all_background(MATRIX)
    assert base.tolist() == [[4, 0, 0, 0], [3, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    m = metrics.class_metrics(base, NAMES)
    assert m.iou == pytest.approx((4 / 9, 0.0, 0.0, None))
    assert m.mean_iou == 0.0 and m.pixel_accuracy == pytest.approx(4 / 9)
    assert m.mean_iou_with_background == pytest.approx(4 / 27)


def test_one_vs_rest_is_the_binary_count_of_one_class():
    truth = np.array([[0, 1, 2, 2], [1, 1, 0, 255]], np.uint8)
    pred = np.array([[1, 1, 1, 2], [0, 1, 2, 2]], np.uint8)
    matrix = metrics.confusion_matrix(pred, truth, 3)
    # class 1 as the foreground: the dog pixel predicted cat is a false positive
    assert metrics.one_vs_rest(matrix, 1) == [2, 2, 1, 2]
    binary = metrics.confusion(np.where(pred == 1, 1.0, 0.0), np.where(
        truth == 255, 255, truth == 1).astype(np.uint8), [0.5])
    assert metrics.one_vs_rest(matrix, 1) == [int(c) for c in np.ravel(binary)]
    assert metrics.one_vs_rest(matrix, 2) == [1, 1, 1, 4]  # the ignored pixel counts nowhere


def test_a_class_in_only_the_truth_or_only_the_prediction_scores_zero():
    only_predicted = metrics.class_rates([[5, 2], [0, 0]])
    only_true = metrics.class_rates([[5, 0], [3, 0]])
    for r in (only_predicted, only_true):
        assert [float(r[k][1]) for k in metrics.CLASS_RATIOS] == [0.0, 0.0, 0.0, 0.0]
    # Nothing of any class anywhere: the means have nothing to average.
    empty = metrics.class_metrics([[7, 0], [0, 0]], ("background", "cat"))
    assert empty.mean_iou is None and empty.mean_iou_with_background == 1.0
    assert metrics.class_metrics([[0, 0], [0, 0]], ("background", "cat")).pixel_accuracy is None


def test_mean_ious_per_image():
    per_image = np.stack([MATRIX, metrics.class_all_background(MATRIX),
                          np.diag([4, 0, 0, 0])])
    ious = metrics.mean_ious(per_image)
    assert ious[:2] == pytest.approx([0.2, 0.0]) and np.isnan(ious[2])
