"""TensorBoard's `windows` image: what the network sees, the truth and its prediction,
side by side, and for K >= 2 classes the class palette and the confusion-matrix image
(docs/tensorboard.md says how to read them; predict.py's overlays use the same palette)."""

import cv2
import numpy as np
import tensorflow as tf

from datasets import records

v1 = tf.compat.v1


# The colours of the paper's overlap-tile figure (Fig. 2): the prediction covers the yellow
# area and sees the blue one.
OUTPUT_OUTLINE_RGB = (1.0, 0.8, 0.0)
CONTEXT_RGB = (0.1, 0.25, 0.6)
PANEL_GAP = 4  # white pixels between the panels of a window summary

# The K >= 2 class colours (RGB), by class value: 0 background black, 255 ignore grey, and
# the classes 1, 2, ... in this order, chosen far apart in hue and brightness; class 1 is
# the red that predict.py's one-class overlays tint with. A run of more classes than
# CLASS_COLOURS cycles through them again (docs/tensorboard.md has the legend).
BACKGROUND_RGB = (0, 0, 0)
IGNORE_RGB = (128, 128, 128)
CLASS_COLOURS = ((255, 0, 0), (0, 120, 255), (0, 200, 0), (255, 210, 0), (190, 0, 255),
                 (0, 220, 220), (255, 120, 0), (255, 0, 160), (140, 90, 40), (150, 255, 130),
                 (140, 170, 255), (255, 170, 200))


def palette():
    """uint8 [256, 3]: the RGB colour of every class value (index) a mask can hold."""
    table = np.array([CLASS_COLOURS[(i - 1) % len(CLASS_COLOURS)] for i in range(256)],
                     np.uint8)
    table[0], table[records.IGNORE] = BACKGROUND_RGB, IGNORE_RGB
    return table


def window_panels(images, masks, probs, outline=2):
    """Input | ground truth | prediction of each window, side by side, as one uint8 image.

    images [B, in, in, 3] f32 in [0, 1]; masks [B, out, out, 1] u8 (0, 1, 255 = ignore);
    probs [B, out, out, 1] f32 in [0, 1] -> [B, in, 3 * in + 2 * PANEL_GAP, 3] u8.
    Mask (0 black, 1 white, ignore grey) and probability panels are as big as the input
    with the output pasted where it lies in the input window, so the same pixel row and
    column mean the same place in all three; around it, the context the output has no
    pixel for is blue, and a yellow outline (drawn in the context) marks the output area.
    """
    with tf.name_scope("window_panels"):
        truth = tf.cast(masks, tf.float32)
        truth = tf.where(tf.equal(masks, records.IGNORE), tf.fill(tf.shape(truth), 0.5), truth)
        return _side_by_side(images, truth, probs, outline)


def class_window_panels(images, masks, classes, outline=2):
    """window_panels for K >= 2 classes: truth and predicted class map in palette() colours.

    images [B, in, in, 3] f32 in [0, 1]; masks and classes [B, out, out, 1] u8 (class
    values; masks also 255 = ignore) -> [B, in, 3 * in + 2 * PANEL_GAP, 3] u8.
    """
    with tf.name_scope("window_panels"):
        table = tf.constant(palette().astype(np.float32) / 255.0)  # [256, 3]

        def coloured(index):  # [B, out, out, 1] u8 -> [B, out, out, 3] f32
            return tf.gather(table, tf.cast(index[..., 0], tf.int32))

        return _side_by_side(images, coloured(masks), coloured(classes), outline)


def _side_by_side(images, truth, prediction, outline):
    """The panels of window_panels; truth, prediction: f32 in [0, 1], [B, out, out, 1 or 3]
    (one channel is grey)."""
    size, out = int(images.shape[1]), int(truth.shape[1])
    border = (size - out) // 2
    width = min(outline, border)

    def place(x, margin):  # [b, in - 2 margin, in - 2 margin, c] -> [b, in, in, c]
        return tf.pad(x, [[0, 0], [margin, margin], [margin, margin], [0, 0]])

    inside = place(tf.ones([1, out, out, 1]), border)  # [1, in, in, 1], 1 on the output area
    ring = place(tf.ones([1, out + 2 * width, out + 2 * width, 1]), border - width) - inside
    context = (1.0 - inside) * tf.constant(CONTEXT_RGB)  # [1, in, in, 3]

    def output_panel(values):  # [B, out, out, 1 or 3] in [0, 1] -> [B, in, in, 3]
        return place(values, border) * inside + context

    panels = [images, output_panel(truth), output_panel(prediction)]
    panels = [p * (1.0 - ring) + ring * tf.constant(OUTPUT_OUTLINE_RGB) for p in panels]
    gap = tf.ones_like(images[:, :, :PANEL_GAP, :])
    row = tf.concat([panels[0], gap, panels[1], gap, panels[2]], axis=2)
    return tf.cast(tf.round(tf.clip_by_value(row * 255.0, 0.0, 255.0)), tf.uint8)


# ------------------------------------------------------------ confusion matrix (K >= 2)

CELL = 24  # px per confusion-matrix cell
SWATCH = 8  # px of the class-colour strips beside the rows and above the columns


def confusion_image(matrix):
    """uint8 [C * CELL + SWATCH, C * CELL + SWATCH, 3] RGB of a confusion matrix [C, C]
    (row = true class, column = predicted): each cell shaded white (0) to dark blue (all of
    its row: the share of the true class's pixels predicted as the column's class), with
    the class colours of palette() along the top and the left. A row without pixels is grey.
    """
    m = np.asarray(matrix, np.float64)
    c = m.shape[0]
    rows = m.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, m / np.maximum(rows, 1), np.nan)  # [C, C]
    dark = np.array([8, 48, 107], np.float64)  # the dark blue of share 1
    cells = np.where(np.isnan(share)[..., None], np.array(IGNORE_RGB, np.float64),
                     255.0 + np.nan_to_num(share)[..., None] * (dark - 255.0))
    grid = np.repeat(np.repeat(np.round(cells).astype(np.uint8), CELL, 0), CELL, 1)
    colours = palette()[:c]
    image = np.full((c * CELL + SWATCH, c * CELL + SWATCH, 3), 255, np.uint8)
    image[SWATCH:, SWATCH:] = grid
    image[:SWATCH, SWATCH:] = np.repeat(colours, CELL, 0)[None]
    image[SWATCH:, :SWATCH] = np.repeat(colours, CELL, 0)[:, None]
    image[SWATCH + CELL::CELL, SWATCH:] = 255  # white lines between the cells
    image[SWATCH:, SWATCH + CELL::CELL] = 255
    return image


def image_value(tag, rgb):
    """A Summary.Value holding uint8 [H, W, 3] RGB as PNG, for a FileWriter (no graph op:
    train.py's graph is finalized and evaluate.py has none)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode the {tag} image as PNG")
    return v1.Summary.Value(tag=tag, image=v1.Summary.Image(
        height=rgb.shape[0], width=rgb.shape[1], colorspace=3,
        encoded_image_string=png.tobytes()))
