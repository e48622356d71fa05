"""Train the U-Net on record shards in a tf.compat.v1 Session.

    python train.py --train-records 'data/cat-train2017-*' --val-records 'data/cat-val2017-*'

Everything lands in the run dir (default logs/<run-name>, see checkpoints.py):
config.json, Saver checkpoints model.ckpt-<step> (periodic, every epoch end,
on Ctrl-C/SIGTERM), the best one by validation foreground IoU in best/, and
TensorBoard events in train/ (cost and learning rate every step; every
--image-summary-every steps `windows`: input window, ground truth and prediction
side by side; the graph), val/ (metrics at every validation) and baseline/ (the
all-background metrics under the same tags, so each chart shows both; see
docs/tensorboard.md). Re-running the same command resumes from the latest
checkpoint: global step, epoch, Adam slots, the best IoU so far and the
training time so far.

--minutes M trains for a time budget instead of a number of epochs: the
cosine schedule is a function of progress = training time / budget (fed to
the graph every step), so it reaches its end exactly when the time runs out;
then the run validates and saves. The budget is the total over resumes (the
training time is checkpointed) and counts this run's steps, periodic
validations and checkpoints; start-up before the first step and the final
validation come on top (see _TrainingClock).

Validation metrics are dataset-level over valid (non-255) pixels of the
validation windows: foreground IoU = total intersection / total union, Dice,
precision, recall and pixel accuracy, next to the same metrics for predicting
background everywhere, so a model that finds nothing cannot look good.
"""

import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf

import augment
import checkpoints
import cli
import config
import data
import distribute
import errors
import guard
import records
import runlock
import speed
import unet
from cli import UsageError, UserError

v1 = tf.compat.v1
log = logging.getLogger("train")

LR_SCHEDULES = ("constant", "exponential", "cosine")
MODEL_FIELDS = ("depth", "base_filters", "num_outputs")  # must match to resume
EXIT_ON_SIGNAL = {signal.SIGINT: cli.EXIT_INTERRUPTED, signal.SIGTERM: 0}
MAX_NAN_SKIPS = 20  # --on-nan skip: more non-finite steps in a row means training diverged
METRIC_TAGS = ("iou", "dice", "precision", "recall", "accuracy")  # metrics_from_counts' keys


# ------------------------------------------------------------ config checks


def stats_path_for(train_records):
    """The converter's stats JSON beside the shards: data/cat-train2017-*... -> -stats.json."""
    derived = re.sub(r"-\*[^/]*$", "-stats.json", train_records)
    if derived == train_records:
        raise UsageError(f"cannot find the converter's stats file from --train-records "
                         f"{train_records!r} (expected a '<output>-<split>-*' glob): pass --stats")
    return derived


def read_stats(path):
    try:
        with open(path) as f:
            stats = json.load(f)
        fraction = float(stats["foreground_fraction"])
    except FileNotFoundError:
        raise UserError(f"stats file {path} is missing: convert_coco.py / convert_pets.py write "
                        "it next to the shards; pass --stats or a number for --pos-weight"
                        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"stats file {path} is unreadable or has no number "
                        f"'foreground_fraction' ({e}): re-run convert_coco.py or "
                        "convert_pets.py") from None
    return stats, fraction


