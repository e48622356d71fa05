"""Fuzz the record reader and the image decoders with random and mutated bytes (hypothesis).

Every case must end in a correct result or one of the errors the commands turn
into a clear `error:` line; never a hang, a crash of the interpreter, an
unexpected exception type, or garbage passed on as data. Examples are few,
derandomized (the same cases every CI run) and small, so this file takes seconds.
"""

import os
import tempfile

import cv2
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets import guard, records
from utils.cli import UserError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
# What predict.py / guard.record_errors turn into one error line.
CLEAR_TF_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


def _example(i, h, w):
    rng = np.random.default_rng(i)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = (image[..., :1] > 100).astype(np.uint8)
    return records.make_example(cv2.imencode(".jpg", image)[1].tobytes(), "jpeg", h, w, i,
                                f"{i}.jpg", cv2.imencode(".png", mask)[1].tobytes())


EXAMPLES = [_example(i, 6 + i, 9 + 2 * i) for i in range(4)]


def _shard_bytes():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for example in EXAMPLES:
                writer.write(example)
        with open(path, "rb") as f:
            return f.read()


SHARD = _shard_bytes()
PNG = cv2.imencode(".png", np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))[1].tobytes()
JPEG = cv2.imencode(".jpg", np.full((8, 12, 3), 90, np.uint8))[1].tobytes()


def mutated(seed_bytes):
    """Bytes of seed_bytes with a few flipped/replaced bytes and maybe cut short."""
    @st.composite
    def build(draw):
        data = bytearray(seed_bytes)
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)
    return build()


def _walk(raw, skip):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f-00000-of-00001.tfrecord")
        with open(path, "wb") as f:
            f.write(raw)
        walked = list(guard.iterate_shard(path, skip_corrupt=skip))
        try:
            scanned = guard.scan_records(path)
        except UserError as e:
            scanned = e
    return walked, scanned


@FUZZ
@given(st.one_of(mutated(SHARD), st.binary(max_size=300)))
def test_record_reader_never_passes_garbage(raw):
    for skip in (False, True):
        walked, scanned = _walk(raw, skip)
        good = [rec for _, _, rec in walked if not isinstance(rec, guard.BadRecord)]
        # A record that passes both CRCs is one of the records written (or a random
        # input that happens to frame correctly, which must then be empty-ish garbage
        # that parse/decode reject below).
        for rec in good:
            if rec not in EXAMPLES:
                with pytest.raises(CLEAR_TF_ERRORS + (UnicodeDecodeError,)):
                    records.decode(records.parse_example(tf.constant(rec)))
        assert [i for i, _, _ in walked] == list(range(len(walked)))
        if not skip:
            assert sum(isinstance(rec, guard.BadRecord) for _, _, rec in walked) <= 1
    if isinstance(scanned, UserError):
        assert "no readable examples" in str(scanned) or "is corrupt" in str(scanned)
    else:
        assert sum(scanned[1]) == len(good) > 0


@pytest.fixture(scope="module")
def decoder():
    d = guard._Decoder()  # what training uses to name or skip a bad record
    yield d
    d.close()


@FUZZ
@given(serialized=st.sampled_from(range(len(EXAMPLES))).flatmap(
    lambda i: mutated(EXAMPLES[i])))
def test_record_decoding_is_correct_or_a_clear_error(decoder, serialized):
    problem = decoder.problem(serialized)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    parsed = records.parse_example(tf.constant(serialized))
    image, mask = records.decode(parsed)
    h, w = int(parsed[records.HEIGHT]), int(parsed[records.WIDTH])
    assert image.shape == (h, w, 3) and image.dtype == tf.uint8
    assert mask.shape == (h, w, 1) and mask.dtype == tf.uint8


def test_malformed_proto_is_named_not_a_unicode_traceback(decoder):
    # Found by the fuzzer: TensorFlow raises UnicodeDecodeError for these bytes.
    assert decoder.problem(b"\n\xa4") == guard.MALFORMED


@FUZZ
@given(st.one_of(mutated(PNG), mutated(JPEG), st.binary(max_size=200)))
def test_image_decoding_is_correct_or_a_clear_error(encoded):
    try:
        image = records.decode_image(tf.constant(encoded))
    except CLEAR_TF_ERRORS:
        return
    assert image.dtype == tf.uint8 and image.shape.rank == 3 and image.shape[2] == 3
    assert image.shape[0] >= 1 and image.shape[1] >= 1
