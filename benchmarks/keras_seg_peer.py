"""The quality peer: keras.io's "Image segmentation with a U-Net-like architecture".

    python -m benchmarks.keras_seg_peer '<json PeerSpec>'    (benchmarks/quality.py runs it)

The Keras 3 example (fchollet) trains from scratch on Oxford-IIIT Pet: every
photo resized to 160x160 (pixel values 0..255 as they are), an Xception-style
encoder (a strided conv, then blocks of two separable convs, a strided 3x3 max
pool and a strided 1x1 shortcut), a decoder of transposed convs with 2x
upsampling and 1x1 shortcuts, softmax over the 3 trimap classes, sparse
categorical cross-entropy, rmsprop, batch 32. The network here is that one
(`build_model` with 3 classes has the example's 2,058,979 parameters). Adapted
to this benchmark's task, and nothing else:

  classes   2 (background, cat) instead of the 3 trimap classes; the trimap
            border (mask 255) gets sample weight 0 instead of being a class
  data      the same training records as our recipes (cats, dogs as all-0
            masks), resized to 160x160 (image bilinear, mask nearest)
  scale     as published (160x160, batch 32, BatchNorm momentum 0.99), or at
            this project's scale (benchmarks/quality.py's keras-scaled: the
            Base's long side as the square, batch 8, momentum 0.9, so the
            moving statistics settle within a few hundred steps): PeerSpec
  stopping  after the same wall time as our --minutes budget (a callback),
            its periodic validations included, on one core with one thread
  curve     foreground IoU on the tune records at its input size after every
            `val_every` epochs and at the end (its own periodic validation)
  scores    every image of each scored set at full size: the cat probability
            predicted at its input size, resized back bilinearly, threshold 0.5,
            counted by metrics.confusion / metrics.summarize, as ours are

Prints one line `RESULT <json>` (see PeerResult) on stdout. Keras 3 runs
eagerly and owns its variables: never import this where a tf.compat.v1 graph
is built (benchmarks/quality.py starts it as its own process).
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

THRESHOLD = 0.5  # as evaluate.py's default: the reported scores never use a tuned one
CAT = 1  # the softmax channel of the foreground


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    train: tuple  # globs of the training records (one str: one glob), read as one set
    tune: tuple  # globs of the records of its periodic validation (the curve)
    sets: dict  # {name: glob} scored on full images after training
    minutes: float  # training wall time, its periodic validations included
    seed: int = 0
    img_size: int = 160  # the example's input size
    batch_size: int = 32  # the example's
    filters: tuple = (32, 64, 128, 256)  # entry conv, then the encoder blocks (the example's)
    val_every: int = 1  # epochs between points of the curve
    threads: int = 1  # intra- and inter-op threads (the benchmark pins the process to one core)
    jit_compile: object = "auto"  # Keras' default, as in the example (XLA on TensorFlow)
    bn_momentum: float = 0.99  # Keras' default, as in the example


@dataclasses.dataclass
class PeerResult:
    steps: int  # training steps (batches) done
    epochs: int  # epochs begun
    train_seconds: float  # from the first step to the stop, validations included
    first_step_seconds: float  # of train_seconds: tracing and XLA compilation (jit "auto")
    images_per_s: float  # training images per second of train_seconds
    parameters: int
    curve: list  # [[seconds since training began, tune IoU at 160x160], ...]
    scores: dict  # {set name: {"images", "model", "all_background", "counts"}}: evaluate.py's
    #               keys, and the summed (tp, fp, fn, tn) so sets can be combined


def build_model(img_size=160, num_classes=2, filters=(32, 64, 128, 256), bn_momentum=0.99):
    """The example's network: [N, s, s, 3] float32 (0..255) -> softmax [N, s, s, num_classes].

    img_size must be divisible by 2 ** len(filters) (the entry conv and each block halve it).
    """
    import keras
    from keras import layers

    if img_size % 2 ** len(filters):
        raise ValueError(f"img_size {img_size} is not divisible by {2 ** len(filters)}")

    def conv_bn(x, conv, filters):  # ReLU first: the blocks add shortcuts after their BN
        x = layers.Activation("relu")(x)
        return layers.BatchNormalization(momentum=bn_momentum)(
            conv(filters, 3, padding="same")(x))

    inputs = keras.Input((img_size, img_size, 3))
    x = layers.Conv2D(filters[0], 3, strides=2, padding="same")(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization(momentum=bn_momentum)(x))
    shortcut = x
    for width in filters[1:]:  # down: each block halves the size
        x = conv_bn(conv_bn(x, layers.SeparableConv2D, width), layers.SeparableConv2D, width)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(width, 1, strides=2, padding="same")(shortcut)])
        shortcut = x
    for width in reversed(filters):  # up: each block doubles it, back to img_size
        x = conv_bn(conv_bn(x, layers.Conv2DTranspose, width), layers.Conv2DTranspose, width)
        x = layers.UpSampling2D(2)(x)
        projected = layers.Conv2D(width, 1, padding="same")(layers.UpSampling2D(2)(shortcut))
        x = layers.add([x, projected])
        shortcut = x
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs, name="keras_io_unet_like")


# ------------------------------------------------------------ data


def serialized(patterns):
    """tf.data of the serialized records of one glob or a sequence of globs, in order."""
    import tensorflow as tf

    from datasets import pipeline

    patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    return tf.data.TFRecordDataset(
        [f for pattern in patterns for f in pipeline.list_records(pattern)])


def decoded(serialized_record):
    """(image [H, W, 3] uint8, mask [H, W, 1] uint8) of one serialized record."""
    from datasets import records

    return records.decode(records.parse_example(serialized_record))


def examples(patterns):
    """tf.data of (image [H, W, 3] uint8, mask [H, W, 1] uint8) of the records, in order."""
    return serialized(patterns).map(decoded)


def to_inputs(image, mask, img_size):
    """The example's preprocessing: image float32 [s, s, 3] in 0..255, label and weight [s, s]."""
    import tensorflow as tf

    from datasets import records

    x = tf.image.resize(tf.cast(image, tf.float32), [img_size, img_size])
    m = tf.image.resize(mask, [img_size, img_size], "nearest")[:, :, 0]
    ignore = tf.equal(m, records.IGNORE)
    label = tf.where(ignore, tf.zeros_like(m), m)
    return x, tf.cast(label, tf.int32), tf.cast(~ignore, tf.float32)


