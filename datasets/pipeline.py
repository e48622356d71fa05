"""Input pipeline: record shards -> batches of (image window, mask window) for the U-Net.

A valid-conv U-Net maps an input window of `input_size` pixels to the
`output_size` pixels at its centre, `border` = (input - output) / 2 px in from
each edge (572 -> 388, border 92, for the paper's network). So for every image
we choose where the *output* window goes, then cut

    image window  [input_size, input_size, 3]    the output window grown by border
    mask window   [output_size, output_size, 1]  exactly the output window

Where the image window reaches past the image it is mirror-padded (the paper
extrapolates missing context by mirroring); where the output window leaves the
image the mask is IGNORE (255), so padding counts neither in the loss nor in
the metrics.

Output window placement (top-left corner `o`, per axis, image size n, output
size m):
  - training: uniform over [min(0, n - m), max(0, n - m)]: every image pixel
    can land in an output window, and an image smaller than the window lands
    anywhere inside it; then datasets/augment.py's augmentation (by default a random
    horizontal flip of image and mask).
  - training with foreground windows (train.py --foreground-windows FRACTION, default 0):
    that fraction of windows is centred on a foreground pixel (a class 1..K, neither
    background nor ignore) drawn uniformly from the photo's, so that in a scene where
    the animals cover 2% of the photo the windows still see them; a photo without
    foreground gets its random window. The output window's pixel m // 2 (per axis) is
    the chosen one, and the window may reach past the photo as above.
  - evaluation: the centre, (n - m) // 2; deterministic.

Scale: `long_side` resizes every photo before its window is cut; training with
`long_side_range` (train.py --long-side-range MIN,MAX) draws each photo's long side
log-uniformly from the whole numbers in [MIN, MAX] instead (multi-scale training);
evaluation keeps the one `long_side`, which core/config.py sets to the range's geometric
mean unless --long-side names it.

Copy-paste (datasets/augment.py, train.py --copy-paste): a second stream of training
records, shuffled and repeated with its own seed, is zipped with the main one, so each
window carries --copy-paste-count other serialized records to paste from.

Mirror padding is REFLECT (edge pixel not repeated) extended periodically for
pads larger than the image, i.e. exactly numpy's np.pad(mode="reflect") or
tf.pad(REFLECT) applied repeatedly with the largest allowed pad; a 1-pixel
axis extends as a constant. It is computed as gather indices, so only the
window is materialised.

Randomness is stateless, seeded by (seed, epoch, element index), so a run with
a fixed seed is repeatable whatever the parallelism, and each epoch (the
`epoch` argument, a tensor fed when the iterator is initialised) differs.
"""

import dataclasses
import math
import os
import random
import re

import tensorflow as tf

import unet
from datasets import augment, records
from utils.cli import UserError

v1 = tf.compat.v1

# Keeps per-epoch shuffle seeds apart for any realistic number of epochs.
_EPOCH_STRIDE = 1_000_003
# The copy-paste sources' shuffle seeds, apart from the main stream's of any epoch.
_SOURCES_SEED = 500_009
# Sub-seeds of a record's seed; augment.py's groups use 1 .. 6.
_FOREGROUND_WINDOW, _FOREGROUND_PIXEL, _LONG_SIDE = 11, 12, 13
_NOT_RECORDS = (".json", ".partial", ".tmp")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord$")


def patterns(records):
    """A records value of a config (one glob, a tuple of them, or '' for none) as a tuple."""
    if not records:
        return ()
    return (records,) if isinstance(records, str) else tuple(records)


def set_names(records):
    """A short, unique name per record set for logs and TensorBoard ('data/cat-val2017-*'
    -> 'cat-val2017'); set<i> where a glob leaves nothing or a name repeats."""
    names = []
    for i, pattern in enumerate(patterns(records)):
        name = re.sub(r"[-_.]?[*?\[].*$", "", os.path.basename(pattern))
        name = re.sub(r"\.tfrecord$", "", name)
        names.append(name if name and name not in names else f"set{i}")
    return names


