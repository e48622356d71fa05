"""The run directory and its checkpoints: which files a run holds, which checkpoint to use.

A run directory (train.py's --run-dir) holds:

    config.json           the resolved Config (core/config.py)
    model.ckpt-<step>.*   periodic and epoch-end checkpoints (tf.compat.v1 Saver)
    checkpoint            the Saver's state file (latest checkpoint)
    best/model.ckpt-*     the best checkpoint by validation foreground IoU
    best/checkpoint
    train/, val/, baseline/  TensorBoard event files (`tensorboard --logdir logs`)
    val-<name>/           each validation set's, when train.py had several (val/: combined)
    eval.json, eval/      evaluate.py's report on the run's own val_records (+ TensorBoard)
    eval-<name>.json      its reports on other records, named for them (+ eval-<name>/)
    threshold.json        the adopted threshold predict.py and export.py default to
                          (docs/inference.md says when evaluate.py adopts one)
    clean-records/, corrupt_records.json   --skip-corrupt-records' copies and list
                          (datasets/guard.py)
    train.lock            while a training runs: its owner (utils/runlock.py)

Training and every inference tool pick checkpoints here alike: a checkpoint
torn by a crash (listed, but its files do not read completely) is passed over
with a warning for the newest older one that reads. The commands ask this module
for every path above and never join one themselves. train.py takes its hold on the
directory once (`training`: the resume check, the lock, the disk-error line, the
clean-up of a run dir left empty) and saves through `Checkpoints`.
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading

import tensorflow as tf

from core import config, optim
from datasets import guard
from utils import errors, runlock
from utils.cli import UsageError, UserError

v1 = tf.compat.v1
log = logging.getLogger("checkpoints")

RUN_CONFIG = "config.json"
CKPT_PREFIX = "model.ckpt"
BEST_DIR = "best"
EVAL_JSON = "eval.json"
THRESHOLD_JSON = "threshold.json"
LOCK_FILE = "train.lock"
CLEAN_DIR = "clean-records"
CORRUPT_REPORT = "corrupt_records.json"
DEFAULT_THRESHOLD = 0.5  # predict.py and export.py without --threshold or threshold.json
THRESHOLD_HELP = ("(default: the one evaluate.py adopted for the run, in threshold.json, "
                  "else 0.5)")


# ---------------------------------------------------------------- paths


def checkpoint_prefix(run_dir):
    """Where the periodic and epoch-end checkpoints are saved: <run_dir>/model.ckpt."""
    return os.path.join(run_dir, CKPT_PREFIX)


def best_dir(run_dir):
    return os.path.join(run_dir, BEST_DIR)


def best_prefix(run_dir):
    """Where the best checkpoint by validation IoU is saved: <run_dir>/best/model.ckpt."""
    return os.path.join(best_dir(run_dir), CKPT_PREFIX)


def events_dir(run_dir, name):
    """A TensorBoard event directory of the run: train, val, baseline or a report's name."""
    return os.path.join(run_dir, name)


def val_set_dir(name):
    """The TensorBoard events name of one validation set of several: val-<name>."""
    return f"val-{name}"


def report_path(run_dir, name):
    """An evaluate.py report: <run_dir>/<name>.json (name: eval or eval-<records>)."""
    return os.path.join(run_dir, name + ".json")


def threshold_path(run_dir):
    return os.path.join(run_dir, THRESHOLD_JSON)


def lock_path(run_dir):
    return os.path.join(run_dir, LOCK_FILE)


def corrupt_records(run_dir):
    """Where --skip-corrupt-records puts clean copies of damaged shards and its report."""
    return guard.SkipTo(os.path.join(run_dir, CLEAN_DIR), os.path.join(run_dir, CORRUPT_REPORT))


def hand_over_checkpoints(saver, best_saver, run_dir):
    """Give resumed savers the checkpoints earlier runs saved: a Saver prunes only what it
    saved itself, so without this --keep-checkpoints would not hold across resumes."""
    for each, directory in ((saver, run_dir), (best_saver, best_dir(run_dir))):
        state = tf.train.get_checkpoint_state(directory)
        if state:
            each.recover_last_checkpoints(list(state.all_model_checkpoint_paths))


def step(prefix):
    """Global step from a `model.ckpt-<step>` prefix; 0 for a prefix without one."""
    tail = prefix.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def latest(directory):
    """Path prefix of the newest checkpoint the state file of directory lists, or None."""
    return tf.train.latest_checkpoint(directory)


