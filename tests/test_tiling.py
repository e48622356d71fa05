"""core/tiling.py's test-time flip (flip_averaged); the overlap-tile geometry itself is
checked through predict.py in tests/test_predict.py."""

import numpy as np
import pytest
import tensorflow as tf
from test_predict import make_run, reference_probabilities

import predict
from core import tiling


def test_flip_averaged_of_a_pointwise_map_is_the_map():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)

    def redness(x):  # [H, W]: each pixel's own value, no context
        return tf.cast(x[..., 0], tf.float32) / 255.0

    got = tiling.flip_averaged(redness, tf.constant(image)).numpy()
    np.testing.assert_array_equal(got, image[..., 0] / np.float32(255.0))


def test_flip_averaged_is_the_mean_of_the_map_and_the_mirror_images_map_mirrored_back():
    """A map that looks left (a running sum along each row), [H, W, 2]: the average is
    half the sum from the left plus half the sum from the right."""
    image = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)

    def from_the_left(x):
        return tf.cumsum(tf.cast(x[..., :2], tf.float32), axis=1)

    got = tiling.flip_averaged(from_the_left, tf.constant(image)).numpy()
    values = image[..., :2].astype(np.float64)
    want = (np.cumsum(values, 1) + np.cumsum(values[:, ::-1], 1)[:, ::-1]) / 2
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("flip") / "run"
    make_run(run_dir)
    return run_dir


def test_flip_test_predictions_average_the_two_passes_and_mirror_with_the_image(run):
    image = np.random.default_rng(2).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, ::-1])
    direct, flipped = reference_probabilities(run, image), reference_probabilities(run, mirror)
    assert np.abs(direct - flipped[:, ::-1]).max() > 0.01  # the network is not symmetric
    with predict.Predictor(str(run), flip_test=True) as predictor:
        _, got = predictor(tf.io.encode_png(image).numpy())
        _, got_mirror = predictor(tf.io.encode_png(mirror).numpy())
    np.testing.assert_allclose(got, (direct + flipped[:, ::-1]) / 2, atol=1e-5)
    np.testing.assert_array_equal(got_mirror, got[:, ::-1])  # exactly flip-equivariant