def training_data(spec):
    """Shuffled (x, label, weight) batches of spec.batch_size; the last partial one dropped."""
    ds = serialized(spec.train)  # shuffled before decoding: the buffer holds bytes, not pixels
    count = int(ds.reduce(0, lambda n, _: n + 1))
    if count < spec.batch_size:
        from utils.cli import UserError

        raise UserError(f"{' + '.join(spec.train)} hold {count} images, fewer than one batch of "
                        f"{spec.batch_size}")
    return (ds.shuffle(count, seed=spec.seed, reshuffle_each_iteration=True)
            .map(lambda r: to_inputs(*decoded(r), spec.img_size), num_parallel_calls=1)
            .batch(spec.batch_size, drop_remainder=True).prefetch(1)), count


def window_iou(model, spec):
    """Foreground IoU on the tune records at the model's input size (the curve's metric)."""
    from core import metrics

    ds = examples(spec.tune).map(lambda i, m: to_inputs(i, m, spec.img_size)).batch(8)
    total = np.zeros(4, np.int64)
    for x, label, weight in ds:
        prob = model(x, training=False).numpy()[..., CAT]
        truth = np.where(weight.numpy() > 0, label.numpy(), 255).astype(np.uint8)
        total += metrics.confusion(prob, truth, [THRESHOLD])[0]
    return float(metrics.rates(total)["foreground_iou"])


def score(model, pattern, img_size):
    """evaluate.py's numbers for every full image of the records, predicted at img_size."""
    import tensorflow as tf

    from core import metrics

    counts = []
    for image, mask in examples(pattern):
        x = tf.image.resize(tf.cast(image, tf.float32)[None], [img_size, img_size])
        prob = model(x, training=False)[..., CAT:CAT + 1]  # [1, s, s, 1]
        prob = tf.image.resize(prob, tf.shape(image)[:2], "bilinear")[0, :, :, 0]
        counts.append(metrics.confusion(prob.numpy(), mask.numpy()[:, :, 0], [THRESHOLD])[0])
    counts = np.stack(counts)  # [N, 4]
    return {"images": len(counts), "model": metrics.summarize(counts),
            "all_background": metrics.summarize(metrics.all_background(counts)),
            "counts": [int(c) for c in counts.sum(axis=0)]}


# ------------------------------------------------------------ training


def _budget_callback(spec):
    """A keras Callback that stops at the budget and records the curve; its fields say what
    happened (steps, epochs, train_seconds, curve)."""
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start, self.steps, self.epochs, self.curve = time.monotonic(), 0, 0, []

        def elapsed(self):
            return time.monotonic() - self.start

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 1:
                self.first_step_seconds = self.elapsed()
            if self.elapsed() >= spec.minutes * 60:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            # Keras ends the epoch after a stop too: that point is on_train_end's.
            if not self.model.stop_training and (epoch + 1) % spec.val_every == 0:
                self.curve.append([self.elapsed(), window_iou(self.model, spec)])

        def on_train_end(self, logs=None):
            self.train_seconds = self.elapsed()
            self.curve.append([self.train_seconds, window_iou(self.model, spec)])

    return Budget()


def run(spec):
    """Train for spec.minutes, then score every set; returns a PeerResult."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
    tf.config.threading.set_inter_op_parallelism_threads(spec.threads)
    keras.utils.set_random_seed(spec.seed)
    train_ds, _ = training_data(spec)
    model = build_model(spec.img_size, 2, spec.filters, spec.bn_momentum)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                  jit_compile=spec.jit_compile)
    budget = _budget_callback(spec)
    model.fit(train_ds, epochs=10**9, callbacks=[budget], verbose=0,
              shuffle=False)  # training_data shuffles
    return PeerResult(
        steps=budget.steps, epochs=budget.epochs, train_seconds=budget.train_seconds,
        first_step_seconds=budget.first_step_seconds,
        images_per_s=budget.steps * spec.batch_size / max(budget.train_seconds, 1e-9),
        parameters=int(model.count_params()), curve=budget.curve,
        scores={name: score(model, pattern, spec.img_size)
                for name, pattern in spec.sets.items()})


def spec_from_json(text):
    raw = json.loads(text)
    raw["filters"] = tuple(raw.get("filters", PeerSpec.filters))
    for key in ("train", "tune"):
        raw[key] = (raw[key],) if isinstance(raw[key], str) else tuple(raw[key])
    return PeerSpec(**raw)


def main(argv=None):
    from utils import quiet  # noqa: F401  (TensorFlow's start-up lines would bury an error)

    argv = sys.argv[1:] if argv is None else argv
    result = run(spec_from_json(argv[0]))
    print("RESULT", json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    from utils import cli  # noqa: E402  (ROOT is on sys.path only now)

    sys.exit(cli.run_main(main))
