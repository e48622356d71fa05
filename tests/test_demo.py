"""The demo pipeline end to end on a tiny model: convert (or generate), train, score, resume."""

import dataclasses
import glob
import json
import math
import os
import types

import pytest

import demo
from utils import cli

TINY = dict(depth=1, base_filters=4, input_size=44, batch_size=2, epochs=2, val_every=1,
            log_every=1)


def test_demo_end_to_end_and_rerun_reuses_everything(tmp_path, caplog):
    caplog.set_level("INFO")
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo"
    first = demo.run("drawn", str(data_dir), str(run_dir), num_train=6, num_val=3, **TINY)

    shards = sorted(glob.glob(str(data_dir / "demo-train2017-*.tfrecord")))
    stats = {split: json.loads((data_dir / f"demo-{split}-stats.json").read_text())
             for split in ("train2017", "val2017")}
    # Cat-free images are kept as negatives: every generated image is a record.
    assert shards and stats["train2017"]["images"] == 6 and stats["val2017"]["images"] == 3
    steps = 2 * math.ceil(6 / 2)
    trained = first.training
    assert trained.step == steps and trained.epoch == 2 and trained.interrupted is None

    # Dataset-level metrics are consistent with one confusion matrix...
    iou = trained.val.model["foreground_iou"]
    assert 0.0 <= iou <= 1.0 and trained.val.baseline["foreground_iou"] == 0.0
    assert trained.val.model["dice"] == pytest.approx(2 * iou / (1 + iou), abs=1e-9)
    # ...taken over whole validation images: predicting background is right on exactly
    # the background share of the valid pixels the converter counted.
    fg, ignore = stats["val2017"]["foreground_fraction"], stats["val2017"]["ignore_fraction"]
    assert trained.val.baseline["pixel_accuracy"] == pytest.approx((1 - fg - ignore) / (1 - ignore),
                                                           abs=1e-6)
    text = demo.report(first, str(run_dir))
    assert f"val foreground IoU {iou:.3f} (all-background baseline 0.000)" in text
    assert os.path.exists(run_dir / "config.json") and os.listdir(run_dir / "best")

    # Re-running with one more epoch reuses the data and resumes the run.
    mtimes = {p: os.path.getmtime(p) for p in glob.glob(str(data_dir / "**"), recursive=True)}
    caplog.clear()
    second = demo.run("drawn", str(data_dir), str(run_dir), num_train=6, num_val=3,
                      **{**TINY, "epochs": 3})
    assert "reusing the demo dataset" in caplog.text and "reusing the records" in caplog.text
    assert f"resuming from {run_dir}" in caplog.text
    assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
    assert second.training.step == steps + 3 and second.training.epoch == 3


def test_demo_flags_are_checked(capsys):
    assert cli.run_main(demo.main, ["--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert cli.run_main(demo.main, ["--minutes", "-5"]) == 2
    assert "--minutes" in capsys.readouterr().err


def test_demo_minutes_reach_training_and_lift_the_epoch_limit(monkeypatch):
    calls, configs = [], []
    monkeypatch.setattr(demo, "prepare_pets", lambda *args: ("t-*", "v-*"))
    monkeypatch.setattr(demo.train, "train",
                        lambda cfg: configs.append(cfg) or types.SimpleNamespace(
                            interrupted="SIGINT"))
    monkeypatch.setattr(demo, "report", lambda result, run_dir: "")
    real_run = demo.run

    def run(*args, **training):
        calls.append(training)
        result = real_run(*args, **training)  # trains (the fake above) and is interrupted
        return dataclasses.replace(result, training=types.SimpleNamespace(interrupted=None))

    monkeypatch.setattr(demo, "run", run)
    for argv in (["--minutes", "15"], ["--minutes", "15", "--epochs", "40"], []):
        assert demo.main(argv) == 0
    assert calls == [{"minutes": 15.0}, {"minutes": 15.0, "epochs": 40}, {"minutes": 0.0}]
    assert [(c.minutes, c.epochs) for c in configs] == [(15.0, 0), (15.0, 40),
                                                        (0.0, demo.PETS_TRAINING["epochs"])]
    assert {c.lr_schedule for c in configs} == {"cosine"}  # what the budget fits


def test_pets_demo_trains_on_the_embedded_photos_and_scores_held_out_ones(tmp_path, caplog):
    caplog.set_level("INFO")
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo"
    result = demo.run("pets", str(data_dir), str(run_dir), long_side=32, **TINY)

    stats = {split: json.loads((data_dir / f"pets_cat-{split}-stats.json").read_text())
             for split in demo.PETS_SPLITS}
    # The sample's fixed split: 150 cats + 75 dogs to train on, 50 + 25 held out.
    assert (stats["trainval"]["positive_images"], stats["trainval"]["negative_images"]) \
        == (150, 75)
    assert (stats["test"]["positive_images"], stats["test"]["negative_images"]) == (50, 25)
    assert result.training.step == 2 * math.ceil(225 / 2)

    # The score is evaluate.py's on the 75 held-out photos at full size, threshold 0.5,
    # of the last checkpoint, and it adopts no threshold.
    evaluation = result.evaluation
    assert evaluation.images == 75 and evaluation.threshold == 0.5
    assert evaluation.checkpoint == result.training.checkpoint
    assert evaluation.adopted_threshold is False
    assert not os.path.exists(run_dir / "threshold.json")
    fg, ignore = stats["test"]["foreground_fraction"], stats["test"]["ignore_fraction"]
    assert evaluation.all_background["pixel_accuracy"] == pytest.approx(
        (1 - fg - ignore) / (1 - ignore), abs=1e-6)
    iou = evaluation.model["foreground_iou"]
    text = demo.report(result, str(run_dir))
    assert (f"foreground IoU {iou:.3f} (all-background baseline 0.000)" in text
            and "on 75 held-out photos, full size" in text)
    assert ("note: IoU below the demo's 0.7 goal" in text) == (iou < demo.TARGET_IOU)

    caplog.clear()  # a second run reuses the records
    demo.run("pets", str(data_dir), str(run_dir), long_side=32, **TINY)
    assert "reusing the records" in caplog.text and "converting" not in caplog.text
