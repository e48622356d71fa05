"""core/config.py: the Config asked for, its one check (resolve), the RunConfig, config.json."""

import dataclasses
import json

import pytest

from core import config, rundir
from utils.cli import UsageError, UserError

# config.json as commit 723af45 wrote it: 27 fields, before long_side, augmentation,
# minutes, precision, strategy and on_nan existed.
OLD_CONFIG_JSON = {
    "base_filters": 64, "batch_size": 4, "checkpoint_every": 500, "classes": ["cat"],
    "depth": 4, "dice_weight": 0.0, "epochs": 50, "image_summary_every": 100,
    "input_size": 572, "keep_checkpoints": 5, "learning_rate": 0.001,
    "log_device_placement": False, "log_every": 20, "lr_decay_rate": 0.1,
    "lr_decay_steps": 10000, "lr_schedule": "constant", "max_steps": 0, "num_outputs": 1,
    "pos_weight": 2.5, "run_dir": "logs/unet", "seed": 7, "shuffle_buffer": 256, "stats": "",
    "train_records": "data/cat-train2017-*.tfrecord", "val_every": 1, "val_input_size": 0,
    "val_records": "data/cat-val2017-*.tfrecord"}


def test_an_old_config_json_loads_as_a_run_config_with_todays_defaults(tmp_path):
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps(OLD_CONFIG_JSON))
    cfg = config.load_config(str(tmp_path))
    assert isinstance(cfg, config.RunConfig)
    assert (cfg.pos_weight, cfg.seed, cfg.classes) == (2.5, 7, ("cat",))
    assert (cfg.long_side, cfg.precision, cfg.on_nan, cfg.strategy) == (0, "float32", "stop",
                                                                         "none")


def test_save_and_load_round_trip(tmp_path):
    cfg = config.RunConfig(depth=2, base_filters=8, seed=3, pos_weight=1.5,
                           classes=("cat", "dog"))
    config.save_config(cfg, str(tmp_path))
    assert config.load_config(str(tmp_path)) == cfg


def test_run_config_types_say_what_the_fields_hold():
    types = {f.name: f.type for f in dataclasses.fields(config.RunConfig)}
    assert (types["pos_weight"], types["seed"]) == (float, int)
    assert [f.name for f in dataclasses.fields(config.RunConfig)] == [
        f.name for f in dataclasses.fields(config.Config)]  # config.json keeps its keys


def test_resolve_makes_pos_weight_a_float(tmp_path):
    cfg = config.resolve(config.Config(pos_weight=2, seed=1, run_dir=str(tmp_path / "run")))
    assert type(cfg.pos_weight) is float and cfg.pos_weight == 2.0


def test_unknown_keys_are_one_error(tmp_path):
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps({**OLD_CONFIG_JSON, "nope": 1}))
    with pytest.raises(UserError, match="unknown keys"):
        config.load_config(str(tmp_path))


def test_resolve_names_a_bad_flag_before_reading_any_file(tmp_path):
    cfg = config.Config(input_size=98, depth=2, pos_weight="auto",
                        stats=str(tmp_path / "missing-stats.json"))
    with pytest.raises(UsageError,
                       match=r"--input-size 98 is not valid .* 96 \(below\) and 100 \(above\)"):
        config.resolve(cfg)
    with pytest.raises(UserError, match="missing-stats.json is missing"):
        config.resolve(dataclasses.replace(cfg, input_size=96))
