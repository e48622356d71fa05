"""Faults caused for real: kills, corrupt shards, NaNs, a full disk, two trainings at once.

Each test causes the fault (SIGKILL/SIGINT/SIGTERM to a real training or
conversion process, flipped and cut bytes, an absurd learning rate, a file-size
limit, a second trainer) and checks that nothing is lost beyond the documented
checkpoint interval. Networks are tiny (depth 1, 4 filters, 44 px input) so the
whole file runs in about two minutes on two cores.
"""

import glob
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import convert_coco
import train
from core import config, optim, rundir
from datasets import guard, records
from datasets.shards import stats_path  # `shards` is a fixture here
from samples import drawn
from utils import cli
from utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = dict(depth=1, base_filters=4, input_size=44, batch_size=2, log_every=1, seed=3,
            val_records="", image_summary_every=1000)
CHECKPOINT_EVERY = 4
ENDLESS = 1_000_000  # epochs: a training the test stops, never one that ends by itself first
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine

# Runs train.py and pauses right after it logged a message starting with argv[1] (the
# stderr handler writes first), so the test's SIGKILL lands at a known point, however busy
# the machine is.
PAUSE_AFTER_LOG_LINE = """
import logging, sys
import train
from utils import cli

class Pause(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith(sys.argv[1]):
            print("paused", flush=True)
            sys.stdin.read()  # until the test kills this process

cli.setup_logging()
logging.getLogger().addHandler(Pause())
sys.exit(cli.run_main(train.main, sys.argv[2:]))
"""

# Runs convert_coco.py and pauses before the first record written once a file
# matching argv[1] exists.
PAUSE_ONCE_FILE_EXISTS = """
import glob, sys
import convert_coco
from datasets import records
from utils import cli

real = records.make_example

def make_example(*args):
    if glob.glob(sys.argv[1]):
        print("paused", flush=True)
        sys.stdin.read()  # until the test kills this process
    return real(*args)

records.make_example = make_example
sys.exit(cli.run_main(convert_coco.main, sys.argv[2:]))
"""


def write_records(path, n, seed=0, bad_png_at=None):
    """n small random image+mask records; record `bad_png_at` gets a mask that is not a PNG."""
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            h, w = (int(v) for v in rng.integers(30, 60, 2))
            image = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
            mask = (image[..., :1] > 128).astype(np.uint8)
            png = tf.io.encode_png(mask).numpy()
            if i == bad_png_at:
                png = b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 40, dtype=np.uint8))
            writer.write(records.make_example(tf.io.encode_jpeg(image).numpy(), "jpeg", h, w,
                                              i, f"{i}.jpg", png))


def offsets(path):
    """Byte offset of every record header, from the framing alone."""
    raw, found, at = open(path, "rb").read(), [], 0
    while at < len(raw):
        found.append(at)
        at += 16 + int.from_bytes(raw[at:at + 8], "little")
    return found


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_records(d / "r-00000-of-00001.tfrecord", 10)
    return str(d / "r-*")


def cfg_for(shards, run_dir, **kw):
    return config.Config(**{**TINY, "train_records": shards, "run_dir": str(run_dir), **kw})


def train_cmd(shards, run_dir, *extra):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--train-records", shards,
            "--val-records", "", "--run-dir", str(run_dir), "--depth", "1", "--base-filters",
            "4", "--input-size", "44", "--batch-size", "2", "--log-every", "1", "--seed", "3",
            "--checkpoint-every", str(CHECKPOINT_EVERY), *extra]


def run_cmd(cmd, timeout=HANG_GUARD, **kw):
    return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def start_and_wait_for_step(cmd, step):
    """Start cmd; return (process, stderr lines so far) once it logged `step` (None: any)."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if f" step {step}/" in line or (step is None and " step " in line and "/" in line):
            return proc, lines
    proc.wait(timeout=HANG_GUARD)
    raise AssertionError(f"training ended before step {step}:\n{''.join(lines)}")


def rest_of_stderr(proc):
    """What proc writes to stderr until it exits (killed if it hangs)."""
    try:
        return proc.communicate(timeout=HANG_GUARD)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def start_paused(script, at, argv, stderr_path):
    """Run a PAUSE_* script with argv; return the process once it paused at `at`."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", script, at, *argv], env=ENV, cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True)
    if proc.stdout.readline() != "paused\n":
        proc.communicate(timeout=HANG_GUARD)
        raise AssertionError(f"ended before {at!r}:\n{open(stderr_path).read()[-3000:]}")
    return proc


