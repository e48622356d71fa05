"""Data-parallel training with TensorFlow's own tf.distribute engine, in graph mode.

train.py --strategy picks one of:

    none          one device: the default strategy's single replica, on the same path
    mirrored      tf.compat.v1.distribute.MirroredStrategy over all visible GPUs,
                  or the devices named by --devices ("/gpu:0,/gpu:1"; "/cpu:0,/cpu:1"
                  makes logical CPU devices, which is how tests run it without GPUs)
    multi-worker  tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy,
                  one process per machine, configured by the standard TF_CONFIG

How a step runs (build_step): every replica runs the same function on its own
per-replica batch (forward, loss, gradients); each replica's loss is scaled by
1/replicas and the v1 optimizer all-reduces (sums) the gradients, so the
update is the gradient of the mean of the replica losses, i.e. the same as one
device on the global batch = --batch-size x replicas -- except for batch norm,
whose batch statistics are per replica (as in every data-parallel BN without
sync-BN). The moving statistics are updated per replica with the mean of the
replicas' batch statistics, so every copy stays identical.

Input (make_iterator): each worker reads its own share of the record files
(file i goes to worker i mod workers), shuffles with its own seed, and in
multi-worker runs stops every worker after the same number of batches: a
worker that ran out early would leave the others waiting in an all-reduce.
The iterator stays initialisable, re-initialised every epoch.

Only the chief (worker 0, or the "chief" task) writes summaries, checkpoints
and config.json; every worker restores from the checkpoint in the shared run
directory, so all of them resume together.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os

import tensorflow as tf

from utils.cli import UsageError, UserError

v1 = tf.compat.v1
log = logging.getLogger("distribute")

STRATEGIES = ("none", "mirrored", "multi-worker")
TASK_TYPES = ("chief", "worker")
# Keeps the workers' shuffle and window seeds apart (datasets/pipeline.py spaces epochs ~1e6 apart).
_WORKER_SEED_STRIDE = 7919


# ------------------------------------------------------------------ flags


def parse_devices(text):
    """'/gpu:0,/gpu:1' (or 'gpu:0,gpu:1') -> ['/gpu:0', '/gpu:1']; '' -> None (all GPUs)."""
    if not text:
        return None
    devices = []
    for name in (d.strip() for d in text.split(",")):
        spec = tf.DeviceSpec.from_string(name if name.startswith("/") else "/" + name)
        if spec.device_type is None or spec.device_index is None:
            raise UsageError(f"--devices entry {name!r} is not a device like /gpu:0 or /cpu:1")
        devices.append(f"/{spec.device_type.lower()}:{spec.device_index}")
    if len(set(devices)) != len(devices):
        raise UsageError(f"--devices {text!r} names a device twice")
    return devices


def read_tf_config(environ=None):
    """The TF_CONFIG dict (cluster + task), checked; UserError naming what is wrong."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise UserError(f"--strategy multi-worker needs the TF_CONFIG environment variable, "
                        f"{example}")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = task["type"], int(task["index"])
        hosts = cluster[task_type]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not a cluster/task JSON object ({type(e).__name__}: "
                        f"{e}), {example}") from None
    if task_type not in TASK_TYPES or any(k not in TASK_TYPES for k in cluster):
        raise UserError(f"TF_CONFIG may only hold {' and '.join(TASK_TYPES)} tasks (got "
                        f"task {task_type!r}, cluster {sorted(cluster)})")
    if not 0 <= index < len(hosts):
        raise UserError(f"TF_CONFIG task index {index} is outside the {len(hosts)} "
                        f"{task_type} addresses of the cluster")
    return tf_config


