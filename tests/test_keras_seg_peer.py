"""benchmarks/keras_seg_peer.py: the keras.io example's network, its inputs and its scoring."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import keras_seg_peer
from datasets import records


def test_the_network_is_the_examples():
    # keras.io's model.summary(): 2,058,979 parameters, 2,055,203 trainable, for 3 classes.
    model = keras_seg_peer.build_model(160, num_classes=3)
    assert model.count_params() == 2_058_979
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2_055_203
    assert tuple(model.output.shape) == (None, 160, 160, 3)
    tiny = keras_seg_peer.build_model(32, 2, (4, 8, 16, 32))
    assert tuple(tiny.output.shape) == (None, 32, 32, 2)
    # keras-scaled: the same network, BatchNorm momentum for short runs
    scaled = keras_seg_peer.build_model(32, 2, (4, 8, 16, 32), bn_momentum=0.9)
    momenta = {layer.momentum for layer in scaled.layers if "batch_normalization" in layer.name}
    assert momenta == {0.9}
    with pytest.raises(ValueError, match="not divisible by 16"):
        keras_seg_peer.build_model(40, 2, (4, 8, 16, 32))


def test_inputs_keep_pixel_values_and_turn_ignore_into_weight_zero():
    image = np.full([4, 6, 3], 200, np.uint8)
    mask = np.zeros([4, 6, 1], np.uint8)
    mask[:, :3] = records.FOREGROUND
    mask[:, 5] = records.IGNORE
    x, label, weight = keras_seg_peer.to_inputs(tf.constant(image), tf.constant(mask), 8)
    assert x.shape == (8, 8, 3) and np.allclose(x.numpy(), 200.0)  # 0..255, as the example
    assert label.dtype == tf.int32 and set(np.unique(label.numpy())) == {0, 1}
    assert weight.numpy()[:, -1].tolist() == [0.0] * 8  # the ignored column, resized nearest
    assert weight.numpy()[:, 0].tolist() == [1.0] * 8
    assert np.all(label.numpy()[weight.numpy() == 0] == 0)


def _write_records(path, masks):
    with tf.io.TFRecordWriter(path) as writer:
        for i, mask in enumerate(masks):
            h, w = mask.shape
            image = cv2.imencode(".png", np.zeros([h, w, 3], np.uint8))[1].tobytes()
            png = cv2.imencode(".png", mask)[1].tobytes()
            writer.write(records.make_example(image, "png", h, w, i, f"{i}.png", png))


class _LeftHalfIsCat:
    """A stand-in model: cat probability 1 on the left half of its input, 0 on the right."""

    def __call__(self, x, training=False):
        n, s = x.shape[0], x.shape[1]
        cat = np.zeros([n, s, s, 1], np.float32)
        cat[:, :, : s // 2] = 1.0
        return tf.constant(np.concatenate([1.0 - cat, cat], axis=-1))


def test_score_resizes_back_to_full_images_and_counts_like_evaluate(tmp_path):
    truth = np.zeros([20, 40], np.uint8)
    truth[:, :10] = records.FOREGROUND  # the left quarter is cat
    truth[0, :] = records.IGNORE  # the first row counts nowhere
    dog = np.zeros([30, 20], np.uint8)  # a negative: no cat anywhere
    path = str(tmp_path / "r-00000-of-00001.tfrecord")
    _write_records(path, [truth, dog])
    result = keras_seg_peer.score(_LeftHalfIsCat(), path, 16)
    # Predicted cat: the left half of each full image; counted on the 19 valid rows of the
    # first image and all 30 of the second.
    tp, fp, fn = 19 * 10, 19 * 10 + 30 * 10, 0
    assert result["images"] == 2
    assert result["counts"] == [tp, fp, fn, 19 * 40 + 30 * 20 - tp - fp - fn]
    assert result["model"]["foreground_iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["all_background"]["foreground_iou"] == 0.0
    valid = 19 * 40 + 30 * 20
    assert result["all_background"]["pixel_accuracy"] == pytest.approx((valid - tp) / valid)
