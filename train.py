"""Train the U-Net on record shards in a tf.compat.v1 Session.

    python train.py --train-records 'data/cat-train2017-*' --val-records 'data/cat-val2017-*'

The run dir (default logs/<run-name>; its layout is core/rundir.py's, its charts
docs/tensorboard.md's) gets config.json, checkpoints (periodic, every epoch end, on
Ctrl-C/SIGTERM), the best one by validation foreground IoU (K >= 2 classes: the mean
IoU over the classes) in best/, and TensorBoard events. Re-running the same command
resumes: global step, epoch and the place in it, Adam slots, the best IoU and the
training time so far.

--minutes M trains for a time budget: the cosine schedule follows training time /
budget, fed every step, so it ends when the time does. The budget is the total over
resumes; what it counts is _TrainingClock's.

Validation metrics are dataset-level over the valid (non-255) pixels, next to those of
predicting background everywhere, so a model that finds nothing cannot look good.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf

import unet
from core import config, device, distribute, metrics, optim, pretrained, rundir, summaries, tiling
from datasets import guard, pipeline
from utils import cli
from utils.cli import UsageError, UserError

v1 = tf.compat.v1
log = logging.getLogger("train")

EXIT_ON_SIGNAL = {signal.SIGINT: cli.EXIT_INTERRUPTED, signal.SIGTERM: 0}
MAX_NAN_SKIPS = 20  # --on-nan skip: more non-finite steps in a row means training diverged


@dataclasses.dataclass
class ValMetrics:
    """One validation over the validation windows' valid pixels, at probability 0.5 (K >= 2
    classes: the argmax)."""

    model: dict  # metrics.RATIOS of the model; K >= 2: metrics.ClassMetrics.scalars()
    baseline: dict  # the same for predicting background everywhere
    loss: float  # mean cross-entropy (TensorBoard's val/cost)
    classes: metrics.ClassMetrics | None = None  # K >= 2: the model's, per class
    baseline_classes: metrics.ClassMetrics | None = None

    @property
    def score(self):
        """What best/ is chosen by: foreground IoU; K >= 2: mean IoU over the classes (NaN
        while no class is in the truth or the prediction: no best is saved then)."""
        if self.classes is None:
            return self.model["foreground_iou"]
        return math.nan if self.classes.mean_iou is None else self.classes.mean_iou


def validation_metrics(counts, ce_sum, n_valid, names=None):
    """ValMetrics from summed (tp, fp, fn, tn) counts and cross-entropy; K >= 2: counts is
    the confusion matrix [C, C] and names the C class names (config.class_names)."""
    loss = ce_sum / max(n_valid, 1.0)
    if names is None:
        return ValMetrics(metrics.ratios(counts), metrics.ratios(metrics.all_background(counts)),
                          loss)
    model = metrics.class_metrics(counts, names)
    baseline = metrics.class_metrics(metrics.class_all_background(counts), names)
    return ValMetrics(model.scalars(), baseline.scalars(), loss, model, baseline)


# ------------------------------------------------------------ the graph


@dataclasses.dataclass
class Step:
    """One training step's ops, from the single-device or the distributed builder."""

    iterator: object  # initializable; its initializer is fed Graph.data_from
    op: tf.Tensor  # [] int64: the global step after this step's update
    loss: tf.Tensor  # [] float32: mean loss over the global batch
    images: tf.Tensor  # [b, in, in, 3] float32 of the (first replica's) batch
    masks: tf.Tensor  # [b, out, out, 1] uint8
    logits: tf.Tensor  # [b, out, out, 1] float32
    learning_rate: tf.Tensor  # [] float32: this step's


@dataclasses.dataclass
class ValOps:
    name: str  # the validation set's (pipeline.set_names)
    pattern: str  # its glob, named when a record fails to read
    iterator: object  # initializable, over every validation window once
    # counts [4] int64 (tp, fp, fn, tn) or, K >= 2, [C, C] int64 (metrics.class_confusion),
    # ce_sum [] and n_valid [] float32
    fetches: dict


