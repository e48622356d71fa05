"""Training augmentation (the U-Net paper's, section 3.1) as graph ops in data.py's map.

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

Cost is bounded by the window, not the photo: data.py cuts a square region
around the output window (`region`), big enough for the smallest scale, the
largest rotation and displacement, with its usual mirror padding for the image
and IGNORE (255) for the mask. Pixels that come from outside the photo are
therefore mirrored context in the image and ignored in the mask. Without
rotate/scale/elastic the region is the window itself and nothing is resampled:
the windows are exactly data.py's plain ones, flipped and coloured if asked.

Randomness is stateless, from the per-record seed data.py derives from (seed,
epoch, record index): runs repeat exactly, every epoch differs.
"""

import argparse
import dataclasses
import math

import tensorflow as tf

import records
from cli import UsageError

GROUPS = ("flip", "rotate", "scale", "elastic", "color")
_WARPS = ("rotate", "scale", "elastic")
# Elastic displacements are clipped at this many sigmas (a 1-in-15000 event per
# control point) so that the region cut around the window always holds the source.
_MAX_SIGMAS = 4.0
# Sub-seeds: each group draws its own numbers, so toggling one leaves the others.
_FLIP, _ROTATE, _SCALE, _ELASTIC, _COLOR = range(1, 6)


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
    """What to augment and how strongly; built from a Config by `from_config`."""

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

    def __post_init__(self):
        problems = [
            (self.elastic_grid < 2, f"--elastic-grid must be >= 2, got {self.elastic_grid}"),
            (not self.elastic_sigma >= 0, f"--elastic-sigma must be >= 0, got "
             f"{self.elastic_sigma}"),
            (not 0 < self.min_scale <= self.max_scale, f"--min-scale {self.min_scale} and "
             f"--max-scale {self.max_scale} must satisfy 0 < min <= max"),
            (not 0 <= self.max_rotation <= 180, f"--max-rotation must be in [0, 180] degrees,"
             f" got {self.max_rotation}"),
            (not self.brightness >= 0, f"--brightness must be >= 0, got {self.brightness}"),
            (not 0 <= self.contrast <= 1, f"--contrast must be in [0, 1], got {self.contrast}"),
            (not 0 <= self.saturation <= 1, f"--saturation must be in [0, 1], got "
             f"{self.saturation}"),
            (not 0 <= self.hue <= 0.5, f"--hue must be in [0, 0.5], got {self.hue}")]
        for bad, message in problems:
            if bad:
                raise UsageError(message)

    @property
    def warps(self):
        return any(g in self.groups for g in _WARPS)


def from_config(cfg):
    """The Settings of a config.Config, or UsageError naming the bad flag."""
    try:
        groups = parse_groups(cfg.augment)
    except ValueError as e:
        raise UsageError(f"--augment {e}") from None
    return Settings(groups, cfg.elastic_grid, cfg.elastic_sigma, cfg.min_scale, cfg.max_scale,
                    cfg.max_rotation, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)


@dataclasses.dataclass(frozen=True)
class Region:
    """What data.crop_window cuts for `apply`: offset by -margin, these two sizes."""

    margin: int
    image_size: int
    mask_size: int


