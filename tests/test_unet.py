import numpy as np
import pytest
import tensorflow as tf

import unet

v1 = tf.compat.v1


@pytest.mark.parametrize("size,depth,out", [(572, 4, 388), (188, 4, 4), (92, 2, 52),
                                            (44, 1, 28), (252, 3, 164)])
def test_output_size(size, depth, out):
    assert unet.output_size(size, depth) == out
    assert unet.input_size_for_output(out, depth) == size
    assert unet.border(size, depth) == (size - out) // 2


def test_valid_sizes_are_16_apart_for_depth_4():
    valid = [s for s in range(1, 700) if unet.is_valid_input_size(s, 4)]
    assert valid[0] == 188 and 572 in valid
    assert set(np.diff(valid)) == {16}


@pytest.mark.parametrize("size", [571, 573, 100, 140, 172, 0])
def test_invalid_size_rejected_with_neighbours(size):
    with pytest.raises(ValueError, match="nearest valid sizes"):
        unet.output_size(size, 4)
    assert unet.valid_input_size(573) == 588 and unet.valid_input_size(573, 4, "down") == 572


def test_parameter_count_matches_paper():
    # The paper's network (1 input channel, 2 classes, no batch norm).
    assert unet.parameter_count(in_channels=1, num_outputs=2, batch_norm=False) == 31_030_658
    g = tf.Graph()
    with g.as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 572, 572, 3]), training=True)
        n = sum(int(np.prod(v.shape)) for v in v1.trainable_variables())
    assert n == unet.parameter_count() == 31_043_521


@pytest.mark.parametrize("size,depth", [(572, 4), (188, 3), (108, 2)])
def test_shapes(size, depth):
    g = tf.Graph()
    with g.as_default():
        logits = unet.unet(v1.placeholder(tf.float32, [2, size, size, 3]), True,
                           depth=depth, base_filters=4, num_outputs=3)
        out = unet.output_size(size, depth)
        assert logits.shape.as_list() == [2, out, out, 3]


def test_dynamic_shape_and_non_square():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, None, None, 3])
        logits = unet.unet(x, False, depth=2, base_filters=4)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            out = sess.run(logits, {x: np.zeros([1, 92, 108, 3], np.float32)})
    assert out.shape == (1, 52, 68, 1)


def test_block_names_follow_paper():
    g = tf.Graph()
    with g.as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 188, 188, 3]), True, depth=4, base_filters=2)
        scopes = {v.name.split("/")[1] for v in v1.global_variables()}
    assert scopes == {"contract1", "contract2", "contract3", "contract4", "bottom",
                      "expand4", "expand3", "expand2", "expand1", "output"}


def test_batch_norm_train_updates_and_inference_uses_moving_stats():
    g = tf.Graph()
    with g.as_default():
        tf.random.set_seed(0)
        x = v1.placeholder(tf.float32, [2, 44, 44, 3])
        train_logits = unet.unet(x, True, depth=1, base_filters=4)
        eval_logits = unet.unet(x, False, depth=1, base_filters=4)
        updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2 * 6  # mean and variance for 6 convs
        # Train and eval graphs share every variable.
        assert len(v1.global_variables()) == len({v.name for v in v1.global_variables()})
        mean = v1.get_collection(v1.GraphKeys.GLOBAL_VARIABLES,
                                 "unet/contract1/conv1/moving_mean")[0]
        rng = np.random.default_rng(0)
        batch = rng.uniform(2.0, 3.0, [2, 44, 44, 3]).astype(np.float32)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            before_eval = sess.run(eval_logits, {x: batch})
            np.testing.assert_array_equal(sess.run(mean), 0.0)
            for _ in range(200):  # 0.9**200: the initial moving variance is forgotten
                sess.run(updates, {x: batch})
            moved = sess.run(mean)
            after_eval = sess.run(eval_logits, {x: batch})
            after_train = sess.run(train_logits, {x: batch})
    assert np.abs(moved).max() > 0.1  # ReLU channels that are dead stay at 0
    # With the moving stats converged to the batch stats, inference matches training.
    assert not np.allclose(before_eval, after_eval)
    np.testing.assert_allclose(after_eval, after_train, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("static", [True, False])
def test_up_conv_equals_conv2d_transpose_in_values_and_gradients(static):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 7, 6] if static else [None, None, None, 6])
        y = unet._up_conv(x, 4)
        w, b = v1.global_variables()  # up_weights [2, 2, 4, 6], up_biases [4]
        assert y.shape.as_list() == ([2, 10, 14, 4] if static else [None, None, None, 4])
        reference = tf.nn.conv2d_transpose(x, w, tf.stack([2, 10, 14, 4]), 2, "VALID") + b
        dy = tf.constant(np.random.default_rng(1).normal(size=[2, 10, 14, 4]), tf.float32)
        grads = tf.gradients(y, [x, w, b], dy)
        ref_grads = tf.gradients(reference, [x, w, b], dy)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(b.assign([0.1, -0.2, 0.3, 0.0]))
            feed = {x: np.random.default_rng(0).normal(size=[2, 5, 7, 6])}
            ours, ref, ours_g, ref_g = sess.run([y, reference, grads, ref_grads], feed)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(ours_g, ref_g):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_conv_gradient_is_tensorflows_with_weights_first():
    def conv_grads(override):
        g = tf.Graph()
        with g.as_default():
            x = tf.constant(np.random.default_rng(0).normal(size=[2, 9, 9, 3]), tf.float32)
            w = tf.constant(np.random.default_rng(1).normal(size=[3, 3, 3, 5]), tf.float32)
            if override:
                with g.gradient_override_map({"Conv2D": unet._serial_conv_grad()}):
                    y = tf.nn.conv2d(x, w, 1, "VALID")
            else:
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
    assert unet._serial_conv_grad() == unet._serial_conv_grad()  # registers once


def test_model_convs_use_the_ordered_gradient():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 44, 44, 3])
        loss = tf.reduce_sum(unet.unet(x, True, depth=1, base_filters=2))
        grads = tf.gradients(loss, v1.trainable_variables())
        assert all(grad is not None for grad in grads)
        inputs_grads = [op for op in g.get_operations() if op.type == "Conv2DBackpropInput"
                        and "/output/" not in op.name]  # the tiny 1x1 conv keeps TF's own
    # 6 3x3 convs; contract1/conv1's input gradient (w.r.t. the images) is built
    # but never run; each waits for its weight gradient.
    assert len(inputs_grads) == 6
    assert all(op.control_inputs[0].type == "Conv2DBackpropFilter" for op in inputs_grads)
