"""A run's configuration: the `Config` dataclass, its one check, and its config.json.

train.py turns its flags into a `Config`; `resolve` checks it once and makes
'auto' and None concrete in a `RunConfig`, which the run logs, trains with and
saves as `<run_dir>/config.json` beside the checkpoints; evaluate.py, predict.py
and export.py rebuild the same network from that file alone. What else the run
directory holds is checkpoints.py's.
"""

import dataclasses
import json
import logging
import math
import os
import random
import re

import tensorflow as tf

import augment
import checkpoints
import distribute
import errors
import optim
import speed
import unet
from cli import UsageError, UserError

log = logging.getLogger("config")

MODEL_FIELDS = ("depth", "base_filters", "num_outputs")  # must match to resume
ON_NAN = ("stop", "skip")  # --on-nan


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
    # ---- where the run lives
    run_dir: str = "logs/unet"  # checkpoints, config.json and TensorBoard events (train.py)
    # ---- more data (train.py / data.py)
    val_input_size: int = 0  # validation window; 0 = input_size. Bigger sees more of each image
    val_every: int = 1  # validate every this many epochs (and always at the end)
    stats: str = ""  # converter stats JSON for pos_weight "auto"; "" = next to train_records
    shuffle_buffer: int = 256  # records mixed by the shuffle; ~1 MB of encoded JPEG per 5
    # every image is resized so its longer side is N px before windows are cut; 0 = as stored
    # (evaluate/predict/export do the same and map the probabilities back to full size)
    long_side: int = 0
    # ---- augmentation of training windows (augment.py; validation is never augmented)
    augment: str = "flip"  # comma list of flip,rotate,scale,elastic,color, or all / none
    elastic_grid: int = 3  # elastic: random displacements on this n x n grid (paper: 3)
    elastic_sigma: float = 10.0  # elastic: their standard deviation in pixels (paper: 10)
    min_scale: float = 0.5  # scale: zoom drawn log-uniformly in [min_scale, max_scale]
    max_scale: float = 2.0  # scale: upper end of that range
    max_rotation: float = 180.0  # rotate: angle uniform in [-max, max] degrees (180 = any)
    brightness: float = 0.1  # color: up to this much added to [0, 1] pixel values
    contrast: float = 0.2  # color: contrast scaled by a factor in [1 - c, 1 + c]
    saturation: float = 0.2  # color: saturation scaled by a factor in [1 - s, 1 + s]
    hue: float = 0.02  # color: hue turned by up to this fraction of the colour wheel
    # ---- optimisation
    batch_size: int = 4  # tiles per step; the paper used 1 big tile, BN wants a few
    epochs: int = 50  # passes over the train records (total, also on resume); 0: minutes decides
    # Training time budget in minutes (the total, also when resuming); 0 = none. The cosine
    # schedule is fitted to it; epochs and max_steps, when set, still cap it (train.py).
    minutes: float = 0.0
    max_steps: int = 0  # stop at this global step even mid-epoch; 0 = no step limit
    learning_rate: float = 1e-3  # Adam's initial step size
    lr_schedule: str = "constant"  # constant | exponential | cosine (to 0 at the last step)
    lr_decay_rate: float = 0.1  # exponential: lr is multiplied by this every lr_decay_steps
    lr_decay_steps: int = 10000  # exponential: steps per lr_decay_rate factor (smooth decay)
    pos_weight: float | str = 1.0  # foreground weight in the CE; "auto" = (1 - f) / f from stats
    dice_weight: float = 0.0  # adds dice_weight * (1 - soft Dice) to the loss; 0 = CE only
    seed: int | None = None  # graph and data seed; None draws one (saved here for repeats)
    # ---- speed (speed.py; defaults are what measured fastest on a 2-core CPU)
    intra_op_threads: int = 0  # threads inside one op; 0 = TensorFlow's choice (all cores)
    inter_op_threads: int = 0  # ops run side by side; 0 = TensorFlow's choice
    xla: str = "off"  # "auto" = XLA auto-clustering: slower on CPU, worth a try on a GPU
    # bfloat16: CPUs with AVX512_BF16/AMX; mixed_float16: GPUs. The flag's "auto" is resolved
    # by speed.resolve_precision and saved here as the precision it picked (what ran).
    precision: str = "float32"  # or "auto"
    # ---- logging and checkpoints
    log_every: int = 20  # steps between progress lines
    image_summary_every: int = 100  # steps between TensorBoard `windows` images (in|truth|pred)
    checkpoint_every: int = 500  # steps between periodic checkpoints (plus each epoch end)
    keep_checkpoints: int = 5  # periodic/epoch checkpoints kept; best/ keeps its own one
    log_device_placement: bool = False  # TF logs the device of every op (debugging)
    # ---- distribution (distribute.py; docs/distributed.md)
    strategy: str = "none"  # none | mirrored (GPUs of one machine) | multi-worker (TF_CONFIG)
    devices: str = ""  # mirrored: "/gpu:0,/gpu:1"; "" = all GPUs; "/cpu:0,/cpu:1" = logical CPUs
    # ---- reliability (guard.py, docs/reliability.md)
    skip_corrupt_records: bool = False  # True: skip and count bad records instead of stopping
    on_nan: str = "stop"  # non-finite loss: "stop" with the step, or "skip" that batch's update


