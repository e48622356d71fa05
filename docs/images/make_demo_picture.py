"""The README's picture: held-out photos of `python demo.py`, each as photo | truth | prediction.

    python docs/images/make_demo_picture.py --run-dir logs/demo \
        --records 'data/scenes_cat-val-*' --records 'data/pets_cat-test-*' \
        --out docs/images/demo_overlay.jpg

For each --records set (the demo's held-out photos, never trained on) it predicts
every photo that has a cat with the run's last checkpoint at threshold 0.5 (as the
demo scores them), and shows the photo of MEDIAN image IoU: a typical result, neither
the best nor the worst. One row per set: the photo, the truth (cat tinted green, the
ignored trimap border grey) and predict.py's overlay (prediction tinted red and
outlined yellow, the truth outlined green). Prints each chosen photo with its IoU.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: filters TensorFlow's start-up noise)

# isort: split
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import predict  # noqa: E402
from core import rundir  # noqa: E402
from datasets import pipeline, records  # noqa: E402
from utils import cli, errors  # noqa: E402

GAP = 4  # white pixels between panels
THRESHOLD = 0.5


def held_out(pattern):
    """(filename, encoded image, uint8 mask [H, W]) of every record with a cat."""
    for path in pipeline.list_records(pattern):
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(raw.numpy()).features.feature
            mask = cv2.imdecode(np.frombuffer(example[records.MASK].bytes_list.value[0],
                                              np.uint8), cv2.IMREAD_UNCHANGED)
            if (mask == records.FOREGROUND).any():
                yield (example[records.FILENAME].bytes_list.value[0].decode(),
                       example[records.IMAGE].bytes_list.value[0], mask)


def image_iou(prob, mask):
    valid = mask != records.IGNORE
    pred, truth = (prob >= THRESHOLD) & valid, (mask == records.FOREGROUND) & valid
    return (pred & truth).sum() / max(1, (pred | truth).sum())


def truth_panel(image, mask):
    out = image.astype(np.float32)
    for value, colour in ((records.FOREGROUND, (0, 200, 0)), (records.IGNORE, (128, 128, 128))):
        region = mask == value
        out[region] = 0.45 * out[region] + 0.55 * np.array(colour, np.float32)
    return np.round(out).astype(np.uint8)


def row(image, prob, mask):
    panels = [image, truth_panel(image, mask),
              predict.overlay(image, prob >= THRESHOLD, mask == records.FOREGROUND)]
    gap = np.full((image.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default="logs/demo")
    p.add_argument("--records", action="append", required=True, help="held-out records glob; "
                   "repeat for one row each")
    p.add_argument("--out", default=os.path.join("docs", "images", "demo_overlay.jpg"))
    args = p.parse_args(argv)
    rows = []
    checkpoint = rundir.resolve(args.run_dir, args.run_dir)  # the last, as the demo scores
    with predict.Predictor(args.run_dir, checkpoint) as predictor:
        for pattern in args.records:
            scored = []
            for name, encoded, mask in held_out(pattern):
                image, prob = predictor(encoded)
                scored.append((image_iou(prob, mask), name, image, prob, mask))
            scored.sort(key=lambda s: (s[0], s[1]))
            iou, name, image, prob, mask = scored[(len(scored) - 1) // 2]
            print(f"{pattern}: median of {len(scored)} photos with cats: {name}, "
                  f"image IoU {iou:.3f}")
            rows.append(row(image, prob, mask))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, GAP), ((width - r.shape[1]) // 2, (width - r.shape[1] + 1) // 2),
                       (0, 0)), constant_values=255) for r in rows]  # centred
    picture = np.concatenate(rows)[:-GAP]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    errors.write_atomic(args.out, jpeg.tobytes())
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
