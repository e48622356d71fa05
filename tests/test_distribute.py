"""core/distribute.py: strategy flags, per-worker input, and training equal to one device.

The TensorFlow runs happen in subprocesses: logical CPU devices can only be
made before TF's runtime starts, and each multi-worker worker is a process.

What the mirrored test compares, honestly: batch norm normalises with the
statistics of each replica's own batch, so 2 replicas x batch 2 is NOT one
device with batch 4 and global BN statistics. It IS one device that splits
its batch of 4 into the same two halves, normalises each half with its own
statistics and averages the two halves' losses; that single-device run is the
reference, and the plain global-batch run is shown to differ (so the
comparison can fail). Compared: every trainable weight and Adam slot.
"""

import json
import os
import select
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from core import config, distribute
from datasets import pipeline
from utils import cli
from utils.cli import UsageError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
TINY = dict(depth=1, base_filters=4, input_size=44, batch_size=2, learning_rate=3e-3,
            log_every=1, image_summary_every=2, seed=5, val_records="")  # 44 -> 28 output
TIMEOUT = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


# ------------------------------------------------------------- pure parts


def test_parse_devices():
    assert distribute.parse_devices("") is None
    assert distribute.parse_devices("gpu:0, /GPU:1") == ["/gpu:0", "/gpu:1"]
    assert distribute.parse_devices("/cpu:0,/cpu:1") == ["/cpu:0", "/cpu:1"]
    with pytest.raises(UsageError, match="twice"):
        distribute.parse_devices("/gpu:0,gpu:0")
    with pytest.raises(UsageError, match="not a device"):
        distribute.parse_devices("/gpu")


def test_make_strategy_rejects_bad_combinations(monkeypatch):
    assert distribute.make_strategy("none") is None
    with pytest.raises(UsageError) as raised:  # the name is the Config field's rule, once
        config.check(config.Config(strategy="horovod"))
    assert str(raised.value) == ("--strategy must be one of none, mirrored, multi-worker, "
                                 "got 'horovod'")
    with pytest.raises(UsageError, match="needs --strategy mirrored"):
        distribute.make_strategy("none", ["/gpu:0"])
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES"):
        distribute.make_strategy("multi-worker", ["/gpu:0"])
    with pytest.raises(UserError, match=r"--devices /gpu:7 not found; this machine has"):
        distribute.make_strategy("mirrored", ["/cpu:0", "/gpu:7"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy("multi-worker")


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not a cluster/task JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "not a cluster/task JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "index 1 is outside the 1 worker"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     "only hold chief and worker"),
])
def test_bad_tf_config_is_one_line(raw, message):
    with pytest.raises(UserError, match=message):
        distribute.read_tf_config({"TF_CONFIG": raw})


def test_good_tf_config():
    raw = ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, '
           '"task": {"type": "worker", "index": 0}}')
    assert distribute.read_tf_config({"TF_CONFIG": raw})["task"] == {"type": "worker",
                                                                      "index": 0}


def test_workers_read_disjoint_files_that_cover_all():
    files = [f"s-{i:05d}-of-00005" for i in range(5)]
    shares = [distribute.shard_files(files, 2, i) for i in range(2)]
    assert shares == [files[0::2], files[1::2]]
    assert sorted(shares[0] + shares[1]) == files
    assert distribute.shard_files(files, 1, 0) == files  # one worker: the plain order
    with pytest.raises(UserError, match="--num-shards 3"):
        distribute.shard_files(files[:2], 3, 2)


def test_every_worker_stops_after_the_smallest_share():
    # Records per file 5, 3, 4: worker 0 gets 5 + 4 = 9, worker 1 gets 3.
    assert distribute.batches_per_worker([5, 3, 4], 2, 2) == 1
    assert distribute.batches_per_worker([5, 3, 4], 1, 2) == 6
    with pytest.raises(UserError, match="smaller than --batch-size 4"):
        distribute.batches_per_worker([5, 3, 4], 2, 4)


