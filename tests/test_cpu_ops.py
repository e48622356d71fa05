import numpy as np
import pytest
import tensorflow as tf

import unet
from benchmarks import cpu_ops

v1 = tf.compat.v1


@pytest.mark.parametrize("static", [True, False])
def test_matmul_up_conv_equals_conv2d_transpose_in_values_and_gradients(static):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 7, 6] if static else [None, None, None, 6])
        w = tf.constant(np.random.default_rng(2).normal(size=[2, 2, 4, 6]), tf.float32)
        y = cpu_ops.matmul_up_conv(x, w)
        reference = cpu_ops.plain_up_conv(x, w)
        assert y.shape.as_list() == ([2, 10, 14, 4] if static else [None, None, None, 4])
        assert reference.shape.as_list() == y.shape.as_list()
        dy = tf.constant(np.random.default_rng(1).normal(size=[2, 10, 14, 4]), tf.float32)
        grads = tf.gradients(y, [x, w], dy)
        ref_grads = tf.gradients(reference, [x, w], dy)
        with v1.Session() as sess:
            feed = {x: np.random.default_rng(0).normal(size=[2, 5, 7, 6])}
            ours, ref, ours_g, ref_g = sess.run([y, reference, grads, ref_grads], feed)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_g, ref_g):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("static", [True, False])
def test_slice_crop_equals_plain_crop_in_values_and_gradients(static):
    g = tf.Graph()
    with g.as_default():
        skip = v1.placeholder(tf.float32, [1, 9, 8, 2] if static else [None, None, None, 2])
        target = tf.zeros([1, 5, 4, 3])
        ours, ref = cpu_ops.slice_crop(skip, target), cpu_ops.plain_crop(skip, target)
        grads = tf.gradients(ours * ours, skip) + tf.gradients(ref * ref, skip)
        with v1.Session() as sess:
            feed = {skip: np.arange(144, dtype=np.float32).reshape(1, 9, 8, 2)}
            a, r, ga, gr = sess.run([ours, ref] + grads, feed)
    np.testing.assert_array_equal(a, r)
    np.testing.assert_array_equal(a[0, :, :, 0], feed[skip][0, 2:7, 2:6, 0])
    np.testing.assert_array_equal(ga, gr)


def test_conv_gradient_is_tensorflows_with_weights_first():
    def conv_grads(override):
        g = tf.Graph()
        with g.as_default():
            x = tf.constant(np.random.default_rng(0).normal(size=[2, 9, 9, 3]), tf.float32)
            w = tf.constant(np.random.default_rng(1).normal(size=[3, 3, 3, 5]), tf.float32)
            ops = cpu_ops.Ops(ordered_grads=override)
            with ops.conv_gradients():
                y = tf.nn.conv2d(x, w, 1, "VALID")
            dx, dw = tf.gradients(tf.reduce_sum(y * y), [x, w])
            with v1.Session() as sess:
                return sess.run([dx, dw]), dx.op, dw.op

    (ref_dx, ref_dw), _, _ = conv_grads(False)
    (dx, dw), dx_op, dw_op = conv_grads(True)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-6)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-6)
    assert (dx_op.type, dw_op.type) == ("Conv2DBackpropInput", "Conv2DBackpropFilter")
    assert dw_op in dx_op.control_inputs  # the input gradient waits for the weight gradient
    assert cpu_ops.ordered_conv_grad() == cpu_ops.ordered_conv_grad()  # registers once


def test_model_convs_use_the_ordered_gradient():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 44, 44, 3])
        with cpu_ops.building(cpu_ops.Ops(ordered_grads=True)):
            loss = tf.reduce_sum(unet.unet(x, True, depth=1, base_filters=2))
        grads = tf.gradients(loss, v1.trainable_variables())
        assert all(grad is not None for grad in grads)
        # The plain up-conv's forward op is a Conv2DBackpropInput too: gradients only.
        inputs_grads = [op for op in g.get_operations() if op.type == "Conv2DBackpropInput"
                        and op.name.startswith("gradients/")
                        and "/output/" not in op.name]  # the tiny 1x1 conv keeps TF's own
    # 6 3x3 convs; contract1/conv1's input gradient (w.r.t. the images) is built
    # but never run; each waits for its weight gradient.
    assert len(inputs_grads) == 6
    assert all(op.control_inputs[0].type == "Conv2DBackpropFilter" for op in inputs_grads)


def test_unet_with_tricks_equals_plain_unet_in_logits_and_gradients():
    def run(ops):
        g = tf.Graph()
        with g.as_default():
            tf.random.set_seed(3)
            x = tf.constant(np.random.default_rng(0).uniform(size=[2, 92, 108, 3]), tf.float32)
            with cpu_ops.building(ops):
                logits = unet.unet(x, True, depth=2, base_filters=4)
            variables = v1.trainable_variables()
            grads = tf.gradients(tf.reduce_sum(tf.sin(logits)), variables)
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())
                return sess.run([logits] + grads)

    plain, tricks = run(cpu_ops.PLAIN), run(cpu_ops.TRICKS)
    assert plain[0].shape == (2, 52, 68, 1)
    for a, b in zip(tricks, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
