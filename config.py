"""All training configuration in one place, and the run-directory contract.

train.py turns its flags into a `Config`, logs it and saves it as
`<run_dir>/config.json` beside the checkpoints; evaluate.py, predict.py and
export.py rebuild the same network from that file alone.

A run directory holds:

    config.json           the resolved Config (this module)
    model.ckpt-<step>.*   periodic and epoch-end checkpoints (tf.compat.v1 Saver)
    checkpoint            the Saver's state file (latest checkpoint)
    best/model.ckpt-*     the best checkpoint by validation foreground IoU
    best/checkpoint
    train/, val/          TensorBoard event files (`tensorboard --logdir logs`)
    eval.json             written by evaluate.py (incl. the best threshold)
"""

import dataclasses
import json
import os

import tensorflow as tf

from cli import UserError

RUN_CONFIG = "config.json"
CKPT_PREFIX = "model.ckpt"
BEST_DIR = "best"
EVAL_JSON = "eval.json"


@dataclasses.dataclass
class Config:
    # ---- data
    train_records: str = "data/cat-train2017-*.tfrecord"  # glob of convert_coco.py shards
    val_records: str = "data/cat-val2017-*.tfrecord"  # glob; "" skips validation
    input_size: int = 572  # network input window; the mask window is the output size
    classes: tuple = ("cat",)  # informational: the classes the records were made for
    # ---- model (unet.unet arguments)
    depth: int = 4  # 2x2 max pools; 4 is the paper's network
    base_filters: int = 64  # channels at the first level; 64 is the paper's
    num_outputs: int = 1  # one sigmoid logit: pixel belongs to the classes or not


def save_config(cfg, run_dir):
    """Write config.json atomically so a crash never leaves half a file."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, RUN_CONFIG)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_config(run_dir):
    """Read `<run_dir>/config.json` back into a Config, or raise UserError."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory {run_dir} does not exist: pass the logs/<run> "
                        "directory that train.py wrote")
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {run_dir} is not a train.py run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): restore it or re-run train.py") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object of config values")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"{path} has unknown keys {unknown}: was it written by a newer version?")
    if "classes" in raw:
        raw["classes"] = tuple(raw["classes"])
    return Config(**raw)


def latest_checkpoint(run_dir):
    """Path prefix of the newest checkpoint in run_dir, or None."""
    return tf.train.latest_checkpoint(run_dir)


def best_checkpoint(run_dir):
    """Path prefix of the best-by-validation checkpoint, falling back to the latest."""
    best = tf.train.latest_checkpoint(os.path.join(run_dir, BEST_DIR))
    return best or latest_checkpoint(run_dir)
