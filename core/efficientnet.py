"""EfficientNet-Lite0's convolutions as a U-Net contracting path (unet.py's
`encoder="efficientnet-lite0"`), built from tf.nn ops like the rest of the network.

EfficientNet-Lite0 (Tan and Le 2019; the Lite variants of TensorFlow's EfficientNet
repository: no squeeze-and-excitation, ReLU6, the B0 stem and stages) is an ImageNet
classifier of 4.7M parameters, 0.4 GFLOPs at 224 px: cheap enough for a CPU, and it
has seen cats. Its stages fall into the U-Net's levels by resolution:

    level 1   1/1     (none: unet.py puts the paper's two convs here)
    level 2   1/2     stem (3x3 stride-2 conv, 32 ch) and block 0          16 ch
    level 3   1/4     blocks 1-2                                            24 ch
    level 4   1/8     blocks 3-4                                            40 ch
    level 5   1/16    blocks 5-10                                          112 ch
    level 6   1/32    blocks 11-15                                         320 ch

A network of depth d uses levels 2..d as contract2..d and level d + 1 as the bottom.
Convolutions are SAME-padded as the ImageNet weights were trained (TensorFlow's
asymmetric padding), so unet.py crops the output by a margin instead of losing a border
at every conv. Batch norm uses the moving statistics the weights came with (inference
mode) also in training: batches of 8 small windows would estimate them worse than
ImageNet did, and fine-tuning keeps gamma and beta trainable. Variables are named per
block (`block{i}/expand`, `depthwise`, `project`, each with `weights` and `bn/...`);
core/pretrained.py maps a checkpoint's names onto them.
"""

import tensorflow as tf

v1 = tf.compat.v1

# Per stage: expand ratio, depthwise kernel, stride of its first block, out channels, blocks.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
BN_EPSILON = 1e-3  # TensorFlow's EfficientNet trained with it
MAX_LEVEL = 6  # level 6 (1/32) is the deepest: a depth of at most 5
# Inputs were scaled as (x - 127) / 128 for x in [0, 255] (the Lite models' MEAN_RGB and
# STDDEV_RGB, chosen for integer quantization); RGB.
INPUT_MEAN, INPUT_STD = 127.0, 128.0


def _blocks():
    """(expand ratio, kernel, stride, in channels, out channels) of blocks 0..15."""
    blocks, cin = [], STEM_CHANNELS
    for expand, kernel, stride, cout, repeats in STAGES:
        for r in range(repeats):
            blocks.append((expand, kernel, stride if r == 0 else 1, cin, cout))
            cin = cout
    return tuple(blocks)


BLOCKS = _blocks()


def level_blocks(level):
    """Indices of the blocks at `level` (2..6): those from its stride-2 block to the next."""
    starts = [0] + [i for i, b in enumerate(BLOCKS) if b[2] == 2] + [len(BLOCKS)]
    return tuple(range(starts[level - 2], starts[level - 1]))


def channels(level):
    """Channels of a level's output (its last block's), the U-Net's skip at that level."""
    return BLOCKS[level_blocks(level)[-1]][4]


def preprocess(images):
    """[0, 1] RGB -> the scale the ImageNet weights were trained on."""
    return (images * 255.0 - INPUT_MEAN) / INPUT_STD


def _batch_norm(x, trainable):
    c = x.shape[-1]
    with v1.variable_scope("bn"):
        gamma = v1.get_variable("gamma", [c], initializer=v1.ones_initializer(),
                                trainable=trainable)
        beta = v1.get_variable("beta", [c], initializer=v1.zeros_initializer(),
                               trainable=trainable)
        mean = v1.get_variable("moving_mean", [c], initializer=v1.zeros_initializer(),
                               trainable=False)
        var = v1.get_variable("moving_variance", [c], initializer=v1.ones_initializer(),
                              trainable=False)
        y, _, _ = v1.nn.fused_batch_norm(x, gamma, beta, mean, var, epsilon=BN_EPSILON,
                                         is_training=False)
        return y


def _conv_bn(x, kernel, cout, stride, trainable, name, depthwise=False, relu=True):
    """SAME conv (or depthwise conv), batch norm, ReLU6 unless relu=False (projections)."""
    cin = x.shape[-1]
    with v1.variable_scope(name):
        shape = [kernel, kernel, cin, 1 if depthwise else cout]
        fan_in = kernel * kernel * (1 if depthwise else cin)
        w = v1.get_variable("weights", shape, trainable=trainable,
                            initializer=v1.initializers.random_normal(
                                stddev=(2.0 / fan_in) ** 0.5))
        if depthwise:
            y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME")
        else:
            y = tf.nn.conv2d(x, w, stride, "SAME")
        y = _batch_norm(y, trainable)
        return tf.nn.relu6(y) if relu else y


def _block(x, index, trainable):
    """MBConv block `index`: 1x1 expand, depthwise kxk, 1x1 project, identity skip when
    the shape is kept."""
    expand, kernel, stride, cin, cout = BLOCKS[index]
    with v1.variable_scope(f"block{index}"):
        y = x
        if expand != 1:
            y = _conv_bn(y, 1, cin * expand, 1, trainable, "expand")
        y = _conv_bn(y, kernel, None, stride, trainable, "depthwise", depthwise=True)
        y = _conv_bn(y, 1, cout, 1, trainable, "project", relu=False)
        return x + y if stride == 1 and cin == cout else y


def level(x, lvl, trainable):
    """One level's blocks: [N, h, w, C] -> [N, h / 2, w / 2, channels(lvl)] (level 2 starts
    from the preprocessed image with the stem)."""
    if lvl == 2:
        x = _conv_bn(x, 3, STEM_CHANNELS, 2, trainable, "stem")
    for index in level_blocks(lvl):
        x = _block(x, index, trainable)
    return x
