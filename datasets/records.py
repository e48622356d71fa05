"""The TFRecord schema shared by the converters (writers) and datasets/pipeline.py (reader).

One `tf.train.Example` per image, the keys below (dtypes in FEATURES; table in
docs/convert.md). Mask values are the constants below; every stage that reads
or writes masks uses them instead of literals:

    0 (BACKGROUND)   none of the chosen classes
    1 .. K           the chosen classes, in the order the converter was given them
                     (K = 1, FOREGROUND: the records of every version before class
                     indices, which merged several chosen classes into this one value)
    255 (IGNORE)     unknown: crowd regions, trimap borders, void; never scored

K and the class names are not in the records but in the stats file beside the
shards (datasets/shards.py: "classes", and "class_pixels" with K + 1 counts; stats
without class_pixels are older and mean K = 1), which every reader checks.
"""

import tensorflow as tf

from utils import errors

SCHEMA_VERSION = 1

# The commands that write these records: every "re-create the records" hint names them
# from here, so a new converter is added once.
CONVERTERS = ("convert_coco.py", "convert_pets.py", "convert_yolo.py", "convert_masks.py")
# "convert_coco.py, convert_pets.py, convert_yolo.py or convert_masks.py"
RECREATE_HINT = ", ".join(CONVERTERS[:-1]) + " or " + CONVERTERS[-1]
# What TensorFlow raises for a record it cannot read or parse, inside sess.run or eagerly.
# UnicodeDecodeError: its answer to bytes that are no Example proto (the message quotes them).
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
               tf.errors.PermissionDeniedError, UnicodeDecodeError)
NOT_AN_EXAMPLE = "not a tf.train.Example"

IMAGE = "image/encoded"  # RGB: a 3-channel JPEG source's own bytes, else PNG; decode_image reads it
FORMAT = "image/format"  # b"jpeg" or b"png"
HEIGHT = "image/height"
WIDTH = "image/width"
IMAGE_ID = "image/id"  # COCO image id; Oxford-IIIT Pet: CLASS-ID * 10000 + the photo's number
FILENAME = "image/filename"  # inside the COCO split directory (Pet: inside images/)
MASK = "mask/encoded"  # PNG, uint8, 1 channel, the image's size: BACKGROUND, 1..K, IGNORE
VERSION = "schema/version"  # SCHEMA_VERSION; readers reject other versions

BACKGROUND = 0
FOREGROUND = 1  # the one class of K = 1 records; class k of K >= 2 records is value k
IGNORE = 255
MAX_CLASSES = IGNORE - 1  # 1..254: a class index must stay below IGNORE

FEATURES = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_ID: tf.io.FixedLenFeature([], tf.int64),
    FILENAME: tf.io.FixedLenFeature([], tf.string),
    MASK: tf.io.FixedLenFeature([], tf.string),
    VERSION: tf.io.FixedLenFeature([], tf.int64),
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(image_bytes, image_format, height, width, image_id, filename, mask_png):
    """Serialize one image and its PNG mask; returns bytes for a TFRecord."""
    feature = {
        IMAGE: _bytes(image_bytes),
        FORMAT: _bytes(image_format.encode()),
        HEIGHT: _int64(height),
        WIDTH: _int64(width),
        IMAGE_ID: _int64(image_id),
        FILENAME: _bytes(filename.encode()),
        MASK: _bytes(mask_png),
        VERSION: _int64(SCHEMA_VERSION),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Map entries are otherwise ordered by a per-process hash: the same record would
    # get different bytes in a resumed conversion than in an uninterrupted one.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized):
    """Graph op: parse one serialized Example into a dict keyed as above."""
    return tf.io.parse_single_example(serialized, FEATURES)


# Measured peak memory is about 40 bytes a pixel through the overlap-tile graph on top of
# ~0.7 GB (docs/inference.md, "Pixel cap"), so 40 megapixels stays near 2.5 GB.
DEFAULT_MAX_PIXELS = 40_000_000


def _header_int(encoded, pos, length, dtype, little_endian):
    """Graph op: the integer at bytes [pos, pos + length) of encoded, as int64 []."""
    raw = tf.io.decode_raw(tf.strings.substr(encoded, pos, length), dtype,
                           little_endian=little_endian)
    return tf.cast(raw[0], tf.int64)


def header_size(encoded):
    """Graph op: (height, width) int64 [] read from a JPEG/PNG/GIF/BMP header, without
    decoding; (0, 0) for anything else, which decode_image then refuses."""
    padded = encoded + b"\0" * 32  # short inputs still have every header field
    magic = tf.strings.substr(padded, 0, 2)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(encoded), tf.int64)
        return shape[0], shape[1]

    def png():  # IHDR: big-endian width then height at bytes 16..24
        return (_header_int(padded, 20, 4, tf.int32, False),
                _header_int(padded, 16, 4, tf.int32, False))

    def gif():
        return (_header_int(padded, 8, 2, tf.uint16, True),
                _header_int(padded, 6, 2, tf.uint16, True))

    def bmp():  # a negative height means top-down rows
        return (tf.abs(_header_int(padded, 22, 4, tf.int32, True)),
                _header_int(padded, 18, 4, tf.int32, True))

    def other():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    return tf.case([(tf.equal(magic, b"\xff\xd8"), jpeg), (tf.equal(magic, b"\x89P"), png),
                    (tf.equal(magic, b"GI"), gif), (tf.equal(magic, b"BM"), bmp)],
                   default=other, exclusive=True)


def cap_message(max_pixels, flag="--max-pixels"):
    return (f"image is over the {max_pixels:,}-pixel cap: shrink it, or raise the cap "
            f"with {flag}")


def decode_image(encoded, max_pixels=0, cap_flag="--max-pixels"):
    """Graph op: encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3] RGB (gray expanded, alpha
    dropped), for training, evaluation and prediction alike.

    With max_pixels, an image whose header says it is larger fails with
    InvalidArgument naming the cap before anything is decoded.
    """
    if max_pixels:
        height, width = header_size(encoded)
        check = tf.debugging.Assert(
            height * width <= max_pixels,
            [cap_message(max_pixels, cap_flag) + "; header says height, width:", height, width])
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode(parsed, max_pixels=0):
    """Graph op: decoded image [H, W, 3] uint8 and mask [H, W, 1] uint8, checked against
    the schema version and stored size, so a record from another tool fails loudly;
    max_pixels as decode_image."""
    image = decode_image(parsed[IMAGE], max_pixels)
    mask = tf.io.decode_png(parsed[MASK], channels=1)
    size = tf.cast(tf.stack([parsed[HEIGHT], parsed[WIDTH]]), tf.int32)
    checks = [
        tf.debugging.assert_equal(
            parsed[VERSION], tf.constant(SCHEMA_VERSION, tf.int64),
            message=f"record schema version differs from {SCHEMA_VERSION}: "
            f"re-run {RECREATE_HINT}"),
        tf.debugging.assert_equal(
            tf.shape(image)[:2], size,
            message="record image size does not match its height/width"),
        tf.debugging.assert_equal(
            tf.shape(mask)[:2], size,
            message="record mask size does not match its image"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(image), tf.identity(mask)  # static shapes [None, None, 3 / 1]


def read_error_reason(e, malformed=NOT_AN_EXAMPLE):
    """The one-line reason for a READ_ERRORS exception: `malformed` for bytes that are no
    Example proto (TensorFlow's UnicodeDecodeError quotes raw bytes), else TF's message."""
    return malformed if isinstance(e, UnicodeDecodeError) else errors.summary(e)
