import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow as tf

import unet
from datasets import augment, guard, pipeline, records
from utils.cli import UserError

v1 = tf.compat.v1

DEPTH, INPUT = 1, 44  # a depth-1 U-Net maps 44 -> 28: border 8
OUTPUT = unet.output_size(INPUT, DEPTH)
BORDER = (INPUT - unet.output_size(INPUT, DEPTH)) // 2  # context lost on each side


def coord_image(h, w, image_id):
    """RGB image whose pixels spell their own (row, col, id): any crop is identifiable."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, image_id)], -1).astype(np.uint8)


def checker_mask(h, w):
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    mask = ((rows // 3 + cols // 2) % 2).astype(np.uint8)
    if w > 1:
        mask[0, -1] = records.IGNORE  # a converter "ignore" pixel must survive the crop
    return mask[..., None]


def write_records(path, sizes):
    """One PNG record per (h, w); PNG so decoded pixels are exact."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (h, w) in enumerate(sizes):
            image, mask = coord_image(h, w, i), checker_mask(h, w)
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", h, w, i, f"{i}.png",
                tf.io.encode_png(mask).numpy()))


def expected_window(image, mask, oy, ox, flip=False):
    """Numpy oracle: np.pad reflect for the image, IGNORE padding for the mask."""
    h, w = image.shape[:2]
    pad = INPUT + max(h, w) + 8
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    img = padded[pad + oy - BORDER: pad + oy - BORDER + INPUT,
                 pad + ox - BORDER: pad + ox - BORDER + INPUT]
    padded_mask = np.pad(mask, ((pad, pad), (pad, pad), (0, 0)),
                         constant_values=records.IGNORE)
    msk = padded_mask[pad + oy: pad + oy + OUTPUT, pad + ox: pad + ox + OUTPUT]
    if flip:
        img, msk = img[:, ::-1], msk[:, ::-1]
    return img, msk


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("before,after", [(0, 0), (2, 5), (20, 33)])
def test_reflect_indices_match_numpy_reflect_for_any_pad(n, before, after):
    axis = np.arange(n) * 10
    expected = np.pad(axis, (before, after), mode="reflect")
    got = pipeline.reflect_indices(tf.constant(-before), n + before + after, tf.constant(n))
    np.testing.assert_array_equal(axis[got.numpy()], expected)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("start", [-40, -3, 0, 2, 9])
def test_reflect_indices_match_numpy_reflect(n, start):
    size, pad = 50, 100
    got = pipeline.reflect_indices(tf.constant(start), size, tf.constant(n)).numpy()
    want = np.pad(np.arange(n), pad, mode="reflect")[pad + start: pad + start + size]
    np.testing.assert_array_equal(got, want)


def test_reflect_matches_tf_pad_when_pad_is_small():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    want = tf.pad(image, [[4, 4], [5, 5], [0, 0]], "REFLECT").numpy()
    rows = pipeline.reflect_indices(tf.constant(-4), 13, tf.constant(5))
    cols = pipeline.reflect_indices(tf.constant(-5), 16, tf.constant(6))
    got = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("h,w,oy,ox", [(1, 1, -13, -14), (2, 3, -20, 0), (30, 40, 2, 12),
                                       (28, 28, 0, 0), (50, 33, 22, -5), (9, 60, -19, 32)])