@dataclasses.dataclass(frozen=True)
class RecordSet:
    """One training record set of a mixed run (train.py's repeated --train-records)."""

    files: tuple  # checked record files (guard.scan_records)
    counts: tuple  # records in each file
    weight: float  # relative sampling weight (default: the set's record count)


def list_records(file_pattern):
    """Sorted record files matching the glob (or each glob of a tuple, in turn), or
    UserError naming the pattern.

    The converter's sidecars (stats/progress JSON, *.partial, *.tmp) are skipped
    so that 'data/cat-train2017-*' works, and a set of '-NNNNN-of-NNNNN' shards
    with one missing (an unfinished conversion) is an error, not less data.
    """
    if not isinstance(file_pattern, str):
        return [f for pattern in file_pattern for f in list_records(pattern)]
    try:
        matches = sorted(tf.io.gfile.glob(file_pattern))
    except tf.errors.OpError as e:
        raise UserError(f"cannot list records {file_pattern!r}: {e.message}") from None
    files = [f for f in matches if not f.endswith(_NOT_RECORDS)]
    if not files:
        raise UserError(f"no record files match {file_pattern!r}: check the path, quote the "
                        f"glob, or create them with {records.RECREATE_HINT}")
    shard_sets = {}
    for f in files:
        found = _SHARD.search(f)
        if found:
            key = (f[:found.start()], int(found.group(2)))
            shard_sets.setdefault(key, set()).add(int(found.group(1)))
    for (prefix, total), indices in sorted(shard_sets.items()):
        if len(indices) != total:
            raise UserError(f"{prefix} has {len(indices)} of its {total} shards: the "
                            f"conversion did not finish; re-run {records.RECREATE_HINT}")
    return files


def record_files(records):
    """A glob (or tuple of globs), or a list of files already checked
    (guard.scan_records), -> the list."""
    return list(records) if isinstance(records, list) else list_records(records)


def reflect_indices(start, size, n):
    """Indices into [0, n) of positions start .. start+size-1 of the mirrored axis.

    start, n: int32 scalars (start may be negative or past n). Returns [size] int32.
    """
    positions = start + tf.range(size)
    period = tf.maximum(2 * (n - 1), 1)  # n == 1: every position maps to 0
    folded = tf.math.floormod(positions, period)
    return tf.where(folded >= n, period - folded, folded)


def decode_record(serialized, max_pixels=0):
    """Graph op: one serialized record -> dict of image uint8 [H, W, 3], mask uint8
    [H, W, 1], filename and id (records.decode checks schema and sizes, and the pixel
    cap when max_pixels)."""
    parsed = records.parse_example(serialized)
    image, mask = records.decode(parsed, max_pixels)
    return {"image": image, "mask": mask, "filename": parsed[records.FILENAME],
            "id": parsed[records.IMAGE_ID]}


def crop_window(image, mask, offset, input_size, output_size):
    """Cut the image window (mirror-padded) and the mask window (IGNORE outside).

    image: [H, W, 3] uint8; mask: [H, W, 1] uint8; offset: [2] int32, top-left of
    the output window in image coordinates (may be negative or past the edge).
    Returns image [input_size, input_size, 3] uint8, mask [output_size, output_size, 1].
    """
    border = (input_size - output_size) // 2
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows = reflect_indices(offset[0] - border, input_size, height)
    cols = reflect_indices(offset[1] - border, input_size, width)
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)

    mask_rows = offset[0] + tf.range(output_size)
    mask_cols = offset[1] + tf.range(output_size)
    inside = ((mask_rows >= 0) & (mask_rows < height))[:, None] & \
             ((mask_cols >= 0) & (mask_cols < width))[None, :]
    mask = tf.gather(mask, tf.clip_by_value(mask_rows, 0, height - 1), axis=0)
    mask = tf.gather(mask, tf.clip_by_value(mask_cols, 0, width - 1), axis=1)
    mask = tf.where(inside[:, :, None], mask, tf.constant(records.IGNORE, tf.uint8))
    image.set_shape([input_size, input_size, 3])
    mask.set_shape([output_size, output_size, 1])
    return image, mask