class Scalar:
    """A checkpointed scalar of the run's state and the op that sets it (made with the
    variable: the graph is finalized before the loop)."""

    def __init__(self, name, dtype, initial):
        self.var = v1.get_variable(name, [], dtype, v1.constant_initializer(initial),
                                   trainable=False)
        self._value = v1.placeholder(dtype, [], f"{name}_in")
        self._assign = self.var.assign(self._value)

    def set(self, sess, value):
        sess.run(self._assign, {self._value: value})


@dataclasses.dataclass
class Graph:
    """All ops of a run (build_graph); the loop only runs them."""

    strategy: object  # a tf.distribute strategy, or None for one device
    global_batch: int  # windows per step over all replicas
    data_from: tf.Tensor  # [2] int64 placeholder: (epoch whose order to draw, steps of it done)
    progress: object  # [] float32 placeholder, training time / budget; None without --minutes
    train: Step
    val: list  # ValOps of each validation set; [] without val_records
    global_step: tf.Variable
    epoch: Scalar  # epochs completed
    best_iou: Scalar  # best validation ValMetrics.score; -1 before any
    train_seconds: Scalar  # training time so far, for a resumed --minutes schedule
    summary: tf.Tensor  # cost and learning rate, every step
    image_summary: tf.Tensor  # the `windows` panels
    checkpoints: rundir.Checkpoints
    init: tf.Operation
    encoder_init: object  # pretrained.Assignment with --encoder-weights, else None


def _loss_fn(cfg):
    def loss_fn(images, masks):  # [b, in, in, 3] f32, [b, out, out, 1] u8
        logits = unet.unet(images, True, cfg.depth, cfg.base_filters, cfg.num_outputs,
                           dropout=cfg.dropout, encoder=cfg.encoder,
                           freeze_encoder=cfg.freeze_encoder)
        with tf.name_scope("loss"):
            return optim.pixel_loss(logits, masks, cfg.pos_weight, cfg.dice_weight,
                                    cfg.class_weights)[0], logits
    return loss_fn


def _train_step(cfg, plan, data_from, global_step, progress, strategy):
    """The train step that every replica of `strategy` runs (see core/distribute.py); one
    device is the default strategy's single replica, on the same path."""
    loss_fn = _loss_fn(cfg)
    lr = optim.learning_rate(cfg, global_step, plan.total_steps, progress)
    optimizer = optim.optimizer(cfg, lr)
    # Name scopes keep TensorBoard's graph to a few blocks around unet/ (docs/tensorboard.md).
    with tf.name_scope("train_input"):
        iterator = distribute.make_iterator(
            strategy, plan.train_files, cfg.seed,
            lambda files, seed, skip: pipeline.train_dataset(cfg, files, data_from[0], seed,
                                                             skip),
            plan.worker_steps, skip=data_from[1])
    out = distribute.build_step(strategy, iterator, loss_fn,
                                lambda loss: optim.minimize(optimizer, loss, global_step),
                                global_step)
    return Step(iterator, out["step"], out["loss"], out["images"], out["masks"], out["logits"],
                lr)


def _validation_ops(cfg, plan):
    """ValOps of each validation set (plan.val_files: one list of files per set)."""
    sets = zip(pipeline.set_names(cfg.val_records), pipeline.patterns(cfg.val_records),
               plan.val_files)
    ops = []
    with tf.name_scope("validation"):  # the weights stay unet/'s: get_variable ignores it
        for name, pattern, files in sets:
            iterator = pipeline.make_initializable_iterator(pipeline.val_dataset(cfg, files))
            images, masks = iterator.get_next()
            logits = unet.unet(images, False, cfg.depth, cfg.base_filters, cfg.num_outputs,
                               encoder=cfg.encoder, freeze_encoder=cfg.freeze_encoder)
            _, ce_sum, n_valid = optim.pixel_loss(logits, masks, cfg.pos_weight,
                                                  class_weights=cfg.class_weights)
            counts = (metrics.class_confusion(logits, masks) if cfg.num_outputs > 1
                      else metrics.confusion_counts(logits, masks))
            ops.append(ValOps(name, pattern, iterator, {
                "counts": counts, "ce_sum": ce_sum, "n_valid": n_valid}))
    return ops


