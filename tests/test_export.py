import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from test_predict import HANG_GUARD, huge_png_header, make_run, write_image

import export
import predict
from core import rundir
from utils import cli

# Runs in a fresh interpreter: nothing from this process (graph, variables,
# imported project modules) can leak into the loaded model.
LOAD = """
import sys
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
spec = serve.structured_input_signature[1]["image"]
outputs = serve.structured_outputs
assert spec.dtype == tf.string and spec.shape.rank == 0, spec
assert outputs["probabilities"].dtype == tf.float32, outputs
assert outputs["mask"].dtype == tf.uint8, outputs
result = {}
for i, path in enumerate(sys.argv[3:]):
    out = serve(image=tf.constant(open(path, "rb").read()))
    result[f"prob{i}"] = out["probabilities"].numpy()
    result[f"mask{i}"] = out["mask"].numpy()
np.savez(sys.argv[2], **result)
"""


def export_run(tmp, long_side=0):
    run = tmp / "run"
    make_run(run, long_side=long_side)
    (run / rundir.THRESHOLD_JSON).write_text(json.dumps({"threshold": 0.45}))
    rng = np.random.default_rng(5)
    # Neither size is a multiple of the 20 px output tile; one is grayscale JPEG. With
    # long_side 32 the first shrinks (area) and the second grows (bilinear).
    images = [tmp / "colour.png", tmp / "gray.jpg"]
    write_image(images[0], rng.integers(0, 256, [45, 70, 3], dtype=np.uint8))
    write_image(images[1], rng.integers(0, 256, [13, 29], dtype=np.uint8))
    info = export.export(str(run), str(tmp / "model"))
    return tmp, run, images, info


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported_long_side(tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("export_long_side"), long_side=32)


