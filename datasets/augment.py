"""Training augmentation (the U-Net paper's, section 3.1) as graph ops in the input pipeline.

Groups, chosen with train.py --augment (a comma list, `all` or `none`):

  flip     image and mask flipped left-right together half of the time
  rotate   any angle, uniform in [-max_rotation, max_rotation] degrees
  scale    zoom uniform in log scale over [min_scale, max_scale]
  elastic  the paper's deformation: normal(0, elastic_sigma) px displacement
           vectors on an elastic_grid x elastic_grid lattice over the window,
           bicubically interpolated to every pixel (paper: 3x3, sigma 10 px)
  color    brightness, contrast, saturation and hue (image only)

Geometry: the pixel at centred window coordinates q (row, col) samples the source at

    src = centre + R(angle) F (q + d(q)) / scale

with F negating the column for a flip and d the elastic field. All geometric
groups compose into this one map, so a window is resampled once: the image
bilinearly, the mask by nearest neighbour (labels are never blended). The mask
window is the centre of the same coordinate field, so the two stay aligned.

With rotate, scale or elastic on, `warp` samples the windows straight from
the decoded photo, so the cost follows the window size, not the photo's or the
zoom's. Outside the photo the image is mirrored exactly as datasets/pipeline.py pads its
windows, and the mask is IGNORE (255): pixels from outside count neither in
the loss nor in the metrics. Without them nothing is resampled: datasets/pipeline.py cuts
its plain windows and `flip_and_color` flips and colours them.

Copy-paste (Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method",
CVPR 2021; train.py --copy-paste PROB, off by default): with probability PROB a window
gets the foreground of --copy-paste-count other training photos pasted onto it, each
zoomed by a factor drawn log-uniformly in --copy-paste-scale (default 0.1 to 2, the
range of the paper's large-scale jitter, which draws uniformly: log-uniform shrinks most
pastes, as small cats in scenes want) and flipped left-right half of the time. datasets/pipeline.py
decodes and zooms the sources; `paste` places each one so that a random foreground pixel
of it lands on a random pixel of the output window, and composites: pasted pixels take
the source's image and mask values (1..K), the pixels they cover lose theirs (ignore
included). The placement is a whole-pixel shift, so the image and the mask stay exactly
aligned. It comes after the window's own geometry and before colour, so the pasted
animals get the window's colour jitter.

Randomness is stateless, from the per-record seed datasets/pipeline.py derives from (seed,
epoch, record index): runs repeat exactly, every epoch differs.
"""

import argparse
import dataclasses
import math

import tensorflow as tf

from datasets import records

GROUPS = ("flip", "rotate", "scale", "elastic", "color")
_WARPS = ("rotate", "scale", "elastic")
# Elastic displacements are clipped at this many sigmas (a 1-in-15000 event per
# control point): no window pixel moves further than that.
_MAX_SIGMAS = 4.0
# Sub-seeds: each group draws its own numbers, so toggling one leaves the others.
_FLIP, _ROTATE, _SCALE, _ELASTIC, _COLOR, _PASTE = range(1, 7)
# The paper's large-scale jitter: pasted objects from a tenth of their size to twice it.
PASTE_SCALE = (0.1, 2.0)


def parse_groups(text):
    """'flip,color' / 'all' / 'none' -> the groups in GROUPS order, or ValueError."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return GROUPS
    if names == ["none"]:
        return ()
    unknown = sorted(set(names) - set(GROUPS))
    if unknown or not names:
        raise ValueError(f"must be a comma list of {','.join(GROUPS)}, or all, or none; "
                         f"got {text!r}")
    return tuple(g for g in GROUPS if g in names)


def format_groups(groups):
    return ",".join(groups) or "none"


def groups_arg(text):
    """argparse type of --augment: the canonical list ('all' spelled out)."""
    try:
        return format_groups(parse_groups(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to augment and how strongly; built from a Config by `from_config`. The ranges
    are core/config.py's rules (checked once there, for flags and config.json alike)."""

    groups: tuple = ("flip",)  # subset of GROUPS, in GROUPS order
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    min_scale: float = 0.5
    max_scale: float = 2.0
    max_rotation: float = 180.0
    brightness: float = 0.1
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    copy_paste: float = 0.0  # probability that a window gets pastes; 0 = off
    copy_paste_count: int = 1  # source photos pasted into such a window
    copy_paste_scale: tuple = PASTE_SCALE  # (min, max) zoom of a pasted source

    @property
    def warps(self):
        return any(g in self.groups for g in _WARPS)


