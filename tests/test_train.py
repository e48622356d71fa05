import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import train
from core import config, device, metrics, rundir, summaries
from datasets import records
from utils import cli
from utils.cli import UsageError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(depth=2, base_filters=8, input_size=92, batch_size=4, learning_rate=3e-3,
            log_every=2, image_summary_every=4, seed=1)  # 92 -> 52 output
# For tests about the loop's bookkeeping (steps, schedule, clock), not about learning.
TINIEST = dict(depth=1, base_filters=4, input_size=44)  # 44 -> 28 output
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def blobs(rng, h, w):
    """Orange disks (the class) and blue squares (a distractor) on grey noise."""
    image = rng.integers(60, 140, (h, w, 3)).astype(np.uint8)
    rows, cols = np.mgrid[:h, :w]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 3)):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(6, 14)
        disk = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
        image[disk], mask[disk] = (220, 150, 40), records.FOREGROUND
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 9)
    image[(abs(rows - cy) < r) & (abs(cols - cx) < r) & (mask == 0)] = (40, 80, 200)
    return image, mask[..., None]


def write_blobs(path, n, seed):
    rng = np.random.default_rng(seed)
    fg = total = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            h, w = (int(v) for v in rng.integers(40, 90, 2))
            image, mask = blobs(rng, h, w)
            fg, total = fg + int((mask == 1).sum()), total + mask.size
            writer.write(records.make_example(
                tf.io.encode_jpeg(image, quality=95).numpy(), "jpeg", h, w, i, f"{i}.jpg",
                tf.io.encode_png(mask).numpy()))
    return fg / total


def blob_sets(d, train, val):
    """A train set (with stats) of `train` blob records and a val set of `val` in dir d."""
    fraction = write_blobs(d / "blobs-train-00000-of-00001.tfrecord", train, 0)
    (d / "blobs-train-stats.json").write_text(json.dumps({"foreground_fraction": fraction,
                                                          "classes": ["ball"]}))
    write_blobs(d / "blobs-val-00000-of-00001.tfrecord", val, 1)
    return {"train_records": str(d / "blobs-train-*"), "val_records": str(d / "blobs-val-*"),
            "fraction": fraction}


@pytest.fixture(scope="module")
def blob_data(tmp_path_factory):
    return blob_sets(tmp_path_factory.mktemp("records"), 16, 6)


def make_cfg(blob_data, run_dir, **overrides):
    fields = dict(TINY, train_records=blob_data["train_records"],
                  val_records=blob_data["val_records"], run_dir=str(run_dir))
    return config.Config(**{**fields, **overrides})


def event_scalars(directory):
    """{tag: [(step, value), ...]} from the event files of one TensorBoard run."""
    found = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def scalars(directory):
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"images": 0})
    acc.Reload()
    return acc


# ------------------------------------------------------------- pure parts


def test_validation_metrics_include_all_background_baseline():
    m = train.validation_metrics(np.array([6, 2, 4, 88]), ce_sum=5.0, n_valid=100.0)
    assert m.model["foreground_iou"] == 0.5 and m.loss == 0.05
    assert m.baseline["foreground_iou"] == 0.0 and m.baseline["recall"] == 0.0
    assert m.baseline["pixel_accuracy"] == pytest.approx(0.90)  # (fp + tn) / all: truth is bg


# ------------------------------------------------------------- flags and errors


def run_cli(argv, capsys):
    code = cli.run_main(train.main, argv)
    return code, capsys.readouterr().err


