"""The whole tool through its command lines, on a tiny model: the user's path.

samples.drawn -> convert_coco (train, val) -> train -> evaluate -> predict -> export,
each as a subprocess exactly as a user types it, checking what each one leaves; and a
cat/dog run of K = 2 classes on the drawn dataset through the same commands' main().
"""

import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def run(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    script = ["-m", args[0]] if not args[0].endswith(".py") else [os.path.join(ROOT, args[0])]
    done = subprocess.run([sys.executable, *script, *args[1:]], cwd=cwd,
                          env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    run("samples.drawn", "--out", "coco", "--num-train", "8", "--num-val", "4", cwd=work)
    for split in ("train2017", "val2017"):
        run("convert_coco.py", "--coco-dir", "coco", "--split", split, "--output", "data/cat",
            "--negatives", "1", "--no-progress", cwd=work)
    run("train.py", "--train-records", "data/cat-train2017-*", "--val-records",
        "data/cat-val2017-*", "--run-name", "tiny", "--depth", "1", "--base-filters", "4",
        "--input-size", "44", "--batch-size", "4", "--epochs", "2", "--seed", "0", cwd=work)
    run("evaluate.py", "--run", "logs/tiny", cwd=work)
    return work


def test_training_left_a_complete_run_dir(pipeline):
    run_dir = pipeline / "logs" / "tiny"
    stats = json.loads((pipeline / "data" / "cat-train2017-stats.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["depth"], cfg["base_filters"], cfg["input_size"]) == (1, 4, 44)
    steps = 2 * math.ceil(stats["images"] / 4)
    assert (run_dir / f"model.ckpt-{steps}.index").exists()
    assert os.listdir(run_dir / "train") and os.listdir(run_dir / "val")
    assert any(name.endswith(".index") for name in os.listdir(run_dir / "best"))


def test_evaluate_scores_every_full_validation_image(pipeline):
    result = json.loads((pipeline / "logs" / "tiny" / "eval.json").read_text())
    stats = json.loads((pipeline / "data" / "cat-val2017-stats.json").read_text())
    assert result["images"] == stats["images"]
    # Full images, not crops: the valid pixels are exactly the converter's.
    assert result["valid_pixels"] == stats["pixels"] - stats["ignore_pixels"]
    assert result["foreground_pixels"] == stats["foreground_pixels"]
    base = result["all_background"]
    assert base["foreground_iou"] == 0.0
    assert base["pixel_accuracy"] == pytest.approx(
        1 - stats["foreground_pixels"] / result["valid_pixels"])
    assert 0.05 <= result["best_threshold"] <= 0.95


def test_predict_writes_full_size_masks(pipeline):
    image_path = sorted((pipeline / "coco" / "val2017").glob("*.jpg"))[0]
    run("predict.py", "--run", "logs/tiny", str(image_path), "--out", "predictions",
        "--save-probabilities", "--no-progress", cwd=pipeline)
    image = cv2.imread(str(image_path))
    mask = cv2.imread(str(pipeline / "predictions" / f"{image_path.stem}_mask.png"),
                      cv2.IMREAD_UNCHANGED)
    prob = cv2.imread(str(pipeline / "predictions" / f"{image_path.stem}_prob.png"),
                      cv2.IMREAD_UNCHANGED)
    assert mask.shape == prob.shape == image.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    # The mask is the probability map at eval.json's best threshold.
    threshold = json.loads((pipeline / "logs" / "tiny" / "eval.json").read_text())[
        "best_threshold"]
    decided = np.abs(prob / 255.0 - threshold) > 1 / 255
    np.testing.assert_array_equal((mask == 255)[decided], (prob / 255.0 >= threshold)[decided])
    overlay = cv2.imread(str(pipeline / "predictions" / f"{image_path.stem}_overlay.png"))
    assert overlay.shape == image.shape


def test_export_serves_the_same_mask(pipeline):
    run("export.py", "--run", "logs/tiny", "--out", "exported/1", cwd=pipeline)
    image_path = sorted((pipeline / "coco" / "val2017").glob("*.jpg"))[0]
    code = ("import sys, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "out = m.signatures['serving_default'](image=tf.constant(open(sys.argv[2], 'rb')"
            ".read()))\n"
            "import numpy as np; np.save(sys.argv[3], out['mask'].numpy())\n")
    subprocess.run([sys.executable, "-c", code, str(pipeline / "exported" / "1"),
                    str(image_path), str(pipeline / "served.npy")], check=True, timeout=HANG_GUARD,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    served = np.load(pipeline / "served.npy")
    if not (pipeline / "predictions" / f"{image_path.stem}_mask.png").exists():
        run("predict.py", "--run", "logs/tiny", str(image_path), "--out", "predictions",
            "--no-progress", cwd=pipeline)
    predicted = cv2.imread(str(pipeline / "predictions" / f"{image_path.stem}_mask.png"),
                           cv2.IMREAD_UNCHANGED)
    assert served.shape == predicted.shape
    assert (served != predicted).mean() < 1e-3  # thresholds meet float noise at most


# ------------------------------------------------------------ several classes (K >= 2)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A cat/dog run (K = 2) on the drawn dataset: samples.drawn -> convert_coco --classes
    cat dog (train, val) -> train -> evaluate -> predict -> export, each through its
    command's main() as its command line runs it (cli.run_main, in this process). train gets
    no --classes: the records' stats bring them."""
    import convert_coco
    import evaluate
    import export
    import predict
    import train
    from samples import drawn
    from utils import cli

    def command(module, *argv):
        assert cli.run_main(module.main, list(argv)) == 0, f"{module.__name__} failed"

    work = tmp_path_factory.mktemp("three")
    drawn.generate(str(work / "coco"), seed=0, num_train=6, num_val=3)
    old = os.getcwd()
    os.chdir(work)  # the relative paths of the command lines below
    try:
        for split in drawn.SPLITS:
            command(convert_coco, "--coco-dir", "coco", "--split", split, "--classes", "cat",
                    "dog", "--output", "data/pets", "--negatives", "1", "--workers", "1",
                    "--no-progress")
        # 48 px photos, each validated whole (52 -> 48 px output at depth 1).
        command(train, "--train-records", "data/pets-train2017-*", "--val-records",
                "data/pets-val2017-*", "--run-name", "pets", "--depth", "1", "--base-filters",
                "4", "--long-side", "48", "--input-size", "44", "--val-input-size", "52",
                "--batch-size", "3", "--epochs", "3", "--learning-rate", "1e-2", "--seed", "0")
        command(evaluate, "--run", "logs/pets", "--no-progress")
        command(predict, "--run", "logs/pets", "coco/val2017", "--out", "predictions",
                "--class", "dog", "--probabilities", "--no-progress")
        command(export, "--run", "logs/pets", "--out", "exported/1")
    finally:
        os.chdir(old)
    return work


def _image(work):
    """The drawn val image with the most dog pixels: the map to compare."""
    doc = json.loads((work / "coco" / "annotations" / "instances_val2017.json").read_text())
    dog = next(c["id"] for c in doc["categories"] if c["name"] == "dog")
    area = {i["id"]: 0.0 for i in doc["images"]}
    for a in doc["annotations"]:
        area[a["image_id"]] += a["area"] if a["category_id"] == dog else 0.0
    best = max(doc["images"], key=lambda i: area[i["id"]])
    return work / "coco" / "val2017" / best["file_name"]


def test_three_classes_convert_train_evaluate_predict(three_classes):
    work = three_classes
    stats = {split: json.loads((work / "data" / f"pets-{split}-stats.json").read_text())
             for split in ("train2017", "val2017")}
    assert [s["classes"] for s in stats.values()] == [["cat", "dog"]] * 2
    assert all(s["class_pixels"][2] > 0 for s in stats.values())  # dogs in both splits
    cfg = json.loads((work / "logs" / "pets" / "config.json").read_text())
    assert cfg["classes"] == ["cat", "dog"] and cfg["num_outputs"] == 3
    assert (cfg["depth"], cfg["base_filters"], cfg["long_side"]) == (1, 4, 48)
    steps = 3 * math.ceil(stats["train2017"]["images"] / 3)
    assert (work / "logs" / "pets" / f"model.ckpt-{steps}.index").exists()

    report = json.loads((work / "logs" / "pets" / "eval.json").read_text())
    assert report["classes"] == ["background", "cat", "dog"]
    assert report["images"] == stats["val2017"]["images"] == 3
    assert [r["class"] for r in report["per_class"]] == ["background", "cat", "dog"]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == report["valid_pixels"]
    # Each row of the confusion matrix is that class's true pixels, as the table says.
    assert [r["truth_pixels"] for r in report["per_class"]] == matrix.sum(axis=1).tolist()
    for row in report["per_class"]:
        k = row["index"]
        union = matrix[k].sum() + matrix[:, k].sum() - matrix[k, k]
        assert row["iou"] == pytest.approx(matrix[k, k] / union)
    assert report["all_background"]["mean_iou"] == 0.0
    assert [r["iou"] for r in report["all_background_per_class"]][1:] == [0.0, 0.0]

    image = _image(work)
    height, width = cv2.imread(str(image)).shape[:2]
    classes = cv2.imread(str(work / "predictions" / f"{image.stem}_classes.png"),
                         cv2.IMREAD_UNCHANGED)
    assert classes.shape == (height, width) and set(np.unique(classes)) <= {0, 1, 2}
    dog = cv2.imread(str(work / "predictions" / f"{image.stem}_dog.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(dog, np.where(classes == 2, 255, 0))
    probs = np.stack([cv2.imread(str(work / "predictions" / f"{image.stem}_prob_{n}.png"),
                                 cv2.IMREAD_UNCHANGED) for n in ("background", "cat", "dog")])
    decided = np.sort(probs, axis=0)[-1].astype(int) - np.sort(probs, axis=0)[-2] > 2
    np.testing.assert_array_equal(probs.argmax(0)[decided], classes[decided])


def test_three_class_saved_model_equals_prediction_pixel_for_pixel(three_classes):
    work = three_classes
    image = _image(work)
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "out = m.signatures['serving_default'](image=tf.constant(open(sys.argv[2], 'rb')"
            ".read()))\n"
            "np.save(sys.argv[3], out['classes'].numpy())\n")
    subprocess.run([sys.executable, "-c", code, str(work / "exported" / "1"), str(image),
                    str(work / "served.npy")], check=True, timeout=HANG_GUARD,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    served = np.load(work / "served.npy")
    predicted = cv2.imread(str(work / "predictions" / f"{image.stem}_classes.png"),
                           cv2.IMREAD_UNCHANGED)
    assert served.dtype == np.uint8 and served.shape == predicted.shape
    assert len(np.unique(predicted)) >= 2  # a map with something to disagree on
    np.testing.assert_array_equal(served, predicted)