def test_crop_window_geometry(h, w, oy, ox):
    image, mask = coord_image(h, w, 7), checker_mask(h, w)
    got_img, got_mask = pipeline.crop_window(tf.constant(image), tf.constant(mask),
                                         tf.constant([oy, ox]), INPUT, OUTPUT)
    want_img, want_mask = expected_window(image, mask, oy, ox)
    np.testing.assert_array_equal(got_img.numpy(), want_img)
    np.testing.assert_array_equal(got_mask.numpy(), want_mask)
    # The mask window is the centre of the image window: same image pixels.
    centre = got_img.numpy()[BORDER:BORDER + OUTPUT, BORDER:BORDER + OUTPUT]
    inside = got_mask.numpy()[..., 0] != records.IGNORE
    rr, cc = centre[..., 0][inside], centre[..., 1][inside]
    np.testing.assert_array_equal(got_mask.numpy()[..., 0][inside], mask[rr, cc, 0])
    # 255 exactly where the output window leaves the image (plus the one ignore pixel).
    rows = np.arange(oy, oy + OUTPUT)
    cols = np.arange(ox, ox + OUTPUT)
    outside = ~(((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :])
    assert np.all(got_mask.numpy()[..., 0][outside] == records.IGNORE)


def test_eval_dataset_is_centre_window(tmp_path):
    sizes = [(1, 1), (5, 3), (28, 28), (40, 70), (61, 30)]
    write_records(tmp_path / "a.tfrecord", sizes)
    ds = pipeline.make_dataset(str(tmp_path / "*.tfrecord"), 2, False, INPUT, DEPTH)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    masks = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.float32 and masks.dtype == np.uint8
    for i, (h, w) in enumerate(sizes):
        want_img, want_mask = expected_window(coord_image(h, w, i), checker_mask(h, w),
                                              (h - OUTPUT) // 2, (w - OUTPUT) // 2)
        np.testing.assert_allclose(images[i], want_img / 255.0, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(masks[i], want_mask)
    # A 1x1 image: the window is that pixel everywhere, its mask one valid pixel.
    assert np.all(images[0] == 0.0) and (masks[0] != records.IGNORE).sum() == 1


def find_window(image, mask, got_img, got_mask):
    """All (oy, ox, flip) whose oracle windows equal the dataset's output."""
    h, w = image.shape[:2]
    hits = []
    for oy in range(min(0, h - OUTPUT), max(0, h - OUTPUT) + 1):
        for ox in range(min(0, w - OUTPUT), max(0, w - OUTPUT) + 1):
            for flip in (False, True):
                want_img, want_mask = expected_window(image, mask, oy, ox, flip)
                if np.array_equal(want_img, got_img):
                    assert np.array_equal(want_mask, got_mask), "mask not aligned with image"
                    hits.append((oy, ox, flip))
    return hits


def test_training_windows_are_valid_random_and_flipped_together(tmp_path):
    sizes = [(20, 50), (40, 31), (33, 33)]
    write_records(tmp_path / "t.tfrecord", sizes)
    seen = {i: set() for i in range(len(sizes))}
    for epoch in range(6):
        ds = pipeline.make_dataset(str(tmp_path / "t.tfrecord"), 1, True, INPUT, DEPTH,
                               seed=3, epoch=epoch)
        for img, msk in ds:
            img = np.rint(img.numpy()[0] * 255).astype(np.uint8)
            i = int(img[0, 0, 2])
            h, w = sizes[i]
            hits = find_window(coord_image(h, w, i), checker_mask(h, w), img, msk.numpy()[0])
            assert len(hits) == 1
            seen[i].add(hits[0])
    flips = {flip for hits in seen.values() for _, _, flip in hits}
    assert flips == {False, True}
    assert all(len(hits) >= 3 for hits in seen.values())  # positions vary across epochs


def epoch_ids(sess, iterator, epoch_ph, epoch):
    images, _ = iterator.get_next()
    ids = images[:, 0, 0, 2] * 255.0
    sess.run(iterator.initializer, {epoch_ph: epoch})
    out = []
    while True:
        try:
            out.extend(np.rint(sess.run(ids)).astype(int).tolist())
        except tf.errors.OutOfRangeError:
            return out


def test_iterator_reinitialises_each_epoch_with_new_order(tmp_path):
    sizes = [(30, 30)] * 12
    write_records(tmp_path / "x-00000-of-00002.tfrecord", sizes[:6])
    with tf.io.TFRecordWriter(str(tmp_path / "x-00001-of-00002.tfrecord")) as writer:
        for i in range(6, 12):
            image, mask = coord_image(30, 30, i), checker_mask(30, 30)
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", 30, 30, i, f"{i}.png",
                tf.io.encode_png(mask).numpy()))
    orders = []
    for _ in range(2):  # two graphs with the same seed: repeatable
        with tf.Graph().as_default():
            epoch_ph = v1.placeholder_with_default(tf.constant(0, tf.int64), [])
            ds = pipeline.make_dataset(str(tmp_path / "x-*"), 5, True, INPUT, DEPTH, seed=11,
                                   epoch=epoch_ph)
            iterator = pipeline.make_initializable_iterator(ds)
            with v1.Session() as sess:
                orders.append([epoch_ids(sess, iterator, epoch_ph, e) for e in (0, 1, 0)])
    first = orders[0]
    assert all(sorted(ids) == list(range(12)) for ids in first)
    assert first[0] != first[1]  # a new shuffle every epoch
    assert first[0] == first[2] and orders[0] == orders[1]


def test_pipelines_run_without_model_based_autotuning(tmp_path):
    """Re-initialising an autotuned iterator waits out the autotuner's sleep (seconds at
    every epoch and validation): training and evaluation windows both go without it."""
    write_records(tmp_path / "x-00000-of-00001.tfrecord", [(30, 30)] * 2)
    for training in (True, False):
        ds = pipeline.make_dataset(str(tmp_path / "x-*"), 2, training, INPUT, DEPTH, seed=0)
        assert ds.options().autotune.enabled is False


def test_skip_resumes_the_epoch_with_the_same_windows(tmp_path):
    """A resumed epoch (skip = the windows already trained on) yields the rest of the
    uninterrupted epoch's batches, pixel for pixel: same order, crops and augmentation."""
    sizes = [(20, 50), (40, 31), (33, 33), (30, 30), (25, 45)]
    write_records(tmp_path / "s.tfrecord", sizes)

    def batches(skip):
        ds = pipeline.make_dataset(str(tmp_path / "s.tfrecord"), 2, True, INPUT, DEPTH,
                                   seed=7, epoch=2, skip=skip)
        return [(img.numpy(), msk.numpy()) for img, msk in ds]

    whole = batches(0)
    assert len(whole) == 3
    for done in (1, 2, 3):  # steps of the epoch already run
        rest = batches(2 * done)
        assert len(rest) == 3 - done
        for (img, msk), (want_img, want_msk) in zip(rest, whole[done:]):
            np.testing.assert_array_equal(img, want_img)
            np.testing.assert_array_equal(msk, want_msk)


def test_missing_records_name_the_pattern(tmp_path):
    pattern = str(tmp_path / "nope-*.tfrecord")
    with pytest.raises(UserError, match="no record files match .*nope-"):
        pipeline.make_dataset(pattern, 1, True, INPUT, DEPTH)


@pytest.mark.parametrize("corruption,detail", [("truncated", "truncated record"),
                                               ("bad_png", "Unknown image file format")])
def test_corrupt_records_become_one_user_error(tmp_path, corruption, detail):
    path = tmp_path / "c.tfrecord"
    write_records(path, [(30, 30), (30, 30)])
    if corruption == "truncated":
        path.write_bytes(path.read_bytes()[:-50])
    else:
        with tf.io.TFRecordWriter(str(path)) as writer:
            writer.write(records.make_example(b"not a png", "png", 30, 30, 0, "x.png",
                                              b"nor this"))
    with tf.Graph().as_default():
        ds = pipeline.make_dataset(str(path), 2, False, INPUT, DEPTH)
        batch = pipeline.make_initializable_iterator(ds)
        nxt = batch.get_next()
        with v1.Session() as sess:
            sess.run(batch.initializer)
            with pytest.raises(UserError, match="cannot read records .*c.tfrecord") as e:
                with guard.record_errors(str(path)):
                    while True:
                        sess.run(nxt)
    message = str(e.value)
    assert detail in message and "convert_coco.py" in message and "\n" not in message


def test_glob_skips_converter_sidecars_and_rejects_unfinished_shards(tmp_path):
    for i in range(2):
        write_records(tmp_path / f"cat-train2017-{i:05d}-of-00003.tfrecord", [(30, 30)])
    for sidecar in ("stats.json", "progress.json", "00002-of-00003.tfrecord.partial"):
        (tmp_path / f"cat-train2017-{sidecar}").write_text("{}")
    with pytest.raises(UserError, match="cat-train2017 has 2 of its 3 shards"):
        pipeline.list_records(str(tmp_path / "cat-train2017-*"))
    write_records(tmp_path / "cat-train2017-00002-of-00003.tfrecord", [(30, 30)])
    files = pipeline.list_records(str(tmp_path / "cat-train2017-*"))
    assert [f.rsplit("/", 1)[1] for f in files] == [
        f"cat-train2017-{i:05d}-of-00003.tfrecord" for i in range(3)]


# ------------------------------------------------------------ --long-side


@pytest.mark.parametrize("h,w,n,want", [(30, 40, 20, (15, 20)), (40, 30, 20, (20, 15)),
                                        (5, 9, 4, (2, 4)), (3, 7, 100, (43, 100)),
                                        (1, 100, 10, (1, 10)), (7, 7, 7, (7, 7)),
                                        (4000, 6000, 5999, (3999, 5999))])
def test_scaled_size_keeps_aspect_and_hits_the_long_side_exactly(h, w, n, want):
    assert tuple(pipeline.scaled_size(tf.constant([h, w]), n).numpy()) == want


def test_resize_mask_is_nearest_and_keeps_0_1_255():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 1, 255], np.uint8), [20, 30, 1])
    half = pipeline.resize_mask(tf.constant(mask), 15).numpy()
    np.testing.assert_array_equal(half, mask[1::2, 1::2])  # half-pixel centres: odd pixels
    double = pipeline.resize_mask(tf.constant(mask), 60).numpy()
    np.testing.assert_array_equal(double, mask.repeat(2, 0).repeat(2, 1))
    for n in (7, 13, 29, 31, 77):  # ratios that are no whole number
        out = pipeline.resize_mask(tf.constant(mask), n).numpy()
        assert out.dtype == np.uint8 and max(out.shape[:2]) == n
        assert set(np.unique(out)) == {0, 1, 255}