def test_each_record_set_is_shared_out_on_its_own_with_its_weight():
    sets = (pipeline.RecordSet(("a0", "a1"), (5, 3), 3.0), pipeline.RecordSet(("b0",), (4,), 1.0))
    assert distribute.shard_sets(list(sets[0].files), 2, 1) == ["a1"]  # a list: as before
    assert distribute.shard_sets(sets, 1, 0) == sets
    with pytest.raises(UserError, match="cannot feed 2 workers"):
        distribute.shard_sets(sets, 2, 1)  # set b has one file: nothing for worker 1
    # Worker 0: 5 of set a + 4 of set b; worker 1: 3 of set a + 2 of set b.
    assert distribute.batches_per_worker([[5, 3], [4, 2]], 2, 2) == 2
    assert distribute.steps_per_epoch(None, [[5, 3], [4, 2]], 2) == 7  # 14 records


def test_worker_seeds_differ_and_worker_0_keeps_the_run_seed():
    seeds = [distribute.worker_seed(7, i) for i in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4
    assert all(0 <= s < 2**31 for s in [distribute.worker_seed(2**31 - 1, 3)])


def test_describe_and_chief_without_strategy():
    assert distribute.describe(None, 4) == "global batch 4 on one device (--strategy none)"
    assert distribute.is_chief(None) and distribute.num_replicas(None) == 1


def test_train_flags(capsys, tmp_path):
    import train

    argv = ["--strategy", "mirrored", "--on-nan", "skip", "--train-records", "nothing-*",
            "--run-dir", str(tmp_path / "run")]
    assert cli.run_main(train.main, argv) == 2
    assert "--on-nan skip does not work with --strategy mirrored" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    cfg = train.config_from_args(["--strategy", "mirrored", "--devices", "/gpu:0,/gpu:1"])
    assert (cfg.strategy, cfg.devices) == ("mirrored", "/gpu:0,/gpu:1")
    assert train.config_from_args([]).strategy == "none"
    assert cli.run_main(train.main, ["--strategy", "ring"]) == 2
    assert "invalid choice: 'ring'" in capsys.readouterr().err


# ---------------------------------------------------------- data + helpers


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of 8 blob images each (16 records: 4 global batches of 4)."""
    from test_train import write_blobs

    d = tmp_path_factory.mktemp("shards")
    for k in range(2):
        write_blobs(d / f"b-train-{k:05d}-of-00002.tfrecord", 8, k)
    return str(d / "b-train-*")


def _run(code, *args, env=None, timeout=TIMEOUT):
    out = subprocess.run([sys.executable, "-c", code, *args], env=env or ENV, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# ------------------------------------------------- mirrored == one device


def reference_weights(cfg_json, start_checkpoint, steps, splits):
    """Single-device training from a checkpoint; BN statistics per batch split.

    splits=2 emulates 2 replicas (each half normalised on its own, the two
    losses averaged); splits=1 is the plain global-batch graph. Returns
    {variable name: value} of the trainable weights and Adam slots.
    """
    import tensorflow as tf

    import unet
    from core import config, optim
    from datasets import pipeline

    v1 = tf.compat.v1
    cfg = config.Config(**{**json.loads(cfg_json), "classes": ("cat",)})
    with tf.Graph().as_default():
        v1.set_random_seed(cfg.seed)  # the shuffles' order depends on it, as in train.py
        epoch = v1.placeholder(tf.int64, [])
        ds = pipeline.make_dataset(cfg.train_records, cfg.batch_size * 2, True, cfg.input_size,
                               cfg.depth, cfg.seed, epoch, cfg.shuffle_buffer)
        iterator = pipeline.make_initializable_iterator(ds)
        images, masks = iterator.get_next()  # [4, in, in, 3], [4, out, out, 1]
        losses = []
        for part_images, part_masks in zip(tf.split(images, splits), tf.split(masks, splits)):
            logits = unet.unet(part_images, True, cfg.depth, cfg.base_filters, cfg.num_outputs)
            losses.append(optim.pixel_loss(logits, part_masks, cfg.pos_weight)[0])
        global_step = v1.train.get_or_create_global_step()
        train_op = optim.minimize(optim.optimizer(cfg, cfg.learning_rate),
                                  tf.add_n(losses) / splits, global_step)
        saver = v1.train.Saver()
        with v1.Session() as sess:
            saver.restore(sess, start_checkpoint)
            steps_done, data_epoch = 0, 0
            while steps_done < steps:
                sess.run(iterator.initializer, {epoch: data_epoch})
                while steps_done < steps:
                    try:
                        sess.run(train_op)
                    except tf.errors.OutOfRangeError:
                        break
                    steps_done += 1
                data_epoch += 1
            return {v.op.name: sess.run(v) for v in v1.global_variables()
                    if v.op.name.startswith("unet/") and "moving_" not in v.op.name}


MIRRORED = """
import json, sys
from core import distribute
distribute.use_logical_cpus(2)  # before anything starts TF's runtime
import dataclasses, logging
import numpy as np
import tensorflow as tf
import train, test_distribute
from core import config, rundir
from datasets import pipeline
logging.basicConfig(level=logging.INFO)
cfg = config.Config(**json.loads(sys.argv[1]))
run_dir, steps = cfg.run_dir, cfg.max_steps
v1 = tf.compat.v1
# Step-0 checkpoint from --strategy none's own graph: both runs start from these weights.
with tf.Graph().as_default():
    plan = distribute.Plan(pipeline.record_files(cfg.train_records), [], 0, 0, steps, None)
    g = train.build_graph(cfg, plan)
    with v1.Session() as sess:
        sess.run(g.init)
        start = g.checkpoints.saver.save(sess, run_dir + "/" + rundir.CKPT_PREFIX, 0)
result = train.train(dataclasses.replace(cfg, strategy="mirrored", devices="/cpu:0,/cpu:1"))
assert result.step == steps, result
final = tf.train.load_checkpoint(result.checkpoint)
plain = dataclasses.replace(cfg, strategy="none")
cfg_json = json.dumps(dataclasses.asdict(plain))
out = {}
for splits in (2, 1):
    ref = test_distribute.reference_weights(cfg_json, start, steps, splits)
    diffs = [float(np.max(np.abs(final.get_tensor(k) - v)) / (np.max(np.abs(v)) + 1e-12))
             for k, v in ref.items()]
    out[splits] = {"max_rel_diff": max(diffs), "compared": len(diffs)}
out["moved"] = float(np.max(np.abs(final.get_tensor("unet/output/weights")
                                   - tf.train.load_checkpoint(start).get_tensor(
                                       "unet/output/weights"))))
print("RESULT", json.dumps(out))
"""


def test_mirrored_over_two_cpus_equals_one_device_splitting_the_batch(shards, tmp_path):
    """6 steps across an epoch boundary (16 records, global batch 4 = 2 per replica x 2),
    with AdamW's decay, which each replica must apply once to the shared kernels."""
    cfg = dict(TINY, train_records=shards, run_dir=str(tmp_path / "run"), max_steps=6,
               epochs=2, weight_decay=0.5)
    out = _run(MIRRORED, json.dumps(cfg))
    assert "global batch 4 = --batch-size 2 per replica x 2 replicas on 1 worker(s)" in out.stderr
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["moved"] > 1e-3  # training really changed the weights
    # 28 trainables of a depth-1 U-Net, each with Adam's two slots.
    assert result["2"]["compared"] == result["1"]["compared"] == 84
    assert result["2"]["max_rel_diff"] < 1e-5, result
    # Global-batch BN statistics give other weights: the comparison above can fail.
    assert result["1"]["max_rel_diff"] > 1e-3, result


def test_num_workers_counts_the_chief_and_worker_tasks_of_the_cluster():
    def strategy(cluster):
        resolver = types.SimpleNamespace(cluster_spec=lambda: tf.train.ClusterSpec(cluster))
        return types.SimpleNamespace(cluster_resolver=resolver)

    assert distribute.num_workers(None) == 1
    assert distribute.num_workers(types.SimpleNamespace(cluster_resolver=None)) == 1  # mirrored
    assert distribute.num_workers(strategy({})) == 1  # multi-worker without a cluster
    assert distribute.num_workers(strategy({"worker": ["a:1", "b:1"]})) == 2
    assert distribute.num_workers(strategy({"chief": ["c:1"], "worker": ["a:1", "b:1"]})) == 3


# -------------------------------------------------------- multi-worker


WORKER = """
import sys
import numpy as np
import tensorflow as tf
import train
from utils import cli
run = train._Loop.run


def run_then_dump(loop, writers):
    # Every variable of this worker's replica, read after its last step (one run: each
    # run of a multi-worker session is a round trip through its gRPC master).
    result = run(loop, writers)
    values = loop.sess.run({v.op.name: loop.g.strategy.experimental_local_results(v)[0]
                            for v in tf.compat.v1.global_variables()})
    np.savez(sys.argv[1], **values)
    return result


train._Loop.run = run_then_dump
code = cli.run_main(train.main, sys.argv[2:])
# Stay up until every worker is done, as the machines of a cluster do: a chief whose peer
# has already exited waits about a minute for it while closing its session.
print("done", flush=True)
sys.stdin.read()
sys.exit(code)
"""


def _trained(variables):
    """Names of the variables training must keep equal across workers: all but the wall-clock
    training time, which each worker measures on its own clock (train.py --minutes)."""
    return [name for name in variables if name != "train_seconds"]


def _train_two_workers(tmp_path, argv, tag):
    """Both workers of a 2-machine TF_CONFIG cluster on loopback; returns (logs, weights)."""
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs, logs = [], [tmp_path / f"{tag}-worker{i}.log" for i in range(2)]
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(ENV, TF_CONFIG=json.dumps(tf_config))
        dump = str(tmp_path / f"{tag}-worker{index}.npz")
        with open(logs[index], "w") as err:
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, dump, *argv],
                                          env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=err,
                                          bufsize=0))  # unbuffered: select() sees each line
    try:
        waiting = [proc.stdout for proc in procs]
        while waiting:  # each says "done" and waits, or exits (EOF), on its own
            ready, _, _ = select.select(waiting, [], [], TIMEOUT)
            assert ready, "a worker hung"
            for out in ready:
                line = out.readline()
                if line == b"done\n":
                    waiting.remove(out)
                elif not line:  # it exited early: its peer would wait for it forever
                    waiting = []
                    for proc in procs:
                        if proc.poll() is None:
                            proc.kill()
                    break
        for proc in procs:
            proc.stdin.close()  # lets the waiting workers exit
        for proc in procs:
            proc.wait(timeout=TIMEOUT)
    finally:
        for proc in procs:  # a worker left waiting for its peer must not outlive the test
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
    logs = [log.read_text() for log in logs]
    # The worker that failed first is reported, not the peer killed because of it.
    for proc, err in sorted(zip(procs, logs), key=lambda pair: pair[0].returncode == -9):
        assert proc.returncode == 0, err[-3000:]
    weights = [dict(np.load(tmp_path / f"{tag}-worker{i}.npz")) for i in range(2)]
    return logs, weights


