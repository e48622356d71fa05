"""core/config.py: the Config asked for, its one check (resolve), the RunConfig, config.json."""

import dataclasses
import json
import logging

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
    assert (cfg.class_weights, cfg.num_outputs, cfg.num_classes) == ((), 1, 1)


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
    assert (types["pos_weight"], types["seed"], types["class_weights"]) == (float, int, tuple)
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
    (dict(class_weights=(1.0, -1.0, 2.0)), "--class-weights must be 'auto' or a comma list of "
     "positive numbers, background first, one per mask value 0..K, e.g. 0.5,2,2"),
    (dict(class_weights="half"), "--class-weights must be 'auto' or a comma list"),
    (dict(foreground_windows=1.5), "--foreground-windows must be in [0, 1], got 1.5"),
    (dict(copy_paste=-0.1), "--copy-paste must be in [0, 1], got -0.1"),
    (dict(copy_paste_count=0), "--copy-paste-count must be a positive integer, got 0"),
    (dict(copy_paste_scale=(2.0, 0.1)), "--copy-paste-scale must be two numbers MIN,MAX with "
     "0 < MIN <= MAX, e.g. 0.1,2, got (2.0, 0.1)"),
    (dict(long_side_range=(192, 96)), "--long-side-range must be two whole numbers MIN,MAX "
     "with 0 < MIN <= MAX, e.g. 96,192, got (192, 96)"),
    (dict(long_side_range=(0, 96)), "--long-side-range must be two whole numbers"),
    (dict(long_side_range=(96.0, 128.0)), "--long-side-range must be two whole numbers"),
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
    ("long_side_range", [96], "config has long_side_range=(96,), not two whole numbers MIN,MAX"),
    ("copy_paste_scale", [], "config has copy_paste_scale=(), not two numbers MIN,MAX"),
    ("foreground_windows", 2, "config has foreground_windows=2, not a number in [0, 1]"),
])
def test_a_loaded_config_json_is_checked_by_the_same_rules(tmp_path, key, value, message):
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps({**OLD_CONFIG_JSON, key: value}))
    with pytest.raises(UserError) as e:
        rundir.load_config(str(tmp_path))
    assert type(e.value) is UserError and str(e.value).startswith(message)


def _stats(path, classes, class_pixels=None):
    """A converter's stats file, as much of it as resolve reads."""
    stats = {"classes": classes, "foreground_fraction": 0.25, "pixels": 1000}
    if class_pixels is not None:
        stats["class_pixels"] = class_pixels
    path.write_text(json.dumps(stats))


def _cfg(tmp_path, train=("a",), val=("a",), **kw):
    def globs(names, split):
        found = tuple(str(tmp_path / f"{n}-{split}-*") for n in names)
        return found[0] if len(found) == 1 else found
    return config.Config(train_records=globs(train, "train"), val_records=globs(val, "val"),
                         seed=0, run_dir=str(tmp_path / "run"), **kw)


@pytest.fixture()
def two_classes(tmp_path):
    """Sets a and b of cat (1) and dog (2): 600 / 300 / 150 valid pixels of 0 / 1 / 2 in all."""
    for name, pixels in (("a", [300, 200, 100]), ("b", [300, 100, 50])):
        _stats(tmp_path / f"{name}-train-stats.json", ["cat", "dog"], pixels)
        _stats(tmp_path / f"{name}-val-stats.json", ["cat", "dog"], [30, 20, 10])
    return tmp_path


def test_resolve_takes_classes_and_outputs_from_the_stats(two_classes):
    cfg = config.resolve(_cfg(two_classes))
    assert (cfg.classes, cfg.num_outputs, cfg.num_classes) == (("cat", "dog"), 3, 2)
    assert (cfg.class_weights, cfg.pos_weight) == ((1.0, 1.0, 1.0), 1.0)
    _stats(two_classes / "old-train-stats.json", ["cat", "dog"])  # merged: one class
    _stats(two_classes / "old-val-stats.json", ["cat", "dog"])
    old = config.resolve(_cfg(two_classes, ("old",), ("old",)))
    assert (old.classes, old.num_outputs, old.class_weights) == (("cat", "dog"), 1, ())


