"""The original U-Net (Ronneberger, Fischer and Brox, 2015) as a graph builder.

Read alongside Figure 1 of the paper. With the defaults (depth 4, 64 base
filters) a 572x572 input tile gives a 388x388 output map:

    contract1  572 -> 568   64 ch   two valid 3x3 conv + ReLU (+ batch norm)
    contract2  284 -> 280  128 ch   2x2 max pool, then two convs
    contract3  140 -> 136  256 ch
    contract4   68 ->  64  512 ch
    bottom      32 ->  28 1024 ch   the bottom of the "U"
    expand4     56 ->  52  512 ch   2x2 up-conv halving channels, copy and crop
    expand3    104 -> 100  256 ch   the matching contract feature map, concat,
    expand2    200 -> 196  128 ch   two valid 3x3 convs
    expand1    392 -> 388   64 ch
    output     388         1x1 conv to `num_outputs` logits

Batch norm is not in the paper (it came later the same year); it follows each
ReLU here because it makes training from scratch far less sensitive to the
learning rate. Everything else matches: valid convolutions, so every output
pixel sees a full 184x184 context and tiles stitch seamlessly. The paper's
drop-out at the end of the contracting path is the `dropout` argument, off by
default because it cost IoU in every run measured (docs/train.md).

`encoder="vgg16"` swaps the contracting path for VGG16's convolutions (TernausNet,
Iglovikov and Shvets 2018): blocks of 2, 2, 3, 3, 3 valid convs without batch norm,
so Keras' pretrained weights fit them (core/pretrained.py assigns them); the
expanding path stays the paper's. Its third convs cost border, so its valid sizes
differ (encoder_convs, output_size).

`encoder="efficientnet-lite0"` takes an ImageNet classifier's stages as contract2 ..
bottom (core/efficientnet.py; pretrained weights from core/pretrained.py). They are
SAME-padded, as those weights were trained, so this network pads every conv, keeps the
paper's two convs at full resolution as contract1 and the paper's expanding path, and
crops EFFICIENTNET_MARGIN px off each side of its output instead: every output pixel
still has that much real context, and windows and tiles overlap by twice that. Valid
input sizes are multiples of 2**depth (> 2 * margin); output = input - 2 * margin.

This module is a pure graph builder: images in, logits out. No flags, no I/O,
no summaries. Variables live
under the variable scope "unet" and are created with AUTO_REUSE, so a training
graph and an evaluation graph built in the same tf.Graph share weights.
"""

import tensorflow as tf

from core import efficientnet

v1 = tf.compat.v1

EFFICIENTNET = "efficientnet-lite0"
# The contracting path: the paper's, VGG16's convolutions, or EfficientNet-Lite0's stages.
ENCODERS = ("unet", "vgg16", EFFICIENTNET)
PRETRAINED = ENCODERS[1:]  # the encoders --encoder-weights initialises
EFFICIENTNET_MAX_DEPTH = efficientnet.MAX_LEVEL - 1  # its 1/32 stage is the bottom
# Output pixels closer than this to a SAME-padded window's edge see zeros past it; 16 px
# is half the deepest stage's stride, so the tiling grid (2**5) still divides the output.
EFFICIENTNET_MARGIN = 16
VGG16_CONVS = (2, 2, 3, 3, 3)  # 3x3 convs of VGG16's five blocks (64, 128, 256, 512, 512 ch)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_MAX_DEPTH = len(VGG16_CONVS) - 1  # its fifth block is the bottom
# Keras' VGG16 ("caffe" preprocessing): BGR in [0, 255] minus the ImageNet mean.
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)
BN_MOMENTUM = 0.9  # short runs on small data: moving stats must settle in ~50 steps
BN_EPSILON = 1e-3


# ---------------------------------------------------------------- geometry


def depth_limit(encoder):
    """(the deepest network an encoder makes, why) or (None, "") for the paper's: no limit."""
    return {"vgg16": (VGG16_MAX_DEPTH, f"VGG16 has {len(VGG16_CONVS)} blocks"),
            EFFICIENTNET: (EFFICIENTNET_MAX_DEPTH, f"EfficientNet-Lite0 has "
                           f"{EFFICIENTNET_MAX_DEPTH + 1} levels")}.get(encoder, (None, ""))