def test_resize_image_averages_when_shrinking_and_is_bilinear_when_enlarging():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, [20, 30, 3], dtype=np.uint8)
    half = pipeline.resize_image(tf.constant(image), 15).numpy()
    blocks = image.reshape(10, 2, 15, 2, 3).astype(np.float32).mean(axis=(1, 3))
    assert half.dtype == np.uint8
    np.testing.assert_array_equal(half, np.round(blocks))
    big = pipeline.resize_image(tf.constant(image), 45).numpy()
    want = cv2.resize(image.astype(np.float32), (45, 30), interpolation=cv2.INTER_LINEAR)
    assert big.shape == (30, 45, 3) and np.abs(big - want).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(pipeline.resize_image(tf.constant(image), 30).numpy(), image)


def test_long_side_resizes_before_the_windows_are_cut(tmp_path):
    sizes = [(30, 60), (9, 6)]
    write_records(tmp_path / "s.tfrecord", sizes)
    for training in (False, True):
        ds = pipeline.make_dataset(str(tmp_path / "s.tfrecord"), 1, training, INPUT, DEPTH,
                               seed=2, long_side=40)
        for img, msk in ds:
            img = np.rint(img.numpy()[0] * 255).astype(np.uint8)
            i = int(img[0, 0, 2])  # training shuffles: the id channel says which image
            image = pipeline.resize_image(tf.constant(coord_image(*sizes[i], i)), 40).numpy()
            mask = pipeline.resize_mask(tf.constant(checker_mask(*sizes[i])), 40).numpy()
            assert max(image.shape[:2]) == 40
            assert set(np.unique(msk)) <= {0, 1, records.IGNORE}
            if training:
                assert len(find_window(image, mask, img, msk.numpy()[0])) == 1
            else:
                h, w = image.shape[:2]
                want_img, want_mask = expected_window(image, mask, (h - OUTPUT) // 2,
                                                      (w - OUTPUT) // 2)
                np.testing.assert_array_equal(img, want_img)
                np.testing.assert_array_equal(msk.numpy()[0], want_mask)


def write_set(path, first_id, count, size=6):
    """`count` tiny PNG records with ids first_id.. (the id is each image's blue channel)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(first_id, first_id + count):
            writer.write(records.make_example(
                tf.io.encode_png(coord_image(size, size, i)).numpy(), "png", size, size, i,
                f"{i}.png", tf.io.encode_png(checker_mask(size, size)).numpy()))
    return pipeline.RecordSet((str(path),), (count,), float(count))


def mixed_ids(sets, seed=5, epoch=0, skip=0):
    ds = pipeline.make_dataset(tuple(sets), 50, True, INPUT, DEPTH, seed=seed, epoch=epoch,
                               skip=skip)
    return [int(i) for img, _ in ds for i in np.rint(img.numpy()[:, 0, 0, 2] * 255.0)]


def test_mixed_sets_are_sampled_by_weight_repeatably(tmp_path):
    """Weights 3:1 over two sets of 200 records: of an epoch's 400 windows (as many as
    the sets hold), 75% +- 5 points come from the first; the same seed, the same order."""
    a = dataclasses.replace(write_set(tmp_path / "a.tfrecord", 0, 200), weight=3.0)
    b = dataclasses.replace(write_set(tmp_path / "b.tfrecord", 200, 56), weight=1.0)
    b = dataclasses.replace(b, counts=(200,))  # 56 records stand for 200: repeated
    ids = mixed_ids([a, b])
    assert len(ids) == 400
    share = sum(i < 200 for i in ids) / len(ids)
    assert abs(share - 0.75) <= 0.05, share
    assert mixed_ids([a, b]) == ids  # same seed: same order
    assert mixed_ids([a, b], seed=6) != ids and mixed_ids([a, b], epoch=1) != ids
    assert mixed_ids([a, b], skip=100) == ids[100:]  # exact resume inside a mixed epoch


def test_record_set_names_and_patterns(tmp_path):
    assert pipeline.patterns("a-*") == ("a-*",) and pipeline.patterns("") == ()
    assert pipeline.set_names(("data/cat-val2017-*.tfrecord", "x/pets-val-*", "y/pets-val-*",
                               "*")) == ["cat-val2017", "pets-val", "set2", "set3"]
    write_records(tmp_path / "a.tfrecord", [(4, 4)])
    write_records(tmp_path / "b.tfrecord", [(4, 4)])
    assert pipeline.list_records((str(tmp_path / "b*"), str(tmp_path / "a*"))) == [
        str(tmp_path / "b.tfrecord"), str(tmp_path / "a.tfrecord")]  # set by set


# ------------------------------------------------------------ --foreground-windows


def write_photos(path, photos):
    """One PNG record per (image [h, w, 3] uint8, mask [h, w, 1] uint8)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (image, mask) in enumerate(photos):
            h, w = mask.shape[:2]
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", h, w, i, f"{i}.png",
                tf.io.encode_png(mask).numpy()))


