"""core/rundir.py: one step rule, latest/best/explicit resolution, and torn checkpoints passed
over by training and every inference tool alike; plus a run directory written by main 9695514
(tests/fixtures/run_9695514) that today's code still resumes, predicts from and exports."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from test_evaluate import make_images, write_records
from test_predict import make_run, write_image

import evaluate
import export
import predict
import train
import unet
from core import config, rundir
from datasets import guard
from utils import cli
from utils.cli import UserError

v1 = tf.compat.v1
# Written by main 9695514's own code: demo_data.py --num-train 4 --num-val 2, convert_coco.py
# (1 shard per split), then train.py --depth 2 --base-filters 2 --input-size 44 --batch-size 2
# --epochs 2 --checkpoint-every 2 --keep-checkpoints 2 --seed 1. Kept: config.json and the
# checkpoints (no `train_seconds` yet); left out: its TensorBoard events and the records.
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "run_9695514")
TORN = "is unreadable (torn by a crash?): trying an older one"


def tear(prefix):
    """Cut a checkpoint's data file short, as a crash in the middle of a save would."""
    for data_file in glob.glob(prefix + ".data-*"):
        with open(data_file, "r+b") as f:
            f.truncate(10)


@pytest.fixture
def two_checkpoints(tmp_path):
    """A run with readable model.ckpt-3 and model.ckpt-7 (other weights), both listed."""
    run = tmp_path / "run"
    make_run(run, seed=0, step=3)
    make_run(run, seed=1, step=7)
    paths = [str(run / f"{rundir.CKPT_PREFIX}-{s}") for s in (3, 7)]
    v1.train.update_checkpoint_state(str(run), paths[1], paths)
    return run, paths


def test_step_has_one_rule():
    assert rundir.step("logs/a-b/model.ckpt-120") == 120
    assert rundir.step("logs/run/best/model.ckpt-0") == 0
    assert rundir.step("logs/run-2/model.ckpt") == 0  # no step: 0, in sorting too


def test_latest_best_and_explicit(two_checkpoints):
    run, (older, newer) = two_checkpoints
    assert rundir.latest(str(run)) == newer
    assert rundir.resolve(str(run)) == newer  # no best/: the latest
    for given in (older, older + ".index", older + ".data-00000-of-00001"):
        assert rundir.resolve(str(run), given) == older
    best = run / rundir.BEST_DIR
    best.mkdir()
    for name in glob.glob(older + ".*"):
        shutil.copy(name, best)
    v1.train.update_checkpoint_state(str(best), str(best / "model.ckpt-3"))
    assert rundir.resolve(str(run)) == str(best / "model.ckpt-3")
    assert rundir.resolve(str(run), str(run)) == newer  # a directory: its newest


def test_resolve_passes_over_a_torn_checkpoint_with_a_warning(two_checkpoints, caplog):
    run, (older, newer) = two_checkpoints
    tear(newer)
    assert not rundir.readable(newer) and rundir.readable(older)
    assert rundir.resolve(str(run)) == older
    assert f"checkpoint {newer} {TORN}" in caplog.text
    assert rundir.restorable(str(run)) == older  # training picks the same
    tear(older)
    with pytest.raises(UserError, match="reads completely.*--checkpoint"):
        rundir.resolve(str(run))
    with pytest.raises(UserError, match="reads completely.*--run-name"):
        rundir.restorable(str(run))


def test_a_torn_best_checkpoint_falls_back_to_the_runs_newest(two_checkpoints, caplog):
    run, (_, newer) = two_checkpoints
    best = run / rundir.BEST_DIR
    best.mkdir()
    for name in glob.glob(newer + ".*"):
        shutil.copy(name, best)
    v1.train.update_checkpoint_state(str(best), str(best / "model.ckpt-7"))
    tear(str(best / "model.ckpt-7"))
    assert rundir.resolve(str(run)) == newer
    assert TORN in caplog.text