def build_graph(cfg, plan, strategy=None):
    """All ops of a run, in the current default graph.

    strategy: a tf.distribute strategy from distribute.make_strategy (build inside
    distribute.scope(strategy)), or None for the single-device graph.
    """
    v1.set_random_seed(cfg.seed)
    data_from = v1.placeholder_with_default(tf.constant([0, 0], tf.int64), [2], "data_from")
    global_step = v1.train.get_or_create_global_step()
    epoch = Scalar("epoch", tf.int64, 0)
    best_iou = Scalar("best_val_iou", tf.float32, -1.0)
    train_seconds = Scalar("train_seconds", tf.float64, 0.0)
    # Fed every step: the schedule cannot know the time per step ahead.
    progress = v1.placeholder(tf.float32, [], "budget_progress") if cfg.minutes else None
    step = _train_step(cfg, plan, data_from, global_step, progress,
                       strategy or tf.distribute.get_strategy())
    val = _validation_ops(cfg, plan)
    n = min(cfg.batch_size, 3)
    if cfg.num_outputs > 1:
        classes = tiling.class_map(step.logits[:n])[..., None]  # [n, out, out, 1] u8
        panels = summaries.class_window_panels(step.images[:n], step.masks[:n], classes)
    else:
        panels = summaries.window_panels(step.images[:n], step.masks[:n],
                                         tf.sigmoid(step.logits[:n]))
    image_summary = v1.summary.image("windows", panels, n)
    log.info("%s depth %d, %d base filters, %d trainable parameters, input %d -> output %d",
             unet.describe(cfg.encoder), cfg.depth, cfg.base_filters,
             sum(v.shape.num_elements() for v in v1.trainable_variables()),
             cfg.input_size, step.logits.shape[1])
    return Graph(
        strategy=strategy, global_batch=cfg.batch_size * distribute.num_replicas(strategy),
        data_from=data_from, progress=progress, train=step, val=val, global_step=global_step,
        epoch=epoch, best_iou=best_iou, train_seconds=train_seconds,
        summary=v1.summary.merge([v1.summary.scalar("cost", step.loss),
                                  v1.summary.scalar("learning_rate",
                                                    step.learning_rate)]),
        image_summary=image_summary,
        checkpoints=rundir.Checkpoints(cfg.run_dir, cfg.keep_checkpoints,
                                       distribute.is_chief(strategy), train_seconds),
        init=v1.global_variables_initializer(),
        encoder_init=(pretrained.assignment(cfg.depth, cfg.encoder) if cfg.encoder_weights
                      else None))


# ------------------------------------------------------------- the loop


