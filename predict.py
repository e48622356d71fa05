"""Full-resolution masks for your own pictures with a trained run (docs/inference.md).

    python predict.py --run logs/demo photo.jpg more/ --out predictions/

For every image (a directory: its .jpg/.jpeg/.png files) it writes <stem>_mask.png
(0/255, the input's size), <stem>_overlay.png and, with --save-probabilities,
<stem>_prob.png, through core/tiling.py's overlap-tile graph at the run's training scale.
A run of K >= 2 classes writes <stem>_classes.png (the class index of each pixel, the
argmax), <stem>_overlay.png in the class colours with a legend below, <stem>_<class>.png
(0/255) for each --class and, with --save-probabilities, <stem>_prob_<class>.png per class
(background too; 16-bit, probability x 65535). Bad images get one error line each; the
rest are still predicted, and the exit code is 1 if any failed.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import os
import re
import sys

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from core import config, rundir, summaries, tiling
from datasets import records
from utils import cli, errors
from utils.cli import UserError

v1 = tf.compat.v1

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_prob.png")
CLASSES_SUFFIX = "_classes.png"  # K >= 2: the class map
PROB_SCALE = 65535  # K >= 2 probability maps: 16-bit PNG, probability x PROB_SCALE
LEGEND_RGB = (40, 40, 40)  # the K >= 2 overlay's legend band, under white names
TINT = (255, 0, 0)  # RGB red over predicted foreground
OUTLINE = (255, 255, 0)  # RGB yellow around it
TRUTH_OUTLINE = (0, 255, 0)  # RGB green around the ground truth (evaluate overlays)


class Predictor:
    """A run's network restored in its own graph: encoded image bytes -> probabilities
    (K >= 2 classes: per-class probabilities and the class map, see classify)."""

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
            self.names = config.class_names(self.cfg) if self.cfg.num_outputs > 1 else None
            # [H, W] float32, or [H, W, C] for K >= 2, as export.build computes it
            self._prob = tiling.probability_map(self._image, self.cfg, batch_size, flip_test)
            if self.names:  # its argmax [H, W] uint8
                self._classes = tiling.class_map(self._prob)
            self.session = v1.Session(graph=self.graph)
        try:
            rundir.restore(self.session, self.checkpoint, self.cfg)
        except BaseException:
            self.session.close()
            raise
        self.graph.finalize()

    def __call__(self, encoded):
        """(image uint8 [H, W, 3], probability float32 [H, W]; K >= 2: [H, W, C]); UserError
        if undecodable."""
        return self._run([self._image, self._prob], encoded)

    def classify(self, encoded):
        """K >= 2: (image uint8 [H, W, 3], probabilities float32 [H, W, C], class map uint8
        [H, W]); UserError if undecodable."""
        return self._run([self._image, self._prob, self._classes], encoded)

    def _run(self, fetches, encoded):
        try:
            return self.session.run(fetches, {self._encoded: encoded})
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            if "-pixel cap" in e.message:
                raise UserError(records.cap_message(self.max_pixels)) from None
            raise UserError(f"not a readable JPEG/PNG image ({errors.summary(e)})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()


def collect_images(inputs, out_dir=None, suffixes=OUTPUT_SUFFIXES):
    """Image paths from files and directories (a directory's .jpg/.jpeg/.png files, sorted,
    minus this tool's outputs, named by `suffixes`, when it is out_dir), and (input,
    message) for bad inputs."""
    paths, failed = [], []
    out_real = os.path.realpath(out_dir) if out_dir else None
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item)
                           if n.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(item, n)))
            if os.path.realpath(item) == out_real:
                names = [n for n in names if not n.endswith(suffixes)]
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


def class_overlay(image, classes, names, truth=None):
    """uint8 [H + legend, W, 3] RGB: `image` with each class of the class map (uint8 [H, W])
    tinted and outlined in its summaries.palette() colour (background untouched), and a
    legend band below naming the classes' colours (bool `truth`: outlined green)."""
    colours = summaries.palette()
    out = image.astype(np.float32)
    shown = classes != 0
    out[shown] = 0.55 * out[shown] + 0.45 * colours[classes[shown]].astype(np.float32)
    out = np.round(out).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    outlines = [(classes == c, tuple(int(v) for v in colours[c])) for c in range(1, len(names))]
    outlines += [(truth, TRUTH_OUTLINE)] if truth is not None else []
    for region, colour in outlines:
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return np.concatenate([out, legend(names, image.shape[1])], axis=0)


