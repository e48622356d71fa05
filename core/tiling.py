"""Overlap-tile inference (Ronneberger et al. 2015, Fig. 2), shared by predict, evaluate
and export: one TF graph (decode -> tiles -> U-Net -> stitch), so all three give the
same pixels. docs/inference.md ("How any image size works") walks through it.

The image is mirrored (REFLECT, repeated, so even a 1x1 image works) by `border` =
(input - output) / 2 px, cut into input-sized tiles, run in fixed-size batches and
stitched. The tile stride is the output size rounded down to a multiple of 2**depth
(388 -> 384 px for the paper's network): a tile off that grid pools different pixel
pairs than its neighbours. The last tiles may reach up to stride - 1 px past the image
into mirrored context, so the stitched map equals one forward pass over the whole
mirror-padded image (tests/test_predict.py checks this).
"""

import collections

import tensorflow as tf

import unet
from datasets import pipeline
from utils.cli import UserError

v1 = tf.compat.v1

Layout = collections.namedtuple("Layout", "input output border stride")


def layout(input_size, depth, encoder="unet"):
    """Tile geometry for a network, or UserError when it cannot tile exactly."""
    if not unet.is_valid_input_size(input_size, depth, encoder):  # valid: has output pixels
        raise UserError(f"input_size {input_size} is not a valid depth-{depth} "
                        f"{unet.describe(encoder)} input (no output pixels): fix input_size "
                        "in the run's config.json")
    out = unet.output_size(input_size, depth, encoder)
    grid = 2**depth
    if out < grid:
        raise UserError(f"input_size {input_size} gives {out} px output tiles, fewer than the "
                        f"{grid} px pooling grid of a depth-{depth} U-Net, so tiles cannot be "
                        "stitched exactly: train with a larger --input-size")
    return Layout(input_size, out, (input_size - out) // 2, out - out % grid)


def tile_count(size, lay):
    """Tiles along one image axis of `size` px (>= 1): int32 scalar tensor."""
    return 1 + (tf.maximum(size - lay.output, 0) + lay.stride - 1) // lay.stride


def _stitch_indices(size, lay, count):
    """For each output pixel along an axis: its row in the [count * output] tile strip."""
    r = tf.range(size)
    tile = tf.minimum(r // lay.stride, count - 1)
    return tile * lay.output + r - tile * lay.stride


def tiled_logits(image, lay, depth, base_filters, num_outputs, batch_size, encoder="unet"):
    """U-Net logits float32 [H, W, num_outputs] of a uint8 [H, W, 3] image (any H, W >= 1),
    by overlap-tile with `lay` from layout(), batch_size tiles per run (memory vs. speed)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    check = tf.debugging.assert_positive(tf.stack([height, width]), message="image has no pixels")
    with tf.control_dependencies([check]):
        ny, nx = tile_count(height, lay), tile_count(width, lay)
    # The padded canvas is exactly covered by the input tiles.
    rows = pipeline.reflect_indices(
        -lay.border, lay.output + (ny - 1) * lay.stride + 2 * lay.border, height)
    cols = pipeline.reflect_indices(
        -lay.border, lay.output + (nx - 1) * lay.stride + 2 * lay.border, width)
    padded = tf.gather(tf.gather(image, rows), cols, axis=1)  # uint8 [Hp, Wp, 3]

    patches = tf.image.extract_patches(padded[None], [1, lay.input, lay.input, 1],
                                       [1, lay.stride, lay.stride, 1], [1, 1, 1, 1], "VALID")
    tiles = tf.reshape(patches, [-1, lay.input, lay.input, 3])  # [ny * nx, in, in, 3]
    n = ny * nx
    # Equal batches of at most batch_size: fewer than `batches` padding tiles are
    # computed in vain (a 1-tile image runs 1 tile, not batch_size).
    batches = -(-n // batch_size)
    per_batch = -(-n // batches)
    tiles = tf.pad(tiles, [[0, batches * per_batch - n], [0, 0], [0, 0], [0, 0]])
    tiles = tf.reshape(tiles, [batches, per_batch, lay.input, lay.input, 3])

    def run(batch):  # uint8 [B, in, in, 3] -> float32 [B, out, out, C]
        x = tf.cast(batch, tf.float32) / 255.0
        return unet.unet(x, training=False, depth=depth, base_filters=base_filters,
                         num_outputs=num_outputs, encoder=encoder)

    # One batch at a time bounds memory for large photos.
    out = tf.map_fn(run, tiles, fn_output_signature=tf.float32, parallel_iterations=1)
    out = tf.reshape(out, [batches * per_batch, lay.output, lay.output, num_outputs])[:n]
    out = tf.reshape(out, [ny, nx, lay.output, lay.output, num_outputs])
    strip = tf.reshape(tf.transpose(out, [0, 2, 1, 3, 4]),
                       [ny * lay.output, nx * lay.output, num_outputs])
    strip = tf.gather(strip, _stitch_indices(height, lay, ny))
    return tf.gather(strip, _stitch_indices(width, lay, nx), axis=1)


def probabilities(image, cfg, batch_size=4):
    """Foreground probability float32 [H, W] for a uint8 [H, W, 3] image tensor, for a run
    of one class (num_outputs 1). With cfg.long_side the network sees the image at its
    training scale (pipeline.resize_image) and its map is resized back bilinearly, so masks
    and metrics stay at full size."""
    if cfg.num_outputs != 1:
        raise ValueError(f"probabilities() is for one sigmoid output, not {cfg.num_outputs}: "
                         "use class_probabilities()")
    return _full_size(image, cfg, batch_size, tf.sigmoid)[:, :, 0]


def class_probabilities(image, cfg, batch_size=4):
    """Softmax probabilities float32 [H, W, C] of a K >= 2 run's C = K + 1 classes for a
    uint8 [H, W, 3] image tensor, at full size as probabilities(): the softmax is taken at
    the network's scale and resized bilinearly, which keeps every pixel's sum at 1."""
    if cfg.num_outputs < 2:
        raise ValueError("class_probabilities() is for K + 1 >= 2 softmax outputs")
    return _full_size(image, cfg, batch_size, tf.nn.softmax)


def probability_map(image, cfg, batch_size=4, flip_test=False):
    """The run's map of a uint8 [H, W, 3] image, as predict, evaluate and export all take
    it: probabilities() [H, W] for one class, class_probabilities() [H, W, C] for K >= 2;
    flip_test: averaged with its mirror image's (flip_averaged)."""
    of = class_probabilities if cfg.num_outputs > 1 else probabilities

    def probabilities_of(x):
        return of(x, cfg, batch_size)
    return flip_averaged(probabilities_of, image) if flip_test else probabilities_of(image)


def class_map(probs):
    """uint8 [H, W] class index, the argmax of float32 [H, W, C] (ties: the lowest index);
    the one decision rule of predict, evaluate and export for K >= 2."""
    return tf.cast(tf.argmax(probs, axis=-1), tf.uint8)


def _full_size(image, cfg, batch_size, activation):
    """activation(logits) of the tiled network, float32 [H, W, num_outputs] at the image's
    full size."""
    long_side = cfg.long_side  # checked by config.from_json with the flag's rule
    lay = layout(cfg.input_size, cfg.depth, cfg.encoder)
    scaled = pipeline.resize_image(image, long_side) if long_side else image
    logits = tiled_logits(scaled, lay, cfg.depth, cfg.base_filters, cfg.num_outputs,
                          batch_size, cfg.encoder)
    prob = activation(logits)  # [h, w, num_outputs]
    if not long_side:
        return prob
    return tf.image.resize(prob, tf.shape(image)[:2], "bilinear")


def flip_averaged(probabilities_of, image):
    """Test-time flip: the mean of the map of a uint8 [H, W, 3] image and the mirrored-back
    map of its left-right mirror image, so a prediction no longer depends on which way
    the animal faces; twice the network time. probabilities_of: image -> float32 [H, W]
    or [H, W, K] (e.g. probabilities with a cfg). Exactly flip-equivariant: the mirror
    image's average is this one mirrored."""
    direct = probabilities_of(image)
    mirrored = tf.reverse(probabilities_of(tf.reverse(image, [1])), [1])
    return (direct + mirrored) / 2.0
