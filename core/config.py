"""A run's configuration: the `Config` dataclass, its one check, and its config.json.

train.py turns its flags into a `Config`; `resolve` checks it once and makes
'auto' and None concrete in a `RunConfig`, which the run logs, trains with and
saves as `<run_dir>/config.json` beside the checkpoints; evaluate.py, predict.py
and export.py rebuild the same network from that file alone. What else the run
directory holds is core/rundir.py's.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import random

import tensorflow as tf

import unet
from core import device, distribute, optim, rundir
from datasets import augment, shards
from utils import cli, errors
from utils.cli import UsageError, UserError

log = logging.getLogger("config")

MODEL_FIELDS = ("depth", "base_filters", "num_outputs")  # must match to resume
ON_NAN = ("stop", "skip")  # --on-nan
_AUG = augment.Settings  # its defaults are the augmentation flags'


def _flag(default, help, type=None, **argparse_kwargs):
    """A Config field that is also train.py's `--<name>` flag: the default, its
    --help line and the parser's type are written here once (add_flags)."""
    return dataclasses.field(default=default, metadata=dict(help=help, type=type,
                                                            **argparse_kwargs))


@dataclasses.dataclass
class Config:
    # ---- data
    train_records: str = _flag("data/cat-train2017-*.tfrecord", "glob of training TFRecord "
                               "shards (convert_coco.py, convert_pets.py)")
    val_records: str = _flag("data/cat-val2017-*.tfrecord",
                             "glob of validation shards; '' = none")
    input_size: int = _flag(572, "network input window in pixels (572 -> 388 output at depth 4); "
                            "the mask window is the output size", cli.positive_int)
    classes: tuple = ("cat",)  # informational: the classes the records were made for
    # ---- model (unet.unet arguments)
    depth: int = _flag(4, "U-Net levels (2x2 max pools); 4 is the paper's", cli.positive_int)
    base_filters: int = _flag(64, "channels of the first level, doubled per level; 64 is the "
                              "paper's", cli.positive_int)
    num_outputs: int = 1  # one sigmoid logit: pixel belongs to the classes or not
    # Off: on the real-photo sample 0.5 and 0.2 both scored below none (docs/train.md).
    dropout: float = _flag(0.0, "the paper's drop-out rate at the end of the contracting path, "
                           "in training only; 0 = none", cli.rate)
    # ---- where the run lives: checkpoints, config.json and TensorBoard events
    run_dir: str = "logs/unet"  # train.py: --run-dir, or logs/<--run-name>
    # ---- more data (datasets/pipeline.py)
    val_input_size: int = _flag(0, "validation window; 0 = --input-size; bigger covers more of "
                                "each image", cli.non_negative_int)
    val_every: int = _flag(1, "validate every N epochs (and at the end)", cli.positive_int)
    stats: str = _flag("", "converter stats JSON for --pos-weight auto; '' = the one next to "
                       "the shards")
    # ~1 MB of encoded JPEG per 5 records
    shuffle_buffer: int = _flag(256, "records mixed by the shuffle", cli.positive_int)
    # Small machines train on small photos; evaluate/predict/export resize the same way and
    # map the probabilities back to full size.
    long_side: int = _flag(0, "resize every image so its longer side is N px before windows are "
                           "cut (saved in config.json; evaluate/predict/export use it too); "
                           "0 = as stored", cli.non_negative_int)
    # ---- augmentation of training windows (datasets/augment.py, whose Settings hold the paper's
    # values; validation is never augmented)
    augment: str = _flag("flip", "training augmentation: comma list of "
                         f"{','.join(augment.GROUPS)}, or all, or none (docs/augmentation.md)",
                         augment.groups_arg)
    elastic_grid: int = _flag(_AUG.elastic_grid, "elastic: random displacement vectors on an "
                              "N x N grid (>= 2; paper: 3)", cli.positive_int)
    elastic_sigma: float = _flag(_AUG.elastic_sigma, "elastic: standard deviation of the "
                                 "displacements in pixels (paper: 10)", cli.non_negative_float)
    min_scale: float = _flag(_AUG.min_scale, "scale: smallest zoom factor (drawn "
                             "log-uniformly up to --max-scale)", cli.positive_float)
    max_scale: float = _flag(_AUG.max_scale, "scale: largest zoom factor", cli.positive_float)
    max_rotation: float = _flag(_AUG.max_rotation, "rotate: angle uniform in [-N, N] degrees; "
                                "180 = any angle", cli.non_negative_float)
    brightness: float = _flag(_AUG.brightness, "color: up to this much added to pixel values "
                              "in [0, 1]", cli.non_negative_float)
    contrast: float = _flag(_AUG.contrast, "color: contrast scaled by a factor in "
                            "[1 - N, 1 + N]; N <= 1", cli.non_negative_float)
    saturation: float = _flag(_AUG.saturation, "color: saturation scaled by a factor in "
                              "[1 - N, 1 + N]; N <= 1", cli.non_negative_float)
    hue: float = _flag(_AUG.hue, "color: hue turned by up to N of the colour wheel; N <= 0.5",
                       cli.non_negative_float)
    # ---- optimisation
    # The paper used one big tile a step; batch norm wants a few.
    batch_size: int = _flag(4, "windows per step", cli.positive_int)
    # train.py's flag has no default of its own: with --minutes there is no epoch limit.
    epochs: int = _flag(50, "total passes over the data, also when resuming (default 50; with "
                        "--minutes: no limit, or a cap if given)", cli.positive_int,
                        no_flag_default=True)
    minutes: float = _flag(0.0, "train for this many minutes (the total, also when resuming), "
                           "then validate and save; --lr-schedule cosine ends when the time "
                           "does; 0 = no time budget", cli.non_negative_float)
    max_steps: int = _flag(0, "stop at this global step, even mid-epoch; 0 = no limit",
                           cli.non_negative_int)
    learning_rate: float = _flag(1e-3, "Adam's initial step size", cli.positive_float)
    lr_schedule: str = _flag("constant", "cosine decays to 0 at the last step (or as the "
                             "--minutes run out)", choices=optim.LR_SCHEDULES)
    lr_decay_rate: float = _flag(0.1, "exponential: factor per --lr-decay-steps",
                                 cli.positive_float)
    lr_decay_steps: int = _flag(10000, "exponential: steps per --lr-decay-rate factor (decays "
                                "smoothly)", cli.positive_int)
    pos_weight: float | str = _flag(1.0, "foreground weight in the loss, or 'auto' = (1-f)/f "
                                    "from the converter's stats", cli.positive_float_or_auto)
    dice_weight: float = _flag(0.0, "adds this times (1 - soft Dice) to the loss; 0 = "
                               "cross-entropy only", cli.non_negative_float)
    seed: int | None = _flag(None, "graph and data seed, for repeatable runs; by default one is "
                             "drawn and saved in config.json", cli.non_negative_int)
    # ---- speed (core/device.py; the defaults measured fastest on a 2-core CPU)
    intra_op_threads: int = _flag(0, "threads inside one op; 0 = one per core",
                                  cli.non_negative_int)
    inter_op_threads: int = _flag(0, "ops run side by side; 0 = TensorFlow's choice",
                                  cli.non_negative_int)
    xla: str = _flag("off", "auto = XLA auto-clustering (try it on a GPU; on a CPU it is slower "
                     "and needs the TF_XLA_FLAGS environment variable, see docs/train.md)",
                     choices=device.XLA_MODES)
    # RunConfig holds what "auto" picked: config.json says what ran.
    precision: str = _flag("float32", "bfloat16: faster on CPUs with AVX512_BF16/AMX; "
                           "mixed_float16: GPUs; both trade some accuracy; auto: mixed_float16 "
                           "on a GPU, bfloat16 on a Linux CPU with amx_bf16/avx512_bf16, else "
                           "float32 (config.json records the choice)",
                           choices=device.PRECISION_CHOICES)
    # ---- logging and checkpoints
    log_every: int = _flag(20, "steps per log line", cli.positive_int)
    image_summary_every: int = _flag(100, "steps between TensorBoard `windows` images "
                                     "(input | truth | prediction)", cli.positive_int)
    checkpoint_every: int = _flag(500, "steps between checkpoints (one is also saved every "
                                  "epoch end)", cli.positive_int)
    keep_checkpoints: int = _flag(5, "newest checkpoints kept in the run dir (best/ keeps its "
                                  "own)", cli.positive_int)
    log_device_placement: bool = _flag(False, "log the device of every op (debugging)")
    # ---- distribution (core/distribute.py; docs/distributed.md)
    strategy: str = _flag("none", "mirrored: all GPUs of this machine (or --devices); "
                          "multi-worker: the machines in TF_CONFIG; the global batch is "
                          "--batch-size x replicas (docs/distributed.md)",
                          choices=distribute.STRATEGIES)
    devices: str = _flag("", "--strategy mirrored: devices to use, e.g. /gpu:0,/gpu:1 "
                         "('/cpu:0,/cpu:1': logical CPUs); '' = all GPUs")
    # ---- reliability (datasets/guard.py, docs/reliability.md)
    skip_corrupt_records: bool = _flag(False, "skip and count records that fail their checksum "
                                       "or do not decode, instead of stopping (decodes every "
                                       "record once at start)")
    on_nan: str = _flag("stop", "non-finite loss: stop with the step, or skip that batch's "
                        "update", choices=ON_NAN)