def test_invalid_input_size_lists_nearest_valid(capsys):
    code, err = run_cli(["--input-size", "98", "--depth", "2"], capsys)
    assert code == 2
    assert "--input-size 98 is not valid for a depth-2 U-Net" in err
    assert "96 (below) and 100 (above)" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,code,message", [
    (["--pos-weight", "-1"], 2, "--pos-weight"),
    (["--pos-weight", "abc"], 2, "--pos-weight: must be a positive number or 'auto', got abc"),
    (["--lr-schedule", "linear"], 2, "invalid choice"),
    (["--run-name", "a/b"], 2, "--run-dir"),
    (["--minutes", "-1"], 2, "--minutes"),
    (["--minutes", "inf"], 2, "--minutes"),
    (["--minutes", "5", "--strategy", "multi-worker"], 2, "--minutes does not work"),
    (["--long-side", "-1"], 2, "--long-side: must be >= 0, got -1"),
    (["--dropout", "1"], 2, "--dropout: must be at least 0 and below 1, got 1"),
    (["--encoder", "resnet"], 2, "invalid choice: 'resnet'"),
    (["--encoder-weights", "x.h5"], 2, "--encoder-weights is for --encoder vgg16"),
    (["--freeze-encoder"], 2, "--freeze-encoder is for --encoder vgg16"),
    (["--encoder", "vgg16", "--depth", "5"], 2,
     "--depth 5 is too deep for --encoder vgg16: VGG16 has 5 blocks, so use --depth 4 or less"),
    (["--encoder", "vgg16", "--freeze-encoder", "--depth", "3"], 2,
     "--freeze-encoder keeps random weights without --encoder-weights"),
    (["--encoder", "vgg16", "--depth", "3", "--input-size", "188", "--val-input-size", "200"],
     2, "--val-input-size 200 is not valid for a depth-3 U-Net with a vgg16 encoder; the "
     "nearest valid sizes are 196 (below) and 204 (above)"),
])
def test_bad_flags_exit_2(argv, code, message, capsys):
    got, err = run_cli(argv, capsys)
    assert got == code and message in err and len(err.strip().splitlines()) == 1


def test_dropout_flag_reaches_the_config_and_resolve_checks_it():
    assert train.config_from_args([]).dropout == 0.0
    assert train.config_from_args(["--dropout", "0.5"]).dropout == 0.5
    with pytest.raises(UsageError, match="--dropout must be at least 0 and below 1"):
        config.resolve(config.Config(dropout=1.0))


def test_long_side_flag_is_a_config_field_checked_by_resolve():
    assert train.config_from_args([]).long_side == 0
    assert train.config_from_args(["--long-side", "320"]).long_side == 320
    with pytest.raises(UsageError, match="--long-side must be >= 0"):
        config.resolve(config.Config(long_side=-5))


def test_missing_records_exit_1(tmp_path, capsys):
    code, err = run_cli(["--train-records", str(tmp_path / "none-*"), "--run-dir",
                         str(tmp_path / "run")], capsys)
    assert code == 1 and "no record files match" in err and "none-*" in err
    assert not (tmp_path / "run").exists()  # a failed first try leaves no empty run dir
    # Nor the parents it would have made; a run dir that was there stays.
    code, _ = run_cli(["--train-records", str(tmp_path / "none-*"), "--run-dir",
                       str(tmp_path / "logs" / "new" / "run")], capsys)
    assert code == 1 and os.listdir(tmp_path) == []
    (tmp_path / "old").mkdir()
    code, _ = run_cli(["--train-records", str(tmp_path / "none-*"), "--run-dir",
                       str(tmp_path / "old")], capsys)
    assert code == 1 and (tmp_path / "old").is_dir()


def test_pos_weight_auto_reads_converter_stats(blob_data, tmp_path):
    cfg = config.resolve(make_cfg(blob_data, tmp_path, pos_weight="auto"))
    f = blob_data["fraction"]
    assert cfg.pos_weight == pytest.approx((1 - f) / f)
    assert cfg.classes == ("ball",) and cfg.stats.endswith("blobs-train-stats.json")
    with pytest.raises(UserError, match="stats file .*missing"):
        config.resolve(make_cfg(blob_data, tmp_path, pos_weight="auto",
                               stats=str(tmp_path / "nope.json")))


def test_minutes_flag_lifts_the_epoch_limit_unless_epochs_is_given():
    assert (train.config_from_args([]).minutes, train.config_from_args([]).epochs) == (0.0, 50)
    budget = train.config_from_args(["--minutes", "15"])
    assert (budget.minutes, budget.epochs) == (15.0, 0)  # the budget decides
    capped = train.config_from_args(["--minutes", "0.5", "--epochs", "3"])
    assert (capped.minutes, capped.epochs) == (0.5, 3)


def test_no_epoch_limit_needs_a_budget(blob_data, tmp_path):
    with pytest.raises(UsageError, match="--epochs must be positive .*--minutes"):
        config.resolve(make_cfg(blob_data, tmp_path, epochs=0))
    assert config.resolve(make_cfg(blob_data, tmp_path, epochs=0, minutes=2)).epochs == 0