def encoder_convs(encoder, depth):
    """3x3 convs of each contracting level and the bottom (depth + 1 numbers).

    The paper's U-Net has two everywhere; VGG16's blocks have 2, 2, 3, 3, 3, so a
    VGG16 contracting path reaches depth 4 at most (its fifth block is the bottom).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    deepest, why = depth_limit(encoder)
    if deepest is not None and depth > deepest:
        raise ValueError(f"{why}, so depth {depth} is too deep; use depth <= {deepest}")
    if encoder == "unet":
        return (2,) * (depth + 1)
    if encoder == EFFICIENTNET:  # SAME-padded: its convs cost no border
        return (0,) * (depth + 1)
    return VGG16_CONVS[:depth + 1]


def _sizes(input_size, depth, encoder="unet"):
    """Spatial size after every stage, or None when some stage is invalid.

    A valid 3x3 conv loses 2 px, so the paper's pair of them loses 4 at each
    level; the size must be even before each 2x2 pool; the up path then
    doubles and loses 4 again.
    """
    convs = encoder_convs(encoder, depth)
    if encoder == EFFICIENTNET:
        out = input_size - 2 * EFFICIENTNET_MARGIN
        return out if input_size % 2**depth == 0 and out > 0 else None
    size = input_size
    for level in range(depth):
        size -= 2 * convs[level]
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 2 * convs[depth]
    if size <= 0:
        return None
    for _ in range(depth):
        size = size * 2 - 4
        if size <= 0:
            return None
    return size


def is_valid_input_size(input_size, depth=4, encoder="unet"):
    """True when every pooling stage sees an even size and nothing vanishes.

    For depth d the valid sizes are input = 2**d * k + 4 * (2**d - 1), with k
    large enough that the output is at least one pixel: for depth 4 that is
    188, 204, 220, ..., 556, 572, 588, ... (16 apart).
    """
    return _sizes(input_size, depth, encoder) is not None


def output_size(input_size, depth=4, encoder="unet"):
    """Output map size for a square input tile (572 -> 388 at depth 4)."""
    size = _sizes(input_size, depth, encoder)
    if size is None:
        raise ValueError(f"input size {input_size} is not valid for a depth-{depth} "
                         f"{describe(encoder)}; " + nearest_valid_sizes(input_size, depth, encoder))
    return size


def describe(encoder):
    """The network's name in messages: 'U-Net', or 'U-Net with a vgg16 encoder'."""
    article = "an" if encoder[0] in "aeiou" else "a"
    return "U-Net" if encoder == "unet" else f"U-Net with {article} {encoder} encoder"


def nearest_valid_sizes(size, depth=4, encoder="unet"):
    """Words naming the nearest valid input size below and above size (or the only one)."""
    above = valid_input_size(size, depth, "up", encoder)
    below = valid_input_size(size, depth, "down", encoder)
    if below > size:  # nothing valid below: the smallest valid size is above
        return f"the smallest valid size is {above}"
    return f"the nearest valid sizes are {below} (below) and {above} (above)"


def valid_input_size(size, depth=4, direction="up", encoder="unet"):
    """The nearest valid input size >= size ("up") or <= size ("down")."""
    step = 1 if direction == "up" else -1
    candidate = max(size, 1)
    while not is_valid_input_size(candidate, depth, encoder):
        candidate += step
        if candidate <= 0:
            return valid_input_size(1, depth, "up", encoder)
    return candidate


# ----------------------------------------------------------------- layers


def _conv3x3_relu_bn(x, filters, training, name, padding="VALID"):
    with v1.variable_scope(name):
        fan_in = 9 * x.shape[-1]
        # The paper's init: Gaussian with std sqrt(2 / N), N = inputs per unit.
        w = v1.get_variable(
            "weights", [3, 3, x.shape[-1], filters],
            initializer=v1.initializers.random_normal(stddev=(2.0 / fan_in) ** 0.5))
        b = v1.get_variable("biases", [filters], initializer=v1.zeros_initializer())
        y = tf.nn.conv2d(x, w, strides=1, padding=padding)
        return _batch_norm(tf.nn.relu(tf.nn.bias_add(y, b)), training)


