"""The whole pipeline on the generated demo dataset, in one command (the Quick start).

    python demo.py

1. generates the demo COCO dataset (demo_data.py) into data/demo_coco/,
2. converts its train2017 and val2017 splits (convert_coco.py) into
   data/demo-{train2017,val2017}-*.tfrecord, with the cat-free images as negatives,
3. trains a small U-Net on the CPU into logs/demo/ (checkpoints, TensorBoard),
4. prints the validation foreground IoU next to the all-background baseline.

Validation windows (892 px in, 804 px out) cover every demo image (at most 800
px a side) whole, so the IoU printed is over full images, not centre crops.

Re-running reuses the generated images and the records when they are complete,
and resumes the run in logs/demo (or, when it is finished, just validates it
again). Delete logs/demo to train from scratch.

`python demo.py --minutes 15` trains for 15 minutes instead of 30 epochs, with
the cosine schedule fitted to them (train.py --minutes), then validates: the
best demo model 15 minutes of this CPU can give.

Measured on 2 shared CPU cores: see docs/train.md ("The demo").
"""

import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import json
import logging
import os
import signal
import sys
import time

import cli
import config
import convert_coco
import demo_data
import train

log = logging.getLogger("demo")

CLASSES = ("cat",)
TARGET_IOU = 0.7  # what the demo promises; the run prints a warning below it
# Tuned for 2 CPU cores: ~100 s of data preparation and compilation, ~3-6 min of training.
DEMO_TRAINING = dict(
    depth=3, base_filters=16,  # 483k parameters: learns stripes and shapes, fast on a CPU
    input_size=188,  # -> 100 px output windows: 44 px of context each side
    val_input_size=892,  # -> 804 px output: every demo image is validated whole
    batch_size=8, epochs=30, val_every=10,
    learning_rate=2e-3, lr_schedule="cosine",
    seed=0, log_every=20, image_summary_every=60, checkpoint_every=120,
)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True)
    os.replace(tmp, path)


def prepare_data(data_dir="data", seed=0, num_train=demo_data.NUM_TRAIN,
                 num_val=demo_data.NUM_VAL):
    """Generate and convert the demo data unless complete; returns (train glob, val glob)."""
    coco_dir = os.path.join(data_dir, "demo_coco")
    output = os.path.join(data_dir, "demo")
    params = {"seed": seed, "num_train": num_train, "num_val": num_val}
    # demo_data writes each split's annotation file last; this marker comes after both.
    marker = os.path.join(coco_dir, "demo-params.json")
    regenerated = _read_json(marker) != params
    if regenerated:
        log.info("generating the demo dataset in %s (%d train, %d val images)",
                 coco_dir, num_train, num_val)
        demo_data.generate(coco_dir, seed, num_train, num_val)
        _write_json(marker, params)
    else:
        log.info("reusing the demo dataset in %s", coco_dir)

    patterns = []
    for split in demo_data.SPLITS:
        stats = convert_coco.stats_path(output, split)
        if regenerated or not os.path.exists(stats):
            log.info("converting %s into %s", split, convert_coco.shard_pattern(output, split))
            # One worker: the demo's ~120 images convert in under a second, and forked
            # workers can deadlock on OpenCV threads the generator started in this process.
            settings = dict(classes=CLASSES, output=output, negatives=1.0, seed=seed,
                            workers=1, progress=False)
            try:  # an interrupted conversion of the same data finishes where it stopped
                convert_coco.convert(coco_dir, split, overwrite=regenerated, **settings)
            except cli.UserError:  # left over from other settings: start it again
                convert_coco.convert(coco_dir, split, overwrite=True, **settings)
        else:
            log.info("reusing the records %s", convert_coco.shard_pattern(output, split))
        patterns.append(convert_coco.shard_pattern(output, split))
    return tuple(patterns)


def run(data_dir="data", run_dir="logs/demo", seed=0, num_train=demo_data.NUM_TRAIN,
        num_val=demo_data.NUM_VAL, **training):
    """Prepare the data and train; returns train.train's metrics plus 'seconds'.

    `training` overrides DEMO_TRAINING (the tests shrink the network with it).
    """
    start = time.time()
    train_records, val_records = prepare_data(data_dir, seed, num_train, num_val)
    settings = {**DEMO_TRAINING, "seed": seed, **training}
    if settings.get("minutes") and "epochs" not in training:
        settings["epochs"] = 0  # as train.py --minutes: the budget decides, not 30 epochs
    cfg = config.Config(train_records=train_records, val_records=val_records,
                        run_dir=run_dir, classes=CLASSES, **settings)
    result = train.train(cfg)
    result["seconds"] = time.time() - start
    return result


def report(result, run_dir):
    """The closing lines: the score next to the baseline, and where things are."""
    if result["interrupted"]:
        return (f"demo stopped at step {result['step']}: run `python demo.py` again to "
                "continue")
    iou, baseline = result["val_iou"], result["val_baseline_iou"]
    minutes, seconds = divmod(round(result["seconds"]), 60)
    lines = [
        f"demo done in {minutes}m{seconds:02d}s: val foreground IoU {iou:.3f} "
        f"(all-background baseline {baseline:.3f}), Dice {result['val_dice']:.3f}, "
        f"pixel accuracy {result['val_accuracy']:.3f} "
        f"(baseline {result['val_baseline_accuracy']:.3f})",
        f"checkpoints and TensorBoard logs: {run_dir} (tensorboard --logdir "
        f"{os.path.dirname(run_dir) or '.'})",
    ]
    if iou < TARGET_IOU:
        lines.append(f"warning: IoU below the expected {TARGET_IOU}; a heavily loaded machine "
                     "or an interrupted run can cause this: re-run to train further")
    return "\n".join(lines)


def main(argv=None):
    p = cli.ArgumentParser(description="Generate the demo data, convert it, train a small "
                           "U-Net and report its validation IoU.")
    p.add_argument("--data-dir", default="data", help="where demo_coco/ and the records go")
    p.add_argument("--run-dir", default="logs/demo", help="the training run directory")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="seed of the generated data and of training")
    p.add_argument("--epochs", type=cli.positive_int,
                   help=f"training epochs (a larger number continues a finished run); default "
                   f"{DEMO_TRAINING['epochs']}, or with --minutes no limit (a cap if given)")
    p.add_argument("--minutes", type=train.non_negative_float, default=0.0,
                   help="train for this many minutes (the total, also when resuming) with the "
                   "learning-rate schedule fitted to them, then validate; 0 = by --epochs")
    args = p.parse_args(argv)
    cli.setup_logging()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    training = {"minutes": args.minutes}
    if args.epochs is not None:
        training["epochs"] = args.epochs
    result = run(args.data_dir, args.run_dir, args.seed, **training)
    print(report(result, args.run_dir))
    if result["interrupted"]:
        return train.EXIT_ON_SIGNAL[signal.Signals[result["interrupted"]]]
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