def window_offset(image_shape, output_size, uniform=None):
    """Top-left of the output window: [2] int32.

    image_shape: [2] int32 (H, W). uniform: None for the centre (evaluation), or
    [2] float32 in [0, 1) choosing a position in the valid range (training).
    """
    slack = image_shape - output_size  # negative when the image is smaller
    if uniform is None:
        return tf.math.floordiv(slack, 2)
    low, span = tf.minimum(slack, 0), tf.abs(slack) + 1
    pick = tf.cast(tf.floor(uniform * tf.cast(span, tf.float32)), tf.int32)
    return low + tf.minimum(pick, span - 1)


def scaled_size(shape, long_side):
    """[2] int32 (h, w) with the longer side long_side px and the aspect ratio kept.

    shape: [2] int32 (H, W); long_side an int or an int scalar tensor. Rounded to the
    nearest pixel, at least 1; int64 arithmetic so the longer side comes out exactly
    long_side.
    """
    size, long_side = tf.cast(shape, tf.int64), tf.cast(long_side, tf.int64)
    longest = tf.maximum(tf.reduce_max(size), 1)  # no division by 0: resize rejects 0 px
    scaled = (2 * size * long_side + longest) // (2 * longest)
    return tf.cast(tf.maximum(scaled, 1), tf.int32)


def resize_image(image, long_side):
    """uint8 [H, W, C] -> uint8 [h, w, C] with max(h, w) = long_side.

    Shrinking averages the covered pixels (area), so fine detail does not alias;
    enlarging is bilinear.
    """
    shape = tf.shape(image)[:2]
    size = scaled_size(shape, long_side)
    resized = tf.cond(long_side < tf.reduce_max(shape),
                      lambda: tf.image.resize(image, size, "area"),
                      lambda: tf.image.resize(image, size, "bilinear"))
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def resize_mask(mask, long_side):
    """uint8 [H, W, 1] -> [h, w, 1] as resize_image; nearest neighbour keeps 0 / 1 / IGNORE."""
    return tf.image.resize(mask, scaled_size(tf.shape(mask)[:2], long_side), "nearest")


def _seed_pair(seed, epoch):
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


def random_long_side(side_range, seed):
    """A photo's training long side: int32 scalar, log-uniform over the whole numbers of
    side_range (min, max), as a zoom would be; seed [2] int64."""
    low, high = side_range
    draw = tf.random.stateless_uniform([], seed, math.log(low), math.log(high + 1))
    return tf.clip_by_value(tf.cast(tf.floor(tf.exp(draw)), tf.int32), low, high)