def _events(directory):
    return sorted(f for f in os.listdir(directory) if f.startswith("events.out.tfevents"))


def test_two_workers_train_alike_only_the_chief_writes_and_both_resume(shards, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["--train-records", shards, "--val-records", "", "--run-dir", str(run_dir),
            "--strategy", "multi-worker", "--depth", "1", "--base-filters", "4",
            "--input-size", "44", "--batch-size", "2", "--learning-rate", "3e-3",
            "--log-every", "1", "--image-summary-every", "2", "--seed", "5", "--epochs", "9"]
    logs, (w0, w1) = _train_two_workers(tmp_path, [*argv, "--max-steps", "3"], "first")
    assert "global batch 4 = --batch-size 2 per replica x 2 replicas on 2 worker(s)" in logs[0]
    # Each worker reads one of the 2 shards: 8 records -> 4 batches of 2 per epoch.
    assert "4 steps per epoch" in logs[0] and "4 steps per epoch" in logs[1]
    assert sorted(w0) == sorted(w1) and "unet/output/weights" in w0
    for name in _trained(w0):
        np.testing.assert_allclose(w0[name], w1[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(w0["global_step"]) == 3
    # Only the chief wrote: one checkpoint, one event file, its config.
    assert (run_dir / "model.ckpt-3.index").exists()
    written = sorted(set(os.listdir(run_dir)) - {"train.lock"})  # utils/runlock.py's, chief only
    assert written == ["baseline", "checkpoint", "config.json",
                       "model.ckpt-3.data-00000-of-00001", "model.ckpt-3.index", "train", "val"]
    assert len(_events(run_dir / "train")) == 1

    logs, (r0, r1) = _train_two_workers(tmp_path, [*argv, "--max-steps", "5"], "resumed")
    for log in logs:  # both restored the chief's checkpoint, neither started afresh
        assert "resuming from" in log and "model.ckpt-3 (step 3" in log, log[-2000:]
    assert int(r0["global_step"]) == int(r1["global_step"]) == 5
    for name in _trained(r0):
        np.testing.assert_allclose(r0[name], r1[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert not np.allclose(r0["unet/output/weights"], w0["unet/output/weights"])
    assert (run_dir / "model.ckpt-5.index").exists()
    assert len(_events(run_dir / "train")) == 2  # the chief's, one per run
