"""The in-run peer: the same U-Net training step written as a Keras 3 model.

Same layers as unet.unet (valid 3x3 conv + ReLU + batch norm twice per level,
2x2 max pool, 2x2 stride-2 up-conv, centre-crop and concat, 1x1 output conv),
same initialisation and batch-norm settings, Adam and sigmoid cross-entropy
from logits; trained with `train_on_batch`, and by default compiled with
`jit_compile=True` (XLA), which the issue lists as the best Keras setting.

Import this module only in a process that builds no tf.compat.v1 graph:
Keras 3 runs eagerly / in tf.function and owns its own variables.
"""

import numpy as np

import unet

LEARNING_RATE = 1e-4


def build_model(input_size, depth=4, base_filters=64, num_outputs=1):
    """A keras.Model mapping float32 [N, in, in, 3] to logits [N, out, out, num_outputs]."""
    import keras
    from keras import layers

    unet.output_size(input_size, depth)  # raises ValueError for an invalid size

    def he(fan_in):  # the paper's init, as in unet.py
        return keras.initializers.RandomNormal(stddev=(2.0 / fan_in) ** 0.5)

    def double_conv(x, filters):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="valid", activation="relu",
                              kernel_initializer=he(9 * x.shape[-1]))(x)
            x = layers.BatchNormalization(momentum=unet.BN_MOMENTUM,
                                          epsilon=unet.BN_EPSILON)(x)
        return x

    inputs = keras.Input([input_size, input_size, 3], dtype="float32")
    x, skips = inputs, []
    for level in range(depth + 1):
        if level:
            x = layers.MaxPool2D(2)(x)
        x = double_conv(x, base_filters * 2**level)
        skips.append(x)
    skips.pop()  # the bottom has no skip connection
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="valid",
                                   kernel_initializer=he(4 * x.shape[-1]))(x)
        skip = skips[level]
        crop = (skip.shape[1] - x.shape[1]) // 2
        x = layers.Concatenate()([layers.Cropping2D(crop)(skip), x])
        x = double_conv(x, filters)
    logits = layers.Conv2D(num_outputs, 1, kernel_initializer=he(x.shape[-1]))(x)
    return keras.Model(inputs, logits, name="unet_peer")


def trainable_parameter_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def compiled_model(input_size, depth=4, base_filters=64, num_outputs=1, jit_compile=True):
    """build_model, compiled with Adam and sigmoid cross-entropy from logits."""
    import keras

    model = build_model(input_size, depth, base_filters, num_outputs)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def synthetic_batch(batch, input_size, depth=4, num_outputs=1, seed=0):
    """Random images in [0, 1] and 0/1 float32 labels of the output size."""
    rng = np.random.default_rng(seed)
    out = unet.output_size(input_size, depth)
    images = rng.random([batch, input_size, input_size, 3], dtype=np.float32)
    labels = (rng.random([batch, out, out, num_outputs]) < 0.3).astype(np.float32)
    return images, labels
