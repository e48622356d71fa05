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


def test_palette_is_fixed_black_background_grey_ignore_classes_in_order():
    table = summaries.palette()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert table[0].tolist() == [0, 0, 0] and table[255].tolist() == [128, 128, 128]
    n = len(summaries.CLASS_COLOURS)
    assert [tuple(c) for c in table[1:n + 1]] == list(summaries.CLASS_COLOURS)
    assert table[1].tolist() == [255, 0, 0] and table[n + 1].tolist() == table[1].tolist()
    assert len(set(summaries.CLASS_COLOURS)) == n  # distinct, and none black or grey
    assert not {(0, 0, 0), (128, 128, 128)} & set(summaries.CLASS_COLOURS)


def test_class_window_panels_colour_truth_and_prediction_by_the_palette():
    images = np.full((1, 10, 10, 3), 0.2, np.float32)
    masks = np.array([[0, 1, 2, 255]] * 4, np.uint8).reshape(1, 4, 4, 1)
    classes = np.array([[2, 1, 0, 0]] * 4, np.uint8).reshape(1, 4, 4, 1)
    row = summaries.class_window_panels(tf.constant(images), tf.constant(masks),
                                        tf.constant(classes)).numpy()[0].astype(int)
    gap = summaries.PANEL_GAP
    assert row.shape == (10, 3 * 10 + 2 * gap, 3)
    truth, pred = (row[:, k * (10 + gap):k * (10 + gap) + 10] for k in (1, 2))
    red, blue = list(summaries.CLASS_COLOURS[0]), list(summaries.CLASS_COLOURS[1])
    assert truth[3:7, 3:7].tolist() == [[[0, 0, 0], red, blue, [128, 128, 128]]] * 4
    assert pred[3:7, 3:7].tolist() == [[blue, red, [0, 0, 0], [0, 0, 0]]] * 4
    context = [round(255 * c) for c in summaries.CONTEXT_RGB]
    assert (pred[0] == context).all()  # the same frame as the one-class windows


def test_confusion_image_shades_each_row_by_its_share():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [0, 2, 2]])
    image = summaries.confusion_image(matrix)
    cell, top = summaries.CELL, summaries.SWATCH
    assert image.shape == (3 * cell + top, 3 * cell + top, 3)

    def centre(r, c):
        return image[top + r * cell + cell // 2, top + c * cell + cell // 2].tolist()

    assert centre(0, 2) == [255, 255, 255]  # share 0: white
    assert centre(0, 0) == [round(255 + 0.75 * (8 - 255)), round(255 + 0.75 * (48 - 255)),
                            round(255 + 0.75 * (107 - 255))]
    assert centre(2, 1) == centre(2, 2) == [132, 152, 181]  # half of the row each
    assert centre(1, 0) == [128, 128, 128]  # a class without pixels: grey
    # The class colours along the top and the left, in class order.
    assert image[0, top + cell // 2].tolist() == [0, 0, 0]
    assert image[top + cell + cell // 2, 0].tolist() == list(summaries.CLASS_COLOURS[0])
    assert image[0, top + 2 * cell + cell // 2].tolist() == list(summaries.CLASS_COLOURS[1])


def test_image_value_holds_the_pixels_as_png():
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[1, 2] = [10, 200, 30]
    value = summaries.image_value("confusion_matrix", rgb)
    assert (value.tag, value.image.height, value.image.width) == ("confusion_matrix", 3, 5)
    decoded = tf.io.decode_png(value.image.encoded_image_string).numpy()
    np.testing.assert_array_equal(decoded, rgb)