@dataclasses.dataclass
class RunConfig(Config):
    """A Config as resolve checked it, with 'auto' and None made concrete: what a
    run trains with, saves as config.json and what load_config returns."""

    pos_weight: float = 1.0  # the foreground weight the loss uses
    seed: int = 0  # the graph and data seed (drawn when the Config had None)
    precision: str = "float32"  # float32 | bfloat16 | mixed_float16: what ran


def resolve(cfg):
    """The one check of a Config: every flag, then the files it names, then 'auto' and
    None made concrete.

    Returns a RunConfig, whose fields are what their types say; it is what the run
    logs, saves as config.json and trains with. Flags are checked before any file is
    read, so a typo is named before a missing stats file.
    """
    _check_flags(cfg)
    # Then the flags whose rules live in other modules, each asked once.
    sizes = [("--input-size", cfg.input_size)]
    if cfg.val_input_size:
        sizes.append(("--val-input-size", cfg.val_input_size))
    for flag, size in sizes:
        up = unet.valid_input_size(size, cfg.depth)  # size itself when it is valid
        if up != size:
            down = unet.valid_input_size(size, cfg.depth, "down")
            raise UsageError(f"{flag} {size} is not valid for a depth-{cfg.depth} U-Net; "
                             f"the nearest valid sizes are {down} and {up}")
    distribute.check_flags(cfg)
    # config.json names every augmentation group ("all" spelled out).
    changes = {"augment": augment.format_groups(augment.from_config(cfg).groups)}
    if cfg.precision == "auto":  # config.json must say what ran, not what was asked
        gpu = bool(tf.config.list_physical_devices("GPU"))  # lists, starts no runtime
        changes["precision"], why = speed.resolve_precision("auto", gpu)
        log.info("precision auto: %s -> %s", why, changes["precision"])
    speed.settings(dataclasses.replace(cfg, **changes))  # threads, XLA, concrete precision
    changes.update(_resolve_pos_weight(cfg))
    if cfg.seed is None:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    resolved = RunConfig(**{**dataclasses.asdict(cfg), **changes})
    check_resumable(resolved)
    return resolved


def _check_flags(cfg):
    """The settings no other module owns."""
    if cfg.long_side < 0:
        raise UsageError(f"--long-side must be >= 0 (0 = images as stored), got {cfg.long_side}")
    if cfg.lr_schedule not in optim.LR_SCHEDULES:
        raise UsageError(f"--lr-schedule must be one of {', '.join(optim.LR_SCHEDULES)}")
    if cfg.on_nan not in ON_NAN:
        raise UsageError(f"--on-nan must be stop or skip, got {cfg.on_nan!r}")
    if cfg.pos_weight != "auto" and float(cfg.pos_weight) <= 0:
        raise UsageError(f"--pos-weight must be a positive number or 'auto', "
                         f"got {cfg.pos_weight}")
    check_budget(cfg)