def test_precision_flag_accepts_auto_and_keeps_float32_the_default():
    assert train.config_from_args(["--precision", "auto"]).precision == "auto"
    assert train.config_from_args([]).precision == "float32"


# ------------------------------------------------------------- training runs


def test_train_learns_logs_checkpoints_and_resumes(blob_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    run = tmp_path / "run"
    first = train.train(make_cfg(blob_data, run, epochs=8, checkpoint_every=6,
                                 keep_checkpoints=3))
    steps_per_epoch = 4  # 16 records, batch 4
    assert first.step == 8 * steps_per_epoch and first.epoch == 8
    assert first.interrupted is None
    assert first.val.model["foreground_iou"] > 0.5 > first.val.baseline["foreground_iou"] == 0.0
    assert first.best_val_iou >= np.float32(first.val.model["foreground_iou"])  # as float32

    # Run dir contract: config.json, checkpoints (pruned to --keep-checkpoints), best/.
    saved = rundir.load_config(str(run))
    assert (saved.depth, saved.base_filters, saved.seed) == (2, 8, 1)
    assert rundir.latest(str(run)).endswith("model.ckpt-32")
    assert len(tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths) == 3
    best = tf.train.latest_checkpoint(str(run / rundir.BEST_DIR))
    assert best and rundir.resolve(str(run)) == best
    names = {name for name, _ in tf.train.list_variables(best)}
    assert {"global_step", "epoch", "unet/contract1/conv1/moving_mean",
            "unet/output/weights"} <= names
    assert any(name.endswith("/Adam") for name in names)

    # TensorBoard: per-step cost, learning rate, the windows side by side, graph.
    tb = scalars(run / "train")
    tags = tb.Tags()
    assert {"cost", "learning_rate"} <= set(tags["scalars"])
    assert {t.split("/")[0] for t in tags["images"]} == {"windows"}
    shown = tb.Images(tags["images"][0])
    assert [e.step for e in shown] == [1, *range(4, 33, 4)]  # the first step, then every 4th
    assert (shown[0].height, shown[0].width) == (92, 3 * 92 + 2 * summaries.PANEL_GAP)
    # The graph tab shows a few named blocks around unet/, not hundreds of loose ops.
    top = {node.name.split("/")[0] for node in tb.Graph().node}
    assert {"train_input", "unet", "loss", "validation", "finite_check",
            "window_panels"} <= top and len(top) < 50
    cost = [e.value for e in tb.Scalars("cost")]
    assert len(cost) == 32 and np.mean(cost[-4:]) < 0.7 * np.mean(cost[:4])  # loss falls
    # Validation: the model in val/, all-background in baseline/, under the same tags so
    # TensorBoard draws them in one chart; the last values are what train() returned.
    val, baseline = event_scalars(run / "val"), event_scalars(run / "baseline")
    assert set(val) == {"cost", *metrics.RATIOS} and set(baseline) == set(metrics.RATIOS)
    for tag in metrics.RATIOS:
        assert [s for s, _ in val[tag]] == [s for s, _ in baseline[tag]] == [
            4 * k for k in range(1, 9)]
        assert val[tag][-1][1] == pytest.approx(first.val.model[tag], abs=1e-6)
        assert baseline[tag][-1][1] == pytest.approx(first.val.baseline[tag], abs=1e-6)
    assert val["cost"][-1][1] == pytest.approx(first.val.loss, rel=1e-6)
    assert {v for _, v in baseline["foreground_iou"]} == {0.0}
    assert val["foreground_iou"][-1][1] > 0.5

    # Same command with more epochs resumes: step, epoch and Adam state carry over.
    caplog.clear()
    second = train.train(make_cfg(blob_data, run, epochs=9, checkpoint_every=6,
                                  keep_checkpoints=3))
    assert "resuming from" in caplog.text and "step 32, epoch 8" in caplog.text
    assert second.step == 36 and second.epoch == 9
    reader = tf.train.load_checkpoint(rundir.latest(str(run)))
    assert reader.get_tensor("beta1_power") == pytest.approx(0.9 ** 37, rel=1e-4)
    assert len(tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths) == 3

    # Nothing left to do: the run reports where it stands without training.
    third = train.train(make_cfg(blob_data, run, epochs=9))
    assert third.step == 36 and third.train_loss is None
    assert third.val.model["foreground_iou"] == pytest.approx(
        second.val.model["foreground_iou"], abs=1e-6)

    # A different network cannot resume from these checkpoints.
    with pytest.raises(UserError, match="another network .*base_filters 8 -> 4"):
        train.train(make_cfg(blob_data, run, base_filters=4))


def test_same_seed_repeats_and_max_steps_stops_mid_epoch(blob_data, tmp_path):
    costs = []
    for name in ("a", "b"):
        result = train.train(make_cfg(blob_data, tmp_path / name, max_steps=3, val_records="",
                                      depth=1, input_size=44, lr_schedule="cosine"))
        assert result.step == 3 and result.epoch == 0 and result.val is None
        costs.append([e.value for e in scalars(tmp_path / name / "train").Scalars("cost")])
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-5)
    lr = [e.value for e in scalars(tmp_path / "a" / "train").Scalars("learning_rate")]
    # Cosine over the 3 steps; each summary sees the step before its update.
    np.testing.assert_allclose(lr, 3e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(3) / 3)),
                               rtol=1e-5)


