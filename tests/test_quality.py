"""benchmarks/quality.py: the split rule, the report, the pinning and one --quick run.

The quick run trains on a tiny generated Oxford-IIIT Pet layout (never the
shared data) and asserts the report's fields and values, never a timing.
"""

import json
import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

import convert_pets
from benchmarks import quality
from samples import drawn
from utils import cli

v1 = tf.compat.v1

# (breed, CLASS-ID, SPECIES, BREED-ID): two cat breeds and one dog breed, as the sample has.
BREEDS = (("Abyssinian", 1, 1, 1), ("Bengal", 2, 1, 2), ("beagle", 3, 2, 1))
TRAINVAL = range(1, 7)  # numbers per breed: 6 -> 4 train + 2 tune by the rule
TEST = (7,)


def make_pets(root):
    """A tiny official layout: 40x48 JPEGs of a blob (bright cats, dark dogs) and trimaps."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "annotations", "trimaps"))
    lines = {"trainval": [], "test": []}
    rng = np.random.default_rng(0)
    for breed, class_id, species, breed_id in BREEDS:
        for number in (*TRAINVAL, *TEST):
            name = f"{breed}_{number}"
            trimap = np.full((40, 48), 2, np.uint8)
            centre = (int(rng.integers(16, 32)), int(rng.integers(14, 26)))
            cv2.ellipse(trimap, centre, (12, 9), 0, 0, 360, 3, -1)  # border ring
            cv2.ellipse(trimap, centre, (10, 7), 0, 0, 360, 1, -1)  # the pet
            image = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
            image[trimap == 1] = 220 if species == 1 else 40
            cv2.imwrite(os.path.join(root, "images", f"{name}.jpg"), image)
            cv2.imwrite(os.path.join(root, "annotations", "trimaps", f"{name}.png"), trimap)
            split = "test" if number in TEST else "trainval"
            lines[split].append(f"{name} {class_id} {species} {breed_id}\n")
    header = "#Image CLASS-ID SPECIES BREED ID\n"
    with open(os.path.join(root, "annotations", "list.txt"), "w") as f:
        f.writelines([header, *lines["trainval"], *lines["test"]])
    for split, chosen in lines.items():
        with open(os.path.join(root, "annotations", f"{split}.txt"), "w") as f:
            f.writelines(chosen)
    return root


# ------------------------------------------------------------ the split rule


def test_split_rule_puts_every_third_photo_of_each_breed_in_tune(tmp_path):
    photos, _ = convert_pets.load_split(make_pets(str(tmp_path / "pets")), "trainval")
    train, tune = quality.split_trainval(photos)
    assert [p.name for p in tune] == ["Abyssinian_3", "Abyssinian_6", "Bengal_3", "Bengal_6",
                                      "beagle_3", "beagle_6"]
    assert len(train) == 12 and not {p.name for p in train} & {p.name for p in tune}
    assert sorted(p.image_id for p in train + tune) == sorted(p.image_id for p in photos)
    # The rule reads numbers, not file order: a shuffled list splits the same.
    assert quality.split_trainval(photos[::-1]) == (train, tune)


def test_split_dir_links_images_and_writes_the_three_split_files(tmp_path):
    pets = make_pets(str(tmp_path / "pets"))
    out = str(tmp_path / "split")
    quality.make_split_dir(pets, out)
    assert os.path.islink(os.path.join(out, "images"))
    assert os.path.exists(os.path.join(out, "annotations", "trimaps", "beagle_7.png"))
    for split, count in (("train", 12), ("tune", 6), ("test", 3)):
        photos, _ = convert_pets.load_split(out, split)
        assert len(photos) == count


# ------------------------------------------------------------ pieces


@pytest.mark.parametrize("recipe", [r for r in quality.RECIPES if r.kind == "train"],
                         ids=lambda r: r.name)
def test_every_recipe_is_flags_train_py_accepts_over_the_common_base(recipe):
    import train
    from core import config

    sets = quality.Sets("/d/train-*", "/d/tune-*", "/d/test-*", None, {})
    args = quality.train_args(recipe, quality.FULL, sets, 4.0, 7, "/r/x")
    assert args[0] == "train.py"
    cfg = config.resolve(train.config_from_args(args[1:]))
    assert (cfg.depth, cfg.base_filters, cfg.input_size, cfg.batch_size) == (2, 16, 76, 8)
    assert (cfg.lr_schedule, cfg.minutes, cfg.epochs, cfg.seed) == ("cosine", 4.0, 0, 7)
    assert (cfg.intra_op_threads, cfg.inter_op_threads) == (1, 1)
    assert cfg.val_records == "/d/tune-*" and cfg.train_records == "/d/train-*"
    expected = {"long32": 32, "long64": 64, "long96": 96}.get(recipe.name, 48)
    assert cfg.long_side == expected
    assert cfg.precision == ("bfloat16" if recipe.name == "bfloat16" else "float32")
    assert cfg.dropout == (0.5 if recipe.name == "dropout" else 0.0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_python_command_pins_the_child_to_one_core(tmp_path):
    core = sorted(os.sched_getaffinity(0))[-1]
    log = str(tmp_path / "log")
    code, out = quality.run_logged(
        ["-c", "import os; print(sorted(os.sched_getaffinity(0)))"], core, log)
    assert code == 0 and out.strip() == f"[{core}]"
    assert quality.cores_to_use(1) == [sorted(os.sched_getaffinity(0))[0]]


def test_jobs_run_in_order_at_most_one_per_core_and_none_after_a_failure():
    import threading

    lock, running, most, seen = threading.Lock(), [0], [0], []

    def job(i):
        def run(core):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                seen.append(core)
            with lock:
                running[0] -= 1
            if i == 3:
                raise KeyboardInterrupt
            return i

        return run

    assert quality.run_jobs([job(i) for i in range(3)], [5, 6]) == [0, 1, 2]
    assert most[0] <= 2 and set(seen) <= {5, 6}
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        quality.run_jobs([job(3), job(4), job(5)], [5])
    assert len(seen) == 1  # the failing job only: the two after it never started


def test_read_events_gives_the_curve_from_the_loop_start_and_the_speed(tmp_path):
    run_dir = str(tmp_path / "run")
    from core import config, rundir

    rundir.save_config(config.Config(batch_size=4), run_dir)
    with tf.Graph().as_default():
        train = v1.summary.FileWriter(os.path.join(run_dir, "train"))
        val = v1.summary.FileWriter(os.path.join(run_dir, "val"))
        for writer, event in (
                (train, v1.Event(wall_time=100.0, step=1, session_log=v1.SessionLog(
                    status=v1.SessionLog.START))),
                (train, v1.Event(wall_time=102.0, step=1, summary=v1.Summary(
                    value=[v1.Summary.Value(tag="cost", simple_value=0.7)]))),
                (train, v1.Event(wall_time=112.0, step=11, summary=v1.Summary(
                    value=[v1.Summary.Value(tag="cost", simple_value=0.5)]))),
                (val, v1.Event(wall_time=110.0, step=6, summary=v1.Summary(
                    value=[v1.Summary.Value(tag="iou", simple_value=0.25)]))),
                (val, v1.Event(wall_time=113.0, step=11, summary=v1.Summary(value=[
                    v1.Summary.Value(tag="iou", simple_value=0.5),
                    v1.Summary.Value(tag="dice", simple_value=0.6)])))):
            writer.add_event(event)
        train.close()
        val.close()
    curve, rate = quality.read_events(run_dir)
    assert curve == [[10.0, 0.25], [13.0, 0.5]]
    assert rate == pytest.approx(10 * 4 / 10.0)


def _outcome(name, tune, kind="train", error=None):
    scores = {} if tune is None else {"tune": {"images": 2, "model": {
        "foreground_iou": tune, "dice": 0.5, "pixel_accuracy": 0.9},
        "all_background": {"foreground_iou": 0.0, "dice": 0.0, "pixel_accuracy": 0.7}}}
    return quality.Outcome(name, kind, ["--augment", name], scores=scores, error=error,
                           steps=3, images_per_s=1.5)


def test_recommended_is_our_best_tune_recipe_never_the_peer_or_a_failure():
    outcomes = [_outcome("none", 0.4), _outcome("flip", 0.6), _outcome("all", 0.6),
                _outcome("keras", 0.9, kind="keras"), _outcome("color", None, error="boom")]
    assert quality.recommended(outcomes) == "flip"  # a tie goes to the earlier recipe
    assert quality.recommended([outcomes[3], outcomes[4]]) is None


def test_table_marks_failures_and_a_missing_coco_column():
    import dataclasses

    outcomes = [_outcome("flip", 0.6), _outcome("color", None, error="train.py exited 1: x")]
    report = {"machine": {"cpu": "cpu"}, "quick": True, "started": "now", "command": "cmd",
              "minutes": 0.1, "parallel": 2, "recommended": "flip",
              "data": {"pets_dir": "p", "split_rule": "r",
                       "sets": {"tune": {"images": 2, "positive_images": 1}}},
              "all_background": {"tune": outcomes[0].scores["tune"]["all_background"]},
              "recipes": [dataclasses.asdict(o) for o in outcomes]}
    table = quality.format_table(report)
    assert "COCO cats: absent, column skipped" in table
    assert "| all-background | (predicts no cat) | 0.000 | - |" in table
    assert "| flip | --augment flip | 0.600 | - |" in table
    assert "| color | --augment color | failed: train.py exited 1: x |" in table
    assert "**flip**" in table


# ------------------------------------------------------------ bad flags and inputs


@pytest.mark.parametrize("argv,message", [
    (["--recipes", "flip,bogus"], "recipes are none,"),
    (["--out", "report.txt"], "--out must name a .json file"),
    (["--plot", "curve.jpg"], "--plot must name a .png file"),
    (["--minutes", "0"], "must be a positive number"),
    (["--coco-dir", "/no/such/coco"], "--coco-dir /no/such/coco does not exist"),
    (["--pets-dir", "/no/such/pets"], "Oxford-IIIT Pet directory /no/such/pets does not exist"),
])
def test_bad_input_is_one_error_line_and_no_report(tmp_path, capsys, argv, message):
    out = str(tmp_path / "q.json")
    code = cli.run_main(quality.main, ["--out", out, "--coco-dir", "", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not os.path.exists(out) and not os.path.exists(str(tmp_path / "q.md"))


def test_a_work_dir_with_files_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    code = cli.run_main(quality.main, ["--out", str(tmp_path / "q.json"), "--coco-dir", "",
                                       "--work-dir", str(work)])
    assert code == 1 and "is not empty" in capsys.readouterr().err
    assert (work / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------ the quick run


def test_quick_run_reports_every_recipe_on_every_set(tmp_path):
    pets = make_pets(str(tmp_path / "pets"))
    coco = str(tmp_path / "coco")
    drawn.generate(coco, seed=0, num_train=1, num_val=1)
    out, png, work = (str(tmp_path / n) for n in ("q.json", "q.png", "work"))
    code = cli.run_main(quality.main, ["--quick", "--pets-dir", pets, "--coco-dir", coco,
                                       "--out", out, "--plot", png, "--work-dir", work])
    assert code == 0
    with open(out) as f:
        report = json.load(f)
    assert report["quick"] and report["minutes"] == 0.1 and report["threshold"] == 0.5
    assert report["data"]["sets"]["train"] == {"images": 12, "positive_images": 8,
                                               "negative_images": 4}
    assert report["data"]["sets"]["tune"]["images"] == 6
    assert report["data"]["sets"]["test"]["images"] == 3
    assert report["data"]["sets"]["coco"]["images"] >= 1
    assert [r["recipe"] for r in report["recipes"]] == ["flip", "keras"]
    assert report["recommended"] == "flip"
    for r in report["recipes"]:
        assert r["error"] is None, r["error"]
        assert r["steps"] >= 1  # how many more depends on the machine's load
        assert set(r["scores"]) == {"tune", "test", "coco"}
        assert r["scores"]["tune"]["images"] == 6 and r["scores"]["test"]["images"] == 3
        for scores in r["scores"].values():
            for key in ("foreground_iou", "dice", "pixel_accuracy"):
                assert 0.0 <= scores["model"][key] <= 1.0
            assert scores["all_background"]["foreground_iou"] == 0.0
        assert r["curve"] and all(s >= 0 and 0.0 <= iou <= 1.0 for s, iou in r["curve"])
        assert os.path.exists(r["log"])
    # Ours scored its last checkpoint: the one evaluate.py names is the run's newest.
    flip_eval = os.path.join(work, "runs", "flip", "quality-test.json")
    with open(flip_eval) as f:
        assert f"model.ckpt-{report['recipes'][0]['steps']}" in json.load(f)["checkpoint"]
    with open(os.path.splitext(out)[0] + ".md") as f:
        table = f.read()
    for name in ("flip", "keras"):
        rows = [ln for ln in table.splitlines() if re.match(rf"\| {name} \|", ln)]
        assert len(rows) == 1 and "failed" not in rows[0]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
