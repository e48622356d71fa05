"""benchmarks/quality.py: the split rules, the learning-curve subset, the recipe probe, the
peer specs, the report, the pinning and one --quick run.

The quick run trains on a tiny generated Oxford-IIIT Pet layout and YOLO scenes export
(never the shared data) and asserts the report's fields and values, never a timing.
"""

import dataclasses
import json
import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

import convert_pets
import unet
from benchmarks import keras_seg_peer, quality, torch_seg_peer
from core import pretrained
from datasets import records
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


# Roboflow copies: the source stem, then _<ext>.rf.<hash>. Sources a..e, a and d twice.
VALID = ("a_jpg.rf.11.jpg", "a_jpg.rf.22.jpg", "b_jpg.rf.33.jpg", "c.jpg", "d_jpeg.rf.44.jpg",
         "d_jpeg.rf.55.jpg", "e_png.rf.66.jpg")
TRAIN = ("t1_jpg.rf.77.jpg", "t2_jpg.rf.88.jpg", "t3.jpg", "t4.jpg")


def make_scenes(root):
    """A tiny Roboflow YOLO export (data.yaml, train/ and valid/): 40x48 JPEGs of a bright
    square cat at a random place on a dark ground, its polygon in labels/."""
    rng = np.random.default_rng(1)
    for split, names in (("train", TRAIN), ("valid", VALID)):
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(root, split, sub))
        for name in names:
            image = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
            x, y = int(rng.integers(2, 30)), int(rng.integers(2, 22))
            image[y:y + 16, x:x + 16] = 230
            cv2.imwrite(os.path.join(root, split, "images", name), image)
            box = [x / 48, y / 40, (x + 16) / 48, y / 40, (x + 16) / 48, (y + 16) / 40,
                   x / 48, (y + 16) / 40]
            with open(os.path.join(root, split, "labels", name[:-4] + ".txt"), "w") as f:
                f.write("0 " + " ".join(f"{v:.4f}" for v in box) + "\n")
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['cat']\n")
    return root


def test_scenes_split_halves_the_sources_and_never_straddles_one():
    tune, test = quality.split_sources(reversed(VALID))  # the rule sorts: order is no input
    # sources a, b, c, d, e sorted: even places (a, c, e) tune, odd (b, d) test
    assert tune == ["a_jpg.rf.11.jpg", "a_jpg.rf.22.jpg", "c.jpg", "e_png.rf.66.jpg"]
    assert test == ["b_jpg.rf.33.jpg", "d_jpeg.rf.44.jpg", "d_jpeg.rf.55.jpg"]
    # 195 single-copy sources, as the feral valid set has: 98 tune, 97 test
    tune, test = quality.split_sources([f"s{i:03d}_jpg.rf.{i:x}.jpg" for i in range(195)])
    assert (len(tune), len(test)) == (98, 97)
    assert tune[:2] == ["s000_jpg.rf.0.jpg", "s002_jpg.rf.2.jpg"]


def test_scenes_split_dir_converts_to_the_two_halves(tmp_path):
    import convert_yolo

    scenes = make_scenes(str(tmp_path / "scenes"))
    data = quality.make_scenes_split(scenes, str(tmp_path / "split"))
    assert os.path.islink(os.path.join(tmp_path, "split", "train", "images"))
    assert sorted(os.listdir(tmp_path / "split" / "test" / "labels")) == [
        "b_jpg.rf.33.txt", "d_jpeg.rf.44.txt", "d_jpeg.rf.55.txt"]
    output = str(tmp_path / "rec" / "scenes")
    images = {split: convert_yolo.convert(data, split, ("cat",), output, progress=False)
              for split in ("train", "val", "test")}
    assert {k: v["images"] for k, v in images.items()} == {"train": 4, "val": 4, "test": 3}
    assert images["val"]["sources"] == 3 and images["test"]["max_copies_per_source"] == 2


# ------------------------------------------------------------ the learning-curve subset


