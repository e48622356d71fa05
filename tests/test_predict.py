import dataclasses
import json
import os
import resource
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import predict
import unet
from core import config, rundir, summaries, tiling
from datasets import pipeline, records
from utils import cli

v1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def make_run(run_dir, depth=2, base_filters=4, input_size=60, seed=0, step=7, long_side=0,
             classes=("cat",)):
    """A run dir like train.py's: config.json and a checkpoint of a random tiny U-Net.

    Batch-norm statistics are random too, so inference-mode BN is really exercised,
    and global_step plus Adam slots are saved as training does. Two classes or more make
    a K >= 2 run (num_outputs K + 1).
    """
    num_outputs = 1 if len(classes) == 1 else len(classes) + 1
    cfg = config.Config(input_size=input_size, depth=depth, base_filters=base_filters,
                        long_side=long_side, classes=tuple(classes), num_outputs=num_outputs)
    rundir.save_config(cfg, str(run_dir))
    rng = np.random.default_rng(seed)
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(seed)
        x = v1.placeholder(tf.float32, [1, input_size, input_size, 3])
        logits = unet.unet(x, False, depth=depth, base_filters=base_filters,
                           num_outputs=num_outputs)
        v1.train.get_or_create_global_step()
        for var in v1.global_variables("unet"):  # Adam's slots, named as train.py's
            for slot in ("Adam", "Adam_1"):
                v1.get_variable(f"{var.op.name}/{slot}", var.shape,
                                initializer=v1.zeros_initializer())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())  # the paper's He-style weights
            variables = {var.op.name: var for var in v1.global_variables("unet")}
            for name, var in variables.items():
                shape = var.shape.as_list()
                if name.endswith("moving_variance"):
                    value = rng.uniform(0.5, 2.0, shape)
                elif name.endswith(("gamma", "moving_mean")):
                    value = rng.uniform(0.5, 1.5, shape)
                elif name.endswith(("beta", "biases")):
                    value = rng.normal(0.0, 0.1, shape)
                else:
                    continue
                var.load(np.asarray(value, np.float32), sess)
            # Spread the logits and centre them on random pixels, so that masks are
            # neither empty nor full and move with the threshold.
            weights = variables["unet/output/weights"]
            weights.load(sess.run(weights) * 20, sess)
            pixels = rng.uniform(0, 1, [1, input_size, input_size, 3])
            out = sess.run(logits, {x: pixels})
            # K >= 2: each class's logit centred on its own median, so every class wins
            median = np.median(out) if num_outputs == 1 else np.median(out, axis=(0, 1, 2))
            bias = variables["unet/output/biases"]
            bias.load(sess.run(bias) - np.float32(median), sess)
            v1.train.Saver().save(sess, os.path.join(str(run_dir), rundir.CKPT_PREFIX),
                                  global_step=step)
    return cfg


def tile_count(size, lay):
    """tiling.tile_count, the op tiled_logits runs, evaluated for a Python int."""
    with tf.Graph().as_default(), v1.Session() as sess:
        return int(sess.run(tiling.tile_count(tf.constant(size), lay)))


def reference_probabilities(run_dir, image):
    """Sigmoid of ONE forward pass over the whole mirror-padded image (np.pad REFLECT);
    for a K >= 2 run the softmax [h, w, C].

    The canvas is the image extended (by mirroring) to the size the tile grid
    covers, so the pass sees exactly what the tiles see.
    """
    cfg = rundir.load_config(str(run_dir))
    lay = tiling.layout(cfg.input_size, cfg.depth)
    h, w = image.shape[:2]
    ch = lay.output + (tile_count(h, lay) - 1) * lay.stride
    cw = lay.output + (tile_count(w, lay) - 1) * lay.stride
    b = lay.border
    padded = np.pad(image, ((b, ch - h + b), (b, cw - w + b), (0, 0)), mode="reflect")
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, None, None, 3])
        logits = unet.unet(x, False, depth=cfg.depth, base_filters=cfg.base_filters,
                           num_outputs=cfg.num_outputs)
        prob = tf.sigmoid(logits) if cfg.num_outputs == 1 else tf.nn.softmax(logits)
        with v1.Session() as sess:
            rundir.restore(sess, rundir.latest(str(run_dir)), cfg)
            out = sess.run(prob, {x: padded[None].astype(np.float32) / 255.0})
    return out[0, :h, :w, 0] if cfg.num_outputs == 1 else out[0, :h, :w]