def _batch_norm(x, training):
    channels = x.shape[-1]
    gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
    beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
    moving = [v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.MOVING_AVERAGE_VARIABLES]
    mean = v1.get_variable("moving_mean", [channels], trainable=False,
                           initializer=v1.zeros_initializer(), collections=moving)
    var = v1.get_variable("moving_variance", [channels], trainable=False,
                          initializer=v1.ones_initializer(), collections=moving)
    if not training:
        y, _, _ = v1.nn.fused_batch_norm(x, gamma, beta, mean, var, epsilon=BN_EPSILON,
                                         is_training=False)
        return y
    y, batch_mean, batch_var = v1.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON,
                                                      is_training=True)
    # The train op runs UPDATE_OPS (see train.py), as with tf.layers.
    decay = 1.0 - BN_MOMENTUM
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS,
                         v1.assign_sub(mean, (mean - batch_mean) * decay))
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS,
                         v1.assign_sub(var, (var - batch_var) * decay))
    return y


def _double_conv(x, filters, training, padding="VALID"):
    x = _conv3x3_relu_bn(x, filters, training, "conv1", padding)
    return _conv3x3_relu_bn(x, filters, training, "conv2", padding)


def _dropout(x, rate, training):
    # The paper's "implicit data augmentation" (section 3.1); its Caffe model drops
    # half of conv4 and conv5, the two maps before the expanding path.
    return tf.nn.dropout(x, rate=rate) if training and rate else x


def _up_conv(x, filters):
    """2x2 stride-2 up-conv: doubles H and W, halves the channels."""
    cin = x.shape[-1]
    w = v1.get_variable(
        "up_weights", [2, 2, filters, cin],
        initializer=v1.initializers.random_normal(stddev=(2.0 / (4 * cin)) ** 0.5))
    b = v1.get_variable("up_biases", [filters], initializer=v1.zeros_initializer())
    return tf.nn.bias_add(_transposed_conv(x, w), b)


def _transposed_conv(x, w):
    """x [N, h, w, C], w [2, 2, F, C] -> [N, 2h, 2w, F], static shape kept where known."""
    s = tf.shape(x)
    y = tf.nn.conv2d_transpose(x, w, tf.stack([s[0], 2 * s[1], 2 * s[2], w.shape[2]]),
                               strides=2, padding="VALID")
    y.set_shape([x.shape[0]] + [None if d is None else 2 * d for d in x.shape[1:3]]
                + [w.shape[2]])
    return y


def _crop(skip, target):
    """Centre-crop skip [N, h, w, C] to the spatial size of target: the border it lost."""
    s, t = tf.shape(skip), tf.shape(target)
    dh, dw = (s[1] - t[1]) // 2, (s[2] - t[2]) // 2
    return skip[:, dh:dh + t[1], dw:dw + t[2], :]


# ------------------------------------------------------------------ model


def _vgg_conv_relu(x, filters, trainable, name):
    """VGG16's conv: valid 3x3 + ReLU, no batch norm (its pretrained weights have none)."""
    with v1.variable_scope(name):
        fan_in = 9 * x.shape[-1]
        # Random like the paper's convs until pretrained weights are assigned (train.py).
        w = v1.get_variable(
            "weights", [3, 3, x.shape[-1], filters], trainable=trainable,
            initializer=v1.initializers.random_normal(stddev=(2.0 / fan_in) ** 0.5))
        b = v1.get_variable("biases", [filters], initializer=v1.zeros_initializer(),
                            trainable=trainable)
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, strides=1, padding="VALID"), b))


def _vgg16_input(images):
    """[0, 1] RGB -> what Keras' VGG16 weights were trained on: BGR in [0, 255] minus the mean."""
    return images[..., ::-1] * 255.0 - tf.constant(VGG16_BGR_MEAN, images.dtype)