def kill(proc):
    proc.kill()  # SIGKILL: no handler, no save, no lock release
    proc.communicate(timeout=HANG_GUARD)


def logged_steps(stderr):
    return [int(m) for m in re.findall(r" step (\d+)/\d+ epoch ", stderr)]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def resumed_step(stderr):
    line = next(line for line in stderr.splitlines() if "resuming from" in line)
    return int(line.split("(step ")[1].split(",")[0])


def all_listed_readable(run_dir):
    state = tf.train.get_checkpoint_state(str(run_dir))
    return state is None or all(rundir.readable(p)
                                for p in state.all_model_checkpoint_paths)


# ------------------------------------------------------------------ kills


def test_sigkill_at_random_steps_loses_at_most_the_checkpoint_interval(shards, tmp_path,
                                                                      caplog):
    run = tmp_path / "run"
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng = random.Random(seed)
    cmd = train_cmd(shards, run, "--max-steps", "24")
    lost = []
    # From step CHECKPOINT_EVERY + 1 on a checkpoint exists to resume from; a kill
    # before the first save loses fewer steps than the interval anyway. One kill per run
    # of the test: a second one, in a run resumed from the first, went through the same
    # loop and saves and cost another TensorFlow start; the seed printed below varies the
    # step from run to run, and the resume after the kill is checked below.
    for kill_after in rng.sample(range(CHECKPOINT_EVERY + 1, 20), 1):
        log = tmp_path / f"killed-after-{kill_after}.log"
        kill(start_paused(PAUSE_AFTER_LOG_LINE, f"step {kill_after}/", cmd[2:], log))
        seen = logged_steps(log.read_text())[-1]
        assert seen == kill_after
        assert os.path.exists(rundir.lock_path(run))  # left behind by the killed run
        assert all_listed_readable(run)
        saved = int(tf.train.load_checkpoint(rundir.latest(str(run)))
                    .get_tensor("global_step"))
        # Everything after the last save is lost: at most the checkpoint interval.
        # A kill between logging step k*interval and saving it loses the whole interval.
        assert 0 <= seen - saved <= CHECKPOINT_EVERY, (seed, seen, saved)
        lost.append(int(seen - saved))
    caplog.set_level("INFO")  # re-running the command: train.main calls train.train
    assert train.train(cfg_for(shards, run, max_steps=24,
                               checkpoint_every=CHECKPOINT_EVERY)).step == 24
    assert "taking over the stale lock" in caplog.text
    assert resumed_step(caplog.text) == saved
    final = tf.train.load_checkpoint(rundir.latest(str(run)))
    assert final.get_tensor("global_step") == 24
    # The lost steps ran again on the same windows (the epoch goes on from the checkpoint's
    # step, not from its start): the weights are those of a run never killed.
    whole = tmp_path / "whole"
    assert train.train(cfg_for(shards, whole, max_steps=24,
                               checkpoint_every=CHECKPOINT_EVERY)).step == 24
    expected = tf.train.load_checkpoint(rundir.latest(str(whole)))
    for name, _ in tf.train.list_variables(rundir.latest(str(whole))):
        if name.startswith("unet/"):
            np.testing.assert_allclose(final.get_tensor(name), expected.get_tensor(name),
                                       rtol=1e-5, atol=1e-7, err_msg=name)
    print(f"SIGKILL seed {seed}: steps lost per kill {lost} (interval {CHECKPOINT_EVERY})")


def test_sigkill_during_saves_leaves_a_restorable_checkpoint(shards, tmp_path, caplog):
    """Saving every step, a kill right after a step's log line lands in or near its save."""
    run = tmp_path / "run"
    cmd = train_cmd(shards, run, "--max-steps", "400", "--checkpoint-every", "1")
    for wait_for in (3, None):  # step 3 logged: checkpoints 1 and 2 are saved
        proc, _ = start_and_wait_for_step(cmd, wait_for)
        kill(proc)  # it goes on meanwhile: straight into saving the step it logged
        assert rundir.restorable(str(run)) == rundir.latest(str(run))
        assert all_listed_readable(run)
    # A torn newest checkpoint (as a crash mid-write could leave on another file system):
    # resume falls back to the one before it.
    latest = rundir.latest(str(run))
    state = tf.train.get_checkpoint_state(str(run))
    previous = state.all_model_checkpoint_paths[-2]
    with open(latest + ".data-00000-of-00001", "r+b") as f:
        f.truncate(100)
    assert rundir.restorable(str(run)) == previous
    caplog.set_level("INFO")
    until = int(tf.train.load_checkpoint(previous).get_tensor("global_step")) + 2
    assert train.train(cfg_for(shards, run, max_steps=until,
                               checkpoint_every=1)).step == until
    assert "is unreadable (torn by a crash?)" in caplog.text
    assert f"resuming from {previous}" in caplog.text