def spot_photo(image_id, h=90, w=120, spot=(70, 100), value=1):
    """A photo whose only foreground is a 2 x 2 spot of class `value` at `spot`, with an
    ignore band beside it; its blue channel is image_id, so windows name their photo."""
    mask = np.zeros((h, w, 1), np.uint8)
    mask[10:20, :] = records.IGNORE  # neither background nor a class
    if value:
        mask[spot[0]:spot[0] + 2, spot[1]:spot[1] + 2] = value
    return coord_image(h, w, image_id), mask


def windows_of(path, seed=4, epoch=0, **kwargs):
    ds = pipeline.make_dataset(str(path), 50, True, INPUT, DEPTH, seed=seed, epoch=epoch,
                               augmentation=augment.Settings(()), **kwargs)
    batches = list(ds)
    return (np.concatenate([b[0].numpy() for b in batches]),
            np.concatenate([b[1].numpy() for b in batches]))


def test_foreground_windows_1_centre_every_window_on_foreground(tmp_path):
    """Class 2 counts as foreground, ignore does not: with fraction 1 every window's
    pixel m // 2 (per axis) is one of the 4 spot pixels, the rest of the window random."""
    write_photos(tmp_path / "f.tfrecord", [spot_photo(i, value=2) for i in range(20)])
    images, masks = windows_of(tmp_path / "f.tfrecord", foreground_windows=1.0)
    assert len(masks) == 20
    centre = OUTPUT // 2
    assert np.all(masks[:, centre, centre, 0] == 2)
    # The image window is centred too: its pixel at the same place is a spot pixel.
    rows = images[:, BORDER + centre, BORDER + centre, 0] * 255
    cols = images[:, BORDER + centre, BORDER + centre, 1] * 255
    assert set(np.rint(rows).astype(int)) <= {70, 71} and set(np.rint(cols).astype(int)) <= {
        100, 101}
    assert len(set(zip(np.rint(rows), np.rint(cols)))) >= 3  # a random one of the four