def foreground_offset(mask, offset, output_size, fraction, seed):
    """The output window's top-left ([2] int32) centred on a random foreground pixel of
    mask [H, W, 1] with probability `fraction`, else `offset` (the random window, also
    for a photo without foreground); seed [2] int64, the record's."""
    chosen = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(seed, _FOREGROUND_WINDOW)) < fraction
    found, pixel = augment.random_foreground_pixel(
        mask, tf.random.experimental.stateless_fold_in(seed, _FOREGROUND_PIXEL))
    return tf.where(chosen & found, pixel - output_size // 2, offset)


def _paste_sources(image, mask, serialized, sources, long_side, settings, seed):
    """A window with copy-paste (augment.paste) from sources, [count] serialized records,
    with probability settings.copy_paste; a source that is the window's own record is
    passed over. image [in, in, 3] float32, mask [out, out, 1]; the sources are zoomed
    from the window's long side (their own stored one when it is 0)."""

    def paste_one(image, mask, source, k):
        paste_seed = augment.paste_seed(seed, k)
        decoded = decode_record(source)
        source_image, source_mask = decoded["image"], decoded["mask"]
        base = long_side if long_side is not None else tf.reduce_max(tf.shape(source_mask))
        zoom = augment.paste_zoom(settings, paste_seed)
        side = tf.maximum(tf.cast(tf.round(tf.cast(base, tf.float32) * zoom), tf.int32), 1)
        return augment.paste(image, mask, resize_image(source_image, side),
                             resize_mask(source_mask, side), paste_seed)

    def pasted():
        out = image, mask
        for k in range(settings.copy_paste_count):
            out = tf.cond(tf.equal(sources[k], serialized), lambda out=out: out,
                          lambda out=out, k=k: paste_one(*out, sources[k], k))
        return out

    return tf.cond(augment.paste_happens(settings, seed), pasted, lambda: (image, mask))


def make_dataset(file_pattern, batch_size, training, input_size=572, depth=4, seed=None,
                 epoch=0, shuffle_buffer=256, num_parallel_calls=tf.data.AUTOTUNE,
                 long_side=0, augmentation=None, skip=0, foreground_windows=0.0,
                 long_side_range=(), encoder="unet"):
    """Batches of (image [B, in, in, 3] float32 in [0, 1] RGB, mask [B, out, out, 1] uint8).

    One pass over the records (no repeat: the trainer re-initialises the
    iterator every epoch). `epoch` (int or int64 scalar tensor) varies the
    shuffle, windows and augmentation per epoch; `seed` None draws a random seed.
    `long_side` > 0 resizes every image and mask (resize_image / resize_mask)
    before the windows are cut; 0 keeps them as stored. Training only:
    long_side_range (min, max) draws each photo's long side instead
    (random_long_side), and foreground_windows is the fraction of windows
    centred on a foreground pixel (foreground_offset).
    augmentation: augment.Settings for training windows (None: flips only);
    evaluation windows are never augmented.
    encoder: the network's contracting path (unet.ENCODERS), which sets the mask
    window's size (unet.output_size).
    file_pattern: a glob (or tuple of globs) or a list of checked files; for a mixed
    run a tuple of RecordSets (training only; see _mixed).
    skip (int or int64 scalar tensor): windows of this epoch's order to pass over
    before the first batch, undecoded, so a resumed epoch goes on where it stopped;
    each window keeps its index, and with it its crop and augmentation.
    Raises UserError when no file matches, ValueError for an invalid input size.
    """
    output_size = unet.output_size(input_size, depth, encoder)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    shuffle_seed = tf.cast(epoch, tf.int64) + seed * _EPOCH_STRIDE
    mixed = isinstance(file_pattern, tuple) and file_pattern and isinstance(file_pattern[0],
                                                                            RecordSet)
    if mixed:
        ds = _mixed(file_pattern, shuffle_seed, shuffle_buffer, num_parallel_calls)
    else:
        files = record_files(file_pattern)
        ds = _serialized(files, training, shuffle_seed, shuffle_buffer, num_parallel_calls)

    augmentation = augment.Settings() if augmentation is None else augmentation
    copy_paste = training and augmentation.copy_paste > 0
    if copy_paste:
        # Sources are whole photos from a stream of their own rather than the other
        # windows of a batch: a window's mask covers only its output, less than its
        # image, and cuts animals at its edges; and the pastes stay per element, seeded
        # by its index like the rest, so they do not depend on the batch size and a
        # resumed epoch (skip) pastes the same animals.
        sources_seed = shuffle_seed + _SOURCES_SEED
        sources = (_mixed(file_pattern, sources_seed, shuffle_buffer, num_parallel_calls)
                   if mixed else _serialized(files, True, sources_seed, shuffle_buffer,
                                             num_parallel_calls))
        ds = tf.data.Dataset.zip((ds, sources.repeat().batch(augmentation.copy_paste_count)))

    def load(index, record):
        serialized, sources = record if copy_paste else (record, None)
        example = decode_record(serialized)
        image, mask = example["image"], example["mask"]
        side = long_side or None  # the photo's long side: None as stored, or a tensor drawn
        if training:
            element_seed = tf.random.experimental.stateless_fold_in(
                _seed_pair(seed, epoch), index)
            if long_side_range:
                side = random_long_side(long_side_range, tf.random.experimental
                                        .stateless_fold_in(element_seed, _LONG_SIDE))
        if side is not None:
            image, mask = resize_image(image, side), resize_mask(mask, side)
        if training:
            uniform = tf.random.stateless_uniform([2], element_seed)
            offset = window_offset(tf.shape(image)[:2], output_size, uniform)
            if foreground_windows:
                offset = foreground_offset(mask, offset, output_size, foreground_windows,
                                           element_seed)
            paste = None
            if copy_paste:
                def paste(image, mask):
                    return _paste_sources(image, mask, serialized, sources, side,
                                          augmentation, element_seed)
            if augmentation.warps:  # rotate / scale / elastic: resampled from the photo
                return augment.warp(image, mask, offset, augmentation, element_seed,
                                    input_size, output_size, paste)
        else:
            offset = window_offset(tf.shape(image)[:2], output_size)
        image, mask = crop_window(image, mask, offset, input_size, output_size)
        if training:
            return augment.flip_and_color(image, mask, augmentation, element_seed, paste)
        return tf.cast(image, tf.float32) / 255.0, mask

    ds = ds.enumerate().skip(tf.cast(skip, tf.int64))
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options())


