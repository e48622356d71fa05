"""datasets/records.py: the one schema, written and read back, and loud on foreign records."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from datasets import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def _png(array):
    return cv2.imencode(".png", array)[1].tobytes()


def _example(image, mask, **overrides):
    args = dict(image_bytes=_png(image[:, :, ::-1]), image_format="png",
                height=image.shape[0], width=image.shape[1], image_id=7,
                filename="x.png", mask_png=_png(mask))
    args.update(overrides)
    return records.make_example(**args)


def _read(serialized):
    parsed = records.parse_example(tf.constant(serialized))
    image, mask = records.decode(parsed)
    return parsed, image.numpy(), mask.numpy()


def test_round_trip_exact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, [5, 7, 3], dtype=np.uint8)
    mask = rng.choice([records.BACKGROUND, records.FOREGROUND, records.IGNORE], [5, 7])
    parsed, got_image, got_mask = _read(_example(image, mask.astype(np.uint8)))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask[:, :, 0], mask)
    assert parsed[records.IMAGE_ID].numpy() == 7
    assert parsed[records.FILENAME].numpy() == b"x.png"
    assert parsed[records.VERSION].numpy() == records.SCHEMA_VERSION


def test_class_index_masks_round_trip_exact():
    """K >= 2 records hold class k as value k, up to MAX_CLASSES, below IGNORE."""
    assert (records.BACKGROUND, records.FOREGROUND, records.MAX_CLASSES, records.IGNORE) == (
        0, 1, 254, 255)
    mask = np.array([[0, 1, 2, 3], [254, 255, 2, 0]], np.uint8)
    _, _, got = _read(_example(np.zeros([2, 4, 3], np.uint8), mask))
    np.testing.assert_array_equal(got[:, :, 0], mask)


def test_serialization_is_identical_across_processes():
    code = ("import hashlib\nfrom datasets import records\n"
            "b = records.make_example(b'img', 'jpeg', 2, 3, 9, 'a.jpg', b'mask')\n"
            "print(hashlib.sha256(b).hexdigest())\n")
    # Three interpreters at once: each spends its time importing TensorFlow.
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed,
                                   "TF_CPP_MIN_LOG_LEVEL": "3"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for hash_seed in ("1", "2", "3")]
    digests = set()
    for proc in procs:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err[-2000:]
        digests.add(out.strip().splitlines()[-1])
    assert len(digests) == 1


@pytest.mark.parametrize("overrides,message", [
    (dict(height=6), "image size does not match"),
    (dict(mask_png=_png(np.zeros([4, 7], np.uint8))), "mask size does not match"),
])
def test_inconsistent_record_fails_loudly(overrides, message):
    image = np.zeros([5, 7, 3], np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _read(_example(image, np.zeros([5, 7], np.uint8), **overrides))


def test_other_schema_version_is_rejected():
    example = tf.train.Example.FromString(
        _example(np.zeros([2, 2, 3], np.uint8), np.zeros([2, 2], np.uint8)))
    example.features.feature[records.VERSION].int64_list.value[0] = 99
    with pytest.raises(tf.errors.InvalidArgumentError, match="schema version"):
        _read(example.SerializeToString())