@pytest.mark.parametrize("which", ["exported", "exported_long_side"])
def test_saved_model_in_fresh_process_matches_predict(request, which):
    tmp, run, images, info = request.getfixturevalue(which)
    assert info["config"]["long_side"] == (32 if which == "exported_long_side" else 0)
    out = tmp / "outputs.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", LOAD, str(tmp / "model"), str(out),
                           *map(str, images)],
                          capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = np.load(out)
    result = predict.predict(str(run), [str(p) for p in images], str(tmp / "pred"),
                             save_probabilities=True, progress=False)
    assert result["threshold"] == 0.45 and not result["failed"]
    with predict.Predictor(str(run)) as predictor:
        for i, path in enumerate(images):
            stem = path.stem
            mask = cv2.imread(str(tmp / "pred" / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
            assert served[f"mask{i}"].shape == mask.shape == cv2.imread(str(path), 0).shape
            np.testing.assert_array_equal(served[f"mask{i}"], mask)
            assert 0 < (mask == 255).mean() < 1
            _, prob = predictor(path.read_bytes())
            np.testing.assert_allclose(served[f"prob{i}"], prob, atol=1e-6, rtol=0)


def test_export_records_its_origin_and_threshold(exported):
    tmp, run, _, info = exported
    with open(tmp / "model" / export.INFO_FILE) as f:
        stored = json.load(f)
    assert stored == json.loads(json.dumps(info))
    assert stored["threshold"] == 0.45
    assert stored["threshold_source"] == str(run / rundir.THRESHOLD_JSON)
    assert stored["checkpoint"].endswith("model.ckpt-7")
    assert stored["config"]["depth"] == 2 and stored["config"]["base_filters"] == 4
    assert os.path.exists(tmp / "model" / "saved_model.pb")
    assert not [n for n in os.listdir(tmp) if ".tmp" in n]


def test_existing_output_needs_overwrite(exported, capsys):
    tmp, run, _, _ = exported
    argv = ["--run", str(run), "--out", str(tmp / "model"), "--threshold", "0.7"]
    assert cli.run_main(export.main, argv) == 1
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert cli.run_main(export.main, argv + ["--overwrite"]) == 0
    with open(tmp / "model" / export.INFO_FILE) as f:
        assert json.load(f)["threshold"] == 0.7
    assert not [n for n in os.listdir(tmp) if ".tmp" in n]


@pytest.mark.parametrize("argv,code,message", [
    (["--threshold", "2"], 2, "must be in [0, 1], got 2"),
    (["--checkpoint", "missing"], 1, "checkpoint missing not found"),
])
def test_bad_input_is_one_error_line_and_no_output(exported, capsys, argv, code, message):
    tmp, run, _, _ = exported
    out = tmp / "never"
    assert cli.run_main(export.main, ["--run", str(run), "--out", str(out), *argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def tree(path):
    """{relative path: bytes} of every file under path."""
    return {os.path.relpath(os.path.join(d, n), path): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(path) for n in names}


@pytest.mark.parametrize("where", ["run", "inside", "parent"])
def test_out_touching_the_run_is_refused_and_the_run_untouched(exported, capsys, where):
    tmp, run, _, _ = exported
    out = {"run": run, "inside": run / "model", "parent": tmp}[where]
    before = tree(tmp)
    argv = ["--run", str(run), "--out", str(out), "--overwrite"]
    assert cli.run_main(export.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would destroy it: choose an --out outside the run" in err[0]
    assert tree(tmp) == before


def test_overwrite_refuses_a_directory_that_is_not_a_saved_model(exported, capsys):
    tmp, run, _, _ = exported
    other = tmp / "notes"
    other.mkdir(exist_ok=True)
    (other / "keep.txt").write_text("mine")
    argv = ["--run", str(run), "--out", str(other), "--overwrite"]
    assert cli.run_main(export.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a SavedModel (no saved_model.pb)" in err[0]
    assert (other / "keep.txt").read_text() == "mine"


def test_failure_mid_export_leaves_the_old_saved_model_whole(exported, monkeypatch):
    tmp, run, images, _ = exported
    out = tmp / "model"
    before = tree(out)

    def broken_save(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.v1.saved_model.Builder, "save", broken_save)
    with pytest.raises(cli.UserError, match="No space left on device"):
        export.export(str(run), str(out), overwrite=True)
    assert tree(out) == before
    assert not [n for n in os.listdir(tmp) if ".tmp" in n]
    monkeypatch.undo()
    subprocess.run([sys.executable, "-c", LOAD, str(out), str(tmp / "again.npz"),
                    str(images[0])], check=True, timeout=HANG_GUARD)


def test_missing_parents_are_removed_when_export_fails(exported):
    tmp, run, _, _ = exported
    out = tmp / "new" / "deeper" / "1"
    with pytest.raises(cli.UserError, match="checkpoint missing not found"):
        export.export(str(run), str(out), checkpoint="missing")
    assert not (tmp / "new").exists()


SERVE_BIG = """
import resource, sys
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
for path in sys.argv[2:]:  # the big image first: the peak memory is measured after it
    try:
        serve(image=tf.constant(open(path, "rb").read()))
        print("SERVED", path)
    except tf.errors.InvalidArgumentError as e:
        print("REFUSED", path, e.message.splitlines()[0] if "cap" not in e.message else
              [line for line in e.message.splitlines() if "cap" in line][0])
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_saved_model_refuses_an_image_over_its_cap_before_decoding(exported, tmp_path):
    tmp, run, images, _ = exported
    out = tmp_path / "capped"
    info = export.export(str(run), str(out), max_pixels=2000)
    assert info["max_pixels"] == 2000
    assert (out / "assets" / export.CAP_ASSET).read_text().strip() == "2000"
    shown = subprocess.run(["saved_model_cli", "show", "--dir", str(out), "--all"],
                           capture_output=True, text=True, timeout=HANG_GUARD)
    assert "outputs['max_pixels']" in shown.stdout
    big = huge_png_header(tmp_path / "big.png")
    # Under the cap (45 x 70 = 3150 > 2000 too, so a 40 x 40 one) it is served; one
    # process serves both, the big one first.
    small = tmp_path / "small.png"
    write_image(small, np.zeros([40, 40, 3], np.uint8))
    got = subprocess.run([sys.executable, "-c", SERVE_BIG, str(out), str(big), str(small)],
                         capture_output=True, text=True, check=True, timeout=HANG_GUARD)
    refused, served = got.stdout.split("MAXRSS_KB")[:2]
    assert f"REFUSED {big}" in refused and "over the 2,000-pixel cap" in refused
    assert "export.py --max-pixels" in refused
    # Decoding 30000 x 30000 RGB alone would need 2.7 GB; the refusal needs none of it.
    assert int(served.split()[0]) < 2_000_000
    assert f"SERVED {small}" in served


LOAD_CLASSES = """
import sys
import numpy as np
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
outputs = serve.structured_outputs
assert sorted(outputs) == ["classes", "max_pixels", "probabilities"], outputs
assert outputs["classes"].dtype == tf.uint8 and outputs["probabilities"].dtype == tf.float32
result = {}
for i, path in enumerate(sys.argv[3:]):
    out = serve(image=tf.constant(open(path, "rb").read()))
    result[f"classes{i}"] = out["classes"].numpy()
    result[f"prob{i}"] = out["probabilities"].numpy()
np.savez(sys.argv[2], **result)
"""


@pytest.mark.parametrize("long_side", [0, 32])
def test_k_class_saved_model_serves_the_class_map_predict_writes(tmp_path, long_side):
    run = tmp_path / "run"
    make_run(run, classes=("cat", "dog"), seed=3, long_side=long_side)
    rng = np.random.default_rng(6)
    images = [tmp_path / "colour.png", tmp_path / "gray.jpg"]
    write_image(images[0], rng.integers(0, 256, [45, 70, 3], dtype=np.uint8))
    write_image(images[1], rng.integers(0, 256, [13, 29], dtype=np.uint8))
    info = export.export(str(run), str(tmp_path / "model"))
    assert info["threshold"] is None and info["threshold_source"] == "argmax"
    assert info["classes"] == ["background", "cat", "dog"]
    assert sorted(info["outputs"]) == ["classes", "max_pixels", "probabilities"]
    with open(tmp_path / "model" / export.INFO_FILE) as f:
        assert json.load(f) == json.loads(json.dumps(info))
    out = tmp_path / "served.npz"
    proc = subprocess.run([sys.executable, "-c", LOAD_CLASSES, str(tmp_path / "model"), str(out),
                           *map(str, images)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = np.load(out)
    predict.predict(str(run), [str(p) for p in images], str(tmp_path / "pred"), progress=False)
    with predict.Predictor(str(run)) as predictor:
        for i, path in enumerate(images):
            classes = cv2.imread(str(tmp_path / "pred" / f"{path.stem}_classes.png"),
                                 cv2.IMREAD_UNCHANGED)
            assert served[f"classes{i}"].shape == classes.shape == cv2.imread(str(path), 0).shape
            np.testing.assert_array_equal(served[f"classes{i}"], classes)  # pixel for pixel
            assert len(np.unique(classes)) >= 2
            _, probs = predictor(path.read_bytes())
            assert served[f"prob{i}"].shape == classes.shape + (3,)
            np.testing.assert_allclose(served[f"prob{i}"], probs, atol=1e-6, rtol=0)


def test_threshold_on_a_k_class_run_is_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run, classes=("cat", "dog"))
    argv = ["--run", str(run), "--out", str(tmp_path / "m"), "--threshold", "0.4"]
    assert cli.run_main(export.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold is for runs of one class" in err[0]
    assert not (tmp_path / "m").exists()
