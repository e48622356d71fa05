"""Export a trained run as a TensorFlow SavedModel for serving (docs/inference.md, "Export").

    python export.py --run logs/demo --out exported/cat_unet

The "serving_default" signature takes one encoded JPEG/PNG and returns full-size
probabilities (float32 [H, W]) and mask (uint8 [H, W], 0/255) from the same graph
as predict.py (core/tiling.py), so clients need no U-Net geometry; the threshold is
baked in. It is a TF1-style SavedModel (tf.compat.v1.saved_model.Builder) because
unet.py builds its variables with tf.compat.v1.get_variable; tf.saved_model.load,
saved_model_cli and TensorFlow Serving all read it.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import dataclasses
import os
import sys

import tensorflow as tf

from core import rundir, tiling
from datasets import records
from utils import cli, errors
from utils.cli import UserError

v1 = tf.compat.v1

SIGNATURE = "serving_default"
INFO_FILE = os.path.join("assets.extra", "coco_unet.json")


def build(cfg, threshold, batch_size):
    """In the default graph: (encoded string [] placeholder, {"probabilities", "mask"})."""
    encoded = v1.placeholder(tf.string, [], name="image")
    prob = tiling.probabilities(records.decode_image(encoded), cfg, batch_size)  # [H, W]
    mask = tf.cast(prob >= tf.constant(threshold, prob.dtype), tf.uint8) * 255
    return encoded, {"probabilities": tf.identity(prob, "probabilities"),
                     "mask": tf.identity(mask, "mask")}


def export(run_dir, out_dir, checkpoint=None, threshold=None, batch_size=4, overwrite=False):
    """Write the SavedModel to out_dir (complete or not at all); returns its info dict."""
    cfg = rundir.load_config(run_dir)
    checkpoint = rundir.resolve(run_dir, checkpoint)
    threshold, source = rundir.default_threshold(run_dir, threshold)
    if os.path.exists(out_dir) and not overwrite:
        raise UserError(f"{out_dir} already exists: pass --overwrite to replace it, or "
                        "another --out")
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {parent}: {e.strerror}") from None

    info = {"config": dataclasses.asdict(cfg), "checkpoint": os.path.abspath(checkpoint),
            "threshold": float(threshold), "threshold_source": source, "signature": SIGNATURE,
            "inputs": {"image": "string [] encoded JPEG/PNG"},
            "outputs": {"probabilities": "float32 [H, W]", "mask": "uint8 [H, W] 0/255"}}
    try:
        # The finished model is swapped in; the old one is removed only after that.
        with errors.atomic_dir(out_dir) as tmp, tf.Graph().as_default() as graph, \
                v1.Session(graph=graph) as sess:
            encoded, outputs = build(cfg, threshold, batch_size)
            rundir.restore(sess, checkpoint, cfg)
            signature = v1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"image": encoded}, outputs=outputs)
            builder = v1.saved_model.Builder(tmp)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={SIGNATURE: signature}, strip_default_attrs=True)
            builder.save()
            os.makedirs(os.path.join(tmp, os.path.dirname(INFO_FILE)))
            errors.write_json(os.path.join(tmp, INFO_FILE), info)
    except OSError as e:
        raise UserError(f"cannot write {out_dir}: {e.strerror or e}") from None
    return info


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Export a trained run as a SavedModel: encoded image in, full-size "
                    "probabilities and mask out.")
    cli.add_run_flags(parser, "mask threshold in [0, 1] " + rundir.THRESHOLD_HELP,
                      batch_help="tiles per network run inside the graph", progress=False)
    parser.add_argument("--out", required=True, help="SavedModel directory to write "
                        "(for TensorFlow Serving: <model>/<version>, e.g. exported/cat_unet/1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # the v1 Builder's deprecation notes are not for users
    info = export(args.run_dir, args.out, args.checkpoint, args.threshold, args.batch_size,
                  args.overwrite)
    print(f"wrote SavedModel {args.out} from {info['checkpoint']} (threshold "
          f"{info['threshold']:g}); inspect it with: saved_model_cli show --dir {args.out} "
          "--all")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
