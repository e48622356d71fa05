"""The dogs-as-a-class comparison: the cat IoU it reads, and its decision rule."""

import types

import pytest

from benchmarks import dogs_as_class


def _row(arm, seed, tune, test):
    return {"arm": arm, "seed": seed, "steps": 10, "seconds": 1.0, "tune_cat_iou": tune,
            "test_cat_iou": test}


def test_cat_iou_is_class_cat_of_a_class_report_and_foreground_iou_of_a_binary_one():
    binary = types.SimpleNamespace(classes=(), model={"foreground_iou": 0.25})
    three = types.SimpleNamespace(classes=("background", "dog", "cat"), model={},
                                  per_class=[{"class": "background", "iou": 0.9},
                                             {"class": "dog", "iou": 0.1},
                                             {"class": "cat", "iou": 0.4}])
    assert dogs_as_class.cat_iou(binary) == 0.25 and dogs_as_class.cat_iou(three) == 0.4


def test_class_is_adopted_only_when_it_wins_on_tune_by_more_than_the_seed_noise():
    negatives = [_row("negatives", s, t, 0.5) for s, t in enumerate((0.50, 0.52, 0.54))]
    close = [_row("class", s, t, 0.9) for s, t in enumerate((0.52, 0.53, 0.54))]
    s = dogs_as_class.summarise(negatives + close)
    assert s.means["negatives"]["tune"] == pytest.approx(0.52)
    assert s.stds["negatives"]["tune"] == pytest.approx(0.02)  # the larger std: the noise
    assert (s.noise, s.margin) == (pytest.approx(0.02), pytest.approx(0.01))
    assert not s.adopt  # a win under the noise; and the test split never decides
    far = [_row("class", s, t, 0.1) for s, t in enumerate((0.56, 0.57, 0.58))]
    s = dogs_as_class.summarise(negatives + far)
    assert s.margin == pytest.approx(0.05) and s.adopt
    assert "win by more than the noise: adopt them" in dogs_as_class.table(negatives + far, "x")
    assert dogs_as_class.summarise(negatives) is None  # one arm decides nothing
