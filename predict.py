"""Full-resolution masks for your own pictures with a trained run (docs/inference.md).

    python predict.py --run logs/demo photo.jpg more/ --out predictions/

For every image (a directory: its .jpg/.jpeg/.png files) it writes <stem>_mask.png
(0/255, the input's size), <stem>_overlay.png and, with --save-probabilities,
<stem>_prob.png, through core/tiling.py's overlap-tile graph at the run's training scale.
Bad images get one error line each; the rest are still predicted, and the exit
code is 1 if any failed.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import os
import sys

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from core import rundir, tiling
from datasets import records
from utils import cli, errors
from utils.cli import UserError

v1 = tf.compat.v1

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_prob.png")
TINT = (255, 0, 0)  # RGB red over predicted foreground
OUTLINE = (255, 255, 0)  # RGB yellow around it
TRUTH_OUTLINE = (0, 255, 0)  # RGB green around the ground truth (evaluate overlays)


class Predictor:
    """A run's network restored in its own graph: encoded image bytes -> probabilities."""

    def __init__(self, run_dir, checkpoint=None, batch_size=4,
                 max_pixels=records.DEFAULT_MAX_PIXELS, flip_test=False):
        self.cfg = rundir.load_config(run_dir)
        self.max_pixels = max_pixels
        self.checkpoint = rundir.resolve(run_dir, checkpoint)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._encoded = v1.placeholder(tf.string, [], name="encoded")
            # uint8 [H, W, 3]; over max_pixels (read from the header) it is never decoded
            self._image = records.decode_image(self._encoded, max_pixels)
            def prob(image):  # [H, W]
                return tiling.probabilities(image, self.cfg, batch_size)
            self._prob = tiling.flip_averaged(prob, self._image) if flip_test else prob(
                self._image)
            self.session = v1.Session(graph=self.graph)
        try:
            rundir.restore(self.session, self.checkpoint, self.cfg)
        except BaseException:
            self.session.close()
            raise
        self.graph.finalize()

    def __call__(self, encoded):
        """(image uint8 [H, W, 3], probability float32 [H, W]); UserError if undecodable."""
        try:
            return self.session.run([self._image, self._prob], {self._encoded: encoded})
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            if "-pixel cap" in e.message:
                raise UserError(records.cap_message(self.max_pixels)) from None
            raise UserError(f"not a readable JPEG/PNG image ({errors.summary(e)})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()


def collect_images(inputs, out_dir=None):
    """Image paths from files and directories (a directory's .jpg/.jpeg/.png files, sorted,
    minus this tool's outputs when it is out_dir), and (input, message) for bad inputs."""
    paths, failed = [], []
    out_real = os.path.realpath(out_dir) if out_dir else None
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item)
                           if n.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(item, n)))
            if os.path.realpath(item) == out_real:
                names = [n for n in names if not n.endswith(OUTPUT_SUFFIXES)]
            if not names:
                failed.append((item, "directory has no .jpg, .jpeg or .png images"))
            paths.extend(os.path.join(item, n) for n in names)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            failed.append((item, "no such file or directory"))
    return paths, failed


