import dataclasses
import json
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_pipeline import (
    BORDER,
    DEPTH,
    INPUT,
    OUTPUT,
    checker_mask,
    coord_image,
    find_window,
    write_records,
)

import train
from datasets import augment, pipeline, records
from utils import cli
from utils.cli import UsageError

ALL = augment.Settings(augment.GROUPS)
GEOMETRY = augment.Settings(augment.GROUPS[:-1])  # all but color: exact pixel values
NONE = augment.Settings(())


def windows(pattern, augmentation, seed=3, epoch=0, training=True):
    """Images [N, in, in, 3] and masks [N, out, out, 1] of one pass, as numpy."""
    ds = pipeline.make_dataset(str(pattern), 16, training, INPUT, DEPTH, seed=seed, epoch=epoch,
                           augmentation=augmentation)
    batches = list(ds)  # one pass: a second one would be shuffled afresh
    return (np.concatenate([b[0].numpy() for b in batches]),
            np.concatenate([b[1].numpy() for b in batches]))


# ------------------------------------------------------------- settings and flags


@pytest.mark.parametrize("text,groups", [
    ("all", augment.GROUPS), ("none", ()), ("flip", ("flip",)),
    ("color, elastic,flip", ("flip", "elastic", "color")), ("rotate,rotate", ("rotate",))])
def test_parse_groups(text, groups):
    assert augment.parse_groups(text) == groups
    assert augment.groups_arg(text) == (",".join(groups) or "none")


@pytest.mark.parametrize("text", ["", "spin", "all,flip", "none,color", "flip,,Rotate"])
def test_parse_groups_refuses(text):
    with pytest.raises(ValueError, match="comma list of flip,rotate,scale,elastic,color"):
        augment.parse_groups(text)


@pytest.mark.parametrize("changes,flag", [
    ({"elastic_grid": 1}, "--elastic-grid"), ({"elastic_sigma": -1.0}, "--elastic-sigma"),
    ({"min_scale": 0.0}, "--min-scale"), ({"min_scale": 2.0, "max_scale": 1.5}, "--max-scale"),
    ({"max_rotation": 190.0}, "--max-rotation"), ({"brightness": -0.1}, "--brightness"),
    ({"contrast": 1.5}, "--contrast"), ({"saturation": 2.0}, "--saturation"),
    ({"hue": 0.6}, "--hue")])
def test_config_rules_refuse_bad_values(changes, flag):
    from core import config  # the ranges are its fields' rules, checked there once

    with pytest.raises(UsageError, match=flag):
        config.check(config.Config(**changes))


def test_flags_reach_config_and_settings():
    cfg = train.config_from_args([
        "--augment", "all", "--elastic-grid", "5", "--elastic-sigma", "4", "--min-scale",
        "0.8", "--max-scale", "1.25", "--max-rotation", "30", "--brightness", "0.05",
        "--contrast", "0.1", "--saturation", "0.3", "--hue", "0.01"])
    assert cfg.augment == "flip,rotate,scale,elastic,color"
    assert augment.from_config(cfg) == augment.Settings(
        augment.GROUPS, 5, 4.0, 0.8, 1.25, 30.0, 0.05, 0.1, 0.3, 0.01)
    default = train.config_from_args([])
    assert default.augment == "flip" and augment.from_config(default) == augment.Settings()


