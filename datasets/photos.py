"""Source photos for the converters: decode, check, and pick the bytes a record stores.

Every file is decoded, so a corrupt one is found here rather than in training.
Problems raise BadImage(reason, message); the converters stop on it or, with
--skip-bad-images, count it under `reason` in their stats.
"""

import cv2
import numpy as np


class BadImage(Exception):
    """An image file that cannot be used; args are (reason, message)."""


def jpeg_components(data):
    """Colour components in a JPEG's frame header (1 gray, 3 YCbCr/RGB, 4 CMYK), or None."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # no length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return data[i + 9] if i + 9 < len(data) else None
        i += 2 + length
    return None


def decode(path, restore="download it again", what="image"):
    """(file bytes, OpenCV's pixels, [H, W] or [H, W, C]) of an image file.

    Raises BadImage: "missing" (the message ends with `restore`), "unreadable", "corrupt";
    the messages call the file `what`.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImage("missing", f"{what} {path} not found: restore it ({restore})") from None
    except OSError as e:
        raise BadImage("unreadable", f"cannot read {what} {path} ({e.strerror})") from None
    try:  # OpenCV raises rather than returning None on an empty buffer
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None:
        raise BadImage("corrupt", f"image {path} is corrupt or truncated: download it again")
    return data, pixels


def record_image(path, data, pixels):
    """(encoded bytes, "jpeg" | "png") for the record of a decoded file.

    A 3-channel JPEG keeps its own bytes; anything else (gray or CMYK JPEG, PNG with
    alpha or 16 bits, a GIF named .jpg, ...) becomes lossless 8-bit PNG, so
    `tf.io.decode_image(channels=3)` reads RGB for every record.
    """
    if pixels.ndim == 3 and pixels.dtype == np.uint8 and jpeg_components(data) == 3:
        return data, "jpeg"
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise BadImage("unsupported", f"image {path} has {pixels.dtype} pixels; convert it to "
                       "8-bit RGB")
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):  # gray (+ alpha)
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    elif pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return cv2.imencode(".png", pixels)[1].tobytes(), "png"
