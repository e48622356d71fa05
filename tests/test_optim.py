"""core/optim.py: pixel loss, Adam with loss scaling, --on-nan skip and the batch-norm updates."""

import types

import numpy as np
import pytest
import tensorflow as tf

import unet
from core import optim

v1 = tf.compat.v1


def cfg(**kw):
    return types.SimpleNamespace(**kw)


def _train(precision, steps=4):
    """Losses of a tiny U-Net trained with optim.optimizer / optim.minimize."""
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.random([2, 44, 44, 3], dtype=np.float32))
        y = tf.constant((rng.random([2, 28, 28, 1]) < 0.3).astype(np.float32))
        logits = unet.unet(x, True, depth=1, base_filters=4)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
        opt = optim.optimizer(cfg(precision=precision), 1e-2)
        train_op = optim.minimize(opt, loss, v1.train.get_or_create_global_step())
        mean = [v for v in v1.global_variables() if v.name.endswith("moving_mean:0")][0]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            losses = [sess.run([loss, train_op])[0] for _ in range(steps)]
            return losses, sess.run(mean), type(opt).__name__


def test_loss_scaling_wraps_the_optimizer_and_trains_like_plain_adam():
    plain, mean, name = _train("float32")
    scaled, _, scaled_name = _train("mixed_float16")
    assert name == "AdamOptimizer" and scaled_name == "MixedPrecisionLossScaleOptimizer"
    # On a CPU the graph stays float32, and power-of-two loss scaling is exact.
    np.testing.assert_allclose(scaled, plain, rtol=1e-6)
    assert plain[-1] < plain[0]
    assert np.any(mean != 0.0)  # minimize() ran the batch-norm moving-average updates


def test_skip_non_finite_counts_the_step_but_leaves_weights_and_slots_alone():
    with tf.Graph().as_default():
        w = v1.get_variable("w", [2], initializer=v1.ones_initializer())
        scale = v1.placeholder(tf.float32, [])
        loss = tf.reduce_sum(w * scale)
        global_step = v1.train.get_or_create_global_step()
        opt = optim.optimizer(cfg(precision="float32", on_nan="skip"), 0.1)
        train_op = optim.minimize(opt, loss, global_step)
        finite = optim.all_finite(v1.global_variables())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            assert sess.run(train_op, {scale: np.nan}) is np.False_
            assert sess.run(global_step) == 1 and sess.run(w).tolist() == [1.0, 1.0]
            assert sess.run(finite)
            assert sess.run(train_op, {scale: 1.0}) is np.True_
            assert sess.run(global_step) == 2 and np.all(sess.run(w) < 1.0)


def test_learning_rate_schedules():
    with tf.Graph().as_default():
        step = tf.constant(50, tf.int64)
        base = dict(learning_rate=1.0, lr_decay_steps=100, lr_decay_rate=0.1)

        def lr(schedule, progress=None):
            return optim.learning_rate(cfg(lr_schedule=schedule, **base), step, 100, progress)

        with v1.Session() as sess:
            assert sess.run(lr("constant")) == 1.0
            np.testing.assert_allclose(sess.run(lr("cosine")), 0.5, rtol=1e-6)
            # --minutes: the cosine follows the budget and ends with it.
            assert sess.run(lr("cosine", tf.constant(1.0))) == 0.0
            np.testing.assert_allclose(sess.run(lr("exponential")), 0.1 ** 0.5, rtol=1e-6)