def test_resolve_spells_out_the_groups_in_config_json(tmp_path):
    from core import config, rundir

    cfg = config.resolve(config.Config(augment="all", seed=1))
    assert cfg.augment == "flip,rotate,scale,elastic,color"
    rundir.save_config(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["augment"] == cfg.augment and saved["max_rotation"] == 180.0
    assert rundir.load_config(str(tmp_path)) == cfg


HELP = " (see train.py --help)"


# The lines these flags have printed since before the layout move (05f49a8): the flag's own
# type refuses what is not a number or below its floor, config.check names the range.
@pytest.mark.parametrize("argv,line", [
    (["--augment", "spin"], "argument --augment: must be a comma list of "
     "flip,rotate,scale,elastic,color, or all, or none; got 'spin'" + HELP),
    (["--augment", ""], "argument --augment: must be a comma list of "
     "flip,rotate,scale,elastic,color, or all, or none; got ''" + HELP),
    (["--elastic-grid", "0"], "argument --elastic-grid: must be a positive integer, got 0" + HELP),
    (["--elastic-grid", "1"], "--elastic-grid must be >= 2, got 1"),
    (["--min-scale", "2", "--max-scale", "1"],
     "--min-scale 2.0 and --max-scale 1.0 must satisfy 0 < min <= max"),
    (["--max-rotation", "-5"], "argument --max-rotation: must be >= 0, got -5" + HELP),
    (["--max-rotation", "200"], "--max-rotation must be in [0, 180] degrees, got 200.0"),
    (["--contrast", "1.2"], "--contrast must be in [0, 1], got 1.2"),
    (["--contrast", "-1"], "argument --contrast: must be >= 0, got -1" + HELP),
    (["--saturation", "2"], "--saturation must be in [0, 1], got 2.0"),
    (["--saturation", "nan"], "argument --saturation: must be >= 0, got nan" + HELP),
    (["--hue", "0.7"], "--hue must be in [0, 0.5], got 0.7"),
    (["--hue", "-0.5"], "argument --hue: must be >= 0, got -0.5" + HELP),
])
def test_bad_flags_give_one_error_line(argv, line, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])  # argparse's prog, named in its lines
    code = cli.run_main(train.main, argv + ["--run-dir", str(tmp_path / "run")])
    assert code == 2 and capsys.readouterr().err == f"error: {line}\n"
    assert not (tmp_path / "run").exists()