LEGEND_ROW = 16  # px per legend row
_FONT, _SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def legend(names, width):
    """uint8 [rows * LEGEND_ROW, width, 3]: a colour swatch and the name of each class
    1..K of names, as many to a row as fit in `width` (one at least, cut at the edge)."""
    colours, entries, row, x = summaries.palette(), [[]], 0, 4
    for c, name in enumerate(names[1:], 1):
        size = 14 + cv2.getTextSize(name, _FONT, _SCALE, 1)[0][0] + 10
        if entries[row] and x + size > width:
            entries.append([])
            row, x = row + 1, 4
        entries[row].append((x, c, name))
        x += size
    band = np.full((len(entries) * LEGEND_ROW, width, 3), LEGEND_RGB, np.uint8)
    for r, items in enumerate(entries):
        top = r * LEGEND_ROW
        for x, c, name in items:
            cv2.rectangle(band, (x, top + 3), (x + 9, top + 12), tuple(int(v) for v in colours[c]),
                          cv2.FILLED)
            cv2.putText(band, name, (x + 14, top + 12), _FONT, _SCALE, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return band


def write_png(path, array):
    """Write uint8 (or uint16) [H, W] or RGB [H, W, 3] as PNG, atomically (temp file, then
    rename)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG")
    try:
        errors.write_atomic(path, encoded.tobytes())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def output_paths(out_dir, image_path, names=None):
    """{kind: path} of an image's outputs: mask, overlay, prob; for K >= 2 (names: the
    run's class names) classes, overlay, class:<name> and prob:<name> for every class."""
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0])
    return {kind: stem + suffix for kind, suffix in output_suffixes(names).items()}


def file_part(name):
    """A class name as it appears in output file names: runs of other than letters,
    digits, '.', '-' and '_' become one '_' ("traffic light" -> "traffic_light")."""
    return re.sub(r"[^\w.-]+", "_", name)


def output_suffixes(names=None):
    """{kind: suffix} of output_paths."""
    if names is None:
        return dict(zip(("mask", "overlay", "prob"), OUTPUT_SUFFIXES))
    out = {"classes": CLASSES_SUFFIX, "overlay": OUTPUT_SUFFIXES[1]}
    out.update({f"class:{n}": f"_{file_part(n)}.png" for n in names[1:]})
    out.update({f"prob:{n}": f"_prob_{file_part(n)}.png" for n in names})
    return out


def check_classes(cfg, wanted):
    """UsageError unless every --class of `wanted` is one of a K >= 2 run's classes."""
    if wanted and cfg.num_outputs == 1:
        raise cli.UsageError(f"--class needs a run of several classes; this run has one "
                             f"foreground output (classes {', '.join(cfg.classes)}), its mask "
                             "is <stem>_mask.png")
    for name in wanted:
        if name not in cfg.classes:
            raise cli.UsageError(f"--class {name!r} is not one of the run's classes "
                                 f"({', '.join(cfg.classes)}): pass one of them")


