"""The U-Net's CPU speed tricks, in one place: each gives the plain op's values.

unet.py builds Fig. 1 from plain tf.nn ops; an `Ops` says how three of them run when a
benchmark builds the network inside `building(ops)`:
  up_conv        conv2d_transpose, or one matmul + depth_to_space (a 2x2 stride-2
                 up-conv's taps never overlap; its gradient becomes two matmuls)
  crop           [...] indexing, or tf.slice (its gradient is a Pad)
  ordered_grads  each conv's weight gradient before its input gradient, so the
                 two do not fight over the cores
DEFAULT is what benchmarks/cpu_ops_ab.py measured fastest for a single-device
training step: the plain ops. On the shared 2-core machine (load 7-8) TRICKS
ran at 0.70x-0.78x of plain at base 16 and 0.75x-0.81x at base 64 (table in
docs/performance.md); their earlier 1.05x was on an idle machine.
"""

import contextlib
import dataclasses
import functools

import tensorflow as tf

import unet

v1 = tf.compat.v1

_ORDERED_CONV_GRAD = "UNetOrderedConv2DGrad"


plain_up_conv = unet._transposed_conv  # x [N, h, w, C], w [2, 2, F, C] -> [N, 2h, 2w, F]
plain_crop = unet._crop  # (skip, target) -> skip centre-cropped to target's size


def matmul_up_conv(x, w):
    """plain_up_conv as one matmul plus depth_to_space (same values, faster gradient)."""
    cin, filters = x.shape[-1], w.shape[2]
    s = tf.shape(x)
    # [2, 2, F, C] -> [C, (row, col, filter)], depth_to_space's channel order.
    blocks = tf.matmul(tf.reshape(x, [-1, cin]),
                       tf.reshape(tf.transpose(w, [3, 0, 1, 2]), [cin, 4 * filters]))
    blocks = tf.reshape(blocks, tf.stack([s[0], s[1], s[2], 4 * filters]))
    return _with_doubled_shape(tf.nn.depth_to_space(blocks, 2), x, filters)


def _with_doubled_shape(y, x, filters):
    y.set_shape([x.shape[0]] + [None if d is None else 2 * d for d in x.shape[1:3]] + [filters])
    return y


def slice_crop(skip, target):
    """plain_crop with tf.slice where the sizes are static (its gradient is a Pad)."""
    if None in skip.shape[1:3] or None in target.shape[1:3]:
        return plain_crop(skip, target)
    dh = (skip.shape[1] - target.shape[1]) // 2
    dw = (skip.shape[2] - target.shape[2]) // 2
    return tf.slice(skip, [0, dh, dw, 0], [-1, target.shape[1], target.shape[2], -1])


@functools.cache  # TensorFlow's gradient registry is global and refuses a second entry
def ordered_conv_grad():
    """Name of the registered Conv2D gradient that runs the weight gradient first."""
    tf.RegisterGradient(_ORDERED_CONV_GRAD)(_conv_grad_weights_then_input)
    return _ORDERED_CONV_GRAD


def _conv_grad_weights_then_input(op, grad):
    x, w = op.inputs
    attrs = {k: op.get_attr(k) for k in ("strides", "padding", "explicit_paddings",
                                         "data_format", "dilations", "use_cudnn_on_gpu")}
    x_shape = tf.shape(x)  # outside the block: the dependency goes on the conv itself
    dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w),
                                         out_backprop=grad, **attrs)
    with tf.control_dependencies([dw]):
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=x_shape, filter=w,
                                            out_backprop=grad, **attrs)
    return dx, dw


@dataclasses.dataclass(frozen=True)
class Ops:
    """How unet.py computes its up-convs, crops and 3x3 conv gradients."""

    up_conv: object = plain_up_conv  # (x [N,h,w,C], w [2,2,F,C]) -> [N,2h,2w,F]
    crop: object = plain_crop  # (skip, target) -> skip centre-cropped to target's size
    ordered_grads: bool = False  # True: each 3x3 conv's weight gradient before its input's

    def conv_gradients(self):
        """Context for building the 3x3 convs: their gradient, ordered or TensorFlow's."""
        if not self.ordered_grads:
            return contextlib.nullcontext()
        return v1.get_default_graph().gradient_override_map({"Conv2D": ordered_conv_grad()})


@contextlib.contextmanager
def building(ops):
    """Build unet.unet with these ops inside the block (same variables, same values).

    The product's unet.py reads like Fig. 1 and knows no variants; the benchmarks swap
    its two op helpers for the duration, and set the gradient of every Conv2D built.
    """
    saved = unet._transposed_conv, unet._crop
    unet._transposed_conv, unet._crop = ops.up_conv, ops.crop
    try:
        with ops.conv_gradients():
            yield
    finally:
        unet._transposed_conv, unet._crop = saved


PLAIN = Ops()
TRICKS = Ops(up_conv=matmul_up_conv, crop=slice_crop, ordered_grads=True)
DEFAULT = PLAIN  # the A/B above: plain ops won at base 16 and 64