def readable(prefix):
    """True when every tensor of the checkpoint reads (a torn data file fails here)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    # The pybind reader raises IndexError for a short read, RuntimeError for a bad index.
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError):
        return False
    return True


def _newest_readable(directory):
    """(newest checkpoint of directory that reads completely or None, names found on disk)."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError) as e:
        log.warning("the checkpoint state file in %s is unreadable (%s): looking for "
                    "checkpoints by name", directory, errors.summary(e))
        state = None
    on_disk = [n[:-len(".index")] for n in
               tf.io.gfile.glob(os.path.join(directory, CKPT_PREFIX + "-*.index"))]
    candidates = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in candidates:
        candidates.append(state.model_checkpoint_path)
    # get_checkpoint_state already puts directory in front of the state file's relative
    # entries, and the glob's names carry it: joining again doubled a relative run_dir.
    # No (readable) state file: fall back to the index files on disk.
    for path in sorted(candidates or on_disk, key=step, reverse=True):
        if readable(path):
            return path, on_disk
        log.warning("checkpoint %s is unreadable (torn by a crash?): trying an older one", path)
    return None, on_disk


def restorable(run_dir):
    """Newest checkpoint of run_dir that reads completely, or None when it has none.

    For resuming training. Logs any it passes over. Raises UserError when
    checkpoints are there but none reads: starting over would overwrite them,
    so the user decides.
    """
    path, on_disk = _newest_readable(run_dir)
    if path is None and on_disk:
        raise UserError(f"no checkpoint in {run_dir} reads completely (see the warnings "
                        "above): move them aside to start over, or use a new --run-name")
    return path


def resolve(run_dir, checkpoint=None):
    """Checkpoint prefix for inference: `checkpoint` (a prefix or a directory) or the run's best.

    Without `checkpoint`: the newest readable one in best/, else in run_dir. A
    directory: its newest readable one. A prefix (also with .index/.meta/.data-
    suffix) is used as given.
    """
    if checkpoint is not None and not os.path.isdir(checkpoint):
        prefix = re.sub(r"(\.index|\.meta|\.data-\d+-of-\d+)$", "", checkpoint)
        if not os.path.exists(prefix + ".index"):
            raise UserError(f"checkpoint {prefix} not found (no {prefix}.index): pass a "
                            "model.ckpt-<step> prefix or a directory holding one")
        return prefix
    any_on_disk = False
    # In order, and stop at the first that reads: checking reads every tensor.
    for directory in [checkpoint] if checkpoint else [os.path.join(run_dir, BEST_DIR), run_dir]:
        path, on_disk = _newest_readable(directory)
        if path:
            return path
        any_on_disk = any_on_disk or bool(on_disk)
    if any_on_disk:
        raise UserError(f"no checkpoint in {checkpoint or run_dir} reads completely (see "
                        "the warnings above): pass a readable --checkpoint, or train again")
    if checkpoint is None:
        raise UserError(f"no checkpoint in {run_dir}: train it first with train.py, "
                        "or pass --checkpoint")
    raise UserError(f"no checkpoint in directory {checkpoint}: pass a "
                    "model.ckpt-<step> prefix or a directory with a `checkpoint` file")


def restore(sess, checkpoint, cfg):
    """Restore the "unet" variables of sess.graph, after checking they match the checkpoint.

    For inference: training checkpoints also hold global_step and optimizer
    slots; only the network's variables (incl. batch-norm moving statistics)
    are read.
    """
    with sess.graph.as_default():
        variables = v1.global_variables("unet")
        try:
            stored = dict(tf.train.list_variables(checkpoint))
        except (tf.errors.OpError, ValueError) as e:
            raise UserError(f"cannot read checkpoint {checkpoint}: {errors.summary(e)}") from None
        problem = None
        for var in variables:
            name, shape = var.op.name, var.shape.as_list()
            if name not in stored:
                problem = f"it has no variable {name}"
            elif list(stored[name]) != shape:
                problem = f"{name} is {list(stored[name])} there but {shape} here"
            if problem:
                break
        names = {var.op.name for var in variables}
        # Optimizer slots (<variable>/Adam, ...) sit under "unet/" too; skip them.
        extra = sorted(k for k in stored if k.startswith("unet/") and k not in names
                       and not any(k.startswith(v + "/") for v in stored))
        if problem is None and extra:
            problem = f"it has variable {extra[0]} that this network lacks"
        if problem:
            raise UserError(f"checkpoint {checkpoint} does not match config.json (depth "
                            f"{cfg.depth}, base_filters {cfg.base_filters}, num_outputs "
                            f"{cfg.num_outputs}): {problem}; use the run directory it was "
                            "trained in")
        try:
            v1.train.Saver(var_list=variables).restore(sess, checkpoint)
        except tf.errors.OpError as e:
            raise UserError(f"cannot restore checkpoint {checkpoint}: "
                            f"{errors.summary(e)}") from None


# ---------------------------------------------------------------- training's checkpoints


