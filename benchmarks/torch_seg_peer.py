"""The PyTorch quality peer: a U-Net as a PyTorch user would write it, at this project's scale.

    /path/to/python -m benchmarks.torch_seg_peer '<json TorchSpec>'   (quality.py runs it)

Written here from the U-Net paper's shape and common PyTorch practice (no code
taken from any other project):

  network   depth levels of two SAME-padded 3x3 convs, each followed by
            BatchNorm and ReLU; 2x2 max pools down; 2x2 stride-2 transposed
            convs up, concatenated with the skip; a 1x1 conv to 2 classes
            (background, cat). The same depth and base filters as the
            benchmark's Base, so about as many parameters as ours.
  input     each photo resized as ours are (datasets/pipeline.resize_image:
            the long side to the Base's, shrink by area, the mask nearest),
            placed at the top left of a square of the long side rounded up
            to a multiple of 2**depth; the padding is ignored by the loss.
            Values in [0, 1]; left-right flips half of the time (the Base's
            --augment flip). Batch, seed and wall time as the Base's.
  loss      cross-entropy over the non-ignored pixels plus dice_weight x
            (1 - soft Dice of the cat channel), Adam at a constant rate.
  data      the same training records (datasets/records parsing, read
            through TensorFlow's TFRecord reader once at start-up; then
            numpy and torch only).
  clock     from before the records are read (decoding is inside the budget, as
            it is for ours and the Keras peer) to the stop
  curve     foreground IoU on the tune records at the training scale
            after every `val_every` epochs and at the end (its own periodic
            validation, inside the budget as ours is).
  scores    every image of each scored set at full size: the cat
            probability at the training scale, resized back bilinearly,
            threshold 0.5, counted by metrics.confusion / metrics.summarize,
            as evaluate.py does.

torch is an optional benchmark dependency (`pip install torch==2.13.0`, the CPU
build); benchmarks/quality.py skips this peer with a note when it is missing.
Prints one line `RESULT <json>` (the fields of keras_seg_peer.PeerResult).
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

THRESHOLD = 0.5
CAT = 1
IGNORE = 255  # datasets.records.IGNORE, without importing TensorFlow here


@dataclasses.dataclass(frozen=True)
class TorchSpec:
    train: tuple  # globs of the training records, read as one set
    tune: tuple  # globs of the curve's records
    sets: dict  # {name: glob} scored on full images after training
    minutes: float  # training wall time, its periodic validations included
    seed: int = 0
    long_side: int = 128  # photos resized so their longer side is this (the Base's)
    depth: int = 3  # 2x2 max pools (the Base's)
    base_filters: int = 16  # channels of the first level, doubled per level (the Base's)
    batch_size: int = 8
    learning_rate: float = 1e-3  # Adam's default
    dice_weight: float = 0.5  # the Base's
    bn_momentum: float = 0.1  # PyTorch's default (it weighs the new batch: Keras' 0.9)
    val_every: int = 1  # epochs between points of the curve
    threads: int = 1  # intra- and inter-op threads (the benchmark pins the process to one core)


def square_size(long_side, depth):
    """The training square: long_side rounded up to a multiple of 2**depth."""
    step = 2 ** depth
    return -(-long_side // step) * step


def build_model(depth=3, base_filters=16, num_classes=2, in_channels=3, bn_momentum=0.1):
    """torch.nn.Module: float32 [N, C, s, s] (s divisible by 2**depth) -> logits
    [N, num_classes, s, s]."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout, momentum=bn_momentum), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout, momentum=bn_momentum), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [base_filters * 2 ** level for level in range(depth + 1)]
            self.down = nn.ModuleList(block(cin, cout)
                                      for cin, cout in zip([in_channels] + widths, widths))
            self.up = nn.ModuleList(nn.ConvTranspose2d(widths[lv + 1], widths[lv], 2, stride=2)
                                    for lv in reversed(range(depth)))
            self.merge = nn.ModuleList(block(2 * widths[lv], widths[lv])
                                       for lv in reversed(range(depth)))
            self.head = nn.Conv2d(base_filters, num_classes, 1)

        def forward(self, x):
            skips = []
            for level, down in enumerate(self.down):
                x = down(nn.functional.max_pool2d(x, 2) if level else x)
                skips.append(x)
            skips.pop()  # the bottom level has no skip
            for up, merge in zip(self.up, self.merge):
                x = merge(torch.cat([skips.pop(), up(x)], 1))
            return self.head(x)

    return UNet()


def loss_fn(logits, labels, dice_weight):
    """Cross-entropy over non-ignored pixels + dice_weight * (1 - soft Dice of the cat).

    logits [N, 2, s, s] float; labels [N, s, s] int64 (0, 1, IGNORE)."""
    import torch

    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    if not dice_weight:
        return ce
    valid = (labels != IGNORE).float()
    cat = torch.softmax(logits, 1)[:, CAT] * valid
    truth = (labels == CAT).float()
    dice = (2 * (cat * truth).sum() + 1.0) / (cat.sum() + truth.sum() + 1.0)
    return ce + dice_weight * (1.0 - dice)


# ------------------------------------------------------------ data


def load(patterns, long_side):
    """[(image uint8 [h, w, 3], mask uint8 [h, w])] of the records, resized as ours are."""
    import tensorflow as tf

    from benchmarks import keras_seg_peer
    from datasets import pipeline

    out = []
    for image, mask in keras_seg_peer.examples(patterns):
        image = pipeline.resize_image(image, long_side)
        mask = pipeline.resize_mask(mask, long_side)
        out.append((image.numpy(), tf.squeeze(mask, -1).numpy()))
    return out