def test_predict_and_evaluate_use_the_previous_readable_checkpoint(two_checkpoints, tmp_path,
                                                                     caplog):
    run, (older, newer) = two_checkpoints
    image = np.random.default_rng(0).integers(0, 256, [33, 47, 3], dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    masks = {}
    for name, checkpoint in (("older", older), ("default", None)):
        if checkpoint is None:
            tear(newer)
        out = tmp_path / name
        result = predict.predict(str(run), [str(tmp_path / "a.png")], str(out), checkpoint,
                                 threshold=0.5, progress=False)
        assert result["checkpoint"] == older
        masks[name] = (out / "a_mask.png").read_bytes()
    assert masks["default"] == masks["older"]
    assert f"checkpoint {newer} {TORN}" in caplog.text
    write_records(tmp_path / "val.tfrecord", make_images())
    result = evaluate.evaluate(str(run), str(tmp_path / "val.tfrecord"), progress=False)
    assert result.checkpoint == older and result.global_step == 3


def test_restore_refuses_another_network(two_checkpoints):
    run, (_, newer) = two_checkpoints
    cfg = rundir.load_config(str(run))
    with tf.Graph().as_default(), v1.Session() as sess:
        unet.unet(v1.placeholder(tf.float32, [1, 60, 60, 3]), False, depth=2, base_filters=8)
        with pytest.raises(UserError, match="does not match config.json.*base_filters 4"):
            rundir.restore(sess, newer, cfg)


# ------------------------------------------------- a run directory written by main 9695514


def make_records(tmp_path):
    """Tiny cat records made by today's samples.drawn and convert_coco.py: (train, val) globs."""
    import convert_coco
    from samples import drawn

    coco = str(tmp_path / "coco")
    drawn.generate(coco, 0, 4, 2)
    for split in drawn.SPLITS:
        convert_coco.convert(coco, split, ["cat"], str(tmp_path / "data" / "cat"), num_shards=1,
                             workers=1, progress=False)
    return tuple(str(tmp_path / "data" / f"cat-{split}-*.tfrecord") for split in drawn.SPLITS)


def test_a_run_dir_written_by_main_9695514_resumes_predicts_and_exports(tmp_path, caplog,
                                                                          capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    stored = json.loads((run / "config.json").read_text())
    assert "long_side" not in stored and "augment" not in stored  # older than both
    train_glob, val_glob = make_records(tmp_path)
    caplog.set_level("INFO")
    argv = ["--train-records", train_glob, "--val-records", val_glob, "--run-dir", str(run),
            "--depth", "2", "--base-filters", "2", "--input-size", "44", "--batch-size", "2",
            "--seed", "1", "--max-steps", "6", "--checkpoint-every", "2"]
    assert cli.run_main(train.main, argv) == 0
    assert f"resuming from {run / 'model.ckpt-4'} (step 4, " in caplog.text
    assert rundir.latest(str(run)) == str(run / "model.ckpt-6")

    image = np.random.default_rng(0).integers(0, 256, [40, 53, 3], dtype=np.uint8)
    write_image(tmp_path / "photo.png", image)
    for flag, checkpoint in (("--run", "model.ckpt-4"), ("--run-dir", "model.ckpt-6")):
        out = tmp_path / f"pred{flag}"
        assert cli.run_main(predict.main, [flag, str(run), str(tmp_path / "photo.png"), "--out",
                                           str(out), "--checkpoint", str(run / checkpoint),
                                           "--no-progress"]) == 0
        mask = tf.io.decode_png((out / "photo_mask.png").read_bytes()).numpy()
        assert mask.shape == (40, 53, 1) and set(np.unique(mask)) <= {0, 255}
    assert cli.run_main(export.main, ["--run", str(run), "--out", str(tmp_path / "model"),
                                      "--checkpoint", str(run / "model.ckpt-4")]) == 0
    info = json.loads((tmp_path / "model" / export.INFO_FILE).read_text())
    assert info["checkpoint"] == str(run / "model.ckpt-4") and info["config"]["depth"] == 2
    assert "wrote SavedModel" in capsys.readouterr().out


def test_the_fixture_is_small_and_complete():
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(FIXTURE, "**"), recursive=True)
             if os.path.isfile(p)]
    assert sum(sizes) < 200_000
    state = tf.train.get_checkpoint_state(FIXTURE)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == \
        ["model.ckpt-2", "model.ckpt-4"]


def test_rundir_builds_every_path_and_round_trips_threshold_json(tmp_path):
    run = str(tmp_path)
    assert rundir.checkpoint_prefix(run) == os.path.join(run, "model.ckpt")
    assert rundir.best_prefix(run) == os.path.join(run, "best", "model.ckpt")
    assert rundir.report_path(run, "eval") == os.path.join(run, rundir.EVAL_JSON)
    assert rundir.events_dir(run, "val") == os.path.join(run, "val")
    assert rundir.lock_path(run) == os.path.join(run, "train.lock")
    assert rundir.corrupt_records(run) == guard.SkipTo(os.path.join(run, "clean-records"),
                                                       os.path.join(run, "corrupt_records.json"))
    rundir.write_threshold(run, 0.35, 0.7, "data/x-*", os.path.join(run, "model.ckpt-12"),
                           "--adopt-threshold", rundir.report_path(run, "eval"))
    stored = json.loads(open(rundir.threshold_path(run)).read())
    assert stored == {"threshold": 0.35, "foreground_iou": 0.7, "records": "data/x-*",
                      "checkpoint": os.path.join(run, "model.ckpt-12"), "global_step": 12,
                      "reason": "--adopt-threshold", "report": rundir.EVAL_JSON}
    assert rundir.default_threshold(run) == (0.35, rundir.threshold_path(run))
    assert rundir.default_threshold(run, 0.6) == (0.6, "--threshold")


def test_a_trainings_hold_locks_saves_config_and_removes_a_run_dir_left_empty(tmp_path):
    cfg = config.RunConfig(run_dir=str(tmp_path / "new" / "run"))
    with pytest.raises(UserError, match="no records"):
        with rundir.training(cfg, chief=True) as run:
            assert os.listdir(cfg.run_dir) == ["train.lock"]  # the chief's lock, held
            raise UserError("no records")  # e.g. the glob matched nothing
    assert os.listdir(tmp_path) == []  # the run dir and the parent it made are gone
    with rundir.training(cfg, chief=True) as run:
        assert run.start(cfg) is None  # nothing to resume
    assert os.listdir(cfg.run_dir) == [rundir.RUN_CONFIG]  # the lock is gone with the hold
    assert rundir.load_config(cfg.run_dir) == cfg
    with rundir.training(cfg, chief=False) as run:  # another worker: no lock, no config.json
        assert os.listdir(cfg.run_dir) == [rundir.RUN_CONFIG]


def test_a_full_disk_while_training_is_one_line_naming_what_to_do(tmp_path):
    cfg = config.RunConfig(run_dir=str(tmp_path / "run"))
    with pytest.raises(UserError) as raised:
        with rundir.training(cfg, chief=True):
            raise OSError(28, "No space left on device", os.path.join(cfg.run_dir, "x"))
    assert str(raised.value) == (f"cannot write {cfg.run_dir}/x (no space left on the device): "
                                 "free space or fix permissions, then re-run the same command; "
                                 "it resumes from the last complete checkpoint")