@dataclasses.dataclass
class TrainResult:
    """What train() returns: where the run stands and this invocation's last validation."""

    step: int
    epoch: int  # epochs completed
    train_loss: float | None  # mean over the last log window; None when no step ran
    best_val_iou: float  # best validation ValMetrics.score so far; -1 before any
    checkpoint: str | None  # the newest checkpoint
    interrupted: str | None  # None, "SIGINT" or "SIGTERM"
    train_seconds: float  # training time over all invocations (what --minutes budgets)
    val: ValMetrics | None  # None when this invocation did not finish a validation
    # each validation set's, by name, when there are several ({} otherwise)
    val_sets: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Writers:
    """TensorBoard: train/ per step; val/ the model's metrics and baseline/ the
    all-background ones under the same tags, so TensorBoard draws the two as lines of
    one chart per metric; with several validation sets val/ is all of them combined and
    val-<name>/ each set's, under the same tags again."""

    train: object
    val: object
    baseline: object
    sets: dict  # validation set name -> its writer; {} with one set

    @classmethod
    def open(cls, strategy, run_dir, graph, set_names=()):
        def writer(name):
            return distribute.summary_writer(strategy, rundir.events_dir(run_dir, name),
                                             graph if name == "train" else None)
        sets = {name: writer(rundir.val_set_dir(name)) for name in set_names}
        return cls(writer("train"), writer("val"), writer("baseline"), sets)

    def write_validation(self, val, step, val_sets):
        """K >= 2 adds per-class tags (iou/<class>, ...) and the model's confusion_matrix
        image (summaries.confusion_image) to val/ and each val-<name>/."""
        pairs = [(self.val, val, {"cost": val.loss, **val.model}),
                 (self.baseline, None, val.baseline)]
        pairs += [(self.sets[name], m, {"cost": m.loss, **m.model})
                  for name, m in val_sets.items()]
        for writer, each, tags in pairs:
            values = [v1.Summary.Value(tag=k, simple_value=v) for k, v in tags.items()]
            if each is not None and each.classes is not None:
                values.append(summaries.image_value(
                    "confusion_matrix", summaries.confusion_image(each.classes.confusion)))
            writer.add_summary(v1.Summary(value=values), step)
            writer.flush()

    def close(self):
        for writer in (self.train, self.val, self.baseline, *self.sets.values()):
            writer.close()


