import os

import numpy as np
import pytest
import tensorflow as tf

import unet
from benchmarks import flops

v1 = tf.compat.v1


def input_size_for_output(out_size, depth=4):
    """The input tile that yields exactly `out_size` outputs (388 -> 572)."""
    size = unet.valid_input_size(out_size, depth)
    while unet.output_size(size, depth) < out_size:
        size = unet.valid_input_size(size + 1, depth)
    assert unet.output_size(size, depth) == out_size
    return size


@pytest.mark.parametrize("size,depth,out", [(572, 4, 388), (188, 4, 4), (92, 2, 52),
                                            (44, 1, 28), (252, 3, 164)])
def test_output_size(size, depth, out):
    assert unet.output_size(size, depth) == out
    assert input_size_for_output(out, depth) == size


def test_valid_sizes_are_16_apart_for_depth_4():
    valid = [s for s in range(1, 700) if unet.is_valid_input_size(s, 4)]
    assert valid[0] == 188 and 572 in valid
    assert set(np.diff(valid)) == {16}


@pytest.mark.parametrize("size, depth, words", [
    (571, 4, "the nearest valid sizes are 556 (below) and 572 (above)"),
    (573, 4, "the nearest valid sizes are 572 (below) and 588 (above)"),
    (190, 4, "the nearest valid sizes are 188 (below) and 204 (above)"),
    (100, 4, "the smallest valid size is 188"),  # nothing valid below: not "188 and 188"
    (0, 4, "the smallest valid size is 188"),
    (76, 3, "the smallest valid size is 92"),
])
def test_invalid_size_rejected_with_neighbours(size, depth, words):
    with pytest.raises(ValueError) as raised:
        unet.output_size(size, depth)
    assert str(raised.value).endswith(words)
    assert unet.valid_input_size(573) == 588 and unet.valid_input_size(573, 4, "down") == 572


def test_parameter_count_matches_paper():
    # The paper's network (1 input channel, 2 classes, no batch norm).
    assert flops.parameter_count(in_channels=1, num_outputs=2, batch_norm=False) == 31_030_658
    g = tf.Graph()
    with g.as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 572, 572, 3]), training=True)
        n = sum(int(np.prod(v.shape)) for v in v1.trainable_variables())
    assert n == flops.parameter_count() == 31_043_521


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


@pytest.mark.parametrize("size, depth, out", [(188, 3, 76), (212, 3, 100), (244, 4, 4),
                                             (64, 1, 48), (92, 2, 44)])
def test_vgg16_geometry_pays_for_its_third_convs(size, depth, out):
    assert unet.output_size(size, depth, "vgg16") == out
    with tf.Graph().as_default():
        logits = unet.unet(v1.placeholder(tf.float32, [1, size, size, 3]), False, depth=depth,
                           base_filters=2, encoder="vgg16")
        assert logits.shape.as_list() == [1, out, out, 1]


def test_vgg16_is_at_most_depth_4_and_other_encoders_are_refused():
    assert [s for s in range(1, 400) if unet.is_valid_input_size(s, 4, "vgg16")][:2] == [244,
                                                                                        260]
    for depth, encoder in ((5, "vgg16"), (2, "resnet"), (6, unet.EFFICIENTNET)):
        with pytest.raises(ValueError):
            unet.output_size(572, depth, encoder)


def test_vgg16_encoder_is_vggs_convs_without_batch_norm_and_can_be_frozen():
    for freeze in (False, True):
        with tf.Graph().as_default():
            unet.unet(v1.placeholder(tf.float32, [1, 212, 212, 3]), True, depth=3,
                      base_filters=2, encoder="vgg16", freeze_encoder=freeze)
            encoder = {v.op.name: v.shape.as_list() for v in v1.global_variables()
                       if v.op.name.startswith(("unet/contract", "unet/bottom"))}
            trainable = {v.op.name for v in v1.trainable_variables()}
        assert encoder["unet/contract3/conv3/weights"] == [3, 3, 256, 256]
        assert encoder["unet/bottom/conv1/weights"] == [3, 3, 256, 512]
        assert len(encoder) == 2 * 10 and not any("gamma" in n for n in encoder)  # no BN
        assert (set(encoder) & trainable) == (set() if freeze else set(encoder))
        assert "unet/expand1/conv1/gamma" in trainable  # the expanding path keeps its BN


def test_vgg16_sees_keras_caffe_preprocessing():
    """Keras' VGG16 weights expect BGR in [0, 255] minus the ImageNet mean."""
    with tf.Graph().as_default(), v1.Session() as sess:
        pixel = sess.run(unet._vgg16_input(tf.constant([[[[1.0, 0.5, 0.0]]]])))
    np.testing.assert_allclose(pixel[0, 0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68],
                               rtol=1e-6)


EFF = unet.EFFICIENTNET