def overlay(image, mask, truth=None):
    """uint8 [H, W, 3] RGB: `image` with bool `mask` tinted and outlined (bool `truth`: green)."""
    out = image.astype(np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * np.array(TINT, np.float32)
    out = np.round(out).astype(np.uint8)
    # Outlines stay visible on big photos without swamping small ones.
    thickness = max(1, round(max(image.shape[:2]) / 400))
    outlines = [(mask, OUTLINE)] + ([(truth, TRUTH_OUTLINE)] if truth is not None else [])
    for region, colour in outlines:
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def write_png(path, array):
    """Write uint8 [H, W] or RGB [H, W, 3] as PNG, atomically (temp file, then rename)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG")
    try:
        errors.write_atomic(path, encoded.tobytes())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def output_paths(out_dir, image_path):
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return {kind: os.path.join(out_dir, stem + suffix)
            for kind, suffix in zip(("mask", "overlay", "prob"), OUTPUT_SUFFIXES)}


def predict(run_dir, inputs, out_dir, checkpoint=None, threshold=None, batch_size=4,
            max_pixels=records.DEFAULT_MAX_PIXELS,
            save_probabilities=False, progress=True, flip_test=False):
    """Predict every image in `inputs` into `out_dir`.

    Returns {"threshold", "threshold_source", "checkpoint", "written": [mask paths],
    "failed": [(input, message)]}. Raises UserError for problems with the run or
    when there is no image at all; bad single images only land in "failed".
    flip_test: average each map with its mirror image's (tiling.flip_averaged).
    """
    threshold, source = rundir.default_threshold(run_dir, threshold)
    paths, failed = collect_images(inputs, out_dir)
    seen = {}
    for path in list(paths):
        mask_path = output_paths(out_dir, path)["mask"]
        if mask_path in seen:
            failed.append((path, f"same name as {seen[mask_path]}, so it would overwrite its "
                           "outputs: rename it or predict it into another --out"))
            paths.remove(path)
        seen.setdefault(mask_path, path)
    if not paths:
        reasons = "; ".join(f"{p}: {m}" for p, m in failed)
        raise UserError(f"no images to predict ({reasons})")
    written = []
    with Predictor(run_dir, checkpoint, batch_size, max_pixels, flip_test) as predictor:
        for path in tqdm(paths, unit="image", disable=not progress, file=sys.stderr):
            try:
                try:
                    with open(path, "rb") as f:
                        encoded = f.read()
                except OSError as e:
                    raise UserError(f"cannot read it: {e.strerror}") from None
                image, prob = predictor(encoded)
                mask = prob >= threshold
                targets = output_paths(out_dir, path)
                # Only now: a bad run, checkpoint or every input bad leaves no empty --out.
                try:
                    os.makedirs(out_dir, exist_ok=True)
                except OSError as e:
                    raise UserError(f"cannot create output directory {out_dir}: "
                                    f"{e.strerror}") from None
                write_png(targets["mask"], mask.astype(np.uint8) * 255)
                write_png(targets["overlay"], overlay(image, mask))
                if save_probabilities:
                    write_png(targets["prob"], np.round(prob * 255).astype(np.uint8))
                written.append(targets["mask"])
            except UserError as e:
                failed.append((path, str(e)))
                tqdm.write(f"error: {path}: {e}", file=sys.stderr)
    return {"threshold": threshold, "threshold_source": source,
            "checkpoint": predictor.checkpoint, "written": written, "failed": failed}


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Predict full-size masks with a trained run (overlap-tile).")
    parser.add_argument("inputs", nargs="+", help="image files (.jpg/.jpeg/.png) or "
                        "directories of them")
    cli.add_run_flags(parser, "probability threshold in [0, 1] " + rundir.THRESHOLD_HELP)
    parser.add_argument("--out", default="predictions", help="output directory "
                        "(default: %(default)s)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <stem>_prob.png, the probability x 255")
    cli.add_max_pixels_flag(parser, records.DEFAULT_MAX_PIXELS,
                            "refuse an image larger than this many pixels")
    parser.add_argument("--flip-test", action="store_true", help="test-time flip: average "
                        "each image's probabilities with its left-right mirror's (2x the time)")
    args = parser.parse_args(argv)
    result = predict(args.run_dir, args.inputs, args.out, args.checkpoint, args.threshold,
                     args.batch_size, args.max_pixels, args.save_probabilities,
                     progress=not args.no_progress, flip_test=args.flip_test)
    print(f"wrote {len(result['written'])} masks to {args.out} "
          f"(checkpoint {result['checkpoint']}, threshold {result['threshold']:g} "
          f"from {result['threshold_source']})")
    if result["failed"]:
        names = ", ".join(path for path, _ in result["failed"])
        print(f"error: {len(result['failed'])} of "
              f"{len(result['failed']) + len(result['written'])} inputs failed: {names}",
              file=sys.stderr)
        return cli.EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