def test_pixel_loss_ignores_255():
    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0], np.float32).reshape(1, 1, 5, 1)
    masks = np.array([1, 0, 0, 1, 255], np.uint8).reshape(1, 1, 5, 1)
    loss, ce_sum, n_valid = optim.pixel_loss(tf.constant(logits), tf.constant(masks), 3.0)
    x, y = logits.ravel()[:4], np.array([1, 0, 0, 1.0])
    ce = 3.0 * y * np.log1p(np.exp(-x)) + (1 - y) * np.log1p(np.exp(x))
    assert float(n_valid) == 4.0
    np.testing.assert_allclose(float(loss), ce.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(ce_sum), ce.sum(), rtol=1e-6)
    # Dice term: soft Dice over the valid pixels only.
    p = 1 / (1 + np.exp(-x))
    dice = (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    with_dice, _, _ = optim.pixel_loss(tf.constant(logits), tf.constant(masks), 3.0, 0.5)
    np.testing.assert_allclose(float(with_dice), ce.mean() + 0.5 * (1 - dice), rtol=1e-6)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# Four pixels of a K = 2 run (background, cat, dog): background, dog, ignored, cat.
LOGITS3 = np.array([[1.0, -0.5, 0.2], [0.3, 0.1, 2.0], [5.0, -3.0, 1.0], [-1.0, 0.4, 0.0]],
                   np.float32).reshape(1, 1, 4, 3)
MASKS3 = np.array([0, 2, 255, 1], np.uint8).reshape(1, 1, 4, 1)


def test_softmax_loss_ignores_255_and_weights_each_class():
    p = _softmax(LOGITS3.reshape(4, 3).astype(np.float64))
    y = [0, 2, None, 1]
    ce = np.array([-np.log(p[i, c]) for i, c in enumerate(y) if c is not None])
    loss, ce_sum, n_valid = optim.pixel_loss(tf.constant(LOGITS3), tf.constant(MASKS3), 1.0)
    assert float(n_valid) == 3.0
    np.testing.assert_allclose(float(ce_sum), ce.sum(), rtol=1e-6)
    np.testing.assert_allclose(float(loss), ce.mean(), rtol=1e-6)
    # Each pixel weighted by its true class; still divided by the valid pixels (3).
    weighted, w_sum, _ = optim.pixel_loss(tf.constant(LOGITS3), tf.constant(MASKS3), 1.0,
                                          class_weights=(0.5, 2.0, 3.0))
    expected = 0.5 * ce[0] + 3.0 * ce[1] + 2.0 * ce[2]
    np.testing.assert_allclose([float(w_sum), float(weighted)], [expected, expected / 3],
                               rtol=1e-6)
    # pos_weight is K = 1's: it changes nothing here.
    other, _, _ = optim.pixel_loss(tf.constant(LOGITS3), tf.constant(MASKS3), 7.0)
    assert float(other) == float(loss)


def test_softmax_dice_term_averages_the_classes_without_background():
    p = _softmax(LOGITS3.reshape(4, 3).astype(np.float64))[[0, 1, 3]]  # the valid pixels
    onehot = np.eye(3)[[0, 2, 1]]
    dice = (2 * (p * onehot).sum(0) + 1) / (p.sum(0) + onehot.sum(0) + 1)  # [3]
    ce = -np.log((p * onehot).sum(1))
    loss, _, _ = optim.pixel_loss(tf.constant(LOGITS3), tf.constant(MASKS3), 1.0, 0.5)
    np.testing.assert_allclose(float(loss), ce.mean() + 0.5 * (1 - dice[1:].mean()), rtol=1e-6)


def test_an_ignored_pixel_gets_no_gradient_and_pixel_weights_scale_each_pixel():
    logits = tf.constant(LOGITS3)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss, _, _ = optim.pixel_loss(logits, tf.constant(MASKS3), 1.0, 0.5, (0.5, 1.0, 2.0))
    grad = tape.gradient(loss, logits).numpy()[0, 0]
    assert (grad[2] == 0.0).all() and (grad[[0, 1, 3]] != 0.0).all()
    # A weight map (the paper's w(x)) multiplies each pixel's cross-entropy.
    weights = np.array([2.0, 0.0, 9.0, 1.0], np.float32).reshape(1, 1, 4, 1)
    _, plain, _ = optim.pixel_loss(logits, tf.constant(MASKS3), 1.0)
    p = _softmax(LOGITS3.reshape(4, 3).astype(np.float64))
    ce = -np.log(p[[0, 1, 3], [0, 2, 1]])
    _, mapped, n = optim.pixel_loss(logits, tf.constant(MASKS3), 1.0,
                                    pixel_weights=tf.constant(weights))
    np.testing.assert_allclose([float(plain), float(mapped), float(n)],
                               [ce.sum(), 2 * ce[0] + ce[2], 3.0], rtol=1e-6)
    # ... for one class too.
    one = tf.constant(np.array([1.0, -2.0, 0.5, 3.0], np.float32).reshape(1, 1, 4, 1))
    masks = tf.constant(np.array([1, 0, 255, 1], np.uint8).reshape(1, 1, 4, 1))
    _, base, _ = optim.pixel_loss(one, masks, 1.0)
    _, doubled, _ = optim.pixel_loss(one, masks, 1.0, pixel_weights=tf.constant(2 * np.ones_like(
        weights)))
    np.testing.assert_allclose(float(doubled), 2 * float(base), rtol=1e-6)


def test_class_weights_must_match_the_logits():
    with pytest.raises(ValueError, match="2 class weights for 3 logits"):
        optim.pixel_loss(tf.constant(LOGITS3), tf.constant(MASKS3), 1.0, class_weights=(1, 2))


def _decayed(weight_decay, precision="float32", on_nan="stop", scale=0.0):
    """Kernel, bias and gamma after one step of a loss with gradient scale * 1 everywhere."""
    with tf.Graph().as_default():
        with v1.variable_scope("conv"):
            w = v1.get_variable("weights", [1, 1, 1, 2],
                                initializer=v1.constant_initializer(2.0))
            b = v1.get_variable("biases", [2], initializer=v1.constant_initializer(2.0))
            gamma = v1.get_variable("gamma", [2], initializer=v1.constant_initializer(2.0))
        factor = v1.placeholder(tf.float32, [])
        loss = factor * tf.reduce_sum(w + b + gamma)
        opt = optim.optimizer(cfg(precision=precision, on_nan=on_nan,
                                  weight_decay=weight_decay), 0.1)
        train_op = optim.minimize(opt, loss, v1.train.get_or_create_global_step())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train_op, {factor: scale})
            return [sess.run(v).ravel().tolist() for v in (w, b, gamma)]


def test_weight_decay_shrinks_kernels_by_lr_times_decay_and_leaves_the_rest():
    # A zero gradient leaves Adam's step at exactly 0, so only the decay moves a weight.
    w, b, gamma = _decayed(0.5)
    np.testing.assert_allclose(w, [2.0 * (1 - 0.1 * 0.5)] * 2, rtol=1e-6)
    assert b == [2.0, 2.0] and gamma == [2.0, 2.0]
    assert _decayed(0.0)[0] == [2.0, 2.0]
    # With a gradient: Adam's first step is lr * sign(g) = 0.1, then the decay of the result.
    np.testing.assert_allclose(_decayed(0.5, scale=1.0)[0], [1.9 * 0.95] * 2, rtol=1e-5)


def test_weight_decay_skips_with_the_step_it_belongs_to():
    # --on-nan skip and loss scaling both leave out a non-finite step: no decay either.
    assert _decayed(0.5, on_nan="skip", scale=np.nan)[0] == [2.0, 2.0]
    assert _decayed(0.5, precision="mixed_float16", scale=np.nan)[0] == [2.0, 2.0]
