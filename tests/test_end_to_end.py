"""The whole tool through its command lines, on a tiny model: the user's path.

samples.drawn -> convert_coco (train, val) -> train -> evaluate -> predict -> export,
each as a subprocess exactly as a user types it, checking what each one leaves; and a
cat/dog run of K = 2 classes from hand-made records through the same commands.
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
    """A cat/dog run (K = 2) trained a few steps on hand-made records, then evaluated,
    predicted and exported through the command lines. Training goes through train.train:
    the records' classes reach the config from their stats (the converters' side)."""
    from test_train import write_pets

    import train
    from core import config

    work = tmp_path_factory.mktemp("three")
    data = work / "data"
    data.mkdir()
    write_pets(data / "pets-train-00000-of-00001.tfrecord", 8, 0)
    write_pets(data / "pets-val-00000-of-00001.tfrecord", 3, 1)
    images = work / "photos"
    images.mkdir()
    rng = np.random.default_rng(2)
    photo = rng.integers(60, 140, (50, 67, 3)).astype(np.uint8)
    photo[10:30, 5:25] = (220, 150, 40)
    photo[30:45, 40:60] = (40, 80, 200)
    cv2.imwrite(str(images / "pets.png"), photo[..., ::-1])
    result = train.train(config.Config(
        train_records=str(data / "pets-train-*"), val_records=str(data / "pets-val-*"),
        run_dir=str(work / "logs" / "pets"), depth=1, base_filters=4, input_size=44,
        batch_size=4, epochs=3, learning_rate=1e-2, seed=0, classes=("cat", "dog"),
        num_outputs=3))
    run("evaluate.py", "--run", "logs/pets", "--no-progress", cwd=work)
    run("predict.py", "--run", "logs/pets", "photos", "--out", "predictions", "--class", "dog",
        "--probabilities", "--no-progress", cwd=work)
    run("export.py", "--run", "logs/pets", "--out", "exported/1", cwd=work)
    return work, result


def test_three_classes_train_evaluate_predict(three_classes):
    work, trained = three_classes
    assert trained.step == 6 and trained.val.classes.names == ("background", "cat", "dog")
    report = json.loads((work / "logs" / "pets" / "eval.json").read_text())
    assert report["classes"] == ["background", "cat", "dog"] and report["images"] == 3
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == report["valid_pixels"]
    assert report["all_background"]["mean_iou"] == 0.0
    classes = cv2.imread(str(work / "predictions" / "pets_classes.png"), cv2.IMREAD_UNCHANGED)
    assert classes.shape == (50, 67) and set(np.unique(classes)) <= {0, 1, 2}
    dog = cv2.imread(str(work / "predictions" / "pets_dog.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(dog, np.where(classes == 2, 255, 0))
    probs = np.stack([cv2.imread(str(work / "predictions" / f"pets_prob_{n}.png"),
                                 cv2.IMREAD_UNCHANGED) for n in ("background", "cat", "dog")])
    decided = np.sort(probs, axis=0)[-1].astype(int) - np.sort(probs, axis=0)[-2] > 2
    np.testing.assert_array_equal(probs.argmax(0)[decided], classes[decided])


def test_three_class_saved_model_equals_prediction_pixel_for_pixel(three_classes):
    work, _ = three_classes
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "out = m.signatures['serving_default'](image=tf.constant(open(sys.argv[2], 'rb')"
            ".read()))\n"
            "np.save(sys.argv[3], out['classes'].numpy())\n")
    subprocess.run([sys.executable, "-c", code, str(work / "exported" / "1"),
                    str(work / "photos" / "pets.png"), str(work / "served.npy")], check=True,
                   timeout=HANG_GUARD, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    served = np.load(work / "served.npy")
    predicted = cv2.imread(str(work / "predictions" / "pets_classes.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(served, predicted)