def letterbox(photos, size):
    """(x float32 [N, 3, size, size] in [0, 1], labels int64 [N, size, size]): each photo at
    the top left, the rest 0 and IGNORE."""
    x = np.zeros([len(photos), 3, size, size], np.float32)
    labels = np.full([len(photos), size, size], IGNORE, np.int64)
    for i, (image, mask) in enumerate(photos):
        h, w = mask.shape
        x[i, :, :h, :w] = image.transpose(2, 0, 1) / 255.0
        labels[i, :h, :w] = mask
    return x, labels


# ------------------------------------------------------------ training and scoring


def window_iou(model, x, labels):
    """Foreground IoU at THRESHOLD of the letterboxed tune photos (the curve's metric)."""
    import torch

    from core import metrics

    total = np.zeros(4, np.int64)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), 8):
            prob = torch.softmax(model(torch.from_numpy(x[i:i + 8])), 1)[:, CAT].numpy()
            truth = labels[i:i + 8].astype(np.uint8)  # IGNORE fits: 255
            total += metrics.confusion(prob, truth, [THRESHOLD])[0]
    model.train()
    return float(metrics.rates(total)["foreground_iou"])


def score(model, pattern, spec):
    """evaluate.py's numbers for every full image of the records (see the module doc)."""
    import tensorflow as tf
    import torch

    from benchmarks import keras_seg_peer
    from core import metrics
    from datasets import pipeline

    step, counts = 2 ** spec.depth, []
    model.eval()
    with torch.no_grad():
        for image, mask in keras_seg_peer.examples(pattern):
            small = pipeline.resize_image(image, spec.long_side).numpy()
            h, w = small.shape[:2]
            x = np.zeros([1, 3, -(-h // step) * step, -(-w // step) * step], np.float32)
            x[0, :, :h, :w] = small.transpose(2, 0, 1) / 255.0
            prob = torch.softmax(model(torch.from_numpy(x)), 1)[0, CAT, :h, :w].numpy()
            full = tf.image.resize(prob[:, :, None], tf.shape(image)[:2], "bilinear")
            counts.append(metrics.confusion(full.numpy()[:, :, 0], mask.numpy()[:, :, 0],
                                            [THRESHOLD])[0])
    counts = np.stack(counts)
    return {"images": len(counts), "model": metrics.summarize(counts),
            "all_background": metrics.summarize(metrics.all_background(counts)),
            "counts": [int(c) for c in counts.sum(axis=0)]}


def run(spec):
    """Train for spec.minutes, then score every set; the keras_seg_peer.PeerResult fields."""
    import tensorflow as tf
    import torch

    torch.set_num_threads(spec.threads)
    torch.set_num_interop_threads(spec.threads)
    tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
    tf.config.threading.set_inter_op_parallelism_threads(spec.threads)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    size = square_size(spec.long_side, spec.depth)
    # The clock starts before the records are read: ours and the Keras peer decode inside
    # their budgets too.
    start = time.monotonic()
    train_x, train_y = letterbox(load(spec.train, spec.long_side), size)
    tune_x, tune_y = letterbox(load(spec.tune, spec.long_side), size)
    if len(train_x) < spec.batch_size:
        from utils.cli import UserError

        raise UserError(f"{' + '.join(spec.train)} hold {len(train_x)} images, fewer than one "
                        f"batch of {spec.batch_size}")
    model = build_model(spec.depth, spec.base_filters, 2, 3, spec.bn_momentum)
    optimizer = torch.optim.Adam(model.parameters(), spec.learning_rate)
    model.train()
    steps, epochs, curve, first = 0, 0, [], None
    done = False
    while not done:
        epochs += 1
        order = rng.permutation(len(train_x))
        for i in range(0, len(order) - spec.batch_size + 1, spec.batch_size):
            batch = order[i:i + spec.batch_size]
            x, y = train_x[batch].copy(), train_y[batch].copy()
            flip = rng.random(len(batch)) < 0.5
            x[flip], y[flip] = x[flip][..., ::-1], y[flip][..., ::-1]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y), spec.dice_weight)
            loss.backward()
            optimizer.step()
            steps += 1
            first = first if first is not None else time.monotonic() - start
            if time.monotonic() - start >= spec.minutes * 60:
                done = True
                break
        if not done and epochs % spec.val_every == 0:
            curve.append([time.monotonic() - start, window_iou(model, tune_x, tune_y)])
    train_seconds = time.monotonic() - start
    curve.append([train_seconds, window_iou(model, tune_x, tune_y)])
    return {"steps": steps, "epochs": epochs, "train_seconds": train_seconds,
            "first_step_seconds": first,
            "images_per_s": steps * spec.batch_size / max(train_seconds, 1e-9),
            "parameters": int(sum(p.numel() for p in model.parameters())), "curve": curve,
            "scores": {name: score(model, pattern, spec) for name, pattern in spec.sets.items()}}


def spec_from_json(text):
    raw = json.loads(text)
    for key in ("train", "tune"):
        raw[key] = (raw[key],) if isinstance(raw[key], str) else tuple(raw[key])
    return TorchSpec(**raw)


def main(argv=None):
    from utils import quiet  # noqa: F401  (TensorFlow's start-up lines would bury an error)

    argv = sys.argv[1:] if argv is None else argv
    print("RESULT", json.dumps(run(spec_from_json(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    from utils import cli  # noqa: E402  (ROOT is on sys.path only now)

    sys.exit(cli.run_main(main))
