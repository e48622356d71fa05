import cv2
import numpy as np

from datasets import photos


def test_jpeg_component_count():
    gray = np.zeros((8, 8), np.uint8)
    assert photos.jpeg_components(cv2.imencode(".jpg", gray)[1].tobytes()) == 1
    assert photos.jpeg_components(cv2.imencode(".jpg", np.dstack([gray] * 3))[1].tobytes()) == 3
    assert photos.jpeg_components(b"\xff\xd8garbage") is None
