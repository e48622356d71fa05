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
    cfg = rundir.load_config(str(tmp_path))
    assert isinstance(cfg, config.RunConfig)
    assert (cfg.pos_weight, cfg.seed, cfg.classes) == (2.5, 7, ("cat",))
    assert (cfg.long_side, cfg.precision, cfg.on_nan, cfg.strategy) == (0, "float32", "stop",
                                                                         "none")


def test_save_and_load_round_trip(tmp_path):
    cfg = config.RunConfig(depth=2, base_filters=8, seed=3, pos_weight=1.5,
                           classes=("cat", "dog"))
    rundir.save_config(cfg, str(tmp_path))
    assert rundir.load_config(str(tmp_path)) == cfg


def test_several_record_sets_and_weights_round_trip(tmp_path):
    cfg = config.RunConfig(train_records=("a-train-*", "b-train-*"), train_weights=(3.0, 1.0),
                           val_records=("a-val-*", "b-val-*"))
    rundir.save_config(cfg, str(tmp_path))
    stored = json.loads((tmp_path / rundir.RUN_CONFIG).read_text())
    assert stored["train_records"] == ["a-train-*", "b-train-*"]
    assert stored["train_weights"] == [3.0, 1.0]
    assert rundir.load_config(str(tmp_path)) == cfg
    # One glob stays the plain string config.json has always held, and loads as one.
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps(OLD_CONFIG_JSON))
    old = rundir.load_config(str(tmp_path))
    assert old.train_records == "data/cat-train2017-*.tfrecord" and old.train_weights == ()


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
        rundir.load_config(str(tmp_path))


def test_resolve_names_a_bad_flag_before_reading_any_file(tmp_path):
    cfg = config.Config(input_size=98, depth=2, pos_weight="auto",
                        stats=str(tmp_path / "missing-stats.json"))
    with pytest.raises(UsageError,
                       match=r"--input-size 98 is not valid .* 96 \(below\) and 100 \(above\)"):
        config.resolve(cfg)
    with pytest.raises(UserError, match="missing-stats.json is missing"):
        config.resolve(dataclasses.replace(cfg, input_size=96))


def test_every_field_has_one_rule_and_its_flag_parses_with_it():
    import argparse

    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    flags = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(config.Config):
        rule = field.metadata["rule"]
        assert rule.valid(field.default), field.name  # every default passes its own rule
        # Text, switches and the record sets' lists parse as their own flags say.
        if field.name in flags and rule.kind in (int, float) and field.name != "epochs":
            assert flags[field.name].type == rule.parse, field.name
    assert flags["lr_schedule"].choices == config.optim.LR_SCHEDULES


@pytest.mark.parametrize("changes,message", [
    (dict(dropout=1.0), "--dropout must be at least 0 and below 1 (0 = none), got 1.0"),
    (dict(long_side=-5), "--long-side must be >= 0 (0 = images as stored), got -5"),
    (dict(on_nan="maybe"), "--on-nan must be stop or skip, got 'maybe'"),
    (dict(pos_weight=0), "--pos-weight must be a positive number or 'auto', got 0"),
    (dict(batch_size=2.5), "--batch-size must be a positive integer, got 2.5"),
    (dict(hue=0.7), "--hue must be in [0, 0.5], got 0.7"),
    (dict(hue=-1.0), "--hue must be in [0, 0.5], got -1.0"),
    (dict(max_rotation=200.0), "--max-rotation must be in [0, 180] degrees, got 200.0"),
    (dict(elastic_grid=1), "--elastic-grid must be >= 2, got 1"),
    (dict(min_scale=2.0, max_scale=1.5), "--min-scale 2.0 and --max-scale 1.5 must satisfy"),
    (dict(train_weights=(1.0, -2.0)), "--train-weights must be a comma list of positive"),
    (dict(train_records=("a-*", "b-*"), train_weights=(1.0,)),
     "--train-weights gives 1 weight(s) for 2 --train-records sets"),
    (dict(train_records=("a-*",)), "--train-records must be a glob or a list of globs"),
])
def test_check_names_the_flag_of_a_bad_value(changes, message):
    with pytest.raises(UsageError) as e:
        config.check(config.Config(**changes))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("key,value,message", [
    ("lr_schedule", "bogus", "config has lr_schedule='bogus', not one of constant, exponential,"
     " cosine: fix lr_schedule in the run's config.json"),
    ("dropout", 1, "config has dropout=1, not a number at least 0 and below 1 (0 = none)"),
    ("depth", "4", "config has depth='4', not a positive integer: fix depth"),
    ("intra_op_threads", -1, "config has intra_op_threads=-1, not a whole number >= 0"),
    ("train_weights", [3, 0], "config has train_weights=(3, 0), not a comma list of positive"),
    ("train_records", ["a-*", 4], "config has train_records=('a-*', 4), not a glob or a list"),
])
def test_a_loaded_config_json_is_checked_by_the_same_rules(tmp_path, key, value, message):
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps({**OLD_CONFIG_JSON, key: value}))
    with pytest.raises(UserError) as e:
        rundir.load_config(str(tmp_path))
    assert type(e.value) is UserError and str(e.value).startswith(message)
