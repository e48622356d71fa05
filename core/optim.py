"""What a training step minimises and how: the pixel loss (sigmoid cross-entropy for one
class, softmax with per-class weights for several), Adam on the learning-rate schedule
(AdamW's decoupled weight decay with --weight-decay), dynamic loss scaling for
mixed_float16, the --on-nan skip, and the batch-norm updates in the train op.

    loss = optim.pixel_loss(logits, masks, cfg.pos_weight, cfg.dice_weight,
                            cfg.class_weights)[0]
    lr = optim.learning_rate(cfg, global_step, total_steps, progress)
    train_op = optim.minimize(optim.optimizer(cfg, lr), loss, global_step)

`all_finite` is the check the trainer runs before every save, so a checkpoint
with NaN/Inf weights is never written and the last one on disk stays good.
"""

import tensorflow as tf

from datasets import records

v1 = tf.compat.v1

LR_SCHEDULES = ("constant", "exponential", "cosine")


def pixel_loss(logits, masks, pos_weight, dice_weight=0.0, class_weights=(),
               pixel_weights=None):
    """The pixel loss of one batch, averaged over its valid pixels, plus an optional Dice term.

    logits: [B, h, w, C] float32; masks: [B, h, w, 1] uint8 (255 = ignore).
    C = 1 (K = 1 class): weighted sigmoid cross-entropy, mask 1 foreground, 0 background.
    C = K + 1 (K >= 2 classes): softmax cross-entropy over background and the classes, mask
    0..K the class; class_weights (C numbers, () = all 1) weight each pixel by its true class.
    pixel_weights: None, or float32 [B, h, w, 1] multiplying each pixel's cross-entropy (for
    the paper's weight map w(x), section 3, which this project does not compute yet).
    Returns (loss scalar, summed weighted cross-entropy, number of valid pixels): the sum is
    divided by the valid pixels, not by the weights' sum, in both cases, so a weight > 1
    makes its pixels count more, exactly as pos_weight always has.
    """
    if logits.shape[-1] != 1:
        return _softmax_loss(logits, masks, dice_weight, class_weights, pixel_weights)
    valid = tf.cast(tf.not_equal(masks, records.IGNORE), tf.float32)
    labels = tf.cast(tf.equal(masks, records.FOREGROUND), tf.float32)
    ce = tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight)
    if pixel_weights is not None:
        ce = ce * pixel_weights
    ce_sum = tf.reduce_sum(ce * valid)
    n_valid = tf.reduce_sum(valid)
    loss = ce_sum / tf.maximum(n_valid, 1.0)
    if dice_weight:
        probs = tf.sigmoid(logits) * valid
        inter = tf.reduce_sum(probs * labels)
        dice = (2.0 * inter + 1.0) / (tf.reduce_sum(probs) + tf.reduce_sum(labels * valid) + 1.0)
        loss += dice_weight * (1.0 - dice)
    return loss, ce_sum, n_valid


def _softmax_loss(logits, masks, dice_weight, class_weights, pixel_weights):
    """pixel_loss for C = K + 1 >= 2 logits (see there); IGNORE pixels contribute nothing."""
    num_classes = logits.shape[-1]
    if class_weights and len(class_weights) != num_classes:
        raise ValueError(f"{len(class_weights)} class weights for {num_classes} logits")
    index = masks[..., 0]  # [B, h, w] uint8
    valid = tf.not_equal(index, records.IGNORE)
    # An ignored pixel gets label 0 only so the op has a valid label; its loss is masked out.
    labels = tf.where(valid, tf.cast(index, tf.int32), 0)
    validf = tf.cast(valid, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    weight = validf
    if class_weights:
        weight *= tf.gather(tf.constant(class_weights, tf.float32), labels)
    if pixel_weights is not None:
        weight *= pixel_weights[..., 0]
    ce_sum = tf.reduce_sum(ce * weight)
    n_valid = tf.reduce_sum(validf)
    loss = ce_sum / tf.maximum(n_valid, 1.0)
    if dice_weight:
        # Soft Dice of each class over the batch's valid pixels, averaged over the K classes,
        # background left out: background covers most pixels, its Dice sits near 1 whatever
        # the model does and would dilute the term; K = 1's Dice is likewise the foreground's.
        # The +1 smoothing (as K = 1's) makes a class absent from the batch score 1 when
        # nothing is predicted for it, so the term also pushes its probability down.
        probs = tf.nn.softmax(logits) * validf[..., None]  # [B, h, w, C]
        onehot = tf.one_hot(labels, num_classes) * validf[..., None]
        inter = tf.reduce_sum(probs * onehot, axis=[0, 1, 2])  # [C]
        dice = (2.0 * inter + 1.0) / (tf.reduce_sum(probs, axis=[0, 1, 2])
                                      + tf.reduce_sum(onehot, axis=[0, 1, 2]) + 1.0)
        loss += dice_weight * (1.0 - tf.reduce_mean(dice[1:]))
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
    """Adam at lr (AdamW with cfg.weight_decay > 0), with dynamic loss scaling for
    mixed_float16 (or small gradients flush to zero) and, for on_nan "skip", updates only
    where every gradient is finite."""
    weight_decay = getattr(cfg, "weight_decay", 0.0)
    # Innermost, so a step that loss scaling or --on-nan skip leaves out decays nothing.
    opt = AdamW(lr, weight_decay) if weight_decay else v1.train.AdamOptimizer(lr)
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


def decays(variable):
    """Whether weight decay shrinks a variable: the conv and up-conv kernels, the only
    variables of two or more dimensions, never the biases or batch norm's gamma and beta,
    which set a unit's offset and scale rather than its filter (nanoGPT's rule). By shape,
    not name: a replica's copy of a variable has a name of its own."""
    return len(variable.shape) >= 2


class AdamW(v1.train.AdamOptimizer):
    """AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019):
    Adam's step, then every kernel w (see `decays`) becomes w - lr * weight_decay * w.

    The shrink follows the learning-rate schedule, as PyTorch's AdamW does. Added to the
    gradient instead (L2), Adam would divide it by the gradient's running size and decay
    the weights with the largest gradients least. It lives in the per-variable update (the
    hook the v1 Optimizer documents for subclasses), so a distribution strategy applies it
    once per variable and device, like Adam's own step. Named "Adam": the slots keep their
    names, so a checkpoint resumes with or without decay.
    """

    def __init__(self, learning_rate, weight_decay):
        super().__init__(learning_rate, name="Adam")
        self._decay = learning_rate * weight_decay

    def _shrink(self, update, var):
        if not decays(var):
            return update
        with tf.control_dependencies([update]):
            return var.assign_sub(tf.cast(self._decay, var.dtype.base_dtype) * var)

    def _apply_dense(self, grad, var):
        return self._shrink(super()._apply_dense(grad, var), var)

    def _resource_apply_dense(self, grad, var):
        return self._shrink(super()._resource_apply_dense(grad, var), var)


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