class _Loop:
    """One invocation's training: epochs of steps, validations, checkpoints and the stop.

    run() is the outline; each method below is one of its named steps.
    """

    def __init__(self, sess, g, cfg, plan, stop, clock, checkpoint):
        """sess: with g's variables restored from `checkpoint` (None: initialised)."""
        self.sess, self.g, self.cfg, self.plan, self.stop = sess, g, cfg, plan, stop
        step, epoch, seconds = sess.run([g.global_step, g.epoch.var, g.train_seconds.var])
        if checkpoint:
            log.info("resuming from %s (step %d, epoch %d, %s of training)", checkpoint, step,
                     epoch, _hms(seconds))
        else:
            log.info("starting a new run in %s", cfg.run_dir)
        self.step, self.epoch = int(step), int(epoch)
        self.timer = _TrainingClock(clock, cfg.minutes * 60.0, float(seconds))
        self.losses, self.nan_skips, self.val, self.val_sets = [], 0, None, {}
        self.tick = (self.timer.seconds, self.step)  # where the speed in the log counts from

    def step_limit(self):
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def finished(self):
        return (self.step_limit() or bool(self.cfg.epochs and self.epoch >= self.cfg.epochs)
                or self.timer.spent)

    def run(self, writers):
        # Tells TensorBoard to drop events logged after this checkpoint by a killed earlier
        # run; it drops steps >= the one given, and the checkpointed step's own are valid.
        writers.train.add_session_log(v1.SessionLog(status=v1.SessionLog.START), self.step + 1)
        already_complete = self.finished()  # no step to run: only report where the run stands
        while not self.finished() and not self.stop.requested:
            epoch_done = self._train_epoch(writers.train)
            if epoch_done:
                self.epoch += 1
                self.g.epoch.set(self.sess, self.epoch)
            if not self.stop.requested and (
                    (epoch_done and self.epoch % self.cfg.val_every == 0) or self.finished()):
                self._validate_and_save(writers)
        self._wrap_up(writers, already_complete)
        return self._result()

    def _train_epoch(self, writer):
        """Steps until the data, a limit or a stop ends them; True when the data did."""
        self.sess.run(self.g.train.iterator.initializer,
                      {self.g.data_from: [self.epoch, self._steps_into_epoch()]})
        while not self.stop.requested and not self.step_limit() and not self.timer.spent:
            try:
                out = self._run_step()
            except tf.errors.OutOfRangeError:
                return True
            self.timer.read()
            self.step = int(out["step"])
            if not self._loss_is_finite(float(out["loss"])):
                continue
            writer.add_summary(out["summary"], self.step)
            if "images" in out:
                writer.add_summary(out["images"], self.step)
            if self.step % self.cfg.log_every == 0:
                self._log_progress()
            if self.step % self.cfg.checkpoint_every == 0:
                self._save()
        return False

    def _steps_into_epoch(self):
        """Steps of this epoch an interrupted invocation ran (its windows are passed over:
        exact resume). Every step takes one batch, so from the checkpointed step and epoch,
        old run dirs too; one resumed by an older train.py (its epoch ran again) skips once."""
        spe = self.plan.steps_per_epoch
        return min(max(self.step - self.epoch * spe, 0), spe)

    def _run_step(self):
        g = self.g
        fetches = {"step": g.train.op, "loss": g.train.loss, "summary": g.summary}
        if (self.step + 1) % self.cfg.image_summary_every == 0 or self.step == 0:
            fetches["images"] = g.image_summary
        feed = {g.progress: self.timer.progress} if g.progress is not None else None
        with guard.record_errors(self.cfg.train_records):
            return self.sess.run(fetches, feed)

    def _loss_is_finite(self, loss):
        """The --on-nan policy: False for a skipped step; raises when training diverged."""
        if math.isfinite(loss):
            self.nan_skips = 0
            self.losses.append(loss)
            return True
        if self.cfg.on_nan != "skip":
            raise UserError(f"loss became {loss} at step {self.step}: lower "
                            "--learning-rate (the last good checkpoint is kept)")
        self.nan_skips += 1
        log.warning("loss %s at step %d: update skipped (%d in a row)", loss, self.step,
                    self.nan_skips)
        if self.nan_skips >= MAX_NAN_SKIPS:
            raise UserError(f"loss was not finite for {self.nan_skips} steps in a row up to "
                            f"step {self.step}: lower --learning-rate (the last good "
                            "checkpoint is kept)")
        return False

    def _log_progress(self):
        rate = ((self.step - self.tick[1]) * self.g.global_batch
                / max(self.timer.seconds - self.tick[0], 1e-9))
        log.info(_progress_line(self.g, self.cfg, self.timer, self.plan.total_steps, self.step,
                                self.epoch, np.mean(self.losses[-self.cfg.log_every:]), rate))
        self.tick = (self.timer.seconds, self.step)

    def _validate_and_save(self, writers):
        last = self.finished()
        self.val = self._validate()
        self._report(writers)
        if not last:  # training goes on: this validation was part of the budget
            self.timer.read()
        self._save()
        self.tick = (self.timer.seconds, self.step)  # validating is not training speed

    def _validate(self):
        """ValMetrics over every validation window, or None (no val records, or stopped);
        each set's in self.val_sets when there are several."""
        if not self.g.val:
            return None
        names = config.class_names(self.cfg) if self.cfg.num_outputs > 1 else None
        totals, self.val_sets = [0, 0.0, 0.0], {}
        for ops in self.g.val:
            counts, ce_sum, n_valid = self._validate_set(ops)
            if self.stop.requested:
                return None
            if len(self.g.val) > 1:
                self.val_sets[ops.name] = validation_metrics(counts, ce_sum, n_valid, names)
            totals = [totals[0] + counts, totals[1] + ce_sum, totals[2] + n_valid]
        return validation_metrics(*totals, names)

    def _validate_set(self, ops):
        """Summed (counts [4] or [C, C], ce_sum, n_valid) over one validation set's windows."""
        self.sess.run(ops.iterator.initializer)
        counts = np.zeros(ops.fetches["counts"].shape.as_list(), np.int64)
        ce_sum, n_valid = 0.0, 0.0
        with guard.record_errors(ops.pattern):
            while not self.stop.requested:
                try:
                    out = self.sess.run(ops.fetches)
                except tf.errors.OutOfRangeError:
                    break
                counts += out["counts"]
                ce_sum += float(out["ce_sum"])
                n_valid += float(out["n_valid"])
        return counts, ce_sum, n_valid

    def _report(self, writers):
        """Log and write the validation; save best/ when its IoU is a new best."""
        val, g, sess = self.val, self.g, self.sess
        if val is None:
            return
        for name, each in self.val_sets.items():
            if each.classes is not None:
                log.info("epoch %d step %d val %s: %s", self.epoch, self.step, name,
                         _classes_line(each))
                continue
            log.info("epoch %d step %d val %s: IoU %.4f  Dice %.4f  loss %.4f | "
                     "all-background accuracy %.4f", self.epoch, self.step, name,
                     each.model["foreground_iou"], each.model["dice"], each.loss,
                     each.baseline["pixel_accuracy"])
        m, b = val.model, val.baseline
        if val.classes is not None:
            log.info("epoch %d step %d val: %s", self.epoch, self.step, _classes_line(val))
        else:
            log.info("epoch %d step %d val: IoU %.4f  Dice %.4f  precision %.4f  recall %.4f  "
                     "accuracy %.4f  loss %.4f | all-background: IoU %.4f  accuracy %.4f",
                     self.epoch, self.step, m["foreground_iou"], m["dice"], m["precision"],
                     m["recall"], m["pixel_accuracy"], val.loss, b["foreground_iou"],
                     b["pixel_accuracy"])
        writers.write_validation(val, self.step, self.val_sets)
        # The best is checkpointed as float32 (run dirs from before must still resume):
        # compare at that precision, or the same IoU would count as a new best again.
        iou = val.score
        if np.float32(iou) > sess.run(g.best_iou.var):  # never for NaN
            g.best_iou.set(sess, iou)
            path = g.checkpoints.save_best(sess, self.step)
            if path:
                log.info("new best val %s %.4f: saved %s",
                         "IoU" if val.classes is None else "mIoU", iou, path)

    def _save(self):
        """Checkpoint at this step, with the training time so far."""
        return self.g.checkpoints.save(self.sess, self.step, self.timer.seconds)

    def _wrap_up(self, writers, already_complete):
        """Save on a stop; otherwise say why the run ended (validating if nothing was left)."""
        cfg, timer, step = self.cfg, self.timer, self.step
        if self.stop.requested:
            log.warning("stopped by %s at step %d: saved %s; re-run the same command to resume",
                        signal.Signals(self.stop.signum).name, step, self._save())
        elif already_complete:
            log.info("run already complete at step %d, epoch %d: validating", step, self.epoch)
            self.val = self._validate()
            self._report(writers)
        elif timer.spent:
            log.info("time budget of %g min spent (%s of training): stopped at step %d, "
                     "epoch %d", cfg.minutes, _hms(timer.seconds), step, self.epoch)
        elif timer.budget:
            log.warning("--epochs/--max-steps ended the run with %s of the %g min budget "
                        "left: the schedule stopped short of its end",
                        _hms(timer.budget - timer.seconds), cfg.minutes)

    def _result(self):
        window = self.losses[-self.cfg.log_every:]
        return TrainResult(
            step=self.step, epoch=self.epoch,
            train_loss=float(np.mean(window)) if window else None,
            best_val_iou=float(self.sess.run(self.g.best_iou.var)),
            checkpoint=rundir.latest(self.cfg.run_dir),
            interrupted=signal.Signals(self.stop.signum).name if self.stop.signum else None,
            train_seconds=self.timer.seconds, val=self.val, val_sets=self.val_sets)