def test_a_relative_run_dir_resumes(shards, tmp_path, monkeypatch, caplog):
    # `python demo.py` passes logs/demo: the state file's entries are relative to it.
    monkeypatch.chdir(tmp_path)
    run = os.path.join("logs", "rel")
    assert train.train(cfg_for(shards, run, max_steps=3)).step == 3
    latest = rundir.restorable(run)
    assert latest == os.path.join(run, "model.ckpt-3") == rundir.latest(run)
    caplog.set_level("INFO", logger="train")
    assert train.train(cfg_for(shards, run, max_steps=5)).step == 5
    assert resumed_step(caplog.text) == 3 and "unreadable" not in caplog.text
    os.remove(os.path.join(run, "checkpoint"))  # no state file: found by name, same answer
    assert rundir.restorable(run) == os.path.join(run, "model.ckpt-5")


def test_no_readable_checkpoint_is_refused_not_overwritten(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.train(cfg_for(shards, run, max_steps=2)).step == 2
    for data_file in glob.glob(str(run / "model.ckpt-*.data-*")):
        with open(data_file, "r+b") as f:
            f.truncate(10)
    before = sorted(os.listdir(run))
    capsys.readouterr()
    code = cli.run_main(train.main, train_cmd(shards, run, "--max-steps", "4")[2:])
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert code == 1 and len(errors) == 1, err[-2000:]
    assert "reads completely" in errors[0] and "--run-name" in errors[0]
    assert sorted(os.listdir(run)) == before  # nothing written over


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_sigint_sigterm_save_then_resume_exactly(shards, tmp_path, signum, code, caplog):
    run = tmp_path / "run"
    proc, lines = start_and_wait_for_step(train_cmd(shards, run, "--epochs", str(ENDLESS)), 3)
    proc.send_signal(signum)
    err = "".join(lines) + rest_of_stderr(proc)
    assert proc.returncode == code, err
    stopped = [line for line in err.splitlines() if "stopped by" in line]
    step = int(stopped[0].split(" at step ")[1].split(":")[0])
    assert "Traceback" not in err and not os.path.exists(rundir.lock_path(run))
    caplog.set_level("INFO", logger="train")
    assert train.train(cfg_for(shards, run, max_steps=step + 3, epochs=ENDLESS)).step == step + 3
    assert resumed_step(caplog.text) == step  # nothing lost: the signal saved this step
    reader = tf.train.load_checkpoint(rundir.latest(str(run)))
    assert reader.get_tensor("global_step") == step + 3
    # Adam applied exactly step + 3 updates across the two processes.
    assert reader.get_tensor("beta1_power") == pytest.approx(0.9 ** (step + 4), rel=1e-5)


def test_ctrl_c_then_the_same_command_ends_where_an_uninterrupted_run_does(shards, tmp_path):
    """3 epochs of 5 steps, Ctrl-C mid-epoch: the re-run ends at step 15 (it ended at 15 +
    the steps of the interrupted epoch before), with the uninterrupted run's weights."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert run_cmd(train_cmd(shards, whole, "--epochs", "3")).returncode == 0
    proc, lines = start_and_wait_for_step(train_cmd(shards, run, "--epochs", "3"), 2)
    proc.send_signal(signal.SIGINT)
    err = "".join(lines) + rest_of_stderr(proc)
    assert proc.returncode == 130, err
    stopped = int(next(line for line in err.splitlines() if "stopped by" in line)
                  .split(" at step ")[1].split(":")[0])
    resumed = run_cmd(train_cmd(shards, run, "--epochs", "3"))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed_step(resumed.stderr) == stopped
    assert logged_steps(resumed.stderr)[-1] == 15 and "step 16/" not in resumed.stderr
    final, expected = (tf.train.load_checkpoint(rundir.latest(str(d))) for d in (run, whole))
    assert final.get_tensor("global_step") == 15 and final.get_tensor("epoch") == 3
    for name, _ in tf.train.list_variables(rundir.latest(str(whole))):
        if name.startswith("unet/"):
            np.testing.assert_allclose(final.get_tensor(name), expected.get_tensor(name),
                                       rtol=1e-5, atol=1e-7, err_msg=name)


def test_converter_sigkill_then_rerun_gives_identical_records(tmp_path):
    coco = str(tmp_path / "coco")
    drawn.generate(coco, seed=5, num_train=8, num_val=1)
    reference = str(tmp_path / "ref" / "cat")
    args = ["--coco-dir", coco, "--num-shards", "4", "--workers", "1", "--no-progress"]
    assert cli.run_main(convert_coco.main, args + ["--output", reference]) == 0
    out = str(tmp_path / "out" / "cat")
    cmd = [sys.executable, os.path.join(ROOT, "convert_coco.py"), *args, "--output", out]
    # Killed once shard 0 is complete and shard 1 begun.
    kill(start_paused(PAUSE_ONCE_FILE_EXISTS, out + "-train2017-00001-of-*.tfrecord.partial",
                      cmd[2:], tmp_path / "converter.log"))
    assert not os.path.exists(stats_path(out, "train2017"))
    # Quiet: pooled workers are covered by test_convert_coco's kill -9 test, which waits for
    # every process holding stderr.
    assert "Traceback" not in (tmp_path / "converter.log").read_text()
    complete = glob.glob(out + "-*.tfrecord")
    assert len(complete) < 4  # killed mid-run
    for shard in complete:  # whatever looks complete is complete
        assert not any(isinstance(rec, guard.BadRecord) for _, _, rec in
                       guard.iterate_shard(shard))
    assert cli.run_main(convert_coco.main, cmd[2:]) == 0  # the same command again
    for ref in sorted(glob.glob(reference + "-*.tfrecord")):
        mine = out + ref[len(reference):]
        assert open(mine, "rb").read() == open(ref, "rb").read(), mine
    assert not glob.glob(out + "*.partial")


# ------------------------------------------------------------------ corrupt data


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_shard_names_shard_record_and_offset(tmp_path, how):
    path = tmp_path / "c-00000-of-00001.tfrecord"
    write_records(path, 6)
    starts = offsets(path)
    raw = bytearray(path.read_bytes())
    if how == "flip":
        raw[starts[3] + 40] ^= 0xFF  # inside record #3's data: its CRC no longer matches
    else:
        raw = raw[:starts[4] + 30]  # cut in the middle of record #4
    path.write_bytes(bytes(raw))
    bad = 3 if how == "flip" else 4
    with pytest.raises(UserError, match=rf"c-00000-of-00001\.tfrecord: record #{bad} at byte "
                                        rf"offset {starts[bad]} is corrupt .*--skip-corrupt"):
        train.train(cfg_for(str(path), tmp_path / "run", max_steps=2))
    assert rundir.latest(str(tmp_path / "run")) is None  # never trained on it

    result = train.train(cfg_for(str(path), tmp_path / "run", max_steps=2,
                                 skip_corrupt_records=True))
    assert result.step == 2
    report = json.loads((tmp_path / "run" / rundir.CORRUPT_REPORT).read_text())["train"]
    assert report["skipped"] == 1 and report["good"] == (5 if how == "flip" else 4)
    assert report["bad"][0]["index"] == bad and report["bad"][0]["offset"] == starts[bad]


def test_record_with_an_undecodable_mask_is_named_or_skipped(tmp_path):
    path = tmp_path / "p-00000-of-00001.tfrecord"
    write_records(path, 6, bad_png_at=2)
    starts = offsets(path)
    # Its framing is fine, so the error surfaces in training and is located then.
    with pytest.raises(UserError, match=rf"p-00000-of-00001\.tfrecord: record #2 at byte offset "
                                        rf"{starts[2]} is corrupt"):
        train.train(cfg_for(str(path), tmp_path / "run", max_steps=20))
    result = train.train(cfg_for(str(path), tmp_path / "run2", max_steps=6,
                                 skip_corrupt_records=True))
    assert result.step == 6
    report = json.loads((tmp_path / "run2" / rundir.CORRUPT_REPORT).read_text())["train"]
    assert report["skipped"] == 1 and report["good"] == 5 and report["bad"][0]["index"] == 2
    clean = guard.scan_records(str(tmp_path / "run2" / rundir.CLEAN_DIR / "train" / "*"))
    assert clean[1] == [5]


# ------------------------------------------------------------------ numbers


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    run = tmp_path / "run"
    # One whole epoch (5 steps): the resumed run starts a whole one, so the divergence
    # comes before its end-of-epoch save (a resume mid-epoch would go on from there).
    train.train(cfg_for(shards, run, epochs=1))
    good = rundir.latest(str(run))
    before = {n: tf.train.load_checkpoint(good).get_tensor(n)
              for n, _ in tf.train.list_variables(good)}
    with pytest.raises(UserError, match=r"(loss became (nan|inf)|weights became NaN/Inf)"
                                        r" (at|by) step \d+.*last good checkpoint is kept"):
        train.train(cfg_for(shards, run, max_steps=400, checkpoint_every=1000,
                            learning_rate=1e30))
    assert rundir.latest(str(run)) == good
    reader = tf.train.load_checkpoint(good)
    for name, value in before.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)


def test_on_nan_skip_skips_exactly_the_bad_updates(shards, tmp_path, monkeypatch, caplog):
    real = optim.pixel_loss

    def every_third_nan(logits, masks, pos_weight, dice_weight=0.0, class_weights=()):
        loss, ce_sum, n_valid = real(logits, masks, pos_weight, dice_weight, class_weights)
        step = tf.compat.v1.train.get_or_create_global_step()
        # A factor, so the gradients are NaN too, as from a real overflow.
        poison = tf.where(tf.equal(step % 3, 1), np.float32("nan"), np.float32(1.0))
        return loss * poison, ce_sum, n_valid

    monkeypatch.setattr(optim, "pixel_loss", every_third_nan)
    caplog.set_level("WARNING", logger="train")
    result = train.train(cfg_for(shards, tmp_path / "run", max_steps=9, on_nan="skip"))
    assert result.step == 9 and np.isfinite(result.train_loss)
    skipped = [r for r in caplog.records if "update skipped" in r.getMessage()]
    assert len(skipped) == 3  # steps 2, 5, 8 (global step 1, 4, 7 before each)
    reader = tf.train.load_checkpoint(rundir.latest(str(tmp_path / "run")))
    assert reader.get_tensor("global_step") == 9
    assert reader.get_tensor("beta1_power") == pytest.approx(0.9 ** (6 + 1), rel=1e-5)
    assert all(np.isfinite(reader.get_tensor(n)).all() for n, _ in
               tf.train.list_variables(rundir.latest(str(tmp_path / "run"))))


# ------------------------------------------------------------------ disks


def _file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # Like a full disk: writes fail with an error instead of the signal killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def test_disk_full_is_one_clear_error_and_the_last_checkpoint_restores(shards, tmp_path,
                                                                      caplog):
    run = tmp_path / "run"
    train.train(cfg_for(shards, run, max_steps=4, checkpoint_every=CHECKPOINT_EVERY))
    good = rundir.latest(str(run))
    size = os.path.getsize(good + ".data-00000-of-00001")
    cmd = train_cmd(shards, run, "--max-steps", "40")
    full = run_cmd(cmd, preexec_fn=_file_size_limit(size - 1))
    assert full.returncode == 1, full.stderr[-2000:]
    errors = error_lines(full.stderr)
    assert len(errors) == 1 and "file too large" in errors[0], full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert rundir.restorable(str(run)) == good == rundir.latest(str(run))
    assert not os.path.exists(rundir.lock_path(run))
    caplog.set_level("INFO", logger="train")  # the same command again, in this process
    again = train.train(cfg_for(shards, run, max_steps=40, checkpoint_every=CHECKPOINT_EVERY))
    assert again.step == 40 and resumed_step(caplog.text) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_dir_is_one_clear_error(shards, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    done = run_cmd(train_cmd(shards, run, "--max-steps", "2"))
    assert done.returncode == 1 and len(error_lines(done.stderr)) == 1
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ two trainings


def test_second_training_on_a_run_dir_refuses(shards, tmp_path, capsys):
    run = tmp_path / "run"
    first, _ = start_and_wait_for_step(train_cmd(shards, run, "--epochs", str(ENDLESS)), 2)
    try:
        capsys.readouterr()
        code = cli.run_main(train.main, train_cmd(shards, run, "--epochs", str(ENDLESS))[2:])
        err = capsys.readouterr().err
        assert code == 1
        errors = error_lines(err)
        assert len(errors) == 1 and f"is in use by pid {first.pid}" in errors[0]
        assert "Traceback" not in err
        assert first.poll() is None  # the first one trains on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        rest_of_stderr(first)
        assert first.returncode == 0
    assert not os.path.exists(rundir.lock_path(run))