# Flags added after the move (issue 25): the argparse line of each.
@pytest.mark.parametrize("argv,message", [
    (["--copy-paste", "2"], "argument --copy-paste: must be in [0, 1], got 2"),
    (["--copy-paste-count", "0"], "argument --copy-paste-count: must be a positive integer"),
    (["--copy-paste-scale", "0.5"], "argument --copy-paste-scale: must be two numbers MIN,MAX"),
    (["--copy-paste-scale", "2,0.5"], "must be two numbers MIN,MAX with 0 < MIN <= MAX, e.g. "
     "0.1,2, got 2,0.5"),
    (["--copy-paste-scale", "0,1"], "argument --copy-paste-scale"),
    (["--copy-paste-scale", "nan,1"], "argument --copy-paste-scale"),
    (["--foreground-windows", "-0.5"], "argument --foreground-windows: must be in [0, 1]"),
    (["--long-side-range", "192,96"], "argument --long-side-range: must be two whole numbers "
     "MIN,MAX with 0 < MIN <= MAX, e.g. 96,192, got 192,96"),
    (["--long-side-range", "96"], "argument --long-side-range: must be two whole numbers"),
    (["--long-side-range", "96,1.5e2"], "argument --long-side-range"),
    (["--long-side-range", "96,128,160"], "argument --long-side-range"),
])
def test_bad_new_flags_give_one_error_line(argv, message, tmp_path, capsys):
    code = cli.run_main(train.main, argv + ["--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- geometry pieces


def numpy_mirrored(image, pad=300):
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"), pad


def numpy_bilinear(image, coords):
    """Bilinear sampling of the mirror-extended image (np.pad reflect)."""
    padded, pad = numpy_mirrored(image)
    r, c = coords[..., 0] + pad, coords[..., 1] + pad
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    wr, wc = (r - r0)[..., None], (c - c0)[..., None]
    img = padded.astype(np.float64)
    top = img[r0, c0] * (1 - wc) + img[r0, c0 + 1] * wc
    bottom = img[r0 + 1, c0] * (1 - wc) + img[r0 + 1, c0 + 1] * wc
    return top * (1 - wr) + bottom * wr


def numpy_nearest_mask(mask, coords):
    """Nearest pixel of the mask; IGNORE where that pixel is outside it."""
    h, w = mask.shape[:2]
    rows = np.floor(coords[..., 0] + 0.5).astype(int)
    cols = np.floor(coords[..., 1] + 0.5).astype(int)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.full(coords.shape[:-1] + mask.shape[2:], records.IGNORE, mask.dtype)
    out[inside] = mask[rows[inside], cols[inside]]
    return out, inside


def coords(settings, seed):
    rows, cols = augment.window_coords(settings, tf.constant(seed, tf.int64), INPUT)
    return np.stack([rows.numpy(), cols.numpy()], -1)


def test_mirror_matches_data_reflect_at_whole_pixels_and_folds_between():
    positions = np.array([[-13, -1, 0, 4], [5, 6, 11, 40]], np.float32)
    for n in (1, 2, 6):
        padded = np.pad(np.arange(n), 100, mode="reflect")
        got = augment.mirror(tf.constant(positions), tf.constant(n)).numpy()
        np.testing.assert_array_equal(got, padded[positions.astype(int) + 100])
    got = augment.mirror(tf.constant([-0.25, 5.5, 6.5, 10.75]), 6).numpy()
    np.testing.assert_allclose(got, [0.25, 4.5, 3.5, 0.75])


def test_samplers_work_on_dynamic_shapes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (13, 17, 3)).astype(np.uint8)
    points = rng.uniform(-30, 45, (6, 5, 2)).astype(np.float32)
    points[0, 0] = [4, 9]  # integer coordinates sample the pixel itself

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, None, 2], tf.float32)])
    def sample(image, points):
        rows, cols = points[..., 0], points[..., 1]
        return (augment.sample_bilinear(image, rows, cols),
                augment.sample_nearest(image, rows, cols, records.IGNORE))

    bilinear, nearest = (t.numpy() for t in sample(image, points))
    np.testing.assert_allclose(bilinear, numpy_bilinear(image, points), atol=1e-2)
    assert np.array_equal(bilinear[0, 0], image[4, 9].astype(np.float32))
    want, inside = numpy_nearest_mask(image, points)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(nearest, want)


@pytest.mark.parametrize("h,w,oy,ox", [(20, 16, -4, -6), (60, 45, 10, 3), (9, 70, -10, 30)])
def test_warped_windows_match_a_numpy_oracle(h, w, oy, ox):
    """Image: bilinear from the mirrored photo; mask: nearest pixel, 255 outside the photo."""
    rng = np.random.default_rng(h)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    mask = rng.integers(0, 2, (h, w, 1)).astype(np.uint8)
    mask[0, 0] = records.IGNORE
    saw_outside = 0
    for k in range(6):
        got_image, got_mask = augment.warp(tf.constant(image), tf.constant(mask),
                                           tf.constant([oy, ox]), GEOMETRY,
                                           tf.constant([k, 11], tf.int64), INPUT, OUTPUT)
        src = coords(GEOMETRY, [k, 11]) + np.array([oy, ox]) + (OUTPUT - 1) / 2
        np.testing.assert_allclose(got_image.numpy(), numpy_bilinear(image, src) / 255.0,
                                   atol=1e-4)
        want_mask, inside = numpy_nearest_mask(mask, src[BORDER:BORDER + OUTPUT,
                                                         BORDER:BORDER + OUTPUT])
        np.testing.assert_array_equal(got_mask.numpy(), want_mask)
        saw_outside += (~inside).sum()
    assert saw_outside > 0  # the cases reach past the photo


def test_elastic_displacements_are_smooth_and_bounded():
    settings = augment.Settings(("elastic",), elastic_sigma=5.0)
    identity = coords(NONE, [0, 0])
    spread = []
    for k in range(20):
        d = coords(settings, [k, 3]) - identity
        assert np.abs(d).max() <= 4 * 5.0  # clipped at 4 sigma
        assert np.abs(np.diff(d, axis=0)).max() < 2.0  # smooth: no tearing between pixels
        spread.append(d.std())
    assert 2.0 < np.mean(spread) < 8.0  # about sigma


