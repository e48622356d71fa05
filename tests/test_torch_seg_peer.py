"""benchmarks/torch_seg_peer.py: its input layout, network shapes, loss and scoring.

torch is optional: the tests that need it are skipped without it.
"""

import numpy as np
import pytest

from benchmarks import torch_seg_peer
from datasets import records


def test_photos_are_letterboxed_top_left_and_the_padding_is_ignored():
    assert torch_seg_peer.square_size(128, 3) == 128
    assert torch_seg_peer.square_size(100, 3) == 104
    image = np.full([2, 3, 3], 51, np.uint8)
    mask = np.array([[0, 1, 255], [1, 0, 0]], np.uint8)
    x, labels = torch_seg_peer.letterbox([(image, mask)], 4)
    assert x.shape == (1, 3, 4, 4) and labels.shape == (1, 4, 4)
    assert np.allclose(x[0, :, :2, :3], 0.2)
    assert x[0, :, 2:].max() == 0 and x[0, :, :, 3:].max() == 0
    assert labels[0].tolist() == [[0, 1, 255, 255], [1, 0, 0, 255], [255] * 4, [255] * 4]


def test_the_network_keeps_the_size_and_has_two_classes():
    torch = pytest.importorskip("torch")
    model = torch_seg_peer.build_model(depth=2, base_filters=4)
    out = model(torch.zeros([2, 3, 16, 12]))
    assert tuple(out.shape) == (2, 2, 16, 12)  # SAME convs: no border lost
    # 3x3 convs without bias + BN (scale, shift) per conv, up-convs with bias, a 1x1 head
    convs = [(3, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4)]
    expected = sum(9 * a * b + 2 * b for a, b in convs) + (4 * 16 * 8 + 8) + (4 * 8 * 4 + 4)
    expected += 4 * 2 + 2
    assert sum(p.numel() for p in model.parameters()) == expected


def test_loss_is_cross_entropy_over_valid_pixels_plus_soft_dice():
    torch = pytest.importorskip("torch")
    logits = torch.zeros([1, 2, 1, 3])  # p(cat) = 0.5 everywhere
    labels = torch.tensor([[[1, 0, 255]]])
    ce = float(np.log(2.0))  # -log 0.5 on the two valid pixels
    assert float(torch_seg_peer.loss_fn(logits, labels, 0.0)) == pytest.approx(ce)
    dice = (2 * 0.5 + 1) / (0.5 + 0.5 + 1 + 1)  # the ignored pixel counts nowhere
    assert float(torch_seg_peer.loss_fn(logits, labels, 0.5)) == pytest.approx(
        ce + 0.5 * (1 - dice))


def test_score_resizes_back_to_full_images_and_counts_like_evaluate(tmp_path):
    torch = pytest.importorskip("torch")
    import cv2
    import tensorflow as tf

    class LeftHalfIsCat(torch.nn.Module):
        def forward(self, x):
            cat = torch.zeros_like(x[:, :1])
            cat[..., : x.shape[3] // 2] = 1.0
            return torch.cat([10 - 20 * cat, 20 * cat - 10], 1)  # p(cat) 1 left, 0 right

    truth = np.zeros([8, 16], np.uint8)
    truth[:, :4] = records.FOREGROUND
    truth[0, :] = records.IGNORE
    path = str(tmp_path / "r-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        image = cv2.imencode(".png", np.zeros([8, 16, 3], np.uint8))[1].tobytes()
        png = cv2.imencode(".png", truth)[1].tobytes()
        writer.write(records.make_example(image, "png", 8, 16, 1, "a.png", png))
    spec = torch_seg_peer.TorchSpec((path,), (path,), {}, 1.0, long_side=16, depth=2)
    result = torch_seg_peer.score(LeftHalfIsCat(), path, spec)
    tp, fp = 7 * 4, 7 * 4  # the left half of the 7 valid rows is cat; a quarter is truth
    assert result["counts"] == [tp, fp, 0, 7 * 16 - tp - fp]
    assert result["model"]["foreground_iou"] == pytest.approx(0.5)
    assert result["all_background"]["foreground_iou"] == 0.0