def region(settings, input_size, output_size):
    """The square cut around the output window that holds every source pixel."""
    if not settings.warps:
        return Region(0, input_size, output_size)
    half = (input_size - 1) / 2  # farthest a window pixel lies from the centre, per axis
    if "elastic" in settings.groups:
        half += _MAX_SIGMAS * settings.elastic_sigma
    if "scale" in settings.groups:
        half /= settings.min_scale
    if "rotate" in settings.groups:  # a square turned by a grows by cos a + sin a (max at 45)
        angle = math.radians(min(settings.max_rotation, 45.0))
        half *= math.cos(angle) + math.sin(angle)
    size = 2 * math.ceil(half) + 4  # the bilinear neighbour and float slack on each side
    size += (size - output_size) % 2  # same parity: the region centre is the window centre
    return Region((size - output_size) // 2, size, size)


def _seed(seed, stream):
    return tf.random.experimental.stateless_fold_in(seed, stream)


def apply(image, mask, settings, seed, input_size, output_size):
    """Augment one training region cut as `region` says.

    image: [r, r, 3] uint8, mask: [r', r', 1] uint8; seed: [2] int64, the record's.
    Returns image [input_size, input_size, 3] float32 in [0, 1] and mask
    [output_size, output_size, 1] uint8.
    """
    if settings.warps:
        coords = window_coords(settings, seed, input_size, image.shape[0])
        border = (input_size - output_size) // 2
        mask = sample_nearest(mask, coords[border:border + output_size,
                                           border:border + output_size], records.IGNORE)
        image = sample_bilinear(image, coords)
    elif "flip" in settings.groups:
        flip = tf.random.stateless_uniform([], _seed(seed, _FLIP)) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    image = tf.cast(image, tf.float32) / 255.0
    if "color" in settings.groups:
        image = color(image, settings, _seed(seed, _COLOR))
    image.set_shape([input_size, input_size, 3])
    mask.set_shape([output_size, output_size, 1])
    return image, mask


def window_coords(settings, seed, input_size, region_size):
    """Source (row, col) in the region of every input-window pixel: [in, in, 2] float32."""
    groups = settings.groups
    centred = tf.range(input_size, dtype=tf.float32) - (input_size - 1) / 2
    q = tf.stack(tf.meshgrid(centred, centred, indexing="ij"), -1)  # [in, in, 2]
    if "elastic" in groups:
        limit = _MAX_SIGMAS * settings.elastic_sigma
        coarse = settings.elastic_sigma * tf.random.stateless_normal(
            [settings.elastic_grid, settings.elastic_grid, 2], _seed(seed, _ELASTIC))
        dense = tf.image.resize(coarse, [input_size, input_size], method="bicubic")
        q += tf.clip_by_value(dense, -limit, limit)
    # [2, 2] acting on (row, col) columns: rotation, flip, scale composed.
    matrix = tf.eye(2)
    if "flip" in groups:
        flip = tf.random.stateless_uniform([], _seed(seed, _FLIP)) < 0.5
        matrix = tf.where(flip, tf.constant([[1.0, 0.0], [0.0, -1.0]]), matrix)
    if "rotate" in groups:
        limit = math.radians(settings.max_rotation)
        angle = tf.random.stateless_uniform([], _seed(seed, _ROTATE), -limit, limit)
        cos, sin = tf.cos(angle), tf.sin(angle)
        matrix = tf.reshape(tf.stack([cos, -sin, sin, cos]), [2, 2]) @ matrix
    if "scale" in groups:
        log_scale = tf.random.stateless_uniform(
            [], _seed(seed, _SCALE), math.log(settings.min_scale), math.log(settings.max_scale))
        matrix /= tf.exp(log_scale)  # zoom in by s: the window covers 1/s of the source
    return (region_size - 1) / 2 + tf.einsum("ij,hwj->hwi", matrix, q)


def sample_bilinear(image, coords):
    """image [H, W, C] (dynamic H, W) at float (row, col) coords [..., 2] -> [..., C] float32.

    Coordinates outside the image are clamped to its edge.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    flat = tf.reshape(tf.cast(image, tf.float32), [-1, image.shape[-1]])
    rows = tf.clip_by_value(coords[..., 0], 0.0, tf.cast(height - 1, tf.float32))
    cols = tf.clip_by_value(coords[..., 1], 0.0, tf.cast(width - 1, tf.float32))
    row0, col0 = tf.floor(rows), tf.floor(cols)
    wr, wc = (rows - row0)[..., None], (cols - col0)[..., None]
    r0, c0 = tf.cast(row0, tf.int32), tf.cast(col0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, height - 1), tf.minimum(c0 + 1, width - 1)

    def at(r, c):
        return tf.gather(flat, r * width + c)

    top = at(r0, c0) * (1 - wc) + at(r0, c1) * wc
    bottom = at(r1, c0) * (1 - wc) + at(r1, c1) * wc
    return top * (1 - wr) + bottom * wr


def sample_nearest(mask, coords, fill):
    """mask [H, W, C] at the nearest pixel of coords [..., 2]; `fill` outside the mask."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    rows = tf.cast(tf.floor(coords[..., 0] + 0.5), tf.int32)
    cols = tf.cast(tf.floor(coords[..., 1] + 0.5), tf.int32)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = tf.reshape(mask, [-1, mask.shape[-1]])
    values = tf.gather(flat, tf.clip_by_value(rows, 0, height - 1) * width +
                       tf.clip_by_value(cols, 0, width - 1))
    return tf.where(inside[..., None], values, tf.constant(fill, mask.dtype))


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