def final_weights(run_dir):
    reader = tf.train.load_checkpoint(rundir.latest(str(run_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("unet/")}


class InterruptAt(logging.Handler):
    """Sends this process a SIGINT once train logs `step <step>/`: train.py's own handler
    saves after that step, as for a Ctrl-C in a terminal."""

    def __init__(self, step):
        super().__init__()
        self.prefix, self.sent = f"step {step}/", False

    def emit(self, record):
        if not self.sent and record.getMessage().startswith(self.prefix):
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("stop_at", [6, 8])  # mid-epoch, and on an epoch's last step
def test_resume_after_ctrl_c_ends_at_the_same_step_with_the_same_weights(
        blob_data, tmp_path, stop_at, caplog):
    """16 records in batches of 4: 4 steps per epoch, 12 in 3 epochs, Ctrl-C at stop_at."""
    caplog.set_level("INFO", logger="train")  # the step lines InterruptAt waits for
    cfg = dict(TINIEST, val_records="", epochs=3, seed=5, lr_schedule="cosine")
    whole = train.train(make_cfg(blob_data, tmp_path / "whole", **cfg))
    assert (whole.step, whole.epoch) == (12, 3)
    run = tmp_path / "resumed"
    handler = InterruptAt(stop_at)
    logging.getLogger("train").addHandler(handler)
    try:
        first = train.train(make_cfg(blob_data, run, **cfg))
    finally:
        logging.getLogger("train").removeHandler(handler)
    assert first.interrupted == "SIGINT" and first.step == stop_at
    assert first.checkpoint.endswith(f"model.ckpt-{stop_at}")
    resumed = train.train(make_cfg(blob_data, run, **cfg))
    assert (resumed.step, resumed.epoch) == (12, 3)  # not 12 + the restarted part of an epoch
    expected, got = final_weights(tmp_path / "whole"), final_weights(run)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_saves_checkpoint_and_exits(blob_data, tmp_path, signum, exit_code):
    run = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"),
           "--train-records", blob_data["train_records"], "--val-records", "",
           "--run-dir", str(run), "--depth", "1", "--base-filters", "4", "--input-size", "44",
           "--epochs", "100000", "--log-every", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if " step 2/" in line:
            proc.send_signal(signum)
            break
    try:
        err = "".join(lines) + proc.communicate(timeout=HANG_GUARD)[1]
    finally:
        proc.kill()  # only if it hung: a process that exited cannot be signalled
    assert proc.returncode == exit_code, err
    stopped = [line for line in err.splitlines() if "stopped by" in line]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0]
    step = int(stopped[0].split(" at step ")[1].split(":")[0])
    assert step >= 2 and rundir.latest(str(run)).endswith(f"model.ckpt-{step}")
    assert "re-run the same command to resume" in stopped[0] and "Traceback" not in err


class SignallingStream(io.RawIOBase):
    """A log stream whose raw writes raise signals: {write number: signal}.

    Like a write to a full stderr pipe that a Ctrl-C interrupts, the handler runs
    inside the BufferedWriter while that holds its lock: where logging from the
    handler printed 'reentrant call' tracebacks.
    """

    def __init__(self, signals):
        self.signals, self.writes, self.data = dict(signals), 0, b""

    def writable(self):
        return True

    def write(self, b):
        self.writes += 1
        if self.writes in self.signals:
            signal.raise_signal(self.signals[self.writes])
        self.data += bytes(b)
        return len(b)


@contextlib.contextmanager
def train_log_to(raw):
    handler = logging.StreamHandler(io.TextIOWrapper(io.BufferedWriter(raw)))
    train.log.addHandler(handler)
    try:
        yield
    finally:
        train.log.removeHandler(handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_log_write_is_recorded_then_announced_once(signum, capsys):
    for at in range(1, 41):  # the signal lands in the 1st, 2nd, ... 40th line's write
        raw = SignallingStream({at: signum})
        with train_log_to(raw), train._StopFlag() as stop:
            step = 0
            while not stop.requested:
                train.log.warning("step %d", step)
                step += 1
        assert (step, stop.signum) == (at, signum)
        lines = raw.data.decode().splitlines()
        assert lines[:at] == [f"step {i}" for i in range(at)]  # none torn or doubled
        assert lines[at:] == [f"{signal.Signals(signum).name} received: saving a checkpoint "
                              "after this step (Ctrl-C again to abort)"]
        assert capsys.readouterr().err == ""  # no 'Logging error', no 'reentrant call'


def slow_save(raw, steps, started, argv):
    """A main() that logs a line per step after a Ctrl-C, as a slow save would."""
    with train_log_to(raw), train._StopFlag() as stop:
        for step in range(steps):
            started.append(step)
            train.log.warning("step %d, stop requested: %s", step, stop.requested)
    return 0


def test_a_second_ctrl_c_inside_a_log_write_is_one_line_without_traceback(capsys):
    for at in range(1, 21):
        raw, started = SignallingStream({at: signal.SIGINT, at + 3: signal.SIGINT}), []
        main = functools.partial(slow_save, raw, at + 10, started)
        assert cli.run_main(main) == cli.EXIT_INTERRUPTED
        assert capsys.readouterr().err == "interrupted\n"
        # Writes: steps 0 .. at-1, the announcement, step at, then step at+1 is cut short.
        assert started == list(range(at + 2))


def test_corrupt_shard_is_named_before_training(blob_data, tmp_path):
    good = blob_data["train_records"].replace("*", "00000-of-00001.tfrecord")
    bad = tmp_path / "cut-train-00000-of-00001.tfrecord"
    with open(good, "rb") as f:
        bad.write_bytes(f.read()[:-100])
    with pytest.raises(UserError, match=r"cannot read records .*cut-train-00000-of-00001"
                                        r".*truncated record.*convert_coco\.py"):
        train.train(make_cfg(blob_data, tmp_path / "run", train_records=str(bad)))
    assert not os.path.exists(tmp_path / "run" / "checkpoint")


def test_precision_auto_is_resolved_logged_and_saved(blob_data, tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="config")  # resolve logs the choice
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"  # no bfloat16 math
    monkeypatch.setattr(device, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    expected, why = device.resolve_precision("auto", gpu, cpuinfo, "Linux")
    train.train(make_cfg(blob_data, tmp_path / "run", precision="auto", max_steps=1,
                         val_records="", depth=1, input_size=44))
    assert rundir.load_config(str(tmp_path / "run")).precision == expected != "auto"
    assert f"precision auto: {why} -> {expected}" in caplog.text


# ------------------------------------------------------------- time budget (--minutes)


class FakeClock:
    """Advances `dt` seconds at every read, from 0. train._TrainingClock reads the clock
    once at the start, after every step and after every validation that training goes on
    after: so step k of a run is fed the progress of the (k-1)-th read."""

    def __init__(self, dt):
        self.t, self.dt = -dt, dt

    def __call__(self):
        self.t += self.dt
        return self.t


def cosine(seconds, budget=60.0, lr=3e-3):
    return lr * 0.5 * (1 + np.cos(np.pi * np.asarray(seconds) / budget))


def test_budget_fits_the_cosine_and_ends_with_validation_and_checkpoint(blob_data, tmp_path,
                                                                        caplog):
    caplog.set_level("INFO")
    run = tmp_path / "run"
    result = train.train(make_cfg(blob_data, run, minutes=1.0, epochs=0, lr_schedule="cosine",
                                  val_every=1, **TINIEST), clock=FakeClock(10.0))
    # 4 steps per epoch at 10 s each, a validation (10 s, in the budget), then the 60 s
    # budget is spent after step 5: the final validation and checkpoint are not in it.
    assert result.step == 5 and result.epoch == 1 and result.interrupted is None
    assert result.train_seconds == 60.0 and 0.0 <= result.val.model["foreground_iou"] <= 1.0
    lr = scalars(run / "train").Scalars("learning_rate")
    assert [e.step for e in lr] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([e.value for e in lr], cosine([0, 10, 20, 30, 50]), rtol=1e-5)
    assert [e.step for e in scalars(run / "val").Scalars("foreground_iou")] == [4, 5]
    checkpoint = rundir.latest(str(run))
    assert checkpoint.endswith("model.ckpt-5")
    assert tf.train.load_checkpoint(checkpoint).get_tensor("train_seconds") == 60.0
    assert "4 steps per epoch, 1 min of training (start-up and the final validation come " \
        "on top) in total" in caplog.text  # no step limit: the budget alone decides
    # The log's ETA is the budget left.
    assert "step 2 epoch 1 loss" in caplog.text and "ETA 0:00:40 (33% of the 1 min budget)" \
        in caplog.text
    assert "time budget of 1 min spent (0:01:00 of training): stopped at step 5" in caplog.text


def test_resumed_budget_continues_the_schedule_and_stops_at_the_same_total(
        blob_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    run = tmp_path / "run"
    settings = dict(minutes=1.0, epochs=0, lr_schedule="cosine", val_every=10, **TINIEST)
    first = train.train(make_cfg(blob_data, run, max_steps=3, **settings), clock=FakeClock(10))
    assert first.step == 3 and first.train_seconds == 30.0
    assert "--epochs/--max-steps ended the run with 0:00:30 of the 1 min budget" in caplog.text
    # A new process: its clock starts anywhere, the checkpoint holds the 30 s trained.
    caplog.clear()
    clock = FakeClock(10)
    clock.t = 1e6
    second = train.train(make_cfg(blob_data, run, **settings), clock=clock)
    assert "(step 3, epoch 0, 0:00:30 of training)" in caplog.text
    assert second.step == 6 and second.train_seconds == 60.0
    lr = scalars(run / "train").Scalars("learning_rate")
    assert [e.step for e in lr] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([e.value for e in lr], cosine([0, 10, 20, 30, 40, 50]),
                               rtol=1e-5)
    reader = tf.train.load_checkpoint(rundir.latest(str(run)))
    assert reader.get_tensor("train_seconds") == 60.0 and reader.get_tensor("global_step") == 6
    # Budget spent: the same command only validates.
    third = train.train(make_cfg(blob_data, run, **settings), clock=FakeClock(10))
    assert third.step == 6 and third.train_loss is None and third.val is not None


def test_checkpoint_without_training_clock_still_resumes(blob_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    run = tmp_path / "run"
    tiny = dict(val_records="", depth=1, input_size=44)
    train.train(make_cfg(blob_data, run, max_steps=1, **tiny))
    # Rewrite the checkpoint as one saved before train_seconds existed.
    path = rundir.latest(str(run))
    reader = tf.train.load_checkpoint(path)
    names = [n for n, _ in tf.train.list_variables(path) if n != "train_seconds"]
    with tf.Graph().as_default():
        old = {n: tf.compat.v1.Variable(reader.get_tensor(n), name=f"v{i}")
               for i, n in enumerate(names)}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(old).save(sess, path, write_meta_graph=False)
    assert "train_seconds" not in {n for n, _ in tf.train.list_variables(path)}
    result = train.train(make_cfg(blob_data, run, max_steps=2, **tiny), clock=FakeClock(5))
    assert "(step 1, epoch 0, 0:00:00 of training)" in caplog.text
    assert result.step == 2 and result.train_seconds == 5.0


# --------------------------------------------------- several record sets


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    """Two training and two validation sets; the stats say 10% foreground of 1000 pixels
    and 40% of 3000, so --pos-weight auto combines them to 1300 / 4000."""
    d = tmp_path_factory.mktemp("sets")
    for name, n, seed, fraction, pixels in (("a", 12, 3, 0.1, 1000), ("b", 4, 4, 0.4, 3000)):
        write_blobs(d / f"{name}-train-00000-of-00001.tfrecord", n, seed)
        (d / f"{name}-train-stats.json").write_text(json.dumps(
            {"foreground_fraction": fraction, "pixels": pixels, "classes": ["ball"]}))
        write_blobs(d / f"{name}-val-00000-of-00001.tfrecord", 3, seed + 10)
    return {"train_records": (str(d / "a-train-*"), str(d / "b-train-*")),
            "val_records": (str(d / "a-val-*"), str(d / "b-val-*"))}


def test_record_set_flags_repeat_and_one_glob_stays_a_string():
    assert train.config_from_args([]).train_records == config.Config.train_records
    one = train.config_from_args(["--train-records", "x-*", "--val-records", "v-*"])
    assert one.train_records == "x-*" and one.val_records == "v-*" and one.train_weights == ()
    two = train.config_from_args(["--train-records", "a-*", "--train-records", "b-*",
                                  "--train-weights", "3,1", "--val-records", "va-*",
                                  "--val-records", "vb-*"])
    assert two.train_records == ("a-*", "b-*") and two.train_weights == (3.0, 1.0)
    assert two.val_records == ("va-*", "vb-*")


@pytest.mark.parametrize("argv,message", [
    (["--train-records", "a-*", "--train-records", "b-*", "--train-weights", "3,1,1"],
     "--train-weights gives 3 weight(s) for 2 --train-records sets: give one weight per set"),
    (["--train-weights", "3,0"], "--train-weights: must be a comma list of positive numbers"),
    (["--train-weights", "3,x"], "--train-weights: must be a comma list of positive numbers"),
])
def test_bad_weights_are_one_line_exit_2(argv, message, capsys):
    got, err = run_cli(argv, capsys)
    assert got == 2 and message in err and len(err.strip().splitlines()) == 1


def test_pos_weight_auto_combines_the_sets_over_their_pixels(two_sets, tmp_path):
    cfg = config.resolve(make_cfg(two_sets, tmp_path, pos_weight="auto"))
    assert cfg.pos_weight == pytest.approx(0.675 / 0.325)  # f = (100 + 1200) / 4000


def test_two_sets_train_validate_per_set_and_resume(two_sets, tmp_path):
    run = tmp_path / "run"
    result = train.train(make_cfg(two_sets, run, epochs=1, train_weights=(3.0, 1.0),
                                  **TINIEST))
    assert result.step == 4 and result.epoch == 1  # 16 records / batch 4: as one glob
    saved = rundir.load_config(str(run))
    assert saved.train_records == two_sets["train_records"]
    assert saved.val_records == two_sets["val_records"] and saved.train_weights == (3.0, 1.0)
    assert sorted(result.val_sets) == ["a-val", "b-val"]
    counts = [m.model["foreground_iou"] for m in result.val_sets.values()]
    assert all(0.0 <= iou <= 1.0 for iou in counts)
    for name, metrics_of in (("val", result.val), *(
            (f"val-{n}", m) for n, m in result.val_sets.items())):
        got = event_scalars(run / name)
        assert got["foreground_iou"][-1][1] == pytest.approx(
            metrics_of.model["foreground_iou"], abs=1e-6)
    again = train.train(make_cfg(two_sets, run, epochs=2, **TINIEST))  # weights: counts
    assert again.step == 8 and rundir.load_config(str(run)).train_weights == (12.0, 4.0)


# ------------------------------------------------------------- several classes (K >= 2)


def write_pets(path, n, seed):
    """Records of orange disks (class 1, cat) and blue squares (class 2, dog) on grey noise,
    a 255 ignore band on top: the masks K = 2 records hold."""
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            h, w = (int(v) for v in rng.integers(40, 70, 2))
            image = rng.integers(60, 140, (h, w, 3)).astype(np.uint8)
            rows, cols = np.mgrid[:h, :w]
            mask = np.zeros((h, w), np.uint8)
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(6, 12)
            disk = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
            image[disk], mask[disk] = (220, 150, 40), 1
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 10)
            square = (abs(rows - cy) < r) & (abs(cols - cx) < r) & (mask == 0)
            image[square], mask[square] = (40, 80, 200), 2
            mask[:2] = records.IGNORE
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", h, w, i, f"{i}.png",
                tf.io.encode_png(mask[..., None]).numpy()))


def test_validation_metrics_of_a_confusion_matrix():
    names = ("background", "cat", "dog")
    m = train.validation_metrics(np.array([[6, 1, 1], [2, 2, 0], [0, 0, 0]]), 4.0, 8.0, names)
    assert m.loss == 0.5
    assert m.classes.iou == pytest.approx((6 / 10, 2 / 5, 0.0))  # dog: predicted, never true
    assert m.score == pytest.approx((2 / 5 + 0.0) / 2)  # best/ follows the mIoU of the classes
    assert m.model["iou/cat"] == pytest.approx(0.4) and m.model["mean_iou"] == m.score
    assert m.baseline["mean_iou"] == 0.0 and m.baseline_classes.pixel_accuracy == 8 / 12
    # No class in the truth nor the prediction: no score, so no best is chosen by it.
    assert np.isnan(train.validation_metrics(np.diag([5, 0, 0]), 0.0, 5.0, names).score)


def test_k_classes_train_validate_per_class_and_keep_the_best_mean_iou(tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    write_pets(tmp_path / "pets-train-00000-of-00001.tfrecord", 8, 0)
    write_pets(tmp_path / "pets-val-00000-of-00001.tfrecord", 4, 1)
    run = tmp_path / "run"
    cfg = config.Config(**{**TINIEST, "batch_size": 4, "learning_rate": 1e-2, "seed": 0},
                        train_records=str(tmp_path / "pets-train-*"),
                        val_records=str(tmp_path / "pets-val-*"), run_dir=str(run), epochs=4,
                        image_summary_every=2, classes=("cat", "dog"), num_outputs=3,
                        class_weights=(0.5, 1.0, 1.5), dice_weight=0.5)
    result = train.train(cfg)
    assert result.step == 8 and result.val.classes.names == ("background", "cat", "dog")
    val, baseline = event_scalars(run / "val"), event_scalars(run / "baseline")
    per_class = {f"{k}/{n}" for k in metrics.CLASS_RATIOS for n in result.val.classes.names}
    assert set(val) >= {"cost", *metrics.MEANS} | per_class
    assert set(baseline) >= set(metrics.MEANS) and {v for _, v in baseline["mean_iou"]} == {0.0}
    for tag, value in result.val.model.items():
        assert val[tag][-1] == (8, pytest.approx(value, abs=1e-6))
    # best/ holds the validation with the highest mIoU over the classes (first if tied).
    ious = [v for _, v in val["mean_iou"]]
    best_step = val["mean_iou"][int(np.argmax(ious))][0]
    assert rundir.step(tf.train.latest_checkpoint(str(run / rundir.BEST_DIR))) == best_step
    assert result.best_val_iou == pytest.approx(max(ious), abs=1e-6)
    assert "val: mIoU" in caplog.text and "IoU cat" in caplog.text
    # The confusion matrix is an image of val/, the matrix the metrics came from.
    acc = scalars(run / "val")
    shown = acc.Images("confusion_matrix")
    assert [e.step for e in shown] == [2, 4, 6, 8]
    picture = tf.io.decode_png(shown[-1].encoded_image_string).numpy()
    np.testing.assert_array_equal(picture, summaries.confusion_image(result.val.classes.confusion))
    # The windows are coloured by the palette: the truth panel holds class colours only.
    train_events = scalars(run / "train")
    window = train_events.Images(sorted(train_events.Tags()["images"])[0])[0]
    panels = tf.io.decode_png(window.encoded_image_string).numpy()
    out = 28
    size, border = 44, (44 - out) // 2
    truth = panels[border:border + out, size + summaries.PANEL_GAP + border:][:, :out]
    allowed = {tuple(c) for c in summaries.palette()[[0, 1, 2, 255]]}
    assert {tuple(c) for c in truth.reshape(-1, 3)} <= allowed
    # Resuming goes on from the same best mIoU.
    again = train.train(dataclasses.replace(cfg, epochs=5))
    assert again.step == 10 and again.best_val_iou >= result.best_val_iou


def test_classes_that_do_not_match_the_outputs_fail_before_training(tmp_path):
    write_pets(tmp_path / "pets-train-00000-of-00001.tfrecord", 2, 0)
    cfg = config.Config(**TINIEST, train_records=str(tmp_path / "pets-train-*"), val_records="",
                        run_dir=str(tmp_path / "run"), epochs=1, classes=("cat", "dog"),
                        num_outputs=4)
    # config.resolve's one check of classes against num_outputs, before any file is written
    with pytest.raises(UsageError, match=r"num_outputs 4 means 3 classes but classes names 2"):
        train.train(cfg)
    assert not rundir.latest(str(tmp_path / "run"))