def test_efficientnet_geometry_is_same_padded_less_its_margin():
    # Multiples of 2**depth; the output loses the 16 px margin on each side.
    assert [s for s in range(1, 200) if unet.is_valid_input_size(s, 5, EFF)] == [64, 96, 128,
                                                                                   160, 192]
    assert unet.output_size(160, 5, EFF) == 128 and unet.output_size(48, 3, EFF) == 16
    assert unet.nearest_valid_sizes(150, 5, EFF) == ("the nearest valid sizes are 128 (below) "
                                                     "and 160 (above)")
    with pytest.raises(ValueError, match="EfficientNet-Lite0 has 6 levels, so depth 6"):
        unet.output_size(192, 6, EFF)
    for size, depth in ((160, 5), (96, 2)):
        with tf.Graph().as_default():
            logits = unet.unet(v1.placeholder(tf.float32, [2, size, size + 32, 3]), False,
                               depth=depth, base_filters=2, encoder=EFF)
            out = unet.output_size(size, depth, EFF)
            assert logits.shape.as_list() == [2, out, out + 32, 1]


def test_efficientnet_levels_sit_between_the_papers_contract1_and_expanding_path():
    for freeze in (False, True):
        with tf.Graph().as_default():
            unet.unet(v1.placeholder(tf.float32, [1, 96, 96, 3]), True, depth=3,
                      base_filters=4, encoder=EFF, freeze_encoder=freeze)
            shapes = {v.op.name: v.shape.as_list() for v in v1.global_variables()}
            trainable = {v.op.name for v in v1.trainable_variables()}
        assert shapes["unet/contract1/conv1/weights"] == [3, 3, 3, 4]  # the paper's, at 1/1
        assert shapes["unet/contract2/stem/weights"] == [3, 3, 3, 32]
        assert shapes["unet/contract3/block2/depthwise/weights"] == [3, 3, 144, 1]
        assert shapes["unet/bottom/block4/project/weights"] == [1, 1, 240, 40]
        # expand3 joins the bottom (40 ch at 1/8) with contract3's 24 ch at 1/4.
        assert shapes["unet/expand3/conv1/weights"] == [3, 3, 24 + 16, 16]
        encoder = {n for n in shapes if n.startswith(("unet/contract2", "unet/contract3",
                                                      "unet/bottom"))}
        assert not any(n.startswith("unet/bottom/block5") for n in shapes)  # depth 3: 1/8
        learned = {n for n in encoder if "moving" not in n}
        assert (learned & trainable) == (set() if freeze else learned)
        assert "unet/contract1/conv1/weights" in trainable  # random: it always learns


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


def test_dropout_ends_the_contracting_path_in_training_only():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 92, 92, 3])
        train_logits = unet.unet(x, True, depth=2, base_filters=4, dropout=0.5)
        n_train_ops = len(g.get_operations())
        eval_logits = unet.unet(x, False, depth=2, base_filters=4, dropout=0.5)
        dropped = {op.name.split("/")[1] for op in g.get_operations() if "/dropout/" in op.name}
        eval_ops = g.get_operations()[n_train_ops:]
        batch = np.random.default_rng(0).uniform(0, 1, [1, 92, 92, 3]).astype(np.float32)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            train_a, train_b = (sess.run(train_logits, {x: batch}) for _ in range(2))
            eval_a, eval_b = (sess.run(eval_logits, {x: batch}) for _ in range(2))
    # The paper's places: the deepest contracting level and the bottom, as in its Caffe model.
    assert dropped == {"contract2", "bottom"}
    assert not any("dropout" in op.name for op in eval_ops)
    assert not np.allclose(train_a, train_b)  # a new mask each step
    np.testing.assert_array_equal(eval_a, eval_b)


def test_no_dropout_ops_at_rate_zero():
    g = tf.Graph()
    with g.as_default():
        unet.unet(v1.placeholder(tf.float32, [1, 92, 92, 3]), True, depth=2, base_filters=4)
        assert not any("dropout" in op.name for op in g.get_operations())


FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "run_9695514")


def _variables(num_outputs):
    """{name: shape} of the "unet" variables of the fixture's network (depth 2, 2 filters)."""
    with tf.Graph().as_default():
        unet.unet(v1.placeholder(tf.float32, [None, 44, 44, 3]), True, depth=2, base_filters=2,
                  num_outputs=num_outputs)
        return {v.op.name: v.shape.as_list() for v in v1.global_variables("unet")}


def test_one_class_builds_the_variables_of_an_old_run_checkpoint():
    stored = {name: shape for name, shape in
              tf.train.list_variables(os.path.join(FIXTURE, "model.ckpt-4"))
              if name.startswith("unet/") and not name.endswith(("/Adam", "/Adam_1"))}
    assert len(stored) == 10 * 6 + 2 * 2 + 2  # 10 convs, 2 up-convs, the output layer
    assert _variables(1) == stored


def test_k_classes_get_k_plus_1_logits_and_change_only_the_output_layer():
    one, three = _variables(1), _variables(3)
    assert three.pop("unet/output/weights") == [1, 1, 2, 3]
    assert three.pop("unet/output/biases") == [3]
    assert one.pop("unet/output/weights") == [1, 1, 2, 1] and one.pop("unet/output/biases") == [1]
    assert three == one
    with tf.Graph().as_default():
        logits = unet.unet(v1.placeholder(tf.float32, [2, 44, 44, 3]), False, depth=2,
                           base_filters=2, num_outputs=3)
        assert logits.shape.as_list() == [2, 4, 4, 3]
