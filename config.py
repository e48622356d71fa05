"""All training configuration in one place: the `Config` dataclass and its config.json.

train.py turns its flags into a `Config`, checks it once and resolves it
(train.resolve) into a `RunConfig`, logs that and saves it as
`<run_dir>/config.json` beside the checkpoints; evaluate.py, predict.py and
export.py rebuild the same network from that file alone. What else the run
directory holds is checkpoints.py's.
"""

import dataclasses
import json
import os

import checkpoints
import errors
from cli import UserError


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
    """A Config as train.resolve checked it, with 'auto' and None made concrete: what a
    run trains with, saves as config.json and what load_config returns."""

    pos_weight: float = 1.0  # the foreground weight the loss uses
    seed: int = 0  # the graph and data seed (drawn when the Config had None)
    precision: str = "float32"  # float32 | bfloat16 | mixed_float16: what ran


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

