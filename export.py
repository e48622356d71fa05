"""Export a trained run as a TensorFlow SavedModel for serving (docs/inference.md, "Export").

    python export.py --run logs/demo --out exported/cat_unet

The "serving_default" signature takes one encoded JPEG/PNG and returns full-size
probabilities (float32 [H, W]) and mask (uint8 [H, W], 0/255) from the same graph
as predict.py (core/tiling.py), so clients need no U-Net geometry; the threshold is
baked in. A run of K >= 2 classes returns instead the class map (uint8 [H, W], the
argmax: 0 background, 1..K the classes in the run's order) and the per-class
probabilities (float32 [H, W, K + 1]); the class names are in the info file. It is a
TF1-style SavedModel (tf.compat.v1.saved_model.Builder) because unet.py builds its
variables with tf.compat.v1.get_variable; tf.saved_model.load, saved_model_cli and
TensorFlow Serving all read it.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import contextlib
import dataclasses
import os
import sys
import tempfile

import tensorflow as tf

from core import rundir, tiling
from datasets import records
from utils import cli, errors
from utils.cli import UserError

v1 = tf.compat.v1

SIGNATURE = "serving_default"
INFO_FILE = os.path.join("assets.extra", "coco_unet.json")


CAP_ASSET = "max_pixels.txt"
CAP_FLAG = "export.py --max-pixels"


def build(cfg, threshold, batch_size, max_pixels=records.DEFAULT_MAX_PIXELS):
    """In the default graph: (encoded string [] placeholder, {"probabilities", "mask",
    "max_pixels"}; K >= 2: {"probabilities" [H, W, C], "classes", "max_pixels"}); an image
    over max_pixels fails with InvalidArgument before decoding."""
    encoded = v1.placeholder(tf.string, [], name="image")
    image = records.decode_image(encoded, max_pixels, CAP_FLAG)
    # predict.Predictor's ops, so the two agree pixel for pixel: [H, W], K >= 2 [H, W, C]
    prob = tiling.probability_map(image, cfg, batch_size)
    if cfg.num_outputs > 1:
        return encoded, {"probabilities": tf.identity(prob, "probabilities"),
                         "classes": tf.identity(tiling.class_map(prob), "classes"),
                         "max_pixels": tf.constant(max_pixels, tf.int64, name="max_pixels")}
    mask = tf.cast(prob >= tf.constant(threshold, prob.dtype), tf.uint8) * 255
    # The cap as an output too, so saved_model_cli show names it.
    return encoded, {"probabilities": tf.identity(prob, "probabilities"),
                     "mask": tf.identity(mask, "mask"),
                     "max_pixels": tf.constant(max_pixels, tf.int64, name="max_pixels")}


def check_out(run_dir, out_dir, overwrite):
    """UserError unless writing out_dir can only replace an earlier export."""
    run, out = os.path.realpath(run_dir), os.path.realpath(out_dir)
    if out == run or out.startswith(run + os.sep) or run.startswith(out + os.sep):
        raise UserError(f"--out {out_dir} is the run directory {run_dir}, inside it or "
                        "contains it, and would destroy it: choose an --out outside the run")
    if not os.path.lexists(out_dir):
        return
    if not overwrite:
        raise UserError(f"{out_dir} already exists: pass --overwrite to replace it, or "
                        "another --out")
    if not os.path.isfile(os.path.join(out_dir, "saved_model.pb")):
        raise UserError(f"{out_dir} is not a SavedModel (no saved_model.pb), so --overwrite "
                        "will not replace it: remove it yourself, or choose another --out")


def export(run_dir, out_dir, checkpoint=None, threshold=None, batch_size=4, overwrite=False,
           max_pixels=records.DEFAULT_MAX_PIXELS):
    """Write the SavedModel to out_dir (complete or not at all); returns its info dict.

    Only an earlier SavedModel is ever replaced, and only after the new one is whole.
    """
    check_out(run_dir, out_dir, overwrite)
    cfg = rundir.load_config(run_dir)
    checkpoint = rundir.resolve(run_dir, checkpoint)
    decision = rundir.decision(run_dir, cfg, threshold,
                               "its SavedModel returns the most probable one per pixel")
    names, threshold, source = decision.names, decision.threshold, decision.source
    parent = os.path.dirname(os.path.abspath(out_dir))
    created = _missing_parents(parent)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {parent}: {e.strerror}") from None

    info = {"config": dataclasses.asdict(cfg), "checkpoint": os.path.abspath(checkpoint),
            "threshold": None if names else float(threshold), "threshold_source": source,
            "signature": SIGNATURE,
            "inputs": {"image": "string [] encoded JPEG/PNG"},
            "outputs": {"probabilities": "float32 [H, W]", "mask": "uint8 [H, W] 0/255",
                        "max_pixels": "int64 [] the pixel cap"},
            "max_pixels": max_pixels}
    if names is not None:
        info.update(classes=list(names), outputs={
            "probabilities": f"float32 [H, W, {len(names)}] per class, in classes' order",
            "classes": "uint8 [H, W] class index (the argmax), into classes",
            "max_pixels": "int64 [] the pixel cap"})
    try:
        # The finished model is swapped in; the old one is removed only after that.
        with errors.atomic_dir(out_dir) as tmp, tf.Graph().as_default() as graph, \
                v1.Session(graph=graph) as sess, tempfile.TemporaryDirectory() as scratch:
            encoded, outputs = build(cfg, threshold, batch_size, max_pixels)
            rundir.restore(sess, checkpoint, cfg)
            cap_file = os.path.join(scratch, CAP_ASSET)
            errors.write_atomic(cap_file, f"{max_pixels}\n")  # the Builder copies it to assets/
            assets = [tf.constant(cap_file, name="max_pixels_asset")]
            signature = v1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"image": encoded}, outputs=outputs)
            builder = v1.saved_model.Builder(tmp)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={SIGNATURE: signature}, assets_collection=assets,
                strip_default_attrs=True)
            builder.save()
            os.makedirs(os.path.join(tmp, os.path.dirname(INFO_FILE)))
            errors.write_json(os.path.join(tmp, INFO_FILE), info)
    except OSError as e:
        raise UserError(f"cannot write {out_dir}: {e.strerror or e}") from None
    finally:
        if not os.path.exists(out_dir):  # failed: leave no empty directories behind
            for path in created:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
    return info


def _missing_parents(path):
    """The directories makedirs(path) would create, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Export a trained run as a SavedModel: encoded image in, full-size "
                    "probabilities and mask out.")
    cli.add_run_flags(parser, "mask threshold in [0, 1] " + rundir.THRESHOLD_HELP,
                      batch_help="tiles per network run inside the graph", progress=False)
    parser.add_argument("--out", required=True, help="SavedModel directory to write "
                        "(for TensorFlow Serving: <model>/<version>, e.g. exported/cat_unet/1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing "
                        "SavedModel at --out (nothing else is ever replaced)")
    cli.add_max_pixels_flag(parser, records.DEFAULT_MAX_PIXELS, "largest image the "
                            "SavedModel accepts; larger ones fail with InvalidArgument")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # the v1 Builder's deprecation notes are not for users
    info = export(args.run_dir, args.out, args.checkpoint, args.threshold, args.batch_size,
                  args.overwrite, args.max_pixels)
    decision = (f"threshold {info['threshold']:g}" if info["threshold"] is not None
                else f"classes {', '.join(info['classes'])}")
    print(f"wrote SavedModel {args.out} from {info['checkpoint']} ({decision}); inspect it "
          f"with: saved_model_cli show --dir {args.out} --all")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