def resolve(cfg):
    """Check flags, resolve pos_weight and precision 'auto' and the seed; returns a new Config."""
    if not unet.is_valid_input_size(cfg.input_size, cfg.depth):
        raise UsageError(
            f"--input-size {cfg.input_size} is not valid for a depth-{cfg.depth} U-Net; the "
            f"nearest valid sizes are {unet.valid_input_size(cfg.input_size, cfg.depth, 'down')}"
            f" and {unet.valid_input_size(cfg.input_size, cfg.depth)}")
    if cfg.val_input_size and not unet.is_valid_input_size(cfg.val_input_size, cfg.depth):
        raise UsageError(
            f"--val-input-size {cfg.val_input_size} is not valid for a depth-{cfg.depth} U-Net;"
            f" the nearest valid sizes are "
            f"{unet.valid_input_size(cfg.val_input_size, cfg.depth, 'down')} and "
            f"{unet.valid_input_size(cfg.val_input_size, cfg.depth)}")
    if cfg.long_side < 0:
        raise UsageError(f"--long-side must be >= 0 (0 = images as stored), got {cfg.long_side}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
    check_budget(cfg)
    # Checks the augmentation flags; config.json then names every group ("all" spelled out).
    changes = {"augment": augment.format_groups(augment.from_config(cfg).groups)}
    if cfg.pos_weight == "auto":
        path = cfg.stats or stats_path_for(cfg.train_records)
        stats, fraction = read_stats(path)
        if not 0.0 < fraction < 1.0:
            raise UserError(f"{path}: foreground_fraction {fraction} gives no class balance; "
                            "pass a number for --pos-weight")
        changes.update(pos_weight=(1.0 - fraction) / fraction, stats=path)
        if stats.get("classes"):
            changes["classes"] = tuple(stats["classes"])
        log.info("pos_weight auto: foreground fraction %.4f in %s -> %.3f",
                 fraction, path, changes["pos_weight"])
    elif float(cfg.pos_weight) <= 0:
        raise UsageError(f"--pos-weight must be a positive number or 'auto', got {cfg.pos_weight}")
    else:
        changes["pos_weight"] = float(cfg.pos_weight)
    if cfg.seed is None:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    if cfg.precision == "auto":  # config.json must say what ran, not what was asked
        gpu = bool(tf.config.list_physical_devices("GPU"))  # lists, starts no runtime
        changes["precision"], why = speed.resolve_precision("auto", gpu)
        log.info("precision auto: %s -> %s", why, changes["precision"])
    return dataclasses.replace(cfg, **changes)


def check_budget(cfg):
    """--minutes and --epochs: a run must have a limit, and every worker the same one."""
    if not (math.isfinite(cfg.minutes) and cfg.minutes >= 0):
        raise UsageError(f"--minutes must be a number >= 0 (0 = no time budget), "
                         f"got {cfg.minutes}")
    if cfg.epochs < 0 or (cfg.epochs == 0 and not cfg.minutes):
        raise UsageError(f"--epochs must be positive (0 = no epoch limit needs a --minutes "
                         f"budget), got {cfg.epochs}")
    if cfg.minutes and cfg.strategy == "multi-worker":
        raise UsageError("--minutes does not work with --strategy multi-worker: the workers' "
                         "clocks differ and all must stop at the same step; use --epochs")
    if cfg.minutes and cfg.lr_schedule != "cosine":
        log.info("--minutes with --lr-schedule %s: the learning rate does not follow the "
                 "budget (cosine decays it to 0 as the time runs out)", cfg.lr_schedule)


def check_resumable(cfg):
    """A run dir trained with another network cannot be resumed: say so before TF does."""
    path = os.path.join(cfg.run_dir, checkpoints.RUN_CONFIG)
    if not os.path.exists(path) or not checkpoints.latest(cfg.run_dir):
        return
    old = config.load_config(cfg.run_dir)
    diff = [f"{k} {getattr(old, k)} -> {getattr(cfg, k)}" for k in MODEL_FIELDS
            if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise UserError(f"{cfg.run_dir} holds checkpoints of another network ({', '.join(diff)}):"
                        " use the same flags to resume, or a new --run-name")


# ------------------------------------------------------------ graph pieces


def pixel_loss(logits, masks, pos_weight, dice_weight=0.0):
    """Weighted sigmoid cross-entropy averaged over valid pixels, plus an optional Dice term.

    logits: [B, h, w, 1] float32; masks: [B, h, w, 1] uint8 (0, 1, 255 = ignore).
    Returns (loss scalar, summed cross-entropy, number of valid pixels).
    """
    valid = tf.cast(tf.not_equal(masks, records.IGNORE), tf.float32)
    labels = tf.cast(tf.equal(masks, records.FOREGROUND), tf.float32)
    ce = tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight)
    ce_sum = tf.reduce_sum(ce * valid)
    n_valid = tf.reduce_sum(valid)
    loss = ce_sum / tf.maximum(n_valid, 1.0)
    if dice_weight:
        probs = tf.sigmoid(logits) * valid
        inter = tf.reduce_sum(probs * labels)
        dice = (2.0 * inter + 1.0) / (tf.reduce_sum(probs) + tf.reduce_sum(labels * valid) + 1.0)
        loss += dice_weight * (1.0 - dice)
    return loss, ce_sum, n_valid


def confusion_counts(logits, masks):
    """[4] int64 (tp, fp, fn, tn) over valid pixels at probability 0.5 (logit 0)."""
    valid = tf.not_equal(masks, records.IGNORE)
    truth = tf.equal(masks, records.FOREGROUND)
    pred = logits > 0.0

    def count(x):
        return tf.reduce_sum(tf.cast(x & valid, tf.int64))

    return tf.stack([count(pred & truth), count(pred & ~truth),
                     count(~pred & truth), count(~pred & ~truth)])


def metrics_from_counts(tp, fp, fn, tn):
    """IoU, Dice, precision, recall, accuracy; a ratio with nothing to find and nothing
    found (0/0) counts as perfect, so an empty val set does not read as a failure."""
    def ratio(num, den, empty):
        return float(num) / den if den else empty

    return {
        "iou": ratio(tp, tp + fp + fn, 1.0),
        "dice": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "precision": ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        "recall": ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def validation_metrics(counts, ce_sum, n_valid):
    """Model metrics plus 'baseline_*' for predicting background everywhere."""
    tp, fp, fn, tn = (int(c) for c in counts)
    metrics = metrics_from_counts(tp, fp, fn, tn)
    metrics["loss"] = ce_sum / max(n_valid, 1.0)
    baseline = metrics_from_counts(0, 0, tp + fn, fp + tn)
    metrics.update({f"baseline_{k}": v for k, v in baseline.items()})
    return metrics


def learning_rate(cfg, global_step, total_steps, progress=None):
    """The schedule's learning rate; progress: with --minutes, a [] float32 in [0, 1]
    (training time / budget) that the cosine follows instead of the step."""
    if cfg.lr_schedule == "exponential":
        return v1.train.exponential_decay(cfg.learning_rate, global_step, cfg.lr_decay_steps,
                                          cfg.lr_decay_rate)
    if cfg.lr_schedule == "cosine" and progress is not None:
        return v1.train.cosine_decay(cfg.learning_rate, progress, 1.0)  # ends with the budget
    if cfg.lr_schedule == "cosine":
        return v1.train.cosine_decay(cfg.learning_rate, global_step, max(total_steps, 1))
    return tf.constant(cfg.learning_rate, tf.float32)


def _distributed_step(cfg, g, strategy, optimizer, global_step):
    """The train step run by every replica of `strategy` (see distribute.py)."""
    def dataset_fn(workers, index):
        files = distribute.shard_files(data.record_files(cfg.train_records), workers, index)
        return data.make_dataset(files, cfg.batch_size, True, cfg.input_size, cfg.depth,
                                 distribute.worker_seed(cfg.seed, index), g["data_epoch"],
                                 cfg.shuffle_buffer, long_side=cfg.long_side,
                                 augmentation=augment.from_config(cfg))

    g["train_iterator"] = distribute.make_iterator(strategy, dataset_fn, g.get("worker_steps"))

    def loss_fn(images, masks):
        logits = unet.unet(images, True, cfg.depth, cfg.base_filters, cfg.num_outputs)
        return pixel_loss(logits, masks, cfg.pos_weight, cfg.dice_weight)[0], logits

    out = distribute.build_step(strategy, g["train_iterator"], loss_fn,
                                lambda loss: speed.minimize(optimizer, loss, global_step),
                                global_step)
    return out["step"], out["loss"], out["images"], out["masks"], out["logits"]


# The colours of the paper's overlap-tile figure (Fig. 2): the prediction covers the yellow
# area and sees the blue one.
OUTPUT_OUTLINE_RGB = (1.0, 0.8, 0.0)
CONTEXT_RGB = (0.1, 0.25, 0.6)
PANEL_GAP = 4  # white pixels between the panels of a window summary


def window_panels(images, masks, probs, outline=2):
    """Input | ground truth | prediction of each window, side by side, as one uint8 image.

    images [B, in, in, 3] f32 in [0, 1]; masks [B, out, out, 1] u8 (0, 1, 255 = ignore);
    probs [B, out, out, 1] f32 in [0, 1] -> [B, in, 3 * in + 2 * PANEL_GAP, 3] u8.
    Mask (0 black, 1 white, ignore grey) and probability panels are as big as the input
    with the output pasted where it lies in the input window, so the same pixel row and
    column mean the same place in all three; around it, the context the output has no
    pixel for is blue, and a yellow outline (drawn in the context) marks the output area.
    """
    with tf.name_scope("window_panels"):
        size, out = int(images.shape[1]), int(masks.shape[1])
        border = (size - out) // 2
        width = min(outline, border)

        def place(x, margin):  # [b, in - 2 margin, in - 2 margin, c] -> [b, in, in, c]
            return tf.pad(x, [[0, 0], [margin, margin], [margin, margin], [0, 0]])

        inside = place(tf.ones([1, out, out, 1]), border)  # [1, in, in, 1], 1 on the output area
        ring = place(tf.ones([1, out + 2 * width, out + 2 * width, 1]), border - width) - inside
        context = (1.0 - inside) * tf.constant(CONTEXT_RGB)  # [1, in, in, 3]

        def output_panel(grey):  # [B, out, out, 1] in [0, 1] -> [B, in, in, 3]
            return place(grey, border) * inside + context

        truth = tf.cast(masks, tf.float32)
        truth = tf.where(tf.equal(masks, records.IGNORE), tf.fill(tf.shape(truth), 0.5), truth)
        panels = [images, output_panel(truth), output_panel(probs)]
        panels = [p * (1.0 - ring) + ring * tf.constant(OUTPUT_OUTLINE_RGB) for p in panels]
        gap = tf.ones_like(images[:, :, :PANEL_GAP, :])
        row = tf.concat([panels[0], gap, panels[1], gap, panels[2]], axis=2)
        return tf.cast(tf.round(tf.clip_by_value(row * 255.0, 0.0, 255.0)), tf.uint8)


def build_graph(cfg, total_steps, strategy=None, worker_steps=None):
    """All ops of a run, in the current default graph; returns them in a dict.

    strategy: a tf.distribute strategy from distribute.make_strategy (build inside
    distribute.scope(strategy)), or None for the single-device graph.
    worker_steps: multi-worker only, steps per epoch that every worker can feed.
    """
    g = {"strategy": strategy, "chief": distribute.is_chief(strategy),
         "global_batch": cfg.batch_size * distribute.num_replicas(strategy),
         "worker_steps": worker_steps}
    v1.set_random_seed(cfg.seed)
    g["data_epoch"] = v1.placeholder_with_default(tf.constant(0, tf.int64), [], "data_epoch")
    # Name scopes keep TensorBoard's graph to a few blocks around unet/ (see docs/tensorboard.md).
    if strategy is None:
        with tf.name_scope("train_input"):
            train_ds = data.make_dataset(cfg.train_records, cfg.batch_size, True,
                                         cfg.input_size, cfg.depth, cfg.seed, g["data_epoch"],
                                         cfg.shuffle_buffer, long_side=cfg.long_side,
                                         augmentation=augment.from_config(cfg))
            g["train_iterator"] = data.make_initializable_iterator(train_ds)
            images, masks = g["train_iterator"].get_next()  # [B,in,in,3] f32, [B,out,out,1] u8

    global_step = v1.train.get_or_create_global_step()
    g["epoch"] = v1.get_variable("epoch", [], tf.int64, v1.zeros_initializer(), trainable=False)
    g["next_epoch"] = g["epoch"].assign_add(1)
    g["best_iou"] = v1.get_variable("best_val_iou", [], tf.float32,
                                    v1.constant_initializer(-1.0), trainable=False)
    g["new_best"] = v1.placeholder(tf.float32, [], "new_best_iou")
    g["set_best"] = g["best_iou"].assign(g["new_best"])
    # Training time so far, checkpointed so a resumed --minutes run keeps its schedule.
    g["train_seconds"] = v1.get_variable("train_seconds", [], tf.float64,
                                         v1.zeros_initializer(), trainable=False)
    g["seconds_in"] = v1.placeholder(tf.float64, [], "train_seconds_in")
    g["set_seconds"] = g["train_seconds"].assign(g["seconds_in"])
    if cfg.minutes:  # fed every step: the schedule cannot know the time per step ahead
        g["progress"] = v1.placeholder(tf.float32, [], "budget_progress")

    if strategy is None:
        logits = unet.unet(images, True, cfg.depth, cfg.base_filters, cfg.num_outputs)
        with tf.name_scope("loss"):
            loss, _, _ = pixel_loss(logits, masks, cfg.pos_weight, cfg.dice_weight)
    lr = learning_rate(cfg, global_step, total_steps, g.get("progress"))
    # Batch-norm moving statistics update with every step (unet.py puts them here).
    optimizer = guard.wrap_optimizer(speed.wrap_optimizer(v1.train.AdamOptimizer(lr), cfg), cfg)
    if strategy is None:
        train_op = speed.minimize(optimizer, loss, global_step)  # runs the BN UPDATE_OPS too
        with tf.control_dependencies([train_op]):
            g["step"] = tf.identity(global_step.read_value())
    else:
        g["step"], loss, images, masks, logits = _distributed_step(cfg, g, strategy, optimizer,
                                                                   global_step)
    g["global_step"], g["loss"] = global_step, loss

    g["summary"] = v1.summary.merge([v1.summary.scalar("cost", loss),
                                     v1.summary.scalar("learning_rate", lr)])
    n = min(cfg.batch_size, 3)
    g["image_summary"] = v1.summary.image(
        "windows", window_panels(images[:n], masks[:n], tf.sigmoid(logits[:n])), n)

    if cfg.val_records:
        val_size = cfg.val_input_size or cfg.input_size
        # Inference holds no activations for backprop, but a big window still needs a
        # smaller batch to stay within the training step's memory.
        val_batch = max(1, round(cfg.batch_size * (cfg.input_size / val_size) ** 2))
        with tf.name_scope("validation"):  # the weights stay unet/'s: get_variable ignores it
            val_ds = data.make_dataset(cfg.val_records, val_batch, False, val_size, cfg.depth,
                                       cfg.seed, long_side=cfg.long_side)
            g["val_iterator"] = data.make_initializable_iterator(val_ds)
            val_images, val_masks = g["val_iterator"].get_next()
            val_logits = unet.unet(val_images, False, cfg.depth, cfg.base_filters,
                                   cfg.num_outputs)
            _, ce_sum, n_valid = pixel_loss(val_logits, val_masks, cfg.pos_weight)
            g["val"] = {"counts": confusion_counts(val_logits, val_masks), "ce_sum": ce_sum,
                        "n_valid": n_valid}

    # Relative paths in the `checkpoint` files keep a run dir movable (e.g. off a GPU box).
    g["saver"] = v1.train.Saver(max_to_keep=cfg.keep_checkpoints, save_relative_paths=True)
    g["best_saver"] = v1.train.Saver(max_to_keep=1, save_relative_paths=True)
    # Checkpoints from before the training clock existed still resume (from 0 seconds).
    g["clockless_saver"] = v1.train.Saver([v for v in v1.global_variables()
                                           if v is not g["train_seconds"]])
    with tf.name_scope("finite_check"):
        g["finite"] = guard.all_finite(v1.global_variables())  # checked before every save
    g["init"] = v1.global_variables_initializer()
    return g


# ------------------------------------------------------------- the loop


def _session_config(cfg):
    """Device log line, GPU memory growth and speed.py's settings; call before any Session."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process; allow_growth covers it
            pass
    if gpus:
        log.info("device: GPU (%s)", ", ".join(gpu.name for gpu in gpus))
    else:
        log.info("device: CPU (TensorFlow sees no GPU)")
    session_config = speed.session_config(cfg, gpu=bool(gpus))
    session_config.log_device_placement = cfg.log_device_placement
    session_config.gpu_options.allow_growth = True
    return session_config


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to save and stop; a second Ctrl-C aborts at once.

    The handler only records the signal: it may run while the main thread is inside a
    write to stderr, and logging from it there re-enters the buffered writer and prints
    a traceback. The loop polls `requested`, which says what happened once.
    """

    def __init__(self):
        self.signum, self._previous, self._announced = None, {}, False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_ON_SIGNAL:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is None:  # a later SIGTERM must not rename the stop already announced
            self.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    @property
    def requested(self):
        if self.signum is not None and not self._announced:
            self._announced = True
            log.warning("%s received: saving a checkpoint after this step (Ctrl-C again to "
                        "abort)", signal.Signals(self.signum).name)
        return self.signum is not None

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _validate(sess, g, cfg, stop):
    if "val" not in g:
        return None
    sess.run(g["val_iterator"].initializer)
    counts, ce_sum, n_valid = np.zeros(4, np.int64), 0.0, 0.0
    with guard.record_errors(cfg.val_records):
        while not stop.requested:
            try:
                out = sess.run(g["val"])
            except tf.errors.OutOfRangeError:
                break
            counts += out["counts"]
            ce_sum += float(out["ce_sum"])
            n_valid += float(out["n_valid"])
    if stop.requested:
        return None
    return validation_metrics(counts, ce_sum, n_valid)


@dataclasses.dataclass
class _ValWriters:
    """val/ gets the model's metrics and baseline/ the all-background ones under the same
    tags, so TensorBoard draws the two as lines of one chart per metric."""

    val: object
    baseline: object

    @classmethod
    def open(cls, strategy, run_dir):
        return cls(*(distribute.summary_writer(strategy, os.path.join(run_dir, name))
                     for name in ("val", "baseline")))

    def write(self, metrics, step):
        """metrics: validation_metrics()'s dict; its 'loss' is the val/ tag 'cost'."""
        model = {"cost": metrics["loss"], **{k: metrics[k] for k in METRIC_TAGS}}
        baseline = {k: metrics[f"baseline_{k}"] for k in METRIC_TAGS}
        for writer, tags in ((self.val, model), (self.baseline, baseline)):
            writer.add_summary(v1.Summary(value=[v1.Summary.Value(tag=k, simple_value=v)
                                                 for k, v in tags.items()]), step)
            writer.flush()

    def close(self):
        self.val.close()
        self.baseline.close()


def _report(sess, g, cfg, writers, metrics, step, epoch):
    if metrics is None:
        return
    log.info("epoch %d step %d val: IoU %.4f  Dice %.4f  precision %.4f  recall %.4f  "
             "accuracy %.4f  loss %.4f | all-background: IoU %.4f  accuracy %.4f",
             epoch, step, metrics["iou"], metrics["dice"], metrics["precision"],
             metrics["recall"], metrics["accuracy"], metrics["loss"], metrics["baseline_iou"],
             metrics["baseline_accuracy"])
    writers.write(metrics, step)
    # The best is checkpointed as float32 (run dirs from before must still resume):
    # compare at that precision, or the same IoU would count as a new best again.
    if np.float32(metrics["iou"]) > sess.run(g["best_iou"]):
        sess.run(g["set_best"], {g["new_best"]: metrics["iou"]})
        if not g["chief"]:
            return
        path = g["best_saver"].save(sess, os.path.join(cfg.run_dir, checkpoints.BEST_DIR,
                                                       checkpoints.CKPT_PREFIX), step,
                                    write_meta_graph=False)
        log.info("new best val IoU %.4f: saved %s", metrics["iou"], path)


def _hms(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def _save(sess, g, cfg, step, seconds):
    """Checkpoint at `step`, with `seconds` of training so far."""
    if not g["chief"]:  # the chief's checkpoint is every worker's
        return None
    if not sess.run(g["finite"]):
        raise UserError(f"weights became NaN/Inf by step {step}: not saving them (the last good "
                        "checkpoint is kept); lower --learning-rate")
    sess.run(g["set_seconds"], {g["seconds_in"]: seconds})
    return g["saver"].save(sess, os.path.join(cfg.run_dir, checkpoints.CKPT_PREFIX), step,
                           write_meta_graph=False)


def train(cfg, clock=time.monotonic):
    """Train (or resume) the run in cfg.run_dir; returns the final metrics as a dict.

    clock: seconds, for the --minutes budget and the speed in the log (tests pass a
    fake one; see _TrainingClock for when it is read).

    Keys: step, epoch, train_loss (mean over the last log window), best_val_iou,
    checkpoint, interrupted (None, "SIGINT" or "SIGTERM"), and the last
    validation's metrics when validating: val_iou, val_dice, val_precision,
    val_recall, val_accuracy, val_loss and val_baseline_* (all-background).
    """
    cfg = resolve(cfg)
    if cfg.on_nan not in ("stop", "skip"):
        raise UsageError(f"--on-nan must be stop or skip, got {cfg.on_nan!r}")
    check_resumable(cfg)
    # First: logical CPU devices for --devices must exist before TF's runtime starts.
    distribute.check_flags(cfg)
    strategy = distribute.make_strategy(cfg.strategy, distribute.parse_devices(cfg.devices))
    # Non-chief workers share the chief's run dir but never write to it.
    lock = runlock.RunLock(cfg.run_dir) if distribute.is_chief(strategy) else (
        contextlib.nullcontext())
    with lock, errors.disk_errors(cfg.run_dir):
        return _train_locked(cfg, strategy, clock)


def _train_locked(cfg, strategy=None, clock=time.monotonic):
    session_config = _session_config(cfg)  # first: XLA flags are read at the first Session
    # Checks every record once (the count reads them all anyway); see guard.py.
    train_files, train_counts = guard.scan_records(cfg.train_records, cfg.run_dir,
                                                   cfg.skip_corrupt_records, "train")
    val_files = guard.scan_records(cfg.val_records, cfg.run_dir, cfg.skip_corrupt_records,
                                   "val")[0] if cfg.val_records else ""
    num_train = sum(train_counts)
    steps_per_epoch = distribute.steps_per_epoch(strategy, train_counts, cfg.batch_size)
    step_limits = [n for n in (cfg.epochs * steps_per_epoch, cfg.max_steps) if n]
    total_steps = min(step_limits, default=0)  # 0: --minutes alone, the budget decides
    log.info("config: %s", json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    limits = [f"{total_steps} steps"] if total_steps else []
    if cfg.minutes:
        limits.append(f"{cfg.minutes:g} min of training (start-up and the final "
                      "validation come on top)")
    log.info("%d train records, %d steps per epoch, %s in total; U-Net depth %d, "
             "%d base filters, %d parameters, input %d -> output %d",
             num_train, steps_per_epoch, " or ".join(limits), cfg.depth, cfg.base_filters,
             unet.parameter_count(cfg.depth, cfg.base_filters, cfg.num_outputs),
             cfg.input_size, unet.output_size(cfg.input_size, cfg.depth))
    log.info(distribute.describe(strategy, cfg.batch_size))
    if distribute.is_chief(strategy):
        config.save_config(cfg, cfg.run_dir)
    # The multi-worker gRPC server must stay referenced while the Session runs.
    target, session_config, _server = distribute.session_target(strategy, session_config)

    with tf.Graph().as_default() as graph, distribute.scope(strategy):
        g = build_graph(dataclasses.replace(cfg, train_records=train_files,
                                            val_records=val_files), total_steps, strategy,
                        steps_per_epoch if distribute.num_workers(strategy) > 1 else None)
        graph.finalize()  # any op added inside the loop would be a leak
        with v1.Session(target, config=session_config) as sess, _StopFlag() as stop:
            return _loop(sess, g, cfg, total_steps, stop, clock)


def _restore(sess, g, cfg):
    checkpoint = checkpoints.restorable(cfg.run_dir)  # skips one torn by a crash
    if not checkpoint:
        sess.run(g["init"])
        log.info("starting a new run in %s", cfg.run_dir)
        return
    try:
        if "train_seconds" in {name for name, _ in tf.train.list_variables(checkpoint)}:
            g["saver"].restore(sess, checkpoint)
        else:  # saved before the training clock: count from now
            g["clockless_saver"].restore(sess, checkpoint)
            sess.run(g["train_seconds"].initializer)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
        raise UserError(f"checkpoint {checkpoint} does not match this network "
                        f"({errors.summary(e)}): use the flags it was trained with, or a "
                        "new --run-name") from None
    # Savers only prune what they saved; hand them the older files so --keep-checkpoints holds.
    for saver, directory in ((g["saver"], cfg.run_dir),
                             (g["best_saver"], os.path.join(cfg.run_dir, checkpoints.BEST_DIR))):
        state = tf.train.get_checkpoint_state(directory)
        if state:
            saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    step, epoch, seconds = sess.run([g["global_step"], g["epoch"], g["train_seconds"]])
    log.info("resuming from %s (step %d, epoch %d, %s of training)", checkpoint, step, epoch,
             _hms(seconds))


class _TrainingClock:
    """Training time of the run across resumes: what --minutes budgets.

    It starts at this invocation's first step, on top of the seconds checkpointed by
    earlier ones, and runs through steps, periodic validations and checkpoints: the
    budget is wall time, so a schedule fitted to it ends when the time does. Start-up
    (imports, record scan, graph building, restore) and the validation after the
    last step are not in it; they are short, and every invocation pays them.

    `clock` is read here, after every training step and after every validation that
    training continues after, nowhere else: a fake clock in a test can advance per
    read and know exactly which progress each step was fed.
    """

    def __init__(self, clock, budget, seconds_before):
        self._clock, self.budget, self._before = clock, budget, seconds_before
        self._start = clock()
        self.seconds = seconds_before  # training time at the last read

    def read(self):
        self.seconds = self._before + self._clock() - self._start
        return self.seconds

    @property
    def progress(self):
        return min(self.seconds / self.budget, 1.0) if self.budget else 0.0

    @property
    def spent(self):
        return bool(self.budget) and self.seconds >= self.budget


def _progress_line(g, cfg, timer, total_steps, step, epoch, loss, rate):
    """The log line: step, epoch, loss, speed and the time left by whichever limit is first."""
    left = [(total_steps - step) * g["global_batch"] / max(rate, 1e-9)] if total_steps else []
    if timer.budget:
        left.append(max(timer.budget - timer.seconds, 0.0))
    line = (f"step {step}{f'/{total_steps}' if total_steps else ''} "
            f"epoch {epoch + 1}{f'/{cfg.epochs}' if cfg.epochs else ''} loss {loss:.4f} "
            f"{rate:.1f} images/s ETA {_hms(min(left, default=0))}")
    if timer.budget:
        line += f" ({timer.progress:.0%} of the {cfg.minutes:g} min budget)"
    return line


def _loop(sess, g, cfg, total_steps, stop, clock=time.monotonic):
    _restore(sess, g, cfg)
    step, epoch, seconds = sess.run([g["global_step"], g["epoch"], g["train_seconds"]])
    step, epoch = int(step), int(epoch)
    timer = _TrainingClock(clock, cfg.minutes * 60.0, float(seconds))
    train_writer = distribute.summary_writer(g["strategy"], os.path.join(cfg.run_dir, "train"),
                                             sess.graph)
    val_writer = _ValWriters.open(g["strategy"], cfg.run_dir)
    # Tells TensorBoard to drop events logged after this checkpoint by a killed earlier run;
    # it drops steps >= the one given, and the checkpointed step's own events are valid.
    train_writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), step + 1)
    metrics, checkpoint, losses, validated, nan_skips = None, None, [], False, 0
    tick, tick_step = timer.seconds, step

    def step_limit():
        return cfg.max_steps and step >= cfg.max_steps

    def finished():
        return step_limit() or (cfg.epochs and epoch >= cfg.epochs) or timer.spent

    try:
        while not finished() and not stop.requested:
            sess.run(g["train_iterator"].initializer, {g["data_epoch"]: epoch})
            epoch_done = False
            while not stop.requested and not step_limit() and not timer.spent:
                fetches = {"step": g["step"], "loss": g["loss"], "summary": g["summary"]}
                if (step + 1) % cfg.image_summary_every == 0 or step == 0:
                    fetches["images"] = g["image_summary"]
                feed = {g["progress"]: timer.progress} if "progress" in g else None
                try:
                    with guard.record_errors(cfg.train_records):
                        out = sess.run(fetches, feed)
                except tf.errors.OutOfRangeError:
                    epoch_done = True
                    break
                timer.read()
                step = int(out["step"])
                losses.append(float(out["loss"]))
                if not math.isfinite(losses[-1]) and cfg.on_nan == "skip":
                    nan_skips += 1
                    log.warning("loss %s at step %d: update skipped (%d in a row)",
                                losses.pop(), step, nan_skips)
                    if nan_skips >= MAX_NAN_SKIPS:
                        raise UserError(f"loss was not finite for {nan_skips} steps in a row up "
                                        f"to step {step}: lower --learning-rate (the last good "
                                        "checkpoint is kept)")
                    continue
                nan_skips = 0
                if not math.isfinite(losses[-1]):
                    raise UserError(f"loss became {losses[-1]} at step {step}: lower "
                                    "--learning-rate (the last good checkpoint is kept)")
                train_writer.add_summary(out["summary"], step)
                if "images" in out:
                    train_writer.add_summary(out["images"], step)
                if step % cfg.log_every == 0:
                    rate = (step - tick_step) * g["global_batch"] / max(timer.seconds - tick,
                                                                        1e-9)
                    log.info(_progress_line(g, cfg, timer, total_steps, step, epoch,
                                            np.mean(losses[-cfg.log_every:]), rate))
                    tick, tick_step = timer.seconds, step
                if step % cfg.checkpoint_every == 0:
                    checkpoint = _save(sess, g, cfg, step, timer.seconds)
            if epoch_done:
                epoch = int(sess.run(g["next_epoch"]))
            if not stop.requested and ((epoch_done and epoch % cfg.val_every == 0)
                                        or finished()):
                last = finished()
                metrics, validated = _validate(sess, g, cfg, stop), True
                _report(sess, g, cfg, val_writer, metrics, step, epoch)
                if not last:  # training goes on: this validation was part of the budget
                    timer.read()
                checkpoint = _save(sess, g, cfg, step, timer.seconds)
                tick, tick_step = timer.seconds, step  # validation time is not training speed
        if stop.requested:
            checkpoint = _save(sess, g, cfg, step, timer.seconds)
            log.warning("stopped by %s at step %d: saved %s; re-run the same command to resume",
                        signal.Signals(stop.signum).name, step, checkpoint)
        elif not validated:  # nothing left to train: report where the run stands
            log.info("run already complete at step %d, epoch %d: validating", step, epoch)
            metrics = _validate(sess, g, cfg, stop)
            _report(sess, g, cfg, val_writer, metrics, step, epoch)
        elif timer.spent:
            log.info("time budget of %g min spent (%s of training): stopped at step %d, "
                     "epoch %d", cfg.minutes, _hms(timer.seconds), step, epoch)
        elif timer.budget:
            log.warning("--epochs/--max-steps ended the run with %s of the %g min budget "
                        "left: the schedule stopped short of its end",
                        _hms(timer.budget - timer.seconds), cfg.minutes)
    finally:
        train_writer.close()
        val_writer.close()
    return {
        "step": step, "epoch": epoch,
        "train_loss": float(np.mean(losses[-cfg.log_every:])) if losses else None,
        "best_val_iou": float(sess.run(g["best_iou"])),
        "checkpoint": checkpoint or checkpoints.latest(cfg.run_dir),
        "interrupted": signal.Signals(stop.signum).name if stop.signum else None,
        "train_seconds": timer.seconds,
        **{f"val_{k}": v for k, v in (metrics or {}).items()},
    }


# ------------------------------------------------------------ command line


def pos_weight_arg(text):
    return text if text == "auto" else cli.positive_float(text)


def build_parser():
    d = config.Config()
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--train-records", default=d.train_records, help="glob of training TFRecord shards")
    a("--val-records", default=d.val_records, help="glob of validation shards; '' = none")
    a("--run-name", default="unet", help="run directory is logs/<run-name>")
    a("--run-dir", help="run directory; overrides --run-name")
    a("--input-size", type=cli.positive_int, default=d.input_size,
      help="network input window in pixels (572 -> 388 output at depth 4)")
    a("--val-input-size", type=cli.non_negative_int, default=d.val_input_size,
      help="validation window; 0 = --input-size; bigger covers more of each image")
    a("--long-side", type=cli.non_negative_int, default=d.long_side,
      help="resize every image so its longer side is N px before windows are cut (saved in "
      "config.json; evaluate/predict/export use it too); 0 = as stored")
    a("--val-every", type=cli.positive_int, default=d.val_every,
      help="validate every N epochs (and at the end)")
    a("--depth", type=cli.positive_int, default=d.depth, help="U-Net levels (2x2 max pools)")
    a("--base-filters", type=cli.positive_int, default=d.base_filters,
      help="channels of the first level; doubles per level")
    a("--batch-size", type=cli.positive_int, default=d.batch_size, help="windows per step")
    # No default here: without --minutes it is Config's, with --minutes there is no limit.
    a("--epochs", type=cli.positive_int, default=argparse.SUPPRESS,
      help=f"total passes over the data (default {d.epochs}; with --minutes: no limit, "
      "or a cap if given)")
    a("--minutes", type=cli.non_negative_float, default=d.minutes,
      help="train for this many minutes (the total, also when resuming), then validate "
      "and save; --lr-schedule cosine ends when the time does; 0 = no time budget")
    a("--max-steps", type=cli.non_negative_int, default=d.max_steps,
      help="stop at this global step; 0 = no limit")
    a("--learning-rate", type=cli.positive_float, default=d.learning_rate, help="Adam's")
    a("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
      help="cosine decays to 0 at the last step")
    a("--lr-decay-rate", type=cli.positive_float, default=d.lr_decay_rate,
      help="exponential: factor per --lr-decay-steps")
    a("--lr-decay-steps", type=cli.positive_int, default=d.lr_decay_steps,
      help="exponential: steps per --lr-decay-rate factor")
    a("--pos-weight", type=pos_weight_arg, default=d.pos_weight,
      help="foreground weight in the loss, or 'auto' = (1-f)/f from the converter's stats")
    a("--stats", default=d.stats,
      help="converter stats JSON for --pos-weight auto; '' = the one next to the shards")
    a("--dice-weight", type=cli.non_negative_float, default=d.dice_weight,
      help="adds this times (1 - soft Dice) to the loss")
    a("--seed", type=cli.non_negative_int, default=d.seed,
      help="makes runs repeatable; None draws one and saves it in config.json")
    a("--shuffle-buffer", type=cli.positive_int, default=d.shuffle_buffer,
      help="records mixed by the shuffle")
    a("--augment", type=augment.groups_arg, default=d.augment,
      help=f"training augmentation: comma list of {','.join(augment.GROUPS)}, or all, or none"
      " (docs/augmentation.md)")
    a("--elastic-grid", type=cli.positive_int, default=d.elastic_grid,
      help="elastic: random displacement vectors on an N x N grid (>= 2)")
    a("--elastic-sigma", type=cli.non_negative_float, default=d.elastic_sigma,
      help="elastic: standard deviation of the displacements in pixels")
    a("--min-scale", type=cli.positive_float, default=d.min_scale,
      help="scale: smallest zoom factor (drawn log-uniformly up to --max-scale)")
    a("--max-scale", type=cli.positive_float, default=d.max_scale,
      help="scale: largest zoom factor")
    a("--max-rotation", type=cli.non_negative_float, default=d.max_rotation,
      help="rotate: angle uniform in [-N, N] degrees; 180 = any angle")
    a("--brightness", type=cli.non_negative_float, default=d.brightness,
      help="color: up to this much added to pixel values in [0, 1]")
    a("--contrast", type=cli.non_negative_float, default=d.contrast,
      help="color: contrast scaled by a factor in [1 - N, 1 + N]; N <= 1")
    a("--saturation", type=cli.non_negative_float, default=d.saturation,
      help="color: saturation scaled by a factor in [1 - N, 1 + N]; N <= 1")
    a("--hue", type=cli.non_negative_float, default=d.hue,
      help="color: hue turned by up to N of the colour wheel; N <= 0.5")
    a("--log-every", type=cli.positive_int, default=d.log_every, help="steps per log line")
    a("--image-summary-every", type=cli.positive_int, default=d.image_summary_every,
      help="steps between TensorBoard image writes")
    a("--checkpoint-every", type=cli.positive_int, default=d.checkpoint_every,
      help="steps between checkpoints (one is also saved every epoch end)")
    a("--keep-checkpoints", type=cli.positive_int, default=d.keep_checkpoints,
      help="newest checkpoints kept in the run dir (best/ keeps its own)")
    a("--precision", choices=speed.PRECISION_CHOICES, default=d.precision,
      help="bfloat16: faster on CPUs with AVX512_BF16/AMX; mixed_float16: GPUs; both trade "
      "some accuracy; auto: mixed_float16 on a GPU, bfloat16 on a Linux CPU with "
      "amx_bf16/avx512_bf16, else float32 (config.json records the choice)")
    a("--xla", choices=speed.XLA_MODES, default=d.xla,
      help="auto = XLA auto-clustering (try it on a GPU; on a CPU it is slower and needs "
      "the TF_XLA_FLAGS environment variable, see docs/train.md)")
    a("--intra-op-threads", type=cli.non_negative_int, default=d.intra_op_threads,
      help="threads inside one op; 0 = one per core")
    a("--inter-op-threads", type=cli.non_negative_int, default=d.inter_op_threads,
      help="ops run side by side; 0 = TensorFlow's choice")
    a("--log-device-placement", action="store_true", help="log the device of every op")
    a("--strategy", choices=distribute.STRATEGIES, default=d.strategy,
      help="mirrored: all GPUs of this machine (or --devices); multi-worker: the machines in "
      "TF_CONFIG; the global batch is --batch-size x replicas (docs/distributed.md)")
    a("--devices", default=d.devices,
      help="--strategy mirrored: devices to use, e.g. /gpu:0,/gpu:1; '' = all GPUs")
    a("--skip-corrupt-records", action="store_true",
      help="skip and count records that fail their checksum or do not decode, instead of "
      "stopping (decodes every record once at start)")
    a("--on-nan", choices=("stop", "skip"), default=d.on_nan,
      help="non-finite loss: stop with the step, or skip that batch's update")
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(argv=None):
    args = vars(build_parser().parse_args(argv))
    run_name, run_dir = args.pop("run_name"), args.pop("run_dir")
    if "/" in run_name or not run_name:
        raise UsageError(f"--run-name {run_name!r} must be a plain name; use --run-dir for paths")
    args.pop("verbose")
    args.setdefault("epochs", 0 if args["minutes"] else config.Config.epochs)
    return config.Config(run_dir=run_dir or os.path.join("logs", run_name), **args)


def main(argv=None):
    parser_argv = sys.argv[1:] if argv is None else argv
    cli.setup_logging("-v" in parser_argv or "--verbose" in parser_argv)
    tf.get_logger().setLevel(logging.ERROR)  # v1 deprecation notices are not for users
    result = train(config_from_args(argv))
    if result["interrupted"]:
        return EXIT_ON_SIGNAL[signal.Signals[result["interrupted"]]]
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
