"""TensorBoard's `windows` image: what the network sees, the truth and its prediction,
side by side (docs/tensorboard.md says how to read it)."""

import tensorflow as tf

from datasets import records

v1 = tf.compat.v1


# The colours of the paper's overlap-tile figure (Fig. 2): the prediction covers the yellow
# area and sees the blue one.
OUTPUT_OUTLINE_RGB = (1.0, 0.8, 0.0)
CONTEXT_RGB = (0.1, 0.25, 0.6)
PANEL_GAP = 4  # white pixels between the panels of a window summary


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
        size, out = int(images.shape[1]), int(masks.shape[1])
        border = (size - out) // 2
        width = min(outline, border)

        def place(x, margin):  # [b, in - 2 margin, in - 2 margin, c] -> [b, in, in, c]
            return tf.pad(x, [[0, 0], [margin, margin], [margin, margin], [0, 0]])

        inside = place(tf.ones([1, out, out, 1]), border)  # [1, in, in, 1], 1 on the output area
        ring = place(tf.ones([1, out + 2 * width, out + 2 * width, 1]), border - width) - inside
        context = (1.0 - inside) * tf.constant(CONTEXT_RGB)  # [1, in, in, 3]

        def output_panel(grey):  # [B, out, out, 1] in [0, 1] -> [B, in, in, 3]
            return place(grey, border) * inside + context

        truth = tf.cast(masks, tf.float32)
        truth = tf.where(tf.equal(masks, records.IGNORE), tf.fill(tf.shape(truth), 0.5), truth)
        panels = [images, output_panel(truth), output_panel(probs)]
        panels = [p * (1.0 - ring) + ring * tf.constant(OUTPUT_OUTLINE_RGB) for p in panels]
        gap = tf.ones_like(images[:, :, :PANEL_GAP, :])
        row = tf.concat([panels[0], gap, panels[1], gap, panels[2]], axis=2)
        return tf.cast(tf.round(tf.clip_by_value(row * 255.0, 0.0, 255.0)), tf.uint8)