def predict(run_dir, inputs, out_dir, checkpoint=None, threshold=None, batch_size=4,
            max_pixels=records.DEFAULT_MAX_PIXELS,
            save_probabilities=False, progress=True, classes=(),
            flip_test=False):
    """Predict every image in `inputs` into `out_dir`.

    classes: the --class names to write a binary mask of (K >= 2 runs only).
    Returns {"threshold", "threshold_source", "checkpoint", "written": [mask paths; K >= 2:
    class map paths], "failed": [(input, message)]}; K >= 2 decides by the argmax, so its
    threshold is None. Raises UserError for problems with the run or when there is no
    image at all; bad single images only land in "failed".
    flip_test: average each map with its mirror image's (tiling.flip_averaged).
    """
    cfg = rundir.load_config(run_dir)
    check_classes(cfg, classes)
    decision = rundir.decision(run_dir, cfg, threshold)
    names, threshold, source = decision.names, decision.threshold, decision.source
    main_output = "mask" if names is None else "classes"
    paths, failed = collect_images(inputs, out_dir, tuple(output_suffixes(names).values()))
    seen = {}
    for path in list(paths):
        mask_path = output_paths(out_dir, path, names)[main_output]
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
                targets = output_paths(out_dir, path, names)
                if names is None:
                    image, prob = predictor(encoded)
                    mask = prob >= threshold
                    _make_out_dir(out_dir)
                    write_png(targets["mask"], mask.astype(np.uint8) * 255)
                    write_png(targets["overlay"], overlay(image, mask))
                    if save_probabilities:
                        write_png(targets["prob"], np.round(prob * 255).astype(np.uint8))
                else:
                    image, probs, class_map = predictor.classify(encoded)
                    _make_out_dir(out_dir)
                    _write_classes(targets, image, probs, class_map, names, classes,
                                   save_probabilities)
                written.append(targets[main_output])
            except UserError as e:
                failed.append((path, str(e)))
                tqdm.write(f"error: {path}: {e}", file=sys.stderr)
    return {"threshold": threshold, "threshold_source": source,
            "checkpoint": predictor.checkpoint, "written": written, "failed": failed}


def _make_out_dir(out_dir):
    # Only once an image is predicted: a bad run, checkpoint or every input bad leaves no
    # empty --out.
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out_dir}: {e.strerror}") from None


def _write_classes(targets, image, probs, class_map, names, wanted, save_probabilities):
    """A K >= 2 image's outputs: class map, overlay, each --class mask, the probabilities."""
    write_png(targets["classes"], class_map)
    write_png(targets["overlay"], class_overlay(image, class_map, names))
    for name in wanted:
        write_png(targets[f"class:{name}"], (class_map == names.index(name)).astype(np.uint8)
                  * 255)
    if save_probabilities:
        for c, name in enumerate(names):
            write_png(targets[f"prob:{name}"],
                      np.round(probs[..., c] * PROB_SCALE).astype(np.uint16))


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Predict full-size masks with a trained run (overlap-tile).")
    parser.add_argument("inputs", nargs="+", help="image files (.jpg/.jpeg/.png) or "
                        "directories of them")
    cli.add_run_flags(parser, "probability threshold in [0, 1] " + rundir.THRESHOLD_HELP)
    parser.add_argument("--out", default="predictions", help="output directory "
                        "(default: %(default)s)")
    parser.add_argument("--save-probabilities", "--probabilities", action="store_true",
                        help="also write <stem>_prob.png, the probability x 255 (K >= 2 "
                        "classes: <stem>_prob_<class>.png per class, 16-bit, x 65535)")
    parser.add_argument("--class", dest="classes", action="append", default=[],
                        metavar="NAME", help="K >= 2 classes: also write <stem>_<NAME>.png, "
                        "that class's mask (0/255); repeat for several")
    cli.add_max_pixels_flag(parser, records.DEFAULT_MAX_PIXELS,
                            "refuse an image larger than this many pixels")
    parser.add_argument("--flip-test", action="store_true", help="test-time flip: average "
                        "each image's probabilities with its left-right mirror's (2x the time)")
    args = parser.parse_args(argv)
    result = predict(args.run_dir, args.inputs, args.out, args.checkpoint, args.threshold,
                     args.batch_size, args.max_pixels, args.save_probabilities,
                     progress=not args.no_progress, classes=tuple(args.classes),
                     flip_test=args.flip_test)
    if result["threshold"] is None:
        print(f"wrote {len(result['written'])} class maps to {args.out} "
              f"(checkpoint {result['checkpoint']}, each pixel the most probable class)")
    else:
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