def check_budget(cfg):
    """--minutes and --epochs: a run must have a limit, and every worker the same one."""
    if not (math.isfinite(cfg.minutes) and cfg.minutes >= 0):
        raise UsageError(f"--minutes must be a number >= 0 (0 = no time budget), "
                         f"got {cfg.minutes}")
    if cfg.epochs < 0 or (cfg.epochs == 0 and not cfg.minutes):
        raise UsageError(f"--epochs must be positive (0 = no epoch limit needs a --minutes "
                         f"budget), got {cfg.epochs}")
    if cfg.minutes and cfg.strategy == "multi-worker":
        raise UsageError("--minutes does not work with --strategy multi-worker: the workers' "
                         "clocks differ and all must stop at the same step; use --epochs")
    if cfg.minutes and cfg.lr_schedule != "cosine":
        log.info("--minutes with --lr-schedule %s: the learning rate does not follow the "
                 "budget (cosine decays it to 0 as the time runs out)", cfg.lr_schedule)


def _resolve_pos_weight(cfg):
    """{pos_weight: float} ('auto': from the converter's stats, with stats and classes)."""
    if cfg.pos_weight != "auto":
        return {"pos_weight": float(cfg.pos_weight)}
    path = cfg.stats or stats_path_for(cfg.train_records)
    stats, fraction = read_stats(path)
    if not 0.0 < fraction < 1.0:
        raise UserError(f"{path}: foreground_fraction {fraction} gives no class balance; "
                        "pass a number for --pos-weight")
    changes = {"pos_weight": (1.0 - fraction) / fraction, "stats": path}
    if stats.get("classes"):
        changes["classes"] = tuple(stats["classes"])
    log.info("pos_weight auto: foreground fraction %.4f in %s -> %.3f",
             fraction, path, changes["pos_weight"])
    return changes


def stats_path_for(train_records):
    """The converter's stats JSON beside the shards: data/cat-train2017-*... -> -stats.json."""
    derived = re.sub(r"-\*[^/]*$", "-stats.json", train_records)
    if derived == train_records:
        raise UsageError(f"cannot find the converter's stats file from --train-records "
                         f"{train_records!r} (expected a '<output>-<split>-*' glob): pass --stats")
    return derived


def read_stats(path):
    try:
        with open(path) as f:
            stats = json.load(f)
        fraction = float(stats["foreground_fraction"])
    except FileNotFoundError:
        raise UserError(f"stats file {path} is missing: convert_coco.py / convert_pets.py write "
                        "it next to the shards; pass --stats or a number for --pos-weight"
                        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"stats file {path} is unreadable or has no number "
                        f"'foreground_fraction' ({e}): re-run convert_coco.py or "
                        "convert_pets.py") from None
    return stats, fraction


def check_resumable(cfg):
    """A run dir trained with another network cannot be resumed: say so before TF does."""
    path = os.path.join(cfg.run_dir, checkpoints.RUN_CONFIG)
    if not os.path.exists(path) or not checkpoints.latest(cfg.run_dir):
        return
    old = load_config(cfg.run_dir)
    diff = [f"{k} {getattr(old, k)} -> {getattr(cfg, k)}" for k in MODEL_FIELDS
            if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise UserError(f"{cfg.run_dir} holds checkpoints of another network ({', '.join(diff)}):"
                        " use the same flags to resume, or a new --run-name")


def save_config(cfg, run_dir):
    """Write config.json atomically so a crash never leaves half a file."""
    os.makedirs(run_dir, exist_ok=True)
    return errors.write_json(os.path.join(run_dir, checkpoints.RUN_CONFIG), dataclasses.asdict(cfg))


def load_config(run_dir):
    """Read `<run_dir>/config.json` back into a RunConfig, or raise UserError.

    Files from earlier versions load too: a field they lack takes Config's default.
    """
    path = os.path.join(run_dir, checkpoints.RUN_CONFIG)
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
    return RunConfig(**raw)