def scaled_reference_probabilities(run_dir, image, long_side):
    """reference_probabilities at the run's scale, resized back to the image's size.

    cv2's float bilinear resize has the same half-pixel geometry as TensorFlow's.
    """
    scaled = pipeline.resize_image(tf.constant(image), long_side).numpy()
    prob = reference_probabilities(run_dir, scaled)
    return cv2.resize(prob, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def write_image(path, rgb):
    data = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), data)


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    make_run(run_dir)
    return run_dir


# ---------------------------------------------------------------- geometry


def test_layout_of_paper_network_keeps_tiles_on_the_pooling_grid():
    # 388 is 4 mod 16: a 388 px stride would shift every other tile off the grid.
    assert tiling.layout(572, 4) == (572, 388, 92, 384)
    assert tiling.layout(60, 2) == (60, 20, 20, 20)
    assert tiling.layout(132, 3) == (132, 44, 44, 40)
    lay = tiling.layout(572, 4)
    assert [tile_count(s, lay) for s in (1, 388, 389, 772, 773)] == [1, 1, 2, 2, 3]


@pytest.mark.parametrize("size,depth,match", [(571, 4, "not a valid"), (172, 4, "not a valid"),
                                              (188, 4, "pooling grid")])
def test_layout_rejects_untileable_networks(size, depth, match):
    with pytest.raises(cli.UserError, match=match):
        tiling.layout(size, depth)


@pytest.mark.parametrize("depth,input_size", [(2, 60), (3, 132)])
def test_stitched_tiles_equal_one_pass_over_the_mirror_padded_image(tmp_path, depth,
                                                                    input_size):
    make_run(tmp_path, depth=depth, input_size=input_size, seed=depth)
    cfg = rundir.load_config(str(tmp_path))
    lay = tiling.layout(input_size, depth)
    rng = np.random.default_rng(1)
    # A valid whole-image size (canvas == image), odd sizes, a sliver and one pixel.
    valid = 2 * lay.output if depth == 2 else lay.output + 2 * lay.stride
    sizes = [(valid, valid + lay.stride), (37, 50), (83, 3), (1, 1)]
    g = tf.Graph()
    with g.as_default():
        image = v1.placeholder(tf.uint8, [None, None, 3])
        prob = tiling.probabilities(image, cfg, batch_size=3)  # 3 divides no tile count here
        with v1.Session() as sess:
            rundir.restore(sess, rundir.latest(str(tmp_path)), cfg)
            for h, w in sizes:
                pixels = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
                stitched = sess.run(prob, {image: pixels})
                expected = reference_probabilities(tmp_path, pixels)
                assert stitched.shape == (h, w)
                np.testing.assert_allclose(stitched, expected, atol=2e-5, rtol=0)
                # Not trivially constant: the random network does look at the pixels.
                assert stitched.std() > 1e-3 or h * w == 1


# ----------------------------------------------------------------- helpers


def test_overlay_tints_foreground_and_outlines_it():
    image = np.full([12, 12, 3], 100, np.uint8)
    mask = np.zeros([12, 12], bool)
    mask[3:9, 3:9] = True
    out = predict.overlay(image, mask)
    np.testing.assert_array_equal(out[5, 5], [170, 55, 55])  # 0.55 * 100 + 0.45 * (255, 0, 0)
    np.testing.assert_array_equal(out[3, 5], predict.OUTLINE)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    truth = np.zeros_like(mask)
    truth[1:11, 1:11] = True
    np.testing.assert_array_equal(predict.overlay(image, mask, truth)[1, 5],
                                  predict.TRUTH_OUTLINE)