def add_flags(parser):
    """Config's flags: one `--<name>` per field that has a --help line."""
    for field in dataclasses.fields(Config):
        if "help" not in field.metadata:
            continue
        meta = dict(field.metadata)
        name = "--" + field.name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(name, action="store_true", help=meta["help"])
            continue
        default = argparse.SUPPRESS if meta.pop("no_flag_default", False) else field.default
        parser.add_argument(name, default=default, **meta)


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
        if not unet.is_valid_input_size(size, cfg.depth):
            raise UsageError(f"{flag} {size} is not valid for a depth-{cfg.depth} U-Net; "
                             + unet.nearest_valid_sizes(size, cfg.depth))
    distribute.check_flags(cfg)
    # config.json names every augmentation group ("all" spelled out).
    changes = {"augment": augment.format_groups(augment.from_config(cfg).groups)}
    if cfg.precision == "auto":  # config.json must say what ran, not what was asked
        gpu = bool(tf.config.list_physical_devices("GPU"))  # lists, starts no runtime
        changes["precision"], why = device.resolve_precision("auto", gpu)
        log.info("precision auto: %s -> %s", why, changes["precision"])
    device.settings(dataclasses.replace(cfg, **changes))  # threads, XLA, concrete precision
    if cfg.pos_weight == "auto":  # files are read last: a bad flag is named first
        balance = shards.class_balance(cfg.train_records, cfg.stats)
        changes.update(pos_weight=balance.pos_weight, stats=balance.path)
        if balance.classes:
            changes["classes"] = balance.classes
        log.info("pos_weight auto: foreground fraction %.4f in %s -> %.3f",
                 balance.foreground_fraction, balance.path, balance.pos_weight)
    else:
        changes["pos_weight"] = float(cfg.pos_weight)
    if cfg.seed is None:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    resolved = RunConfig(**{**dataclasses.asdict(cfg), **changes})
    check_resumable(resolved)
    log.info("config: %s", json.dumps(dataclasses.asdict(resolved), sort_keys=True))
    return resolved


def _check_flags(cfg):
    """The settings no other module owns."""
    if cfg.long_side < 0:
        raise UsageError(f"--long-side must be >= 0 (0 = images as stored), got {cfg.long_side}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"--dropout must be at least 0 and below 1 (0 = none), got {cfg.dropout}")
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


def check_resumable(cfg):
    """A run dir trained with another network cannot be resumed: say so before TF does."""
    path = os.path.join(cfg.run_dir, rundir.RUN_CONFIG)
    if not os.path.exists(path) or not rundir.latest(cfg.run_dir):
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
    return errors.write_json(os.path.join(run_dir, rundir.RUN_CONFIG), dataclasses.asdict(cfg))


def load_config(run_dir):
    """Read `<run_dir>/config.json` back into a RunConfig, or raise UserError.

    Files from earlier versions load too: a field they lack takes Config's default.
    """
    path = os.path.join(run_dir, rundir.RUN_CONFIG)
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