def test_color_leaves_the_mask_and_geometry_alone(tmp_path):
    write_records(tmp_path / "c.tfrecord", [(30, 40), (50, 20)])
    plain_images, plain_masks = windows(tmp_path / "c.tfrecord", NONE)
    images, masks = windows(tmp_path / "c.tfrecord", augment.Settings(("color",)))
    assert np.array_equal(masks, plain_masks)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert not np.allclose(images, plain_images, atol=1e-3)
    # Same pixels, changed colours: pixel order (by brightness) is mostly kept.
    for got, plain in zip(images, plain_images):
        assert np.corrcoef(got.mean(-1).ravel(), plain.mean(-1).ravel())[0, 1] > 0.9


# ------------------------------------------------------------- the pipeline


def write_colour_coded(path, sizes, seed=0):
    """Records whose mask is 1 exactly where red > green (blobs of a few pixels)."""
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (h, w) in enumerate(sizes):
            coarse = rng.integers(0, 2, (h // 6 + 1, w // 6 + 1))
            mask = np.kron(coarse, np.ones((6, 6), int))[:h, :w].astype(np.uint8)
            image = np.full((h, w, 3), 128, np.uint8)
            image[..., 0] = np.where(mask == 1, 230, 25)
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", h, w, i, f"{i}.png",
                tf.io.encode_png(mask[..., None]).numpy()))


def test_image_and_mask_stay_aligned_under_every_group(tmp_path):
    write_colour_coded(tmp_path / "c.tfrecord", [(40, 52), (70, 36), (25, 25)])
    strong = augment.Settings(augment.GROUPS, elastic_sigma=6.0)
    checked = mismatched = 0
    for epoch in range(3):
        images, masks = windows(tmp_path / "c.tfrecord", strong, epoch=epoch)
        for image, mask in zip(images, masks):
            centre = image[BORDER:BORDER + OUTPUT, BORDER:BORDER + OUTPUT]
            rule = (centre[..., 0] > centre[..., 1]).astype(np.uint8)
            m = mask[..., 0]
            valid = m != records.IGNORE
            wrong = valid & (rule != m)
            # Disagreement only on a label edge: a 3x3 neighbour has the other label.
            padded = np.pad(m, 1, constant_values=records.IGNORE)
            other = np.zeros_like(valid)
            for dy in range(3):
                for dx in range(3):
                    near = padded[dy:dy + OUTPUT, dx:dx + OUTPUT]
                    other |= (near != records.IGNORE) & (near != m)
            assert not np.any(wrong & ~other)
            checked += valid.sum()
            mismatched += wrong.sum()
    assert checked > 3000 and mismatched < 0.05 * checked


def test_pixels_from_outside_the_image_are_ignored(tmp_path):
    # A 12 x 12 photo in a 28 px output window (which always covers it), zoomed out.
    write_colour_coded(tmp_path / "o.tfrecord", [(12, 12)])
    small = augment.Settings(("scale", "rotate"), min_scale=0.5, max_scale=0.6)
    for epoch in range(4):
        images, masks = windows(tmp_path / "o.tfrecord", small, epoch=epoch)
        m = masks[0, ..., 0]
        # At half size the 12 px photo covers at most ~6 x 6 (rotated: ~9 x 9) output px.
        assert 16 <= (m != records.IGNORE).sum() <= 100
        assert (m == records.IGNORE).sum() >= OUTPUT * OUTPUT - 100