def test_foreground_windows_fraction_over_many_windows(tmp_path):
    """Fraction 0.5: of 400 windows (200 photos, 2 epochs) those centred on the 2 x 2 spot
    are 50% +- 8 points (3.3 binomial sigmas); at 0 none is (a random window's centre
    hits the spot with odds 4 / 63**2 ~ 0.1%)."""
    write_photos(tmp_path / "f.tfrecord", [spot_photo(i) for i in range(200)])
    centre = OUTPUT // 2
    for fraction, low, high in [(0.0, 0.0, 0.01), (0.5, 0.42, 0.58)]:
        hits = [windows_of(tmp_path / "f.tfrecord", epoch=e, foreground_windows=fraction)[1]
                [:, centre, centre, 0] == 1 for e in range(2)]
        share = np.concatenate(hits).mean()
        assert low <= share <= high, (fraction, share)


def test_foreground_windows_are_seeded_and_photos_without_foreground_keep_their_window(
        tmp_path):
    photos = [spot_photo(i) for i in range(6)] + [spot_photo(6 + i, value=0) for i in range(6)]
    write_photos(tmp_path / "f.tfrecord", photos)
    plain = windows_of(tmp_path / "f.tfrecord")
    zero = windows_of(tmp_path / "f.tfrecord", foreground_windows=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))  # 0 is today's windows
    first = windows_of(tmp_path / "f.tfrecord", foreground_windows=1.0)
    again = windows_of(tmp_path / "f.tfrecord", foreground_windows=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = windows_of(tmp_path / "f.tfrecord", seed=5, foreground_windows=1.0)
    assert not np.array_equal(first[0], other[0])
    ids = np.rint(first[0][:, 0, 0, 2] * 255).astype(int)
    assert np.array_equal(ids, np.rint(plain[0][:, 0, 0, 2] * 255).astype(int))  # same order
    for image, mask, want_image, want_mask, i in zip(*first, *plain, ids):
        if i >= 6:  # no foreground: the random window of fraction 0, pixel for pixel
            np.testing.assert_array_equal(image, want_image)
            np.testing.assert_array_equal(mask, want_mask)
        else:
            assert mask[OUTPUT // 2, OUTPUT // 2, 0] == 1


# ------------------------------------------------------------ --long-side-range


def test_long_side_range_draws_each_photos_side_log_uniformly(tmp_path):
    """A 20 x 40 all-foreground photo, resized to a long side in [8, 24] (smaller than the
    28 px output window, so each window holds all of it): 300 photos draw 300 sides, every
    one in range and the aspect kept; log-uniform puts 49% of them at 8..13 (+- 8 points)."""
    photo = (coord_image(20, 40, 0), np.ones((20, 40, 1), np.uint8))
    write_photos(tmp_path / "r.tfrecord", [photo] * 300)
    _, masks = windows_of(tmp_path / "r.tfrecord", long_side_range=(8, 24))
    labelled = masks[..., 0] != records.IGNORE
    heights, widths = labelled.any(2).sum(1), labelled.any(1).sum(1)
    assert np.all(labelled.sum((1, 2)) == heights * widths)  # one rectangle each
    assert widths.min() == 8 and widths.max() == 24 and len(set(widths)) == 17
    np.testing.assert_array_equal(heights, np.maximum(np.floor(widths / 2 + 0.5), 1))
    assert abs(np.mean(widths <= 13) - np.log(14 / 8) / np.log(25 / 8)) <= 0.08
    again = windows_of(tmp_path / "r.tfrecord", long_side_range=(8, 24))[1]
    np.testing.assert_array_equal(again, masks)  # seeded


def test_long_side_range_leaves_evaluation_at_the_one_long_side(tmp_path):
    write_records(tmp_path / "e.tfrecord", [(30, 60), (9, 6)])
    ranged, plain = (list(pipeline.make_dataset(str(tmp_path / "e.tfrecord"), 2, False, INPUT,
                                                DEPTH, long_side=40, **extra))
                     for extra in ({"long_side_range": (8, 90)}, {}))
    for (img, msk), (want_img, want_msk) in zip(ranged, plain):
        np.testing.assert_array_equal(img.numpy(), want_img.numpy())
        np.testing.assert_array_equal(msk.numpy(), want_msk.numpy())


def test_the_training_levers_run_in_a_tf1_graph_as_train_py_builds_them(tmp_path):
    """train.py's graph mode, where `!=` on tensors would compare Python objects: every
    window of fraction 1 holds its spot, with pastes and drawn long sides alike."""
    write_photos(tmp_path / "g.tfrecord", [spot_photo(i, value=1 + i % 2) for i in range(6)])
    settings = augment.Settings(("flip", "rotate"), copy_paste=1.0, copy_paste_count=2)
    with tf.Graph().as_default():
        ds = pipeline.make_dataset(str(tmp_path / "g.tfrecord"), 6, True, INPUT, DEPTH, seed=2,
                                   augmentation=settings, foreground_windows=1.0,
                                   long_side_range=(100, 140))
        batch = pipeline.make_initializable_iterator(ds)
        nxt = batch.get_next()
        with v1.Session() as sess:
            sess.run(batch.initializer)
            _, masks = sess.run(nxt)
    assert masks.shape == (6, OUTPUT, OUTPUT, 1)
    assert all(np.isin([1, 2], m).any() for m in masks)
