"""The U-Net's measured CPU speed tricks, in one place: same values as the plain ops.

unet.py builds Fig. 1 of the paper from plain TensorFlow ops. Three of them
have faster equivalents on oneDNN's CPU kernels; an `Ops` says which to use:

  up_conv       plain: tf.nn.conv2d_transpose (2x2, stride 2).
                trick: one matmul [N*h*w, C] x [C, 2*2*filters], then depth_to_space.
                The taps of a stride-2 2x2 up-conv never overlap, so each input
                pixel emits a 2x2 block; its gradient is two matmuls instead of
                oneDNN's slow stride-2 backward convs.
  crop          plain: [...] indexing (gradient: StridedSliceGrad).
                trick: tf.slice (gradient: a Pad).
  ordered_grads plain: TensorFlow's Conv2D gradient, whose weight and input
                gradients the executor runs side by side, fighting over the cores.
                trick: the same two ops, weight gradient first, so the input
                gradient that the next layer waits for ends the chain.

DEFAULT is what the A/B in benchmarks/cpu_ops_ab.py measured fastest for a
single-device training step: the plain ops. Stepping in turn in one process on
the shared 2-core machine (load 7-8), TRICKS took 0.70x and 0.78x of plain's
speed at base 16 (572 px, two runs) and 0.75x and 0.81x at base 64 (188 px),
median of 8 to 15 steps each; docs/performance.md has the per-trick figures.
Their earlier 1.05x came from an idle machine: re-measure before switching.
tests/test_cpu_ops.py checks that every trick gives the plain op's values and
gradients.
"""

import contextlib
import dataclasses
import functools

import tensorflow as tf

v1 = tf.compat.v1

_ORDERED_CONV_GRAD = "UNetOrderedConv2DGrad"


def plain_up_conv(x, w):
    """2x2 stride-2 transposed conv: x [N, h, w, C], w [2, 2, F, C] -> [N, 2h, 2w, F]."""
    s = tf.shape(x)
    y = tf.nn.conv2d_transpose(x, w, tf.stack([s[0], 2 * s[1], 2 * s[2], w.shape[2]]),
                               strides=2, padding="VALID")
    return _with_doubled_shape(y, x, w.shape[2])


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
    h, w = x.shape[1], x.shape[2]
    y.set_shape([x.shape[0], None if h is None else 2 * h, None if w is None else 2 * w,
                 filters])
    return y


def plain_crop(skip, target):
    """Centre-crop skip [N, h, w, C] to the spatial size of target."""
    s, t = tf.shape(skip), tf.shape(target)
    dh, dw = (s[1] - t[1]) // 2, (s[2] - t[2]) // 2
    return skip[:, dh:dh + t[1], dw:dw + t[2], :]


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


PLAIN = Ops()
TRICKS = Ops(up_conv=matmul_up_conv, crop=slice_crop, ordered_grads=True)
DEFAULT = PLAIN  # the A/B above: plain ops won at base 16 and 64