def _contract(x, level, base_filters, encoder, freeze_encoder, training):
    """One contracting level (level depth + 1 is the bottom), before its dropout."""
    if encoder == EFFICIENTNET:  # level >= 2: its stages stride themselves
        return efficientnet.level(x, level, not freeze_encoder)
    if level > 1:
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
    if encoder == "unet":
        return _double_conv(x, base_filters * 2 ** (level - 1), training)
    for conv in range(1, VGG16_CONVS[level - 1] + 1):
        x = _vgg_conv_relu(x, VGG16_CHANNELS[level - 1], not freeze_encoder, f"conv{conv}")
    return x


def unet(images, training, depth=4, base_filters=64, num_outputs=1, dropout=0.0,
         encoder="unet", freeze_encoder=False):
    """Build the U-Net.

    Args:
      images: float32 [N, H, W, C], H and W valid input sizes (see
        is_valid_input_size), values roughly in [0, 1].
      training: Python bool. True uses batch statistics and adds the moving
        average updates to UPDATE_OPS; False uses the moving averages.
      depth: number of 2x2 max pools (4 in the paper).
      base_filters: channels of the first level (64 in the paper), doubled per level; with
        the vgg16 encoder, of the expanding path only.
      num_outputs: logit channels; 1 for a binary mask (apply a sigmoid), K + 1 for K >= 2
        classes (background first; apply a softmax). Only the output layer depends on it.
      dropout: the paper's drop-out rate at the end of the contracting path (the
        deepest contracting level and the bottom), in training only; 0 = none.
      encoder: "unet", the paper's contracting path, or "vgg16": VGG16's convolutions
        (TernausNet, Iglovikov and Shvets 2018), blocks 1..depth as contract1..depth and
        block depth + 1 as the bottom, valid 3x3 convs + ReLU without batch norm, so
        Keras' pretrained weights fit (core/pretrained.py assigns them); RGB images.
        "efficientnet-lite0": EfficientNet-Lite0's stages as contract2..depth and the
        bottom (depth <= 5), SAME-padded, after the paper's contract1; the output is cropped
        by EFFICIENTNET_MARGIN px on each side.
      freeze_encoder: a pretrained encoder's variables are not trainable (the pretrained
        features as they are; the expanding path and efficientnet's contract1 learn).

    Returns:
      logits: float32 [N, output_size(H), output_size(W), num_outputs].
    """
    encoder_convs(encoder, depth)  # ValueError for an unknown encoder or a too-deep vgg16
    with v1.variable_scope("unet", reuse=v1.AUTO_REUSE):
        padding = "SAME" if encoder == EFFICIENTNET else "VALID"
        x, skips = (_vgg16_input(images) if encoder == "vgg16" else images), []
        for level in range(1, depth + 1):
            with v1.variable_scope(f"contract{level}"):
                if encoder == EFFICIENTNET and level == 1:
                    # The paper's convs keep full-resolution detail (random, always
                    # trained); the stages start from the image, scaled as on ImageNet.
                    skips.append(_double_conv(images, base_filters, training, padding))
                    x = efficientnet.preprocess(images)
                    continue
                x = _contract(x, level, base_filters, encoder, freeze_encoder, training)
                if level == depth:
                    x = _dropout(x, dropout, training)
                skips.append(x)
        with v1.variable_scope("bottom"):
            x = _contract(x, depth + 1, base_filters, encoder, freeze_encoder, training)
            x = _dropout(x, dropout, training)
        for level in range(depth, 0, -1):
            with v1.variable_scope(f"expand{level}"):
                filters = base_filters * 2 ** (level - 1)
                x = _up_conv(x, filters)
                # Copy and crop: the contracting map loses its border to valid convs.
                x = tf.concat([_crop(skips[level - 1], x), x], axis=-1)
                x = _double_conv(x, filters, training, padding)
        if encoder == EFFICIENTNET:  # the pixels that saw too much padding
            m = EFFICIENTNET_MARGIN
            x = x[:, m:-m, m:-m, :]
        with v1.variable_scope("output"):
            w = v1.get_variable(
                "weights", [1, 1, x.shape[-1], num_outputs],
                initializer=v1.initializers.random_normal(stddev=(2.0 / x.shape[-1]) ** 0.5))
            b = v1.get_variable("biases", [num_outputs], initializer=v1.zeros_initializer())
            return tf.nn.conv2d(x, w, strides=1, padding="VALID") + b