class Checkpoints:
    """A training run's savers and the checks of every save and restore.

    Not MonitoredTrainingSession's Scaffold and CheckpointSaverHook: that session stops
    at the first OutOfRangeError (each epoch's end here), restores latest_checkpoint, not
    the newest readable one (restorable), and saves without the finite check
    --on-nan needs; its hooks would not save best/ either.
    """

    def __init__(self, run_dir, keep, chief, train_seconds):
        """keep: --keep-checkpoints; chief: Training.chief; train_seconds: train.py's
        checkpointed training time (its .var, and .set(sess, value))."""
        self.run_dir, self.chief, self.train_seconds = run_dir, chief, train_seconds
        with tf.name_scope("finite_check"):
            self.finite = optim.all_finite(v1.global_variables())  # [] bool
        # Relative paths in the `checkpoint` files keep a run dir movable (e.g. off a GPU box).
        self.saver = v1.train.Saver(max_to_keep=keep, save_relative_paths=True)
        self.best_saver = v1.train.Saver(max_to_keep=1, save_relative_paths=True)
        # Checkpoints from before the training clock existed still resume (from 0 seconds).
        self.clockless_saver = v1.train.Saver([v for v in v1.global_variables()
                                               if v is not train_seconds.var])

    def restore(self, sess, checkpoint):
        """Restore `checkpoint` and hand the savers the older files (so they prune them)."""
        try:
            if "train_seconds" in {name for name, _ in tf.train.list_variables(checkpoint)}:
                self.saver.restore(sess, checkpoint)
            else:  # saved before the training clock: count from now
                self.clockless_saver.restore(sess, checkpoint)
                sess.run(self.train_seconds.var.initializer)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
            raise UserError(f"checkpoint {checkpoint} does not match this network "
                            f"({errors.summary(e)}): use the flags it was trained with, or a "
                            "new --run-name") from None
        hand_over_checkpoints(self.saver, self.best_saver, self.run_dir)

    def save(self, sess, step, seconds):
        """Checkpoint at `step` with the training time so far; None off the chief (the
        chief's checkpoint is every worker's)."""
        if not self.chief:
            return None
        if not sess.run(self.finite):
            raise UserError(f"weights became NaN/Inf by step {step}: not saving them (the "
                            "last good checkpoint is kept); lower --learning-rate")
        self.train_seconds.set(sess, seconds)
        return self.saver.save(sess, checkpoint_prefix(self.run_dir), step,
                               write_meta_graph=False)

    def save_best(self, sess, step):
        return self.best_saver.save(sess, best_prefix(self.run_dir), step,
                                    write_meta_graph=False) if self.chief else None


# ---------------------------------------------------------------- config.json


def save_config(cfg, run_dir):
    """Write config.json atomically so a crash never leaves half a file."""
    os.makedirs(run_dir, exist_ok=True)
    return errors.write_json(os.path.join(run_dir, RUN_CONFIG), dataclasses.asdict(cfg))


def load_config(run_dir):
    """Read `<run_dir>/config.json` back into a checked config.RunConfig, or raise UserError.

    Files from earlier versions load too: a field they lack takes Config's default.
    """
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} does not exist: pass the logs/<run> "
                        "directory that train.py wrote")
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {run_dir} is not a train.py run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): restore it or re-run train.py") from None
    return config.from_json(raw, path)