def use_logical_cpus(count):
    """Split the CPU into `count` logical devices (for tests and benchmarks without GPUs).

    Must run before TensorFlow initialises its runtime (the first Session or
    eager op); afterwards the device list is fixed and this raises UserError.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        raise UserError(f"cannot make {count} logical CPU devices: TensorFlow's runtime is "
                        "already initialised in this process; choose the devices first") from None


def check_flags(cfg):
    """Refuse settings the distributed step cannot run, before any work starts."""
    if cfg.strategy != "none" and getattr(cfg, "on_nan", "stop") == "skip":
        raise UsageError(f"--on-nan skip does not work with --strategy {cfg.strategy}: its "
                         "conditional update would sit inside the replicas' gradient "
                         "all-reduce; use --on-nan stop")


def make_strategy(name, devices=None):
    """The tf.distribute strategy for --strategy/--devices, or None for 'none'.

    name: one of STRATEGIES (the Config field's rule checked it). devices: a list
    from parse_devices (mirrored only). Naming more CPU devices than exist creates
    logical CPU devices, so call this before any Session.
    """
    if name == "none":
        if devices:
            raise UsageError("--devices needs --strategy mirrored")
        return None
    if name == "multi-worker":
        if devices:
            raise UsageError("--devices applies to --strategy mirrored; a multi-worker run uses "
                             "every GPU of each machine (limit them with CUDA_VISIBLE_DEVICES)")
        read_tf_config()
        # Made eagerly, the strategy would start an eager gRPC server on this worker's port;
        # in a graph it leaves the port to the Server that session_target starts.
        with tf.Graph().as_default():
            return v1.distribute.experimental.MultiWorkerMirroredStrategy()
    if devices:
        cpus = [int(d.split(":")[1]) for d in devices if d.startswith("/cpu:")]
        # Listing logical devices starts the runtime, so decide from the configuration.
        physical = tf.config.list_physical_devices("CPU")[0]
        configured = tf.config.get_logical_device_configuration(physical) or [None]
        if cpus and max(cpus) >= len(configured):
            use_logical_cpus(max(cpus) + 1)
        available = {f"/{d.device_type.lower()}:{tf.DeviceSpec.from_string(d.name).device_index}"
                     for d in tf.config.list_logical_devices()}
        missing = [d for d in devices if d not in available]
        if missing:
            raise UserError(f"--devices {','.join(missing)} not found; this machine has "
                            f"{', '.join(sorted(available))}")
    return v1.distribute.MirroredStrategy(devices)


# ----------------------------------------------------------- who is who


def num_workers(strategy):
    """Machines (processes) in the run: the chief and worker tasks of its cluster.

    Single-machine strategies have no cluster_resolver (None): one worker.
    """
    resolver = None if strategy is None else strategy.cluster_resolver
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(sum(len(cluster.get(job, ())) for job in TASK_TYPES), 1)


def is_chief(strategy):
    """True where summaries, checkpoints and config.json are written."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def num_replicas(strategy):
    return 1 if strategy is None else strategy.num_replicas_in_sync


def describe(strategy, batch_size):
    """One log line: the global batch and how it splits over replicas and workers."""
    if strategy is None:
        return f"global batch {batch_size} on one device (--strategy none)"
    replicas, workers = num_replicas(strategy), num_workers(strategy)
    return (f"global batch {batch_size * replicas} = --batch-size {batch_size} per replica x "
            f"{replicas} replicas on {workers} worker(s) ({type(strategy).__name__}"
            f"{', chief' if is_chief(strategy) and workers > 1 else ''})")


def session_target(strategy, session_config):
    """(target, config, server) for v1.Session; starts this worker's gRPC server.

    Multi-worker graph mode runs its collectives through the in-process server,
    so keep `server` referenced for as long as the Session lives.
    """
    if strategy is None:
        return "", session_config, None
    session_config = strategy.update_config_proto(session_config)
    # A Session given a ConfigProto ignores tf.config's logical devices: without this, the
    # second replica's ops would be soft-placed on /cpu:0 and the all-reduce never completes.
    logical = tf.config.get_logical_device_configuration(tf.config.list_physical_devices("CPU")[0])
    if logical and len(logical) > 1:
        session_config.device_count["CPU"] = len(logical)
    if num_workers(strategy) == 1:
        return "", session_config, None
    resolver = strategy.cluster_resolver
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, config=session_config,
                                  start=True)
    return server.target, session_config, server