def test_same_seed_epoch_record_repeat_and_epochs_differ(tmp_path):
    write_records(tmp_path / "r.tfrecord", [(30, 40)])  # one record: no reordering
    first = windows(tmp_path / "r.tfrecord", ALL, seed=5, epoch=2)
    again = windows(tmp_path / "r.tfrecord", ALL, seed=5, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for seed, epoch in [(5, 3), (6, 2)]:
        other = windows(tmp_path / "r.tfrecord", ALL, seed=seed, epoch=epoch)
        assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("settings", [NONE, augment.Settings(), ALL])
def test_static_shapes_are_unchanged(settings, tmp_path):
    write_records(tmp_path / "s.tfrecord", [(30, 40)])
    ds = pipeline.make_dataset(str(tmp_path / "s.tfrecord"), 2, True, INPUT, DEPTH, seed=1,
                           augmentation=settings)
    image_spec, mask_spec = ds.element_spec
    assert image_spec.shape.as_list() == [None, INPUT, INPUT, 3]
    assert image_spec.dtype == tf.float32
    assert mask_spec.shape.as_list() == [None, OUTPUT, OUTPUT, 1]
    assert mask_spec.dtype == tf.uint8


def test_none_gives_plain_unflipped_windows_and_flip_only_mirrors_them(tmp_path):
    sizes = [(20, 50), (40, 31), (33, 33)]
    write_records(tmp_path / "n.tfrecord", sizes)
    flips = set()
    for epoch in range(4):
        plain = windows(tmp_path / "n.tfrecord", NONE, epoch=epoch)
        flipped = windows(tmp_path / "n.tfrecord", augment.Settings(), epoch=epoch)
        for img, msk, f_img, f_msk in zip(*plain, *flipped):
            img = np.rint(img * 255).astype(np.uint8)
            i = int(img[0, 0, 2])
            hits = find_window(coord_image(*sizes[i], i), checker_mask(*sizes[i]), img, msk)
            assert len(hits) == 1 and hits[0][2] is False
            # "flip" cuts the same window (same offset draw), mirrored or not.
            f_img = np.rint(f_img * 255).astype(np.uint8)
            mirrored = np.array_equal(f_img, img[:, ::-1]) and np.array_equal(f_msk,
                                                                               msk[:, ::-1])
            assert mirrored or (np.array_equal(f_img, img) and np.array_equal(f_msk, msk))
            flips.add(mirrored)
    assert flips == {False, True}


@pytest.mark.parametrize("identity", [
    augment.Settings(("rotate",), max_rotation=0.0),
    augment.Settings(("scale",), min_scale=1.0, max_scale=1.0),
    augment.Settings(("elastic",), elastic_sigma=0.0)])
def test_identity_warps_resample_the_plain_window_exactly(identity, tmp_path):
    write_records(tmp_path / "i.tfrecord", [(20, 50), (40, 31), (9, 60)])
    plain = windows(tmp_path / "i.tfrecord", NONE)
    warped = windows(tmp_path / "i.tfrecord", identity)
    np.testing.assert_array_equal(warped[1], plain[1])
    np.testing.assert_allclose(warped[0], plain[0], rtol=0, atol=1e-6)


def test_evaluation_is_never_augmented(tmp_path):
    write_records(tmp_path / "e.tfrecord", [(30, 40), (50, 20)])
    plain = windows(tmp_path / "e.tfrecord", None, training=False)
    with_all = windows(tmp_path / "e.tfrecord", ALL, training=False)
    assert all(np.array_equal(a, b) for a, b in zip(plain, with_all))


# ------------------------------------------------------------- copy-paste


def class_coded(h, w, classes, rng, blob=4):
    """A photo whose red channel spells its mask's class (25 + 100 * class; 0 for ignore)
    in blob x blob squares of the given classes, and green a random texture."""
    coarse = rng.choice(np.array(classes, np.uint8), (h // blob + 1, w // blob + 1))
    mask = np.kron(coarse, np.ones((blob, blob), np.uint8))[:h, :w, None]
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.where(mask[..., 0] == records.IGNORE, 0, 25 + 100 * mask[..., 0])
    image[..., 1] = rng.integers(0, 256, (h, w))
    return image, mask


def write_class_coded(path, count=12, seed=0, blob=4, only=None):
    """Photos of background, class 1 and ignore, and of background and class 2 (or all
    of background and class `only`); some smaller than the 28 px output window, so their
    windows have ignored margins."""
    rng = np.random.default_rng(seed)
    photos = []
    for i in range(count):
        h, w = [(20, 24), (36, 50), (50, 30)][i % 3]
        classes = [0, only] if only else [0, 1, records.IGNORE] if i % 2 else [0, 2]
        photos.append(class_coded(h, w, classes, rng, blob))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (image, mask) in enumerate(photos):
            writer.write(records.make_example(
                tf.io.encode_png(image).numpy(), "png", *mask.shape[:2], i, f"{i}.png",
                tf.io.encode_png(mask).numpy()))


def pasting(p=1.0, count=1, scale=(1.0, 1.0), groups=()):
    return augment.Settings(groups, copy_paste=p, copy_paste_count=count,
                            copy_paste_scale=scale)


def red_class(image):
    """The class the red channel of window pixels spells (-1: none)."""
    red = np.rint(image[..., 0] * 255).astype(int)
    return np.where((red - 25) % 100 == 0, (red - 25) // 100, -1)


def test_pasted_pixels_keep_image_and_mask_aligned_exactly(tmp_path):
    """At zoom 1 a paste is a whole-pixel shift: every labelled pixel's colour spells its
    class, pasted or not; pasted pixels take a class, and they cover other classes,
    background and ignore alike."""
    write_class_coded(tmp_path / "p.tfrecord")
    transitions = set()
    for epoch in range(3):
        before_images, before = windows(tmp_path / "p.tfrecord", pasting(0.0), epoch=epoch)
        images, masks = windows(tmp_path / "p.tfrecord", pasting(1.0, 2), epoch=epoch)
        centre = images[:, BORDER:BORDER + OUTPUT, BORDER:BORDER + OUTPUT]
        labelled = masks[..., 0] != records.IGNORE
        np.testing.assert_array_equal(red_class(centre)[labelled], masks[..., 0][labelled])
        repainted = np.any(images != before_images, -1)[:, BORDER:BORDER + OUTPUT,
                                                        BORDER:BORDER + OUTPUT]
        changed = (masks != before)[..., 0]
        assert np.all(augment.is_foreground(masks[..., 0][changed | repainted]))
        assert repainted.mean() > 0.1
        transitions |= set(zip(before[..., 0][changed].tolist(), masks[..., 0][changed].tolist()))
    assert {(0, 1), (0, 2), (1, 2), (2, 1), (records.IGNORE, 1), (records.IGNORE, 2)} \
        <= transitions


def test_zoomed_and_flipped_pastes_stay_aligned_but_for_blended_edges(tmp_path):
    """Zoomed sources are resized (area / bilinear image, nearest mask), so a pasted
    pixel on a source label edge may blend colours: every pasted pixel takes a class, and
    of 10 px squares 90% of them still spell it exactly."""
    write_class_coded(tmp_path / "z.tfrecord", blob=10)
    pasted = spelled = 0
    for epoch in range(3):
        plain_images, plain = windows(tmp_path / "z.tfrecord", pasting(0.0, groups=("flip",)),
                                      epoch=epoch)
        images, masks = windows(tmp_path / "z.tfrecord", pasting(1.0, 2, (0.5, 2.0), ("flip",)),
                                epoch=epoch)
        repainted = np.any(images != plain_images, -1)[:, BORDER:BORDER + OUTPUT,
                                                       BORDER:BORDER + OUTPUT]
        inner = repainted | (masks != plain)[..., 0]  # pasted (or the same value pasted)
        assert np.all(augment.is_foreground(masks[..., 0][inner]))
        centre = images[:, BORDER:BORDER + OUTPUT, BORDER:BORDER + OUTPUT]
        pasted += inner.sum()
        spelled += (red_class(centre)[inner] == masks[..., 0][inner]).sum()
    assert pasted > 2000 and spelled >= 0.9 * pasted, (pasted, spelled)


def test_copy_paste_0_is_the_plain_pipeline_and_a_lone_photo_pastes_nothing(tmp_path):
    write_class_coded(tmp_path / "p.tfrecord")
    plain = windows(tmp_path / "p.tfrecord", ALL)
    off = windows(tmp_path / "p.tfrecord", dataclasses.replace(ALL, copy_paste_count=3,
                                                               copy_paste_scale=(0.2, 0.3)))
    assert all(np.array_equal(a, b) for a, b in zip(plain, off))
    # The only source of a one-photo set is the photo itself: never pasted onto itself.
    write_class_coded(tmp_path / "one.tfrecord", count=1)
    alone = windows(tmp_path / "one.tfrecord", pasting(1.0, 3))
    want = windows(tmp_path / "one.tfrecord", pasting(0.0))
    assert all(np.array_equal(a, b) for a, b in zip(alone, want))


def test_copy_paste_probability_is_the_share_of_pasted_windows(tmp_path):
    """--copy-paste 0.5: of 240 windows (every paste reaches the output window and
    changes it) 50% +- 10 points are pasted onto; the same seed pastes the same."""
    write_class_coded(tmp_path / "p.tfrecord", count=80)
    shares = []
    for epoch in range(3):
        _, before = windows(tmp_path / "p.tfrecord", pasting(0.0), epoch=epoch)
        _, after = windows(tmp_path / "p.tfrecord", pasting(0.5), epoch=epoch)
        shares.append(np.any(after != before, axis=(1, 2, 3)))
    assert abs(np.concatenate(shares).mean() - 0.5) <= 0.1
    first = windows(tmp_path / "p.tfrecord", pasting(0.5, 2, (0.3, 1.5), ("flip",)), seed=8)
    again = windows(tmp_path / "p.tfrecord", pasting(0.5, 2, (0.3, 1.5), ("flip",)), seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = windows(tmp_path / "p.tfrecord", pasting(0.5, 2, (0.3, 1.5), ("flip",)), seed=9)
    assert not np.array_equal(first[1], other[1])


def test_copy_paste_resumes_mid_epoch_and_mixes_sets(tmp_path):
    """A resumed epoch (skip) pastes the same sources as the uninterrupted one; with two
    record sets the sources come from both."""
    write_class_coded(tmp_path / "a.tfrecord", count=6)
    settings = pasting(1.0, 2, (0.5, 1.5), ("flip", "rotate"))

    def batches(pattern, skip=0):
        ds = pipeline.make_dataset(pattern, 2, True, INPUT, DEPTH, seed=3, epoch=1,
                                   augmentation=settings, skip=skip)
        return [(img.numpy(), msk.numpy()) for img, msk in ds]

    whole = batches(str(tmp_path / "a.tfrecord"))
    rest = batches(str(tmp_path / "a.tfrecord"), skip=4)
    assert len(whole) == 3 and len(rest) == 1
    np.testing.assert_array_equal(rest[0][0], whole[2][0])
    np.testing.assert_array_equal(rest[0][1], whole[2][1])
    write_class_coded(tmp_path / "b.tfrecord", count=4, seed=1, only=3)
    sets = tuple(pipeline.RecordSet((str(tmp_path / f"{n}.tfrecord"),), (c,), float(c))
                 for n, c in (("a", 6), ("b", 4)))
    masks = np.concatenate([msk for _, msk in batches(sets)])
    assert len(masks) == 10
    # Class 3 is only in set b, classes 1 and 2 only in a: windows holding both were
    # pasted from the other set.
    both = [np.isin(3, m) and np.isin([1, 2], m).any() for m in masks]
    assert sum(both) >= 2