def test_learning_subset_is_seeded_nested_and_stratified():
    # default_rng([0, 0]).permutation(6) = 3 2 5 4 0 1; default_rng([0, 1]).permutation(2) = 0 1
    got = [quality.learning_subset([6, 2], n, 0) for n in range(1, 9)]
    assert got[:4] == [[[3], []], [[2, 3], []], [[2, 3], [0]], [[2, 3, 5], [0]]]
    assert got[7] == [[0, 1, 2, 3, 4, 5], [0, 1]]
    assert quality.learning_subset([6, 2], 100, 0) == got[7]  # more than there are: all
    for small, large in zip(got, got[1:]):  # a larger N keeps every photo of a smaller one
        assert all(set(s) <= set(b) for s, b in zip(small, large))
    # shares follow the sizes: 4 of 8 photos are 3 + 1
    assert [len(c) for c in got[3]] == [3, 1]
    assert quality.learning_subset([6, 2], 4, 1) != got[3]  # another seed, other photos


def test_write_subset_keeps_the_chosen_records_in_file_name_order(tmp_path):
    path = str(tmp_path / "s-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for name in ("f.png", "b.png", "d.png", "a.png", "e.png", "c.png"):  # shuffled
            mask = cv2.imencode(".png", np.zeros([2, 2], np.uint8))[1].tobytes()
            writer.write(records.make_example(mask, "png", 2, 2, 1, name, mask))
    globs, photos = quality.write_subset({"scenes-train": path}, 3, 0, str(tmp_path / "sub"))
    names = [records.parse_example(r)[records.FILENAME].numpy().decode()
             for r in tf.data.TFRecordDataset(globs["scenes-train"])]
    # sorted a..f, then default_rng([0, 0]).permutation(6)'s first 3: 3, 2, 5 -> c, d, f
    assert photos == {"scenes-train": 3} and names == ["c.png", "d.png", "f.png"]


# ------------------------------------------------------------ recipes and peers


def _known_flags():
    import train

    return quality.train_flags(train.build_parser().format_help())


def test_the_probe_reads_train_py_help_and_names_what_is_missing():
    known = quality.train_flags("usage: x [--depth DEPTH]\n  --long-side LONG_SIDE  px\n"
                                "  -v, --verbose  (a --quoted-flag in prose counts too)")
    assert known == {"--depth", "--long-side", "--verbose", "--quoted-flag"}
    lever = quality.Recipe("x", ("--depth", "3", "--copy-paste", "0.5", "--gone", "-1"))
    assert quality.unavailable(lever, known, True) == (
        "not available in this tree: train.py has no --copy-paste, --gone")
    assert quality.unavailable(quality.Recipe("y", ("--depth", "2")), known, True) is None
    assert quality.unavailable(quality.BY_NAME["torch"], known, False) == quality.TORCH_HINT
    assert quality.unavailable(quality.BY_NAME["torch"], known, True) is None
    assert quality.unavailable(quality.BY_NAME["keras"], frozenset(), False) is None


def _sets():
    return quality.Sets({"scenes-train": "/d/s-train-*", "pets-train": "/d/p-train-*"},
                        {"scenes-tune": "/d/s-val-*", "pets-tune": "/d/p-tune-*"},
                        {"scenes-test": "/d/s-test-*", "coco": "/d/coco-*"}, {})


@pytest.mark.parametrize("recipe", [r for r in quality.RECIPES if r.kind == "train"],
                         ids=lambda r: r.name)
def test_every_available_recipe_is_flags_train_py_accepts_over_the_common_base(recipe):
    import train
    from core import config

    note = quality.unavailable(recipe, _known_flags(), True)
    if note == quality.HED_HINT:
        assert recipe.encoder == "vgg16" and quality.hed_weights() is None
        return  # no VGG16 weights on this machine
    if note:
        assert any(f not in _known_flags() for f in recipe.flags if f.startswith("--"))
        return  # a lever slot of a flag this tree does not have yet
    args = quality.train_args(recipe, quality.FULL, _sets(), 4.0, 7, "/r/x")
    assert args[0] == "train.py"
    raw = train.config_from_args(args[1:])
    expected = {"bfloat16": "bfloat16", "vgg16-bf16": "bfloat16", "vgg16-frozen-bf16": "bfloat16",
                "precision-auto": "auto", "weight-decay": "auto"}.get(recipe.name, "float32")
    assert raw.precision == expected  # as given: resolve() turns auto into this CPU's choice
    cfg = config.resolve(raw)
    vgg = recipe.encoder == "vgg16"  # the same 100 / 132 px output windows as the U-Net's
    if recipe.name == "demo-small":  # demo.SCRATCH_TRAINING's network and scale
        import demo

        small = {k: demo.SCRATCH_TRAINING[k] for k in ("depth", "long_side", "input_size",
                                                       "val_input_size", "base_filters")}
        assert small == dict(depth=cfg.depth, long_side=cfg.long_side,
                             input_size=cfg.input_size, val_input_size=cfg.val_input_size,
                             base_filters=cfg.base_filters)
    elif recipe.encoder == unet.EFFICIENTNET:  # depth 5, windows holding a whole photo
        side = {"effnet-frozen-160": 160, "effnet-frozen-192": 192,
                "effnet-frozen-224": 224}.get(recipe.name, 128)
        assert (cfg.depth, cfg.base_filters, cfg.long_side) == (5, 16, side)
        assert cfg.input_size == cfg.val_input_size == side + 32
        assert unet.output_size(cfg.input_size, 5, unet.EFFICIENTNET) == side
        assert cfg.learning_rate == (5e-4 if recipe.name == "effnet-lr" else 2e-3)
    else:
        assert (cfg.depth, cfg.base_filters, cfg.long_side) == (3, 16, 128)
        assert (cfg.input_size, cfg.val_input_size, cfg.batch_size) == ((212, 244, 8) if vgg
                                                                        else (188, 220, 8))
    assert (cfg.encoder, cfg.freeze_encoder) == (recipe.encoder, recipe.freeze)
    imagenet = pretrained.imagenet_file(unet.EFFICIENTNET) if recipe.encoder == \
        unet.EFFICIENTNET else ""
    assert cfg.encoder_weights == (quality.hed_weights() if vgg else imagenet)
    assert (cfg.lr_schedule, cfg.minutes, cfg.epochs, cfg.seed) == ("cosine", 4.0, 0, 7)
    assert (cfg.intra_op_threads, cfg.inter_op_threads) == (1, 1)
    assert tuple(cfg.train_records) == ("/d/s-train-*", "/d/p-train-*")
    assert tuple(cfg.val_records) == ("/d/s-val-*", "/d/p-tune-*")
    assert cfg.augment == ("flip,rotate,scale,elastic,color" if recipe.name == "all-aug"
                           else "flip")
    assert cfg.weight_decay == (0.05 if recipe.name == "weight-decay" else 0.0)


def test_peers_run_at_the_published_and_at_the_project_scale():
    sets, plan = _sets(), quality.FULL
    module, spec = quality.peer_spec(quality.BY_NAME["keras"], plan, sets, 4.0, 3)
    assert module == "benchmarks.keras_seg_peer"
    assert (spec.img_size, spec.batch_size, spec.bn_momentum) == (160, 32, 0.99)
    assert spec.filters == (32, 64, 128, 256) and spec.jit_compile == "auto"
    assert spec.train == ("/d/s-train-*", "/d/p-train-*")
    assert spec.tune == ("/d/s-val-*", "/d/p-tune-*")
    assert list(spec.sets) == ["scenes-tune", "pets-tune", "scenes-test", "coco"]
    _, scaled = quality.peer_spec(quality.BY_NAME["keras-scaled"], plan, sets, 4.0, 3)
    # the Base's long side 128 is a square the network's 16 divides; the Base's batch
    assert (scaled.img_size, scaled.batch_size, scaled.bn_momentum) == (128, 8, 0.9)
    assert scaled.filters == spec.filters and (scaled.minutes, scaled.seed) == (4.0, 3)
    assert quality.square_for(100, (4, 8, 16, 32)) == 112
    module, torch = quality.peer_spec(quality.BY_NAME["torch"], plan, sets, 4.0, 3)
    assert module == "benchmarks.torch_seg_peer"
    assert (torch.long_side, torch.depth, torch.base_filters, torch.batch_size) == (128, 3, 16, 8)
    assert (torch.dice_weight, torch.threads, torch.train) == (0.5, 1, spec.train)
    # what quality.py passes is what the peer process reads back
    assert keras_seg_peer.spec_from_json(json.dumps(dataclasses.asdict(scaled))) == scaled
    assert torch_seg_peer.spec_from_json(json.dumps(dataclasses.asdict(torch))) == torch


def test_tune_counts_the_pixels_of_both_tune_sets_together():
    from core import metrics

    def report(counts, images):
        tp, fp, fn, tn = counts
        return {"images": images, "valid_pixels": sum(counts), "foreground_pixels": tp + fn,
                "model": metrics.ratios(counts),
                "all_background": metrics.ratios(metrics.all_background(counts))}

    scenes, pets = report([30, 10, 20, 940], 3), report([0, 7, 5, 188], 2)
    assert quality.counts_of(scenes) == [30, 10, 20, 940]
    assert quality.counts_of(pets) == [0, 7, 5, 188]  # precision 0: fp from pixel accuracy
    scores = {"scenes-tune": quality.evaluate_json(scenes),
              "pets-tune": quality.evaluate_json(pets)}
    tune = quality.combined(scores, ["scenes-tune", "pets-tune"])
    assert tune["counts"] == [30, 17, 25, 1128] and tune["images"] == 5
    assert tune["model"]["foreground_iou"] == pytest.approx(30 / 72)
    assert tune["all_background"]["foreground_iou"] == 0.0


def test_a_cat_dog_report_counts_the_cat_against_everything_else():
    # rows = truth (background, cat, dog), columns = predicted
    matrix = [[50, 3, 2], [4, 20, 6], [1, 5, 9]]
    report = {"images": 2, "classes": ["background", "cat", "dog"], "confusion_matrix": matrix,
              "model": {"mean_iou": 0.1}, "all_background": {"mean_iou": 0.0}}
    assert quality.counts_of(report) == [20, 8, 10, 62]  # dogs taken for cat are cat's fp
    scores = quality.evaluate_json(report)
    assert scores["counts"] == [20, 8, 10, 62] and scores["images"] == 2
    assert scores["model"]["foreground_iou"] == pytest.approx(20 / 38)
    assert scores["all_background"]["foreground_iou"] == 0.0


def test_coco_cat_photos_keeps_the_photos_with_cats_and_their_dogs(tmp_path):
    coco = str(tmp_path / "coco")
    os.makedirs(os.path.join(coco, "annotations"))
    os.makedirs(os.path.join(coco, "val2017"))
    ann = {"images": [{"id": i} for i in (1, 2, 3)],
           "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
           "annotations": [{"id": 10, "image_id": 1, "category_id": 17},
                           {"id": 11, "image_id": 1, "category_id": 18},
                           {"id": 12, "image_id": 2, "category_id": 18},
                           {"id": 13, "image_id": 3, "category_id": 17}]}
    with open(os.path.join(coco, "annotations", "instances_val2017.json"), "w") as f:
        json.dump(ann, f)
    out = quality.coco_cat_photos(coco, str(tmp_path / "cats"))
    with open(os.path.join(out, "annotations", "instances_val2017.json")) as f:
        cut = json.load(f)
    assert [i["id"] for i in cut["images"]] == [1, 3]  # photo 2 holds only a dog
    assert [a["id"] for a in cut["annotations"]] == [10, 11, 13]  # photo 1's dog stays
    assert cut["categories"] == ann["categories"]
    assert os.path.realpath(os.path.join(out, "val2017")) == os.path.realpath(
        os.path.join(coco, "val2017"))
    assert not os.path.exists(os.path.join(out, "annotations", "instances_train2017.json"))


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


def _outcome(name, tune, kind="train", error=None, skipped=None):
    def score(iou):
        return {"images": 2, "model": {"foreground_iou": iou, "dice": 0.5,
                                       "pixel_accuracy": 0.9},
                "all_background": {"foreground_iou": 0.0, "dice": 0.0, "pixel_accuracy": 0.7}}

    scores = {} if tune is None else {"tune": score(tune), "pets-test": score(tune / 2)}
    return quality.Outcome(name, kind, ["--augment", name], scores=scores, error=error,
                           skipped=skipped, steps=3, images_per_s=1.5)


def _fake_processes(tmp_path, monkeypatch):
    """quality.py's child processes faked: train.py makes its run dir, score_sets.py writes a
    report per --set (IoU 0.5 with --flip-test, else 25 / 60); returns the list of their args."""
    from core import metrics

    calls = []

    def fake_run(args, core, log_path):
        calls.append(args)
        if args[0] == "train.py":
            os.makedirs(args[args.index("--run-dir") + 1], exist_ok=True)
            return 0, ""
        assert args[:2] == ["-m", "benchmarks.score_sets"]
        counts = [30, 10, 20, 940] if "--flip-test" in args else [25, 10, 25, 940]
        lines = []
        for name in (a.split("=")[1] for a in args if a.startswith("--set=")):
            path = str(tmp_path / f"eval{len(calls)}-{name}.json")
            with open(path, "w") as f:
                json.dump({"images": 2, "valid_pixels": 1000, "foreground_pixels": 50,
                           "global_step": 42, "model": metrics.ratios(counts),
                           "all_background": metrics.ratios(metrics.all_background(counts))},
                          f)
            lines.append(f"scored {name} {path}\n")
        return 0, "".join(lines)

    monkeypatch.setattr(quality, "run_logged", fake_run)
    monkeypatch.setattr(quality, "train_flags", lambda: frozenset())
    monkeypatch.setattr(quality, "read_events", lambda run_dir: ([[1.0, 0.5]], 9.0))
    return calls


def test_flip_test_scores_the_base_run_again_after_it_with_its_flag(tmp_path, monkeypatch):
    """flip-test trains nothing when base runs too: it waits for base's job, then scores
    base's run with --flip-test; alone it trains a run of its own."""
    calls = _fake_processes(tmp_path, monkeypatch)
    work = str(tmp_path / "work")
    opts = quality.Options(work_dir=work)
    sets = quality.Sets({"scenes-train": "/d/s-train-*"}, {"scenes-tune": "/d/s-val-*"},
                        {"scenes-test": "/d/s-test-*"}, {})
    recipes = [quality.BY_NAME[n] for n in ("flip-test", "base")]
    jobs = quality._jobs(recipes, quality.FULL, sets, 4.0, opts, work, log=lambda _: None)
    flips, base = quality.run_jobs(jobs, [None, None])[::-1]  # flip-test comes last
    assert (base.recipe, flips.recipe) == ("base", "flip-test")
    assert [a[0] for a in calls].count("train.py") == 1  # base's run only
    scored = [a for a in calls if a[0] == "-m"]  # one process per run scores every set
    assert scored[-1][scored[-1].index("--run") + 1] == os.path.join(work, "runs", "base")
    assert [("--flip-test" in a) for a in scored] == [False, True]
    assert [a for a in scored[0] if a.startswith("--set=")] == [
        "--set=scenes-tune=/d/s-val-*", "--set=scenes-test=/d/s-test-*"]
    assert flips.steps == base.steps == 42 and flips.curve == base.curve
    assert flips.scores["scenes-test"]["model"]["foreground_iou"] == pytest.approx(0.5)
    assert base.scores["scenes-test"]["model"]["foreground_iou"] == pytest.approx(25 / 60)
    assert flips.flags == ["evaluate.py", "--flip-test"] and base.flags == []
    assert os.path.exists(os.path.join(work, "runs", "base",
                                       "quality-scenes-test-flip-test.json"))
    # alone, it trains its own run (base's flags) and scores it with the flag
    calls.clear()
    jobs = quality._jobs(recipes[:1], quality.FULL, sets, 4.0, opts, work, log=lambda _: None)
    (alone,) = quality.run_jobs(jobs, [None])
    assert [a[0] for a in calls] == ["train.py", "-m"]
    assert "--flip-test" not in calls[0] and "--flip-test" in calls[1]
    assert alone.error is None and alone.steps == 42


def test_a_set_the_scorer_did_not_report_fails_the_recipe_with_its_error(tmp_path,
                                                                         monkeypatch):
    """score_sets.py stopping part-way (a bad set) is the recipe's error line, not a
    half-scored row."""
    _fake_processes(tmp_path, monkeypatch)

    def half(args, core, log_path):
        with open(log_path, "a") as log:
            log.write("error: records '/d/s-test-*' match no files: convert them first\n")
        return 1, "scored scenes-tune /x.json\n"

    monkeypatch.setattr(quality, "run_logged", half)
    work = str(tmp_path / "work")
    os.makedirs(os.path.join(work, "logs"))
    sets = quality.Sets({"scenes-train": "/d/s-train-*"}, {"scenes-tune": "/d/s-val-*"},
                        {"scenes-test": "/d/s-test-*"}, {})
    out = quality.Outcome("base", "train", [])
    log_path = os.path.join(work, "logs", "base.log")
    got = quality.score_run(quality.BY_NAME["base"], work, sets, None, log_path, out)
    assert got.error == ("scoring exited 1: error: records '/d/s-test-*' match no files: "
                         "convert them first")
    assert got.scores == {}


def test_recommended_is_our_best_tune_recipe_never_a_peer_a_failure_or_a_skip():
    outcomes = [_outcome("none", 0.4), _outcome("flip", 0.6), _outcome("all", 0.6),
                _outcome("keras", 0.9, kind="keras"), _outcome("color", None, error="boom"),
                _outcome("fgwin", 0.95, skipped="not available")]
    assert quality.recommended(outcomes) == "flip"  # a tie goes to the earlier recipe
    assert quality.recommended([outcomes[3], outcomes[4]]) is None


def _report(outcomes, **data):
    return {"machine": {"cpu": "cpu"}, "quick": True, "started": "now", "command": "cmd",
            "minutes": 0.1, "parallel": 2, "recommended": "flip",
            "data": {"pets_dir": "p", "split_rule": "r", "scenes_dir": None,
                     "sets": {"pets-tune": {"images": 2, "positive_images": 1}}, **data},
            "all_background": {"tune": outcomes[0].scores["tune"]["all_background"]},
            "recipes": [dataclasses.asdict(o) for o in outcomes]}


def test_table_marks_failures_skips_and_the_missing_columns():
    outcomes = [_outcome("flip", 0.6), _outcome("color", None, error="train.py exited 1: x"),
                _outcome("torch", None, kind="torch", skipped=quality.TORCH_HINT)]
    table = quality.format_table(_report(outcomes))
    assert "no scenes dir: the pets-only protocol" in table
    assert "COCO cats: absent, column skipped" in table
    assert "| all-background | (predicts no cat) | 0.000 | - | - | - | | |" in table
    assert "| flip | --augment flip | 0.600 | - | 0.300 | - | 3 | 1.5 |" in table
    assert "| color | --augment color | failed: train.py exited 1: x |" in table
    assert f"| torch | (torch peer) | {quality.TORCH_HINT} |" in table
    assert "**flip**" in table


def test_every_learning_curve_point_validates_after_as_many_photos():
    # 850 photos validated every epoch: a subset of n every ceil(850 / n) of its epochs
    assert [quality.learning_val_every(1, 850, n) for n in (100, 200, 400, 850)] == [9, 5, 3, 1]
    assert quality.learning_val_every(2, 850, 425) == 4


def test_learning_curve_points_train_with_their_validation_cadence(tmp_path, monkeypatch):
    calls = _fake_processes(tmp_path, monkeypatch)
    monkeypatch.setattr(quality, "write_subset", lambda train, n, seed, out: (
        {"scenes-train": f"/d/first{n}-*"}, {"scenes-train": n}))
    sets = quality.Sets({"scenes-train": "/d/s-train-*"}, {"scenes-tune": "/d/s-val-*"},
                        {"scenes-test": "/d/s-test-*"}, {"scenes-train": {"images": 850}})
    opts = quality.Options(learning_curve=(100, None), work_dir=str(tmp_path / "w"))
    report = quality._learning_curve(opts, quality.FULL, sets, 4.0, str(tmp_path / "w"),
                                     [None], lambda _: None)
    trained = {a[a.index("--train-records") + 1]: a[a.index("--val-every") + 1]
               for a in calls if a[0] == "train.py"}
    assert trained == {"/d/first100-*": "9", "/d/first850-*": "1"}
    assert [(p["photos"], p["val_every"]) for p in report["points"]] == [(100, 9), (850, 1)]


def test_learning_curve_table_and_plot(tmp_path):
    report = _report([_outcome("base", 0.5)], sets={"scenes-test": {"images": 9}})
    report.update(recipe="base", subset_rule="rule", points=[
        {"photos": n, "per_set": {"scenes-train": n - 1, "pets-train": 1},
         "val_every": quality.learning_val_every(1, 100, n),
         "outcome": dataclasses.asdict(_outcome("base", iou))}
        for n, iou in ((50, 0.4), (100, 0.5))])
    table = quality.format_learning_curve(report)
    assert ("| 50 | scenes-train 49, pets-train 1 | 0.400 | - | 0.200 | - | 3 | 2 epochs |"
            in table)
    assert ("| 100 | scenes-train 99, pets-train 1 | 0.500 | - | 0.250 | - | 3 | 1 epoch |"
            in table)
    assert "scenes-test 9, " not in table and "scenes-test 9." in table
    png = str(tmp_path / "lc.png")
    quality.plot_learning_curve(report, png)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------ bad flags and inputs


@pytest.mark.parametrize("argv,message", [
    (["--recipes", "flip,bogus"], "recipes are base,"),
    (["--out", "report.txt"], "--out must name a .json file"),
    (["--plot", "curve.jpg"], "--plot must name a .png file"),
    (["--minutes", "0"], "must be a positive number"),
    (["--coco-dir", "/no/such/coco"], "--coco-dir /no/such/coco does not exist"),
    (["--scenes-dir", "/no/such/scenes"], "--scenes-dir /no/such/scenes does not exist"),
    (["--pets-dir", "/no/such/pets"], "Oxford-IIIT Pet directory /no/such/pets does not exist"),
    (["--learning-curve", "50,x"], "photo counts > 0 or 'all'"),
    (["--learning-curve", "0"], "photo counts > 0 or 'all'"),
    (["--learning-curve", "50", "--recipes", "torch"], "not the peer 'torch'"),
])
def test_bad_input_is_one_error_line_and_no_report(tmp_path, capsys, argv, message):
    out = str(tmp_path / "q.json")
    code = cli.run_main(quality.main, ["--out", out, "--coco-dir", "", "--scenes-dir", "",
                                       *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not os.path.exists(out) and not os.path.exists(str(tmp_path / "q.md"))


def test_a_work_dir_with_files_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    code = cli.run_main(quality.main, ["--out", str(tmp_path / "q.json"), "--coco-dir", "",
                                       "--scenes-dir", "", "--work-dir", str(work)])
    assert code == 1 and "is not empty" in capsys.readouterr().err
    assert (work / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------ the quick run


def test_quick_run_reports_every_recipe_kind_on_every_set(tmp_path):
    pets = make_pets(str(tmp_path / "pets"))
    scenes = make_scenes(str(tmp_path / "scenes"))
    coco = str(tmp_path / "coco")
    drawn.generate(coco, seed=0, num_train=1, num_val=1)
    out, png, work = (str(tmp_path / n) for n in ("q.json", "q.png", "work"))
    code = cli.run_main(quality.main, [
        "--quick", "--pets-dir", pets, "--scenes-dir", scenes, "--coco-dir", coco, "--out", out,
        "--plot", png, "--work-dir", work, "--recipes", "base,dogs-as-class,keras-scaled,torch"])
    assert code == 0
    with open(out) as f:
        report = json.load(f)
    assert report["quick"] and report["minutes"] == 0.1 and report["threshold"] == 0.5
    sets = report["data"]["sets"]
    assert sets["scenes-train"] == {"images": 4, "positive_images": 4, "negative_images": 0}
    assert sets["pets-train"] == {"images": 12, "positive_images": 8, "negative_images": 4}
    assert [sets[k]["images"] for k in ("scenes-tune", "scenes-test", "pets-tune",
                                        "pets-test")] == [4, 3, 6, 3]
    assert sets["coco"]["images"] >= 1
    assert [r["recipe"] for r in report["recipes"]] == ["base", "dogs-as-class", "keras-scaled",
                                                       "torch"]
    by_name = {r["recipe"]: r for r in report["recipes"]}
    assert report["recommended"] == max(  # ours with the best tune IoU, never the peer
        ("base", "dogs-as-class"),
        key=lambda n: by_name[n]["scores"]["tune"]["model"]["foreground_iou"])
    ran = ["base", "dogs-as-class", "keras-scaled"]
    if by_name["torch"]["skipped"]:
        assert by_name["torch"]["skipped"] == quality.TORCH_HINT
    else:
        ran.append("torch")
    for name in ran:
        r = by_name[name]
        assert r["error"] is None, r["error"]
        assert r["steps"] >= 1  # how many more depends on the machine's load
        assert set(r["scores"]) == {"tune", "scenes-tune", "pets-tune", "scenes-test",
                                    "pets-test", "coco"}
        assert r["scores"]["tune"]["images"] == 10 and r["scores"]["pets-test"]["images"] == 3
        assert r["scores"]["tune"]["counts"] == [
            a + b for a, b in zip(r["scores"]["scenes-tune"]["counts"],
                                  r["scores"]["pets-tune"]["counts"])]
        for scores in r["scores"].values():
            for key in ("foreground_iou", "dice", "pixel_accuracy"):
                assert 0.0 <= scores["model"][key] <= 1.0
            assert scores["all_background"]["foreground_iou"] == 0.0
        assert r["curve"] and all(s >= 0 and 0.0 <= iou <= 1.0 for s, iou in r["curve"])
        assert os.path.exists(r["log"])
    # Dogs as a class: a cat/dog run (classes from the records), scored on the same photos
    dogs = by_name["dogs-as-class"]
    with open(os.path.join(work, "runs", "dogs-as-class", "config.json")) as f:
        assert json.load(f)["classes"] == ["cat", "dog"]
    assert {k: v["images"] for k, v in dogs["scores"].items()} == {
        k: v["images"] for k, v in by_name["base"]["scores"].items()}
    for name in ("scenes-test", "pets-test", "coco"):  # the same truth pixels of cat
        assert sum(dogs["scores"][name]["counts"][::2]) == sum(
            by_name["base"]["scores"][name]["counts"][::2])
    # Ours scored its last checkpoint: the one evaluate.py names is the run's newest.
    base_eval = os.path.join(work, "runs", "base", "quality-scenes-test.json")
    with open(base_eval) as f:
        assert f"model.ckpt-{by_name['base']['steps']}" in json.load(f)["checkpoint"]
    with open(os.path.splitext(out)[0] + ".md") as f:
        table = f.read()
    for name in ran:
        rows = [ln for ln in table.splitlines() if re.match(rf"\| {name} \|", ln)]
        assert len(rows) == 1 and "failed" not in rows[0]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