def from_config(cfg):
    """The Settings of a config.Config (one that config.check passed)."""
    return Settings(parse_groups(cfg.augment), cfg.elastic_grid, cfg.elastic_sigma,
                    cfg.min_scale, cfg.max_scale, cfg.max_rotation, cfg.brightness,
                    cfg.contrast, cfg.saturation, cfg.hue, cfg.copy_paste,
                    cfg.copy_paste_count, tuple(cfg.copy_paste_scale))


def _seed(seed, stream):
    return tf.random.experimental.stateless_fold_in(seed, stream)


def flip_and_color(image, mask, settings, seed, paste=None):
    """Augment plainly cut windows (settings without warps: flip and color only).

    image: [in, in, 3] uint8, mask: [out, out, 1] uint8, centred on each other
    (pipeline.crop_window); seed: [2] int64, the record's. paste: None, or a function
    (image float32 [in, in, 3], mask) -> the same with sources pasted, run before color.
    Returns image float32 in [0, 1] and mask, same shapes.
    """
    if "flip" in settings.groups:
        flip = _flips(seed)
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    image = tf.cast(image, tf.float32) / 255.0
    if paste:
        image, mask = paste(image, mask)
    if "color" in settings.groups:
        image = color(image, settings, _seed(seed, _COLOR))
    return image, mask


def warp(image, mask, offset, settings, seed, input_size, output_size, paste=None):
    """Augmented windows resampled straight from the photo (settings with warps).

    image: [H, W, 3] uint8, mask: [H, W, 1] uint8, the whole photo; offset: [2]
    int32, top-left of the output window in it (pipeline.window_offset); seed: [2]
    int64, the record's; paste as flip_and_color's. Returns image [in, in, 3] float32
    in [0, 1] and mask [out, out, 1] uint8.
    """
    border = (input_size - output_size) // 2
    centre = tf.cast(offset, tf.float32) + (output_size - 1) / 2  # of both windows
    rows, cols = window_coords(settings, seed, input_size)
    rows, cols = rows + centre[0], cols + centre[1]
    inner = slice(border, border + output_size)
    mask = sample_nearest(mask, rows[inner, inner], cols[inner, inner], records.IGNORE)
    image = sample_bilinear(image, rows, cols) / 255.0
    if paste:
        image, mask = paste(image, mask)
    if "color" in settings.groups:
        image = color(image, settings, _seed(seed, _COLOR))
    image.set_shape([input_size, input_size, 3])
    mask.set_shape([output_size, output_size, 1])
    return image, mask


def _flips(seed):
    return tf.random.stateless_uniform([], _seed(seed, _FLIP)) < 0.5