def test_without_stats_the_configured_classes_stand(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = config.resolve(_cfg(tmp_path))
    assert (cfg.classes, cfg.num_outputs, cfg.class_weights) == (("cat",), 1, ())
    assert "no converter stats beside the records: classes cat as configured, K = 1" in \
        caplog.text
    given = config.resolve(_cfg(tmp_path, classes=("a", "b"), num_outputs=3))
    assert (given.classes, given.num_outputs, given.class_weights) == (("a", "b"), 3,
                                                                      (1.0, 1.0, 1.0))
    with pytest.raises(UsageError, match="num_outputs 4 means 3 classes but classes names 2"):
        config.resolve(_cfg(tmp_path, classes=("a", "b"), num_outputs=4))


def test_class_weights_auto_is_median_frequency_balancing_over_the_training_sets(
        two_classes, caplog):
    caplog.set_level(logging.INFO)
    cfg = config.resolve(_cfg(two_classes, ("a", "b"), class_weights="auto"))
    # f = 600 / 1050, 300 / 1050, 150 / 1050; median f = 300 / 1050; w = median / f
    assert cfg.class_weights == (0.5, 1.0, 2.0)
    assert cfg.stats == f"{two_classes}/a-train-stats.json,{two_classes}/b-train-stats.json"
    assert "class_weights auto: class pixels [600, 300, 150] in " in caplog.text
    assert "-> median-frequency weights 0.500, 1.000, 2.000" in caplog.text
    one = config.resolve(_cfg(two_classes, ("a", "b"), class_weights="auto",
                              stats=str(two_classes / "a-train-stats.json")))
    assert one.class_weights == (200 / 300, 1.0, 2.0)  # 300 / 200 / 100: median 200


def test_class_weights_given_one_per_value(two_classes):
    cfg = config.resolve(_cfg(two_classes, class_weights=(0.5, 2, 4)))
    assert cfg.class_weights == (0.5, 2.0, 4.0) and type(cfg.class_weights[1]) is float
    with pytest.raises(UsageError) as e:
        config.resolve(_cfg(two_classes, class_weights=(0.5, 2.0)))
    assert str(e.value) == ("--class-weights gives 2 weight(s) for 2 classes + background: "
                            "give 3, background first, then cat, dog")


@pytest.mark.parametrize("kw,message", [
    (dict(pos_weight=2.0), "--pos-weight weighs the one class of one-class records; these hold "
     "2 (cat, dog): use --class-weights"),
    (dict(pos_weight="auto"), "--pos-weight weighs the one class of one-class records"),
])
def test_pos_weight_is_for_one_class(two_classes, kw, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.resolve(_cfg(two_classes, **kw))


def test_class_weights_are_for_two_classes_or_more(tmp_path):
    _stats(tmp_path / "a-train-stats.json", ["cat"], [90, 10])
    for weights in ("auto", (1.0, 2.0)):
        with pytest.raises(UsageError) as e:
            config.resolve(_cfg(tmp_path, class_weights=weights))
        assert str(e.value) == ("--class-weights weighs the classes of records of 2 or more "
                                "classes; these hold one (cat): use --pos-weight")


def test_sets_of_different_class_lists_are_one_error(two_classes):
    _stats(two_classes / "c-val-stats.json", ["dog", "cat"], [30, 20, 10])
    with pytest.raises(UserError) as e:
        config.resolve(_cfg(two_classes, ("a", "b"), ("a", "c"), class_weights="auto"))
    assert str(e.value) == (
        f"class lists differ: --train-records '{two_classes}/a-train-*' "
        f"({two_classes}/a-train-stats.json) holds 2 classes (cat, dog), --val-records "
        f"'{two_classes}/c-val-*' ({two_classes}/c-val-stats.json) holds 2 classes (dog, cat): "
        "re-convert one with the same --classes (or --species), in the same order")


@pytest.mark.parametrize("text,want", [("auto", "auto"), ("0.5,2,2", (0.5, 2.0, 2.0))])
def test_class_weights_flag(text, want):
    import train

    assert train.config_from_args(["--class-weights", text]).class_weights == want
    assert train.config_from_args([]).class_weights == ()


@pytest.mark.parametrize("text", ["0,1,2", "1,x", "", "nan,1,1"])
def test_bad_class_weights_flag_is_one_line_exit_2(text, capsys):
    import train
    from utils import cli

    assert cli.run_main(train.main, ["--class-weights", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --class-weights: must be 'auto' or a comma " \
        f"list of positive numbers, background first, one per mask value 0..K, e.g. 0.5,2,2, " \
        f"got {text}" in err


def test_class_weights_round_trip_through_config_json(tmp_path):
    cfg = config.RunConfig(classes=("cat", "dog"), num_outputs=3, class_weights=(0.5, 1.0, 2.0))
    rundir.save_config(cfg, str(tmp_path))
    assert json.loads((tmp_path / rundir.RUN_CONFIG).read_text())["class_weights"] == [
        0.5, 1.0, 2.0]
    assert rundir.load_config(str(tmp_path)) == cfg
@pytest.mark.parametrize("argv,long_side", [
    (["--long-side-range", "96,192"], 136),  # round(sqrt(96 * 192)) = round(135.76)
    (["--long-side-range", "64,64"], 64),
    (["--long-side-range", "96,192", "--long-side", "128"], 128),  # named: kept
    ([], 0)])
def test_a_long_side_range_evaluates_at_its_geometric_mean(argv, long_side, tmp_path):
    import train

    cfg = config.resolve(train.config_from_args(argv + ["--seed", "1"]))
    assert cfg.long_side == long_side
    rundir.save_config(cfg, str(tmp_path))
    stored = json.loads((tmp_path / rundir.RUN_CONFIG).read_text())
    assert stored["long_side"] == long_side  # what evaluate, predict and export use
    assert stored["long_side_range"] == list(cfg.long_side_range)
    assert rundir.load_config(str(tmp_path)) == cfg


def test_the_new_training_flags_reach_the_config():
    import train

    cfg = train.config_from_args(["--foreground-windows", "0.25", "--copy-paste", "0.5",
                                  "--copy-paste-count", "3", "--copy-paste-scale", "0.2,1.5",
                                  "--long-side-range", "96,192"])
    assert (cfg.foreground_windows, cfg.copy_paste, cfg.copy_paste_count) == (0.25, 0.5, 3)
    assert cfg.copy_paste_scale == (0.2, 1.5) and cfg.long_side_range == (96, 192)
    default = train.config_from_args([])
    assert (default.foreground_windows, default.copy_paste, default.long_side_range) == (
        0.0, 0.0, ())
    assert default.copy_paste_scale == (0.1, 2.0) and default.copy_paste_count == 1