# ------------------------------------------------------------------ input


def worker_seed(seed, index):
    """Worker 0 keeps the run's seed (so 1 worker matches --strategy none's data)."""
    return (seed + index * _WORKER_SEED_STRIDE) % 2**31


def shard_files(files, workers, index):
    """Worker `index`'s share of the record files: every workers-th one, from index."""
    share = files[index::workers]
    if not share:
        raise UserError(f"{len(files)} record file(s) cannot feed {workers} workers: convert "
                        f"with convert_coco.py --num-shards {workers} (or a multiple of it)")
    return share


def shard_sets(files, workers, index):
    """shard_files of a list of files, or of each pipeline.RecordSet of a mixed run: a
    worker draws from its share of every set, each with the whole set's weight."""
    if isinstance(files, list):
        return shard_files(files, workers, index)
    return tuple(dataclasses.replace(s, files=tuple(shard_files(list(s.files), workers, index)),
                                     counts=tuple(shard_files(list(s.counts), workers, index)))
                 for s in files)


def batches_per_worker(counts, workers, batch_size):
    """Batches every worker can run in one epoch: the smallest worker share's full batches.

    counts: records per file in list_records order, or one such list per record set
    (each set is sharded on its own). A worker that stopped early would leave the
    others blocked in an all-reduce, so all stop together.
    """
    sets = counts if counts and isinstance(counts[0], list) else [counts]
    shares = [sum(sum(shard_files(c, workers, i)) for c in sets) for i in range(workers)]
    steps = min(shares) // batch_size
    if steps == 0:
        raise UserError(f"a worker's share of the records ({min(shares)}) is smaller than "
                        f"--batch-size {batch_size}: use more data or a smaller batch")
    return steps


def make_iterator(strategy, files, seed, dataset_fn, take=None, skip=0):
    """The strategy's initialisable input iterator over per-replica batches.

    dataset_fn(files, seed, skip_batches) -> a dataset of per-replica batches from
    batch skip_batches of the epoch on; each worker gets its share of `files`
    (shard_files) and its own seed (worker_seed).
    take: batches per worker and epoch (multi-worker), None = until exhausted.
    skip: steps of the epoch already run ([] int64 tensor, fed at initialisation):
    every worker passes over the batches they took, so a resumed epoch goes on.
    A worker's batches go round-robin to its replicas: with 2 local replicas,
    batches 0 and 1 of the worker's dataset make its first step.
    """
    def input_fn(context):
        workers, index = context.num_input_pipelines, context.input_pipeline_id
        # Each step takes one batch per local replica.
        replicas = tf.constant(_local_replicas(strategy), tf.int64)
        skip_batches = tf.cast(skip, tf.int64) * replicas
        ds = dataset_fn(shard_sets(files, workers, index), worker_seed(seed, index),
                        skip_batches)
        return ds if take is None else ds.take(take * replicas - skip_batches)

    return _Iterator(strategy.make_input_fn_iterator(input_fn))


class _Iterator:
    """A distributed iterator whose `initializer` is one op made once (the graph gets finalized;
    the strategy's own property builds new ops on every access)."""

    def __init__(self, iterator):
        self._iterator = iterator
        self.initializer = tf.group(iterator.initialize())

    def get_next(self):
        return self._iterator.get_next()


def _local_replicas(strategy):
    return num_replicas(strategy) // num_workers(strategy)


# ------------------------------------------------------------------- step


def _moving_stats_averaged(next_creator, **kwargs):
    """Non-trainable variables made in a replica (BN moving statistics) get MEAN aggregation.

    unet.py updates them with assign_sub inside the replica function; a mirrored
    variable accepts that only with an aggregation, and MEAN makes every copy
    take the average of the replicas' updates.
    """
    if not kwargs.get("trainable", True) and kwargs.get("aggregation") in (
            None, tf.VariableAggregation.NONE):
        kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