def test_default_threshold_is_the_adopted_one(tmp_path):
    rundir.save_config(config.Config(val_records="data/cat-val2017-*"), str(tmp_path))
    assert rundir.default_threshold(str(tmp_path)) == (0.5, "default")
    adopted, report = tmp_path / rundir.THRESHOLD_JSON, tmp_path / rundir.EVAL_JSON
    # A run dir from before threshold.json: eval.json counts if tuned on the run's val_records.
    report.write_text(json.dumps({"best_threshold": 0.25, "records": "data/cat-val2017-*"}))
    assert rundir.default_threshold(str(tmp_path)) == (0.25, str(report))
    for other in ({"best_threshold": 0.25, "records": "photos/real-*"},
                  {"best_threshold": 0.25, "records": "data/cat-val2017-*",
                   "adopted_threshold": False}):
        report.write_text(json.dumps(other))
        assert rundir.default_threshold(str(tmp_path)) == (0.5, "default")
    adopted.write_text(json.dumps({"threshold": 0.35}))
    assert rundir.default_threshold(str(tmp_path)) == (0.35, str(adopted))
    for path, bad in [(adopted, '{"threshold": 1.5}'), (adopted, "{not json"),
                      (adopted, '["a"]'), (report, '{"best_threshold": "x", "records": '
                                                   '"data/cat-val2017-*"}')]:
        if path == report:
            os.remove(adopted)
        path.write_text(bad)
        with pytest.raises(cli.UserError, match=f"{path.name} (is not a valid|has)"):
            rundir.default_threshold(str(tmp_path))


# ------------------------------------------------------------ predict()


