"""What a training step minimises and how: the pixel loss, Adam on the learning-rate
schedule, dynamic loss scaling for mixed_float16, the --on-nan skip, and the batch-norm
updates in the train op.

    loss = optim.pixel_loss(logits, masks, cfg.pos_weight, cfg.dice_weight)[0]
    lr = optim.learning_rate(cfg, global_step, total_steps, progress)
    train_op = optim.minimize(optim.optimizer(cfg, lr), loss, global_step)

`all_finite` is the check the trainer runs before every save, so a checkpoint
with NaN/Inf weights is never written and the last one on disk stays good.
"""

import tensorflow as tf

from datasets import records

v1 = tf.compat.v1

LR_SCHEDULES = ("constant", "exponential", "cosine")


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


def optimizer(cfg, lr):
    """Adam at lr, with dynamic loss scaling for mixed_float16 (or small gradients flush
    to zero) and, for on_nan "skip", updates only where every gradient is finite."""
    opt = v1.train.AdamOptimizer(lr)
    if cfg.precision == "mixed_float16":
        opt = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(opt, "dynamic")
    if getattr(cfg, "on_nan", "stop") == "skip":
        opt = SkipNonFinite(opt)
    return opt


def minimize(opt, loss, global_step=None, var_list=None):
    """The train op: one optimizer step that also runs the batch-norm UPDATE_OPS
    (unet.py puts the moving-statistics updates there)."""
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        return opt.minimize(loss, global_step=global_step, var_list=var_list)


class SkipNonFinite(v1.train.Optimizer):
    """Applies a step only when every gradient is finite; otherwise just counts the step.

    For --on-nan skip: the weights and Adam's moments never see a NaN/Inf
    gradient, and the global step still advances so the schedule and the
    trainer's step count go on. The train op is a bool tensor: True if applied.
    """

    def __init__(self, inner):
        super().__init__(use_locking=False, name="SkipNonFinite")
        self._inner = inner

    def compute_gradients(self, *args, **kwargs):
        return self._inner.compute_gradients(*args, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g))
                                         for g, _ in grads_and_vars if g is not None]))

        def apply():
            # The inner optimizer creates its slots in an init_scope, outside this cond.
            with tf.control_dependencies([self._inner.apply_gradients(grads_and_vars,
                                                                      global_step, name)]):
                return tf.constant(True)

        def skip():
            counted = [global_step.assign_add(1)] if global_step is not None else []
            with tf.control_dependencies(counted):
                return tf.constant(False)

        return tf.cond(finite, apply, skip)


def all_finite(variables):
    """Graph op: bool scalar, True when every element of every variable is finite."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables
                                   if v.dtype.is_floating]))
