import numpy as np
import tensorflow as tf

from core import summaries


def test_window_panels_align_output_with_its_place_in_the_input():
    # A 10 px input window, 4 px output: the output lies 3 px in from each edge.
    images = np.full((1, 10, 10, 3), 0.2, np.float32)
    masks = np.array([[0, 1, 255, 0]] * 4, np.uint8).reshape(1, 4, 4, 1)
    probs = np.tile(np.array([0.0, 0.25, 0.5, 1.0], np.float32), (4, 1)).reshape(1, 4, 4, 1)
    row = summaries.window_panels(tf.constant(images), tf.constant(masks), tf.constant(probs))
    row = row.numpy()[0].astype(int)
    gap = summaries.PANEL_GAP
    assert row.shape == (10, 3 * 10 + 2 * gap, 3)
    image, truth, prob = (row[:, k * (10 + gap):k * (10 + gap) + 10] for k in range(3))
    assert (row[:, 10:10 + gap] == 255).all() and (row[:, 20 + gap:20 + 2 * gap] == 255).all()
    yellow = [round(255 * c) for c in summaries.OUTPUT_OUTLINE_RGB]
    blue = [round(255 * c) for c in summaries.CONTEXT_RGB]
    for panel in (image, truth, prob):
        # The 2 px outline sits in the context just outside the output area (rows 3..6).
        ring = np.zeros((10, 10), bool)
        ring[1:9, 1:9] = True
        ring[3:7, 3:7] = False
        assert (panel[ring] == yellow).all() and not (panel[~ring] == yellow).all(-1).any()
    assert (image[3:7, 3:7] == 51).all() and (image[0] == 51).all()  # the input, untouched
    # Ground truth: background black, foreground white, ignore grey, at the output's place.
    assert truth[3:7, 3:7, 0].tolist() == [[0, 255, 128, 0]] * 4
    assert (truth[3:7, 3:7] == truth[3:7, 3:7, :1]).all()  # grey levels, not colours
    assert (prob[3:7, 3:7, 0] == [0, 64, 128, 255]).all()
    assert (truth[0] == blue).all() and (prob[9] == blue).all() and (prob[:, 0] == blue).all()