def build_step(strategy, iterator, loss_fn, minimize_fn, global_step):
    """One training step run by every replica; returns a dict of cross-replica results.

    loss_fn(images [b,in,in,3] f32, masks [b,out,out,1] u8) -> (loss, logits
    [b,out,out,1]) builds the per-replica forward pass; minimize_fn(loss) -> train op
    (it must run the batch-norm UPDATE_OPS, as optim.minimize does).
    Returns loss (mean over all replicas), step (global step after the update),
    and images, masks, logits of this worker's first replica (for summaries).
    """
    def replica_step(images, masks):
        with tf.variable_creator_scope(_moving_stats_averaged):
            loss, logits = loss_fn(images, masks)
        # The v1 optimizer sums the replicas' gradients (it scales only under Estimator), so
        # scale here: the update is then the gradient of the mean loss over the global batch.
        train_op = minimize_fn(loss / strategy.num_replicas_in_sync)
        with tf.control_dependencies([train_op]):
            return tf.identity(loss), images, masks, logits

    loss, images, masks, logits = strategy.extended.call_for_each_replica(
        replica_step, args=iterator.get_next())
    local_losses = strategy.experimental_local_results(loss)
    with tf.control_dependencies(local_losses):
        step = tf.identity(global_step.read_value())
    first = [strategy.experimental_local_results(x)[0] for x in (images, masks, logits)]
    return {"loss": strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
            "step": step, "images": first[0], "masks": first[1], "logits": first[2]}


def steps_per_epoch(strategy, counts, batch_size):
    """Steps in one epoch: all records over the global batch, or the multi-worker limit.

    counts: records in each file, in list_records order (from guard.scan_records), or
    one such list per record set of a mixed run.
    """
    if num_workers(strategy) > 1:
        return batches_per_worker(counts, num_workers(strategy),
                                  batch_size * _local_replicas(strategy))
    return math.ceil(_total(counts) / (batch_size * num_replicas(strategy)))


def _total(counts):
    return sum(sum(c) if isinstance(c, list) else c for c in counts)


@dataclasses.dataclass
class Plan:
    """What the record scan decided: the files and how many steps they make."""

    # checked record files (clean copies with --skip-corrupt-records); a mixed run: a
    # tuple of pipeline.RecordSets
    train_files: list | tuple
    val_files: list  # one list of files per validation set; [] without val_records
    num_train: int  # training records
    steps_per_epoch: int
    total_steps: int  # the epoch / max_steps limit; 0: --minutes alone decides
    worker_steps: int | None  # multi-worker: steps per epoch every worker can feed


def plan(strategy, cfg, train_files, counts, val_files):
    """The Plan of a run (cfg: a config.RunConfig) over guard.scan_records' files and
    counts, logged with how the global batch splits."""
    steps = steps_per_epoch(strategy, counts, cfg.batch_size)
    limits = [n for n in (cfg.epochs * steps, cfg.max_steps) if n]
    result = Plan(train_files, val_files, _total(counts), steps,
                  total_steps=min(limits, default=0),  # 0: --minutes alone decides
                  worker_steps=steps if num_workers(strategy) > 1 else None)
    log.info(describe(strategy, cfg.batch_size))
    total = [f"{result.total_steps} steps"] if result.total_steps else []
    if cfg.minutes:
        total.append(f"{cfg.minutes:g} min of training (start-up and the final validation "
                     "come on top)")
    log.info("%d train records, %d steps per epoch, %s in total", result.num_train, steps,
             " or ".join(total))
    return result


# --------------------------------------------------------- train.py glue


def scope(strategy):
    """The strategy's scope (variables become mirrored), or a no-op for --strategy none."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


class _NoWriter:
    """Stands in for a FileWriter on non-chief workers: their events would duplicate the chief's."""

    def add_summary(self, *args, **kwargs):
        pass

    add_session_log = add_graph = add_summary

    def flush(self):
        pass

    close = flush


def summary_writer(strategy, logdir, graph=None):
    """A v1 FileWriter on the chief; elsewhere a writer that drops everything."""
    return v1.summary.FileWriter(logdir, graph) if is_chief(strategy) else _NoWriter()