def _options():
    """tf.data options of every pipeline: no model-based autotuning.

    Its optimisation thread sleeps for a period that doubles up to seconds, and
    re-initialising an iterator waits for that sleep: 2 to 20 s at every epoch and
    validation (docs/performance.md, "Epoch boundaries"). Without it AUTOTUNE still
    means something: parallel maps run one call per thread of the pool, and prefetch
    grows its buffer while the consumer waits.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _serialized(files, training, shuffle_seed, shuffle_buffer, num_parallel_calls):
    """The serialized records of files: one pass, shuffled when training."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=shuffle_seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                       num_parallel_calls=num_parallel_calls, deterministic=True)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed + 1)
    return ds


def _mixed(sets, shuffle_seed, shuffle_buffer, num_parallel_calls):
    """One epoch of serialized training records drawn from several RecordSets.

    Each set is shuffled and repeated (a small set comes round again rather than run
    dry), tf.data's sample_from_datasets draws from them by weight, seeded per epoch,
    and the epoch ends after as many records as the sets hold: steps per epoch are
    those of one glob over all of them.
    """
    each = [_serialized(list(s.files), True, shuffle_seed + 2 * (i + 1), shuffle_buffer,
                        num_parallel_calls).repeat() for i, s in enumerate(sets)]
    total = sum(sum(s.counts) for s in sets)
    weights = [s.weight / sum(s.weight for s in sets) for s in sets]
    return tf.data.Dataset.sample_from_datasets(
        each, weights, seed=shuffle_seed + 2 * (len(sets) + 1)).take(total)


def train_dataset(cfg, files, epoch, seed, skip_batches=0):
    """The training windows of `files` for a config.RunConfig: shuffled, cut and
    augmented anew each `epoch` ([] int64 tensor), seeded by `seed`, from batch
    `skip_batches` ([] int64 tensor) of the epoch on."""
    return make_dataset(files, cfg.batch_size, True, cfg.input_size, cfg.depth, seed, epoch,
                        cfg.shuffle_buffer, long_side=cfg.long_side, encoder=cfg.encoder,
                        augmentation=augment.from_config(cfg),
                        skip=tf.cast(skip_batches, tf.int64) * cfg.batch_size,
                        foreground_windows=cfg.foreground_windows,
                        long_side_range=tuple(cfg.long_side_range))


def val_dataset(cfg, files):
    """Every validation window of `files` once, centred, for a config.RunConfig."""
    size = cfg.val_input_size or cfg.input_size
    # Inference holds no activations for backprop, but a big window still needs a
    # smaller batch to stay within the training step's memory.
    batch = max(1, round(cfg.batch_size * (cfg.input_size / size) ** 2))
    return make_dataset(files, batch, False, size, cfg.depth, cfg.seed, long_side=cfg.long_side,
                        encoder=cfg.encoder)


def make_initializable_iterator(dataset):
    """The TF1 iterator whose `initializer` restarts the pass (run it every epoch)."""
    return v1.data.make_initializable_iterator(dataset)