def check_resumable(cfg):
    """A run dir trained with another network cannot be resumed: say so before TF does."""
    if not os.path.exists(os.path.join(cfg.run_dir, RUN_CONFIG)) or not latest(cfg.run_dir):
        return
    old = load_config(cfg.run_dir)
    diff = [f"{k} {getattr(old, k)} -> {getattr(cfg, k)}" for k in config.MODEL_FIELDS
            if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise UserError(f"{cfg.run_dir} holds checkpoints of another network ({', '.join(diff)}):"
                        " use the same flags to resume, or a new --run-name")


# ---------------------------------------------------------------- threshold.json


def write_threshold(run_dir, threshold, foreground_iou, records, checkpoint, reason, report):
    """Adopt `threshold` as the run's default for predict.py and export.py (atomically)."""
    return errors.write_json(threshold_path(run_dir), {
        "threshold": threshold, "foreground_iou": foreground_iou, "records": records,
        "checkpoint": checkpoint, "global_step": step(checkpoint), "reason": reason,
        "report": os.path.basename(report)}, sort_keys=False)


@dataclasses.dataclass(frozen=True)
class Decision:
    """How a run turns its maps into a mask: predict.py's and export.py's one rule."""

    names: tuple | None  # K >= 2: ("background", *classes), decided by the argmax; K = 1: None
    threshold: float | None  # K = 1: the probability threshold; K >= 2: None
    source: str  # where the threshold came from (default_threshold's), or "argmax"


def decision(run_dir, cfg, threshold=None, argmax_does="picks the most probable one per pixel"):
    """The run's Decision; a --threshold on a run of K >= 2 classes is a UsageError (the
    argmax decides there), and `argmax_does` says what the command does instead."""
    if cfg.num_outputs == 1:
        return Decision(None, *default_threshold(run_dir, threshold))
    names = config.class_names(cfg)
    if threshold is not None:
        raise UsageError(f"--threshold is for runs of one class; {run_dir} has "
                         f"{len(names) - 1} classes and {argmax_does}: leave --threshold out")
    return Decision(names, None, "argmax")


def default_threshold(run_dir, given=None):
    """(threshold, where it came from): `given`, else the run's adopted threshold, else 0.5.

    Run dirs from before threshold.json: eval.json's best_threshold counts if it
    was tuned on the run's val_records.
    """
    if given is not None:
        return given, "--threshold"
    path = threshold_path(run_dir)
    stored = _read_result(path)
    if stored is not None:
        return _checked_threshold(stored.get("threshold"), path, "threshold"), path
    path = os.path.join(run_dir, EVAL_JSON)
    stored = _read_result(path)
    recorded = stored and stored.get("records")
    recorded = tuple(recorded) if isinstance(recorded, list) else recorded  # several sets
    if (stored is None or "adopted_threshold" in stored or stored.get("best_threshold") is None
            or recorded != load_config(run_dir).val_records):
        return DEFAULT_THRESHOLD, "default"
    return _checked_threshold(stored["best_threshold"], path, "best_threshold"), path


def _read_result(path):
    """An evaluate.py JSON file as a dict, None if it does not exist, else UserError."""
    try:
        with open(path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        stored = None
    if not isinstance(stored, dict):
        raise UserError(f"{path} is not a valid evaluate.py result: re-run evaluate.py "
                        "or pass --threshold")
    return stored


def _checked_threshold(value, path, key):
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UserError(f"{path} has {key} {value!r}, not a number in [0, 1]: "
                        "re-run evaluate.py or pass --threshold")
    return float(value)


# ---------------------------------------------------------------- a training's hold


@dataclasses.dataclass
class Training:
    """The run directory as train.py holds it (`training`)."""

    run_dir: str
    chief: bool  # writes config.json, checkpoints and summaries (core/distribute.py)
    skip_to: guard.SkipTo  # where --skip-corrupt-records puts what it skips

    def start(self, cfg):
        """Save config.json (the chief: after the record scan, which may make
        cfg.train_weights concrete) and return the checkpoint to resume from, or None."""
        if self.chief:
            save_config(cfg, self.run_dir)
        return restorable(self.run_dir)  # passes over one torn by a crash


@contextlib.contextmanager
def training(cfg, chief):
    """train.py's hold on cfg.run_dir, entered once before anything is written there.

    Refuses a run dir of another network (check_resumable); on the chief, holds the
    run lock so a second training refuses (utils/runlock.py); turns a full disk or
    an unwritable dir into one line; and removes a new run dir that a failure left
    empty (records not found), after the lock file is gone. Yields a Training.
    """
    check_resumable(cfg)
    run_dir = cfg.run_dir
    lock = (runlock.RunLock(run_dir, lock_path(run_dir)) if chief
            else contextlib.nullcontext())  # the other workers only read the chief's run dir
    with removed_if_left_empty(run_dir), _disk_errors(run_dir), lock:
        yield Training(run_dir, chief, corrupt_records(run_dir))


@contextlib.contextmanager
def _disk_errors(run_dir):
    """Turn a full disk / file-size limit / unwritable dir while writing run_dir into one line.

    Also quiets the traceback TensorFlow's event-writer thread prints for the same
    failure; the error reaches the trainer again when the writer is flushed.
    """
    previous = threading.excepthook

    def thread_hook(args):
        if errors.disk_problem(args.exc_value) is None:
            previous(args)

    threading.excepthook = thread_hook
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a disk problem
        problem = errors.disk_problem(e) or errors.disk_problem(e.__context__ or e)
        if problem is None:
            raise
        what, where = problem
        raise UserError(f"cannot write {where or run_dir} ({what}): free space or fix "
                        "permissions, then re-run the same command; it resumes from the last "
                        "complete checkpoint") from None
    finally:
        threading.excepthook = previous


@contextlib.contextmanager
def removed_if_left_empty(run_dir):
    """Around a command that makes run_dir: if it fails, a run_dir it created and left
    empty (nothing written yet, e.g. records not found) is removed, with the parents it
    made, so a failed first try leaves nothing behind. Only empty directories are removed."""
    made = os.path.abspath(run_dir)
    while not os.path.exists(os.path.dirname(made)):  # the topmost directory to be made
        made = os.path.dirname(made)
    existed = os.path.exists(made)
    try:
        yield
    except BaseException:
        path = os.path.abspath(run_dir)
        while not existed and os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
            if path == made:
                break
            path = os.path.dirname(path)
        raise