def _shown(value):
    return "n/a" if value is None else f"{value:.4f}"


def _classes_line(val):
    """The K >= 2 validation log line: mIoU, accuracy, loss, each class's IoU, baseline."""
    m, b = val.classes, val.baseline_classes
    per_class = "  ".join(f"{name} {_shown(iou)}" for name, iou in zip(m.names[1:], m.iou[1:]))
    return (f"mIoU {_shown(m.mean_iou)} (with background {_shown(m.mean_iou_with_background)})"
            f"  accuracy {_shown(m.pixel_accuracy)}  loss {val.loss:.4f} | IoU {per_class} | "
            f"all-background: mIoU {_shown(b.mean_iou)}  accuracy {_shown(b.pixel_accuracy)}")


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


def _hms(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def train(cfg, clock=time.monotonic):
    """Train (or resume) the run in cfg.run_dir; returns a TrainResult.

    clock: seconds, for the --minutes budget and the speed in the log (tests pass a
    fake one; see _TrainingClock for when it is read).
    """
    cfg = config.resolve(cfg)  # every flag checked once
    # Both before TF's runtime starts: XLA flags are read at the first Session, and the
    # logical CPU devices of --devices must exist by then.
    session_config = device.device_config(cfg)
    strategy = distribute.make_strategy(cfg.strategy, distribute.parse_devices(cfg.devices))
    # Refuses another network's run dir, locks it, turns a full disk into one line.
    with rundir.training(cfg, distribute.is_chief(strategy)) as run:
        data = guard.scan_sets(cfg.train_records, cfg.val_records, cfg.train_weights,
                               run.skip_to if cfg.skip_corrupt_records else None)
        # Several sets: their weights made concrete, so config.json says how they mixed.
        cfg = dataclasses.replace(cfg, train_weights=data.weights)
        plan = distribute.plan(strategy, cfg, data.train_files, data.counts, data.val_files)
        # The multi-worker gRPC server must stay referenced while the Session runs.
        target, session_config, _server = distribute.session_target(strategy, session_config)
        checkpoint = run.start(cfg)  # writes config.json; the newest readable checkpoint
        with tf.Graph().as_default() as graph, distribute.scope(strategy):
            g = build_graph(cfg, plan, strategy)
            graph.finalize()  # any op added inside the loop would be a leak
            with v1.Session(target, config=session_config) as sess, _StopFlag() as stop:
                if checkpoint:
                    g.checkpoints.restore(sess, checkpoint)
                else:
                    sess.run(g.init)
                    if g.encoder_init:  # a fresh start: the pretrained features, once
                        g.encoder_init.run(sess, pretrained.read(
                            cfg.encoder_weights, cfg.depth, cfg.encoder))
                        log.info("encoder: %s weights from %s", cfg.encoder,
                                 cfg.encoder_weights)
                loop = _Loop(sess, g, cfg, plan, stop, clock, checkpoint)
                names = [ops.name for ops in g.val] if len(g.val) > 1 else ()
                with contextlib.closing(_Writers.open(strategy, cfg.run_dir, graph,
                                                      names)) as writers:
                    return loop.run(writers)


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
    left = [(total_steps - step) * g.global_batch / max(rate, 1e-9)] if total_steps else []
    if timer.budget:
        left.append(max(timer.budget - timer.seconds, 0.0))
    line = (f"step {step}{f'/{total_steps}' if total_steps else ''} "
            f"epoch {epoch + 1}{f'/{cfg.epochs}' if cfg.epochs else ''} loss {loss:.4f} "
            f"{rate:.1f} images/s ETA {_hms(min(left, default=0))}")
    if timer.budget:
        line += f" ({timer.progress:.0%} of the {cfg.minutes:g} min budget)"
    return line


# ------------------------------------------------------------ command line


def build_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-name", default="unet", help="run directory is logs/<run-name>")
    p.add_argument("--run-dir", help="run directory; overrides --run-name")
    config.add_flags(p)  # every Config field's flag, defined with its default in core/config.py
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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
    if result.interrupted:
        return EXIT_ON_SIGNAL[signal.Signals[result.interrupted]]
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