def test_predict_writes_exact_size_masks_overlays_and_probabilities(run, tmp_path):
    rng = np.random.default_rng(2)
    photos = tmp_path / "photos"
    photos.mkdir()
    colour = rng.integers(0, 256, [45, 70, 3], dtype=np.uint8)
    gray = rng.integers(0, 256, [23, 31], dtype=np.uint8)
    write_image(photos / "colour.png", colour)
    write_image(photos / "gray.png", gray)
    write_image(photos / "b.jpg", colour[:30, :41])
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = predict.predict(str(run), [str(photos)], str(out), threshold=0.5,
                             save_probabilities=True, progress=False)
    assert result["failed"] == []
    assert sorted(os.listdir(out)) == sorted(
        f"{s}{k}" for s in ("colour", "gray", "b") for k in predict.OUTPUT_SUFFIXES)

    expected = reference_probabilities(run, colour)
    mask = cv2.imread(str(out / "colour_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (45, 70) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255} and 0 < mask.mean() < 255
    np.testing.assert_array_equal(mask == 255, expected >= 0.5)
    prob = cv2.imread(str(out / "colour_prob.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(prob.astype(int) - np.round(expected * 255)).max() <= 1
    np.testing.assert_array_equal(read_rgb(out / "colour_overlay.png"),
                                  predict.overlay(colour, expected >= 0.5))
    # Grayscale is expanded to RGB, as records.decode does for training.
    gray_mask = cv2.imread(str(out / "gray_mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(
        gray_mask == 255, reference_probabilities(run, np.repeat(gray[..., None], 3, 2)) >= 0.5)
    assert cv2.imread(str(out / "b_mask.png"), cv2.IMREAD_UNCHANGED).shape == (30, 41)
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_long_side_run_predicts_at_its_scale_and_writes_full_size_masks(tmp_path):
    run = tmp_path / "run"
    make_run(run, long_side=32)
    rng = np.random.default_rng(4)
    # 45x70 shrinks to 21x32 (area), 13x19 grows to 22x32 (bilinear).
    images = {"big": rng.integers(0, 256, [45, 70, 3], dtype=np.uint8),
              "small": rng.integers(0, 256, [13, 19, 3], dtype=np.uint8)}
    for name, image in images.items():
        write_image(tmp_path / f"{name}.png", image)
    out = tmp_path / "out"
    result = predict.predict(str(run), [str(tmp_path / f"{n}.png") for n in images], str(out),
                             threshold=0.5, save_probabilities=True, progress=False)
    assert result["failed"] == []
    with predict.Predictor(str(run)) as predictor:
        for name, image in images.items():
            expected = scaled_reference_probabilities(run, image, 32)
            _, prob = predictor((tmp_path / f"{name}.png").read_bytes())
            assert prob.shape == image.shape[:2]
            np.testing.assert_allclose(prob, expected, atol=2e-5, rtol=0)
            mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
            assert mask.shape == image.shape[:2] and 0 < mask.mean() < 255
            decided = np.abs(expected - 0.5) > 1e-4
            np.testing.assert_array_equal((mask == 255)[decided], (expected >= 0.5)[decided])
    # Not the same as predicting the stored pixels: the scale really changed the input.
    assert np.abs(expected - reference_probabilities(run, image)).max() > 0.05


def test_old_config_without_long_side_loads_as_stored(tmp_path):
    raw = dataclasses.asdict(config.Config(input_size=60, depth=2, base_filters=4))
    del raw["long_side"]
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps(raw))
    assert rundir.load_config(str(tmp_path)).long_side == 0


def test_threshold_default_is_the_adopted_one_and_bounds_are_inclusive(run, tmp_path):
    image = tmp_path / "x.png"
    write_image(image, np.random.default_rng(3).integers(0, 256, [20, 20, 3], dtype=np.uint8))
    (run / rundir.THRESHOLD_JSON).write_text(json.dumps({"threshold": 0.0}))
    try:
        result = predict.predict(str(run), [str(image)], str(tmp_path / "a"), progress=False)
    finally:
        os.remove(run / rundir.THRESHOLD_JSON)
    assert result["threshold"] == 0.0
    assert result["threshold_source"].endswith(rundir.THRESHOLD_JSON)
    assert (cv2.imread(str(tmp_path / "a" / "x_mask.png"), 0) == 255).all()
    predict.predict(str(run), [str(image)], str(tmp_path / "b"), threshold=1.0, progress=False)
    assert (cv2.imread(str(tmp_path / "b" / "x_mask.png"), 0) == 0).all()


def test_bad_images_are_reported_and_the_others_still_predicted(run, tmp_path, capsys):
    good = tmp_path / "good.png"
    write_image(good, np.zeros([9, 9, 3], np.uint8))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    png = cv2.imencode(".png", np.zeros([40, 40, 3], np.uint8))[1].tobytes()
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    sub = tmp_path / "sub"
    sub.mkdir()
    write_image(sub / "good.png", np.zeros([5, 5, 3], np.uint8))  # same stem as ../good.png
    empty = tmp_path / "empty"
    empty.mkdir()
    inputs = [str(good), str(tmp_path / "corrupt.jpg"), str(tmp_path / "missing.png"),
              str(tmp_path / "truncated.png"), str(empty), str(sub)]
    out = tmp_path / "out"
    code = cli.run_main(predict.main, ["--run", str(run), "--out", str(out), "--no-progress",
                                       *inputs])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(os.listdir(out)) == ["good_mask.png", "good_overlay.png"]
    assert "corrupt.jpg: not a readable JPEG/PNG image" in err
    assert "truncated.png: not a readable JPEG/PNG image" in err
    assert "5 of 6 inputs failed" in err
    for name in ("missing.png", "empty", str(sub / "good.png")):
        assert name in err.splitlines()[-1]
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,code,message", [
    (["--threshold", "1.5"], 2, "must be in [0, 1], got 1.5"),
    (["--threshold", "nan"], 2, "must be in [0, 1]"),
    (["--batch-size", "0"], 2, "must be a positive integer"),
    (["--checkpoint", "nowhere/model.ckpt-3"], 1, "checkpoint nowhere/model.ckpt-3 not found"),
])
def test_bad_flags_give_one_error_line(run, tmp_path, capsys, argv, code, message):
    image = tmp_path / "x.png"
    write_image(image, np.zeros([4, 4, 3], np.uint8))
    assert cli.run_main(predict.main, ["--run", str(run), str(image), "--out",
                                       str(tmp_path / "o"), *argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_run_problems_are_one_clear_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    write_image(image, np.zeros([4, 4, 3], np.uint8))

    def error(run_dir):
        assert cli.run_main(predict.main, ["--run", str(run_dir), str(image), "--out",
                                           str(tmp_path / "o")]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "does not exist" in error(tmp_path / "nope")
    empty_run = tmp_path / "empty_run"
    rundir.save_config(config.Config(input_size=60, depth=2, base_filters=4), str(empty_run))
    assert "no checkpoint in" in error(empty_run)
    # A checkpoint trained with 8 filters under a config that says 4.
    mismatched = tmp_path / "mismatch"
    make_run(mismatched, base_filters=8)
    rundir.save_config(config.Config(input_size=60, depth=2, base_filters=4), str(mismatched))
    assert "does not match config.json" in error(mismatched)
    assert "[3, 3, 3, 8] there but [3, 3, 3, 4] here" in error(mismatched)
    deeper = tmp_path / "deeper"
    make_run(deeper, depth=2)
    rundir.save_config(config.Config(input_size=44, depth=1, base_filters=4), str(deeper))
    assert "does not match config.json" in error(deeper)
    hand_edited = tmp_path / "hand_edited"
    make_run(hand_edited)
    for bad in (-3, "320", 1.5):
        rundir.save_config(config.Config(input_size=60, depth=2, base_filters=4,
                                         long_side=bad), str(hand_edited))
        assert f"config has long_side={bad!r}, not a whole number >= 0" in error(hand_edited)
    assert not os.path.exists(tmp_path / "o")


def test_command_line_prints_no_traceback(run, tmp_path):
    write_image(tmp_path / "ok.png", np.zeros([6, 6, 3], np.uint8))
    (tmp_path / "bad.png").write_bytes(b"nope")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "predict.py"), "--run", str(run), "--out",
         str(tmp_path / "o"), str(tmp_path / "ok.png"), str(tmp_path / "bad.png")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=HANG_GUARD)
    assert proc.returncode == 1
    assert "wrote 1 masks" in proc.stdout
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "bad.png" in errors[0] and "1 of 2 inputs failed" in errors[1]
    assert os.path.exists(tmp_path / "o" / "ok_mask.png")


def huge_png_header(path, width=30000, height=30000):
    """A valid small PNG whose IHDR claims width x height: decoding it would take 2.7 GB."""
    ok, data = cv2.imencode(".png", np.zeros([4, 4, 3], np.uint8))
    data = bytearray(data.tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_an_image_over_the_pixel_cap_is_one_error_line_and_the_others_still_run(tmp_path,
                                                                                capsys):
    run = tmp_path / "run"
    make_run(run)
    write_image(tmp_path / "ok.png", np.zeros([30, 40, 3], np.uint8))
    big = huge_png_header(tmp_path / "big.png")
    out = tmp_path / "out"
    argv = ["--run", str(run), str(big), str(tmp_path / "ok.png"), "--out", str(out),
            "--no-progress"]
    assert cli.run_main(predict.main, argv) == 1
    err = capsys.readouterr().err
    assert (f"error: {big}: image is over the {records.DEFAULT_MAX_PIXELS:,}-pixel cap: "
            "shrink it, or raise the cap with --max-pixels") in err
    assert "Traceback" not in err
    assert sorted(os.listdir(out)) == ["ok_mask.png", "ok_overlay.png"]
    # Refused from the header: decoding 30000 x 30000 RGB would have taken 2.7 GB.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2_500_000  # KB
    # The cap is the user's to set: 1000 pixels refuses the 30 x 40 one too.
    argv = ["--run", str(run), str(tmp_path / "ok.png"), "--out", str(tmp_path / "o2"),
            "--no-progress", "--max-pixels", "1000"]
    assert cli.run_main(predict.main, argv) == 1
    assert "over the 1,000-pixel cap" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # nothing written: no empty --out either


# ------------------------------------------------------------ several classes (K >= 2)


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A K = 2 run (background, cat, dog) of random weights."""
    run_dir = tmp_path_factory.mktemp("run3")
    make_run(run_dir, classes=("cat", "dog"), seed=3)
    return run_dir


def decided(probs, margin=1e-4):
    """Pixels whose most probable class beats the second by more than float noise."""
    top = np.sort(probs, axis=-1)
    return top[..., -1] - top[..., -2] > margin


def test_k_classes_write_class_map_overlay_class_masks_and_probabilities(run3, tmp_path):
    colour = np.random.default_rng(4).integers(0, 256, [45, 70, 3], dtype=np.uint8)
    write_image(tmp_path / "colour.png", colour)
    out = tmp_path / "out"
    result = predict.predict(str(run3), [str(tmp_path / "colour.png")], str(out),
                             save_probabilities=True, progress=False, classes=("dog",))
    assert result["threshold"] is None and result["threshold_source"] == "argmax"
    assert result["written"] == [str(out / "colour_classes.png")] and not result["failed"]
    assert sorted(os.listdir(out)) == [
        "colour_classes.png", "colour_dog.png", "colour_overlay.png",
        "colour_prob_background.png", "colour_prob_cat.png", "colour_prob_dog.png"]

    expected = reference_probabilities(run3, colour)  # [45, 70, 3] softmax of one pass
    classes = cv2.imread(str(out / "colour_classes.png"), cv2.IMREAD_UNCHANGED)
    assert classes.shape == (45, 70) and classes.dtype == np.uint8
    sure = decided(expected)
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(classes[sure], expected.argmax(-1)[sure])
    assert set(np.unique(classes)) == {0, 1, 2}  # every class somewhere
    dog = cv2.imread(str(out / "colour_dog.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(dog, (classes == 2).astype(np.uint8) * 255)
    # 16-bit probability maps, probability x 65535, summing to 1 at every pixel.
    probs = np.stack([cv2.imread(str(out / f"colour_prob_{n}.png"), cv2.IMREAD_UNCHANGED)
                      for n in ("background", "cat", "dog")], -1)
    assert probs.dtype == np.uint16
    assert np.abs(probs / predict.PROB_SCALE - expected).max() < 1e-4
    assert np.abs(probs.astype(int).sum(-1) - predict.PROB_SCALE).max() <= 2

    overlay = read_rgb(out / "colour_overlay.png")
    legend_rows = (overlay.shape[0] - 45) // predict.LEGEND_ROW
    assert overlay.shape == (45 + legend_rows * predict.LEGEND_ROW, 70, 3) and legend_rows >= 1
    background = classes == 0
    np.testing.assert_array_equal(overlay[:45][background], colour[background])
    palette = summaries.palette()
    for c in (1, 2):  # inside a class region (off its outline): tinted by its colour
        inner = cv2.erode((classes == c).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        tinted = np.round(0.55 * colour[inner] + 0.45 * palette[c].astype(np.float32))
        np.testing.assert_array_equal(overlay[:45][inner], tinted.astype(np.uint8))
        # ... and its swatch in the legend.
        assert (overlay[45:] == palette[c]).all(-1).sum() >= 50
    np.testing.assert_array_equal(overlay, predict.class_overlay(colour, classes,
                                                                 ("background", "cat", "dog")))


def test_legend_wraps_to_the_image_width():
    names = ("background", "cat", "dog", "person", "traffic light")
    wide, narrow = predict.legend(names, 400), predict.legend(names, 60)
    assert wide.shape == (predict.LEGEND_ROW, 400, 3)
    assert narrow.shape == (4 * predict.LEGEND_ROW, 60, 3)  # one class a row
    assert predict.file_part("traffic light") == "traffic_light"


@pytest.mark.parametrize("argv,message", [
    (["--class", "horse"], "--class 'horse' is not one of the run's classes (cat, dog): pass "
                           "one of them"),
    (["--class", "cat", "--class", "background"], "--class 'background' is not one of the "
                                                  "run's classes (cat, dog)"),
    (["--threshold", "0.3"], "--threshold is for runs of one class"),
])
def test_k_class_bad_flags_are_one_error_line_and_nothing_written(run3, tmp_path, capsys, argv,
                                                                  message):
    write_image(tmp_path / "x.png", np.zeros([4, 4, 3], np.uint8))
    assert cli.run_main(predict.main, ["--run", str(run3), str(tmp_path / "x.png"), "--out",
                                       str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not os.path.exists(tmp_path / "o")


def test_class_flag_on_a_one_class_run_is_one_error_line(run, tmp_path, capsys):
    write_image(tmp_path / "x.png", np.zeros([4, 4, 3], np.uint8))
    assert cli.run_main(predict.main, ["--run", str(run), str(tmp_path / "x.png"), "--out",
                                       str(tmp_path / "o"), "--class", "cat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--class needs a run of several classes" in err[0]
    assert "its mask is <stem>_mask.png" in err[0] and not os.path.exists(tmp_path / "o")


def test_k_class_outputs_in_the_input_directory_are_not_predicted_again(run3, tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros([8, 8, 3], np.uint8))
    argv = ["--run", str(run3), str(tmp_path), "--out", str(tmp_path), "--class", "cat",
            "--probabilities", "--no-progress"]
    for _ in range(2):
        assert cli.run_main(predict.main, argv) == 0
        assert "wrote 1 class maps" in capsys.readouterr().out