def window_coords(settings, seed, input_size):
    """Source rows and cols of the input window's pixels, relative to its centre.

    Returns two [input_size, input_size] float32; the identity is the plain window.
    """
    groups = settings.groups
    # [2, 2] acting on (row, col) columns: flip, rotation and scale composed.
    matrix = tf.eye(2)
    if "flip" in groups:
        matrix = tf.where(_flips(seed), tf.constant([[1.0, 0.0], [0.0, -1.0]]), matrix)
    if "rotate" in groups:
        limit = math.radians(settings.max_rotation)
        angle = tf.random.stateless_uniform([], _seed(seed, _ROTATE), -limit, limit)
        cos, sin = tf.cos(angle), tf.sin(angle)
        matrix = tf.reshape(tf.stack([cos, -sin, sin, cos]), [2, 2]) @ matrix
    if "scale" in groups:
        log_scale = tf.random.stateless_uniform(
            [], _seed(seed, _SCALE), math.log(settings.min_scale), math.log(settings.max_scale))
        matrix /= tf.exp(log_scale)  # zoom in by s: the window covers 1/s of the source
    centred = tf.range(input_size, dtype=tf.float32) - (input_size - 1) / 2
    q_row, q_col = centred[:, None], centred[None, :]  # the grid, as outer sums below
    rows = matrix[0, 0] * q_row + matrix[0, 1] * q_col
    cols = matrix[1, 0] * q_row + matrix[1, 1] * q_col
    if "elastic" in groups:  # displacements of the window's own pixels, before the rest
        limit = _MAX_SIGMAS * settings.elastic_sigma
        coarse = settings.elastic_sigma * tf.random.stateless_normal(
            [settings.elastic_grid, settings.elastic_grid, 2], _seed(seed, _ELASTIC))
        dense = tf.image.resize(coarse, [input_size, input_size], method="bicubic")
        d_row, d_col = tf.unstack(tf.clip_by_value(dense, -limit, limit), axis=-1)
        rows += matrix[0, 0] * d_row + matrix[0, 1] * d_col
        cols += matrix[1, 0] * d_row + matrix[1, 1] * d_col
    return rows, cols


def mirror(x, n):
    """Float coordinates folded into [0, n - 1] by mirroring about the edge pixels.

    At whole numbers this is pipeline.reflect_indices' padding (np.pad "reflect");
    between them, the bilinear interpolation of the mirrored photo at x equals
    the photo's at mirror(x), so one fold serves all four neighbours.
    """
    period = tf.maximum(2.0 * tf.cast(n - 1, tf.float32), 1.0)  # n == 1: all fold to 0
    x = tf.math.floormod(x, period)
    return tf.minimum(x, period - x)


def sample_bilinear(image, rows, cols):
    """image [H, W, C] (dynamic H, W) at float rows, cols [...] -> [..., C] float32.

    Outside the image it is mirrored, as datasets/pipeline.py pads its windows.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    flat = tf.reshape(image, [-1, image.shape[-1]])  # cast after the gather: 4x less work
    rows, cols = mirror(rows, height), mirror(cols, width)
    row0, col0 = tf.floor(rows), tf.floor(cols)
    wr, wc = (rows - row0)[..., None], (cols - col0)[..., None]
    r0, c0 = tf.cast(row0, tf.int32), tf.cast(col0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, height - 1) * width, tf.minimum(c0 + 1, width - 1)
    r0 *= width

    def at(r, c):
        return tf.cast(tf.gather(flat, r + c), tf.float32)

    p00, p01, p10, p11 = at(r0, c0), at(r0, c1), at(r1, c0), at(r1, c1)
    top = p00 + (p01 - p00) * wc
    bottom = p10 + (p11 - p10) * wc
    return top + (bottom - top) * wr


def sample_nearest(image, rows, cols, fill):
    """image [H, W, C] at the pixels nearest to rows, cols [...] -> [..., C]; `fill` outside."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows = tf.cast(tf.floor(rows + 0.5), tf.int32)
    cols = tf.cast(tf.floor(cols + 0.5), tf.int32)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = tf.reshape(image, [-1, image.shape[-1]])
    values = tf.gather(flat, tf.clip_by_value(rows, 0, height - 1) * width +
                       tf.clip_by_value(cols, 0, width - 1))
    return tf.where(inside[..., None], values, tf.constant(fill, image.dtype))


def color(image, settings, seed):
    """Photometric jitter of image [in, in, 3] float32 in [0, 1]; clipped after each step."""
    jitters = (
        (settings.brightness, lambda x, s: tf.image.stateless_random_brightness(
            x, settings.brightness, s)),
        (settings.contrast, lambda x, s: tf.image.stateless_random_contrast(
            x, 1 - settings.contrast, 1 + settings.contrast, s)),
        (settings.saturation, lambda x, s: tf.image.stateless_random_saturation(
            x, 1 - settings.saturation, 1 + settings.saturation, s)),
        (settings.hue, lambda x, s: tf.image.stateless_random_hue(x, settings.hue, s)))
    for stream, (strength, jitter) in enumerate(jitters):
        if strength:
            image = tf.clip_by_value(jitter(image, _seed(seed, stream)), 0.0, 1.0)
    return image


