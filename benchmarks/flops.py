"""Analytic FLOP counts for unet.unet, from the network's shapes alone.

A multiply-add is 2 FLOPs. Only convolutions are counted (3x3 valid convs,
2x2 stride-2 up-convs, the 1x1 output conv); bias, ReLU, batch norm, pooling
and the optimiser add well under 1% and are left out, as is usual when
quoting achieved FLOP/s. For the paper's network (572x572 RGB, 64 base
filters, depth 4, one output) a forward pass is 301.6 GFLOP per image.

A training step counts 3x the forward pass: the backward pass computes, for
every conv, the gradient w.r.t. its input and w.r.t. its weights, each as
costly as the forward conv. (TensorFlow skips the input gradient of the very
first conv, 0.2% of the total at base 64; the convention keeps figures
comparable with other frameworks.)
"""

import unet

TRAIN_FACTOR = 3  # forward + input gradient + weight gradient


def conv_flops(out_height, out_width, kernel, in_channels, out_channels):
    """FLOPs of one conv producing [out_height, out_width, out_channels] (batch 1)."""
    return 2 * out_height * out_width * kernel * kernel * in_channels * out_channels


def layers(input_size, depth=4, base_filters=64, num_outputs=1, in_channels=3):
    """[(name, kind, input size, in channels, out channels)] for every conv, in order.

    kind is "conv3x3" (valid), "up_conv" (2x2, stride 2) or "conv1x1"; sizes are
    the square spatial size of the layer's input.
    """
    unet.output_size(input_size, depth)  # ValueError for an invalid size
    out, size, cin = [], input_size, in_channels
    for level in range(depth + 1):
        name = f"contract{level + 1}" if level < depth else "bottom"
        cout = base_filters * 2**level
        if level:
            size //= 2  # 2x2 max pool
        for conv in ("conv1", "conv2"):
            out.append((f"{name}/{conv}", "conv3x3", size, cin, cout))
            size, cin = size - 2, cout
    for level in reversed(range(depth)):
        name = f"expand{level + 1}"
        cout = base_filters * 2**level
        out.append((f"{name}/up_conv", "up_conv", size, cin, cout))
        size, cin = size * 2, 2 * cout  # concat with the cropped skip connection
        for conv in ("conv1", "conv2"):
            out.append((f"{name}/{conv}", "conv3x3", size, cin, cout))
            size, cin = size - 2, cout
    out.append(("output", "conv1x1", size, cin, num_outputs))
    return out


def flops_of(kind, size, cin, cout):
    """FLOPs of one layer of `layers` on one image."""
    if kind == "conv3x3":
        return conv_flops(size - 2, size - 2, 3, cin, cout)
    if kind == "up_conv":  # stride 2 with a 2x2 kernel: every output pixel gets one tap
        return conv_flops(2 * size, 2 * size, 1, cin, cout)
    return conv_flops(size, size, 1, cin, cout)


def layer_flops(input_size, depth=4, base_filters=64, num_outputs=1, in_channels=3):
    """[(name, FLOPs)] for every conv of the network on one square input image."""
    return [(name, flops_of(kind, size, cin, cout)) for name, kind, size, cin, cout
            in layers(input_size, depth, base_filters, num_outputs, in_channels)]


def forward_flops(input_size, depth=4, base_filters=64, num_outputs=1, in_channels=3):
    """FLOPs of one forward pass of one image."""
    return sum(f for _, f in layer_flops(input_size, depth, base_filters, num_outputs,
                                         in_channels))


def train_step_flops(input_size, depth=4, base_filters=64, batch=1, num_outputs=1,
                     in_channels=3):
    """FLOPs of one training step (forward, backward, update) on `batch` images."""
    return TRAIN_FACTOR * batch * forward_flops(input_size, depth, base_filters, num_outputs,
                                                in_channels)


def parameter_count(depth=4, base_filters=64, num_outputs=1, in_channels=3,
                    batch_norm=True):
    """Trainable parameters, counted from the architecture (no graph needed).

    With batch_norm=False, in_channels=1 and num_outputs=2 this is the paper's
    network (grayscale cells, two classes): 31,030,658 weights and biases. The
    RGB, one-logit, batch-norm default here has 31,043,521.
    """
    def conv(k, cin, cout):
        return k * k * cin * cout + cout + (2 * cout if batch_norm else 0)

    total, cin = 0, in_channels
    for level in range(depth + 1):
        cout = base_filters * 2**level
        total += conv(3, cin, cout) + conv(3, cout, cout)
        cin = cout
    for level in reversed(range(depth)):
        cout = base_filters * 2**level
        total += 2 * 2 * cin * cout + cout  # up-conv, no batch norm
        total += conv(3, 2 * cout, cout) + conv(3, cout, cout)
        cin = cout
    return total + cin * num_outputs + num_outputs