# ------------------------------------------------------------- copy-paste


def is_foreground(mask):
    """Where a mask holds a class: 1..K, neither BACKGROUND nor IGNORE. Same shape, bool.
    (tf.not_equal, not !=: in a TF1 graph != compares the Python objects.)"""
    return tf.logical_and(tf.not_equal(mask, records.BACKGROUND),
                          tf.not_equal(mask, records.IGNORE))


def random_foreground_pixel(mask, seed):
    """A foreground pixel of mask [H, W, 1] chosen uniformly with seed [2] int64:
    (found: bool scalar, pixel: [2] int32 (row, col); (0, 0) when there is none)."""
    where = tf.cast(tf.where(is_foreground(mask[:, :, 0])), tf.int32)  # [N, 2]
    count = tf.shape(where)[0]
    pick = tf.random.stateless_uniform([], seed, 0, tf.maximum(count, 1), tf.int32)
    return count > 0, tf.concat([where, tf.zeros([1, 2], tf.int32)], 0)[pick]


def paste_seed(seed, k):
    """The seed of paste k (0 .. count - 1) of a window whose record seed is `seed`."""
    return _seed(_seed(seed, _PASTE), k)


def paste_happens(settings, seed):
    """Whether this window gets its pastes (probability settings.copy_paste): bool scalar."""
    return tf.random.stateless_uniform([], _seed(seed, _PASTE)) < settings.copy_paste


def paste_zoom(settings, seed):
    """A source's zoom factor, log-uniform in settings.copy_paste_scale; seed: paste_seed's."""
    low, high = (math.log(s) for s in settings.copy_paste_scale)
    return tf.exp(tf.random.stateless_uniform([], _seed(seed, 0), low, high))


def paste(image, mask, source_image, source_mask, seed):
    """Paste the foreground of a source photo onto a window, flipped half of the time.

    image [in, in, 3] float32 in [0, 1] and mask [out, out, 1] uint8, centred on each
    other; source_image [h, w, 3] uint8 and source_mask [h, w, 1], already zoomed
    (pipeline); seed: paste_seed's. A random foreground pixel of the source lands on a
    random pixel of the output window, so every paste reaches the labelled pixels; a
    source without foreground changes nothing. Returns image and mask, same shapes.
    """
    flip = tf.random.stateless_uniform([], _seed(seed, 1)) < 0.5
    source_image = tf.cond(flip, lambda: tf.reverse(source_image, [1]), lambda: source_image)
    source_mask = tf.cond(flip, lambda: tf.reverse(source_mask, [1]), lambda: source_mask)
    found, pixel = random_foreground_pixel(source_mask, _seed(seed, 2))
    input_size, output_size = image.shape[0], mask.shape[0]
    border = (input_size - output_size) // 2
    target = tf.random.stateless_uniform([2], _seed(seed, 3), 0, output_size, tf.int32)
    # Source pixel of each input-window row / col: a whole-pixel shift, no resampling.
    start = pixel - target - border
    height, width = tf.shape(source_mask)[0], tf.shape(source_mask)[1]
    rows, cols = start[0] + tf.range(input_size), start[1] + tf.range(input_size)
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    rows, cols = tf.clip_by_value(rows, 0, height - 1), tf.clip_by_value(cols, 0, width - 1)
    cut_mask = tf.gather(tf.gather(source_mask, rows), cols, axis=1)  # [in, in, 1]
    cut_image = tf.gather(tf.gather(source_image, rows), cols, axis=1)
    pasted = is_foreground(cut_mask) & inside[:, :, None] & found  # [in, in, 1]
    image = tf.where(pasted, tf.cast(cut_image, tf.float32) / 255.0, image)
    inner = slice(border, border + output_size)
    mask = tf.where(pasted[inner, inner], cut_mask[inner, inner], mask)
    return image, mask
