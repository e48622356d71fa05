import json
import os
import signal

import cv2
import numpy as np
import pytest
import tensorflow as tf

from datasets import records, shards
from utils import cli


def encode(task):
    """A stand-in converter's worker: a 4x6 record, or a bad image for names "bad*"; names
    "two*" also hold class 2 in their last column but one."""
    index, name = task
    if name.startswith("bad"):
        return index, None, None, ("corrupt", f"image {name} is corrupt")
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :index + 1] = records.FOREGROUND
    if name.startswith("two"):
        mask[:, 4] = 2
    mask[0, 5] = records.IGNORE
    image = cv2.imencode(".png", np.full((4, 6, 3), index, np.uint8))[1].tobytes()
    counts = {"instances": 1, **shards.mask_counts(mask, 2 if name.startswith("two") else 1)}
    return (index, (image, "png", 4, 6, 100 + index, name, cv2.imencode(".png", mask)[1]
                    .tobytes()), counts, None)


def job(output, names, num_shards=2, positives=(0, 1), classes=("thing",)):
    settings = {"split": "s", "classes": list(classes), "category_ids": [7], "crowd": "ignore",
                "negatives": 0.5, "seed": 3}
    plan = {**settings, "num_shards": num_shards, "images": len(names)}
    return shards.Job(str(output), "s", plan, settings, list(enumerate(names)),
                      frozenset(positives), encode, "test_shards", num_classes=len(classes))


def test_write_any_converters_records_and_stats(tmp_path):
    stats = shards.write(job(tmp_path / "t", ["a", "b", "c"]), workers=1, progress=False)
    files = sorted(tf.io.gfile.glob(shards.shard_pattern(str(tmp_path / "t"), "s")))
    assert [os.path.basename(f) for f in files] == stats["shards"] == [
        "t-s-00000-of-00002.tfrecord", "t-s-00001-of-00002.tfrecord"]
    ids = [int(records.parse_example(r)[records.IMAGE_ID]) for r in tf.data.TFRecordDataset(files)]
    assert ids == [100, 101, 102] and stats["records_per_shard"] == [1, 2]
    assert (stats["positive_images"], stats["negative_images"], stats["instances"]) == (2, 1, 3)
    assert stats["foreground_pixels"] == 4 + 8 + 12 and stats["pixels"] == 72
    assert stats["foreground_fraction"] == 24 / 72 and stats["ignore_fraction"] == 3 / 72
    assert (stats["classes"], stats["category_ids"], stats["negatives"], stats["seed"]) == (
        ["thing"], [7], 0.5, 3)
    assert stats["class_pixels"] == [72 - 3 - 24, 24]  # valid pixels of values 0 and 1
    assert json.loads((tmp_path / "t-s-stats.json").read_text()) == stats
    assert not os.path.exists(shards.progress_path(str(tmp_path / "t"), "s"))


def test_class_pixels_of_two_classes_add_up_over_images_and_shards(tmp_path):
    stats = shards.write(job(tmp_path / "t", ["two-a", "two-b", "two-c"], num_shards=2,
                             classes=("cat", "dog")), workers=1, progress=False)
    # column 4 is class 2 in all three; columns 0..index are class 1 (index 2: 0..2)
    assert stats["class_pixels"] == [3 * 24 - 3 - 4 * 3 - (4 + 8 + 12), 4 + 8 + 12, 4 * 3]
    assert stats["foreground_pixels"] == 4 + 8 + 12 + 12 and stats["ignore_pixels"] == 3


def test_mask_counts_count_each_value():
    mask = np.array([[0, 1, 2, 255], [2, 2, 0, 3]], np.uint8)  # 3 is beyond K = 2
    assert shards.mask_counts(mask, 2) == {"foreground_pixels": 4, "ignore_pixels": 1,
                                           "class_pixels": [2, 1, 3], "pixels": 8}
    assert shards.mask_counts(mask, 1)["class_pixels"] == [2, 1]


@pytest.mark.parametrize("names,valid,kw,error,words", [
    (("cat", "dog", "cat"), ("cat", "dog"), {}, cli.UsageError,
     "class 'cat' is named twice in --classes: name each class once (its place in the list "
     "is its mask value 1, 2, ...)"),
    (("cat", "unicorn"), ("cat", "dog"), {"source": "x/data.yaml"}, cli.UserError,
     "unknown class 'unicorn' in --classes: valid names are cat, dog (x/data.yaml)"),
    (("fish",), ("cat", "dog", "both"), {"flag": "--species", "usage": True}, cli.UsageError,
     "unknown class 'fish' in --species: valid names are cat, dog, both"),
    (tuple(map(str, range(255))), tuple(map(str, range(255))), {}, cli.UsageError,
     "--classes names 255 classes: a mask holds at most 254 (255 is ignore)"),
])
def test_chosen_classes_refuse_a_name_twice_or_unknown(names, valid, kw, error, words):
    with pytest.raises(error) as e:
        shards.chosen_classes(names, valid, **kw)
    assert type(e.value) is error and str(e.value) == words
    assert shards.chosen_classes(["dog", "cat"], ("cat", "dog")) == ("dog", "cat")


def test_bad_images_stop_or_are_counted(tmp_path, capsys):
    with pytest.raises(cli.UserError, match="image bad1 is corrupt, or pass --skip-bad-images"):
        shards.write(job(tmp_path / "t", ["a", "bad1"]), workers=1, progress=False)
    stats = shards.write(job(tmp_path / "u", ["a", "bad1", "c"]), workers=1, progress=False,
                         skip_bad_images=True)
    assert stats["skipped"] == {"corrupt": 1} and stats["images"] == 2
    assert "warning: skipped image bad1 is corrupt" in capsys.readouterr().err


def test_draw_negatives_is_seeded_and_capped():
    others = list(range(10, 30))
    assert shards.draw_negatives(others, 4, 0.5, 0) == shards.draw_negatives(others, 4, 0.5, 0)
    assert len(shards.draw_negatives(others, 4, 0.5, 0)) == 2
    assert shards.draw_negatives(others, 4, 100.0, 1) == others  # capped, sorted
    assert shards.draw_negatives(others, 4, 0.0, 1) == [] == shards.draw_negatives([], 4, 1, 1)
    draws = {tuple(shards.draw_negatives(others, 4, 1.0, s)) for s in range(5)}
    assert len(draws) > 1  # the seed matters


def test_default_num_shards_from_file_sizes(tmp_path):
    small = tmp_path / "a.jpg"
    small.write_bytes(b"x" * 1000)
    assert shards.default_num_shards([str(small), str(tmp_path / "missing.jpg")]) == 1
    assert shards.default_num_shards([]) == 1
    with open(tmp_path / "b.jpg", "wb") as f:
        f.truncate(shards.TARGET_SHARD_BYTES)  # sparse: no disk used
    # 3 files of one target each, plus the masks' 10 %: 3.3 shards' worth
    assert shards.default_num_shards([str(tmp_path / "b.jpg")] * 3) == 4


def test_summary_names_the_converters_regions_and_flag():
    stats = {"images": 5, "positive_images": 4, "negative_images": 1, "instances": 4,
             "crowd_regions": 3, "crowd": "positive", "classes": ["cat", "dog"],
             "skipped": {"missing_trimap": 2}, "bytes_written": 3 * 2**20, "num_shards": 1,
             "split": "test", "foreground_fraction": 0.25, "ignore_fraction": 0.125}
    lines = shards.summary(stats, "data/p", "border regions", "--border").splitlines()
    assert lines == [
        "wrote 5 images (4 with cat/dog, 1 negatives), 4 instances, 3 border regions "
        "(--border positive)",
        "skipped 2 images (2 missing_trimap)",
        "3.0 MB in 1 shards: data/p-test-*.tfrecord",
        "foreground 25.00% of pixels, ignore 12.50%; stats in data/p-test-stats.json"]
    stats["class_pixels"] = [70, 20, 10]  # K = 2: each class's value and share
    assert shards.summary(stats, "data/p").splitlines()[-1] == (
        "foreground 25.00% of pixels, ignore 12.50%; of valid pixels 1 cat 20.00%, 2 dog "
        "10.00%; stats in data/p-test-stats.json")


def test_ctrl_c_while_the_pool_starts_takes_effect_once_it_is_up():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with shards._ctrl_c_held():
            signal.raise_signal(signal.SIGINT)
            done.append("the pool started")
    assert done == ["the pool started"]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_the_pools_processes_start_with_ctrl_c_blocked(tmp_path):
    def descendants(pid):
        kids = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        return kids + [d for k in kids for d in descendants(k)]

    def sigint_blocked(pid):
        status = open(f"/proc/{pid}/status").read()
        blocked = int(status.split("SigBlk:")[1].split()[0], 16)
        return bool(blocked & (1 << (signal.SIGINT - 1)))

    with shards._mapper(encode, "test_shards", 2) as imap:
        assert list(imap([])) == []
        pool = [pid for pid in descendants(os.getpid())
                if b"forkserver" in open(f"/proc/{pid}/cmdline", "rb").read()]
        assert len(pool) >= 3  # the fork server and 2 workers
        # So none can take a Ctrl-C as a KeyboardInterrupt and print its traceback
        # while it starts (the fork server imports TensorFlow for seconds).
        assert all(sigint_blocked(pid) for pid in pool)


def test_class_balance_reads_the_stats_the_writer_wrote(tmp_path):
    shards.write(job(tmp_path / "t", ["a", "b", "c"]), workers=1, progress=False)
    balance = shards.class_balance(str(tmp_path / "t-s-*"))  # found beside the shards
    assert balance.path == str(tmp_path / "t-s-stats.json")
    assert balance.foreground_fraction == 24 / 72 and balance.pos_weight == pytest.approx(2.0)
    assert balance.classes == ("thing",)
    with pytest.raises(cli.UsageError, match="pass --stats"):
        shards.class_balance("data/shard0.tfrecord")
    (tmp_path / "bad.json").write_text('{"foreground_fraction": 0}')
    with pytest.raises(cli.UserError, match="gives no class balance"):
        shards.class_balance("ignored-*", str(tmp_path / "bad.json"))
    (tmp_path / "torn.json").write_text('{"foreground_')
    with pytest.raises(cli.UserError, match="torn.json is unreadable"):
        shards.class_balance("ignored-*", str(tmp_path / "torn.json"))


def test_class_balance_combines_several_sets_over_their_pixels(tmp_path):
    """Two sets: 10% foreground of 1000 pixels and 40% of 3000 -> 1300 / 4000 = 32.5%."""
    for name, fg, pixels in (("a", 100, 1000), ("b", 1200, 3000)):
        (tmp_path / f"{name}-train-stats.json").write_text(json.dumps(
            {"foreground_fraction": fg / pixels, "pixels": pixels, "classes": [name]}))
    balance = shards.class_balance((str(tmp_path / "a-train-*"), str(tmp_path / "b-train-*")))
    assert balance.foreground_fraction == pytest.approx(0.325)
    assert balance.pos_weight == pytest.approx(0.675 / 0.325)
    assert balance.classes == ("a", "b") and balance.pixels == 4000
    assert balance.path == f"{tmp_path}/a-train-stats.json,{tmp_path}/b-train-stats.json"


def _stats(path, classes, class_pixels=None):
    stats = {"classes": classes, "foreground_fraction": 0.1, "pixels": 100}
    if class_pixels is not None:
        stats["class_pixels"] = class_pixels
    path.write_text(json.dumps(stats))


def test_record_classes_read_the_stats_beside_each_set(tmp_path, caplog):
    _stats(tmp_path / "a-train-stats.json", ["cat", "dog"], [50, 30, 20])
    _stats(tmp_path / "a-val-stats.json", ["cat", "dog"], [5, 3, 2])
    got = shards.record_classes([("--train-records", str(tmp_path / "a-train-*")),
                                 ("--val-records", str(tmp_path / "a-val-*")),
                                 ("--val-records", str(tmp_path / "other.tfrecord"))])
    assert (got.names, got.num_classes, got.class_pixels) == (("cat", "dog"), 2, (50, 30, 20))
    assert got.describe() == "2 classes (cat, dog)"
    assert "no stats file beside --val-records '" in caplog.text
    assert shards.record_classes([("--records", str(tmp_path / "nothing-*"))]) is None


def test_one_class_sets_of_other_names_mix_and_old_stats_mean_one_class(tmp_path):
    _stats(tmp_path / "a-train-stats.json", ["cat"], [90, 10])
    _stats(tmp_path / "b-train-stats.json", ["cat", "dog"])  # before class_pixels: merged
    _stats(tmp_path / "c-train-stats.json", ["foreground"], [80, 20])
    got = shards.record_classes([("--train-records", str(tmp_path / f"{n}-train-*"))
                                 for n in "abc"])
    assert (got.names, got.num_classes) == (("cat", "dog", "foreground"), 1)
    assert got.describe() == "1 class (cat/dog/foreground)"


@pytest.mark.parametrize("second,message", [
    ((["dog", "cat"], [5, 3, 2]), "2 classes (dog, cat)"),
    ((["cat", "dog"], None), "1 class (cat/dog)"),
    ((["cat", "dog", "person"], [5, 3, 2, 1]), "3 classes (cat, dog, person)"),
])
def test_sets_of_different_class_lists_are_one_error_naming_both(tmp_path, second, message):
    _stats(tmp_path / "a-train-stats.json", ["cat", "dog"], [50, 30, 20])
    _stats(tmp_path / "b-val-stats.json", *second)
    with pytest.raises(cli.UserError) as e:
        shards.record_classes([("--train-records", str(tmp_path / "a-train-*")),
                               ("--val-records", str(tmp_path / "b-val-*"))])
    assert str(e.value) == (
        f"class lists differ: --train-records '{tmp_path}/a-train-*' "
        f"({tmp_path}/a-train-stats.json) holds 2 classes (cat, dog), --val-records "
        f"'{tmp_path}/b-val-*' ({tmp_path}/b-val-stats.json) holds {message}: re-convert "
        "one with the same --classes (or --species), in the same order")


def test_records_of_other_classes_than_the_run_are_one_error(tmp_path):
    _stats(tmp_path / "a-val-stats.json", ["cat", "dog"], [50, 30, 20])
    run = shards.RecordClasses(("cat",), 1, "the run logs/r")
    with pytest.raises(cli.UserError) as e:
        shards.record_classes([("--records", str(tmp_path / "a-val-*"))], run)
    assert str(e.value) == (
        f"class lists differ: --records '{tmp_path}/a-val-*' ({tmp_path}/a-val-stats.json) "
        "holds 2 classes (cat, dog), the run logs/r was trained on 1 class (cat): convert "
        "the records with the run's classes, in its order")
    same = shards.RecordClasses(("cat", "dog"), 2, "the run logs/r")
    assert shards.record_classes([("--records", str(tmp_path / "a-val-*"))], same).names == (
        "cat", "dog")


@pytest.mark.parametrize("stats,words", [
    ('{"classes": "cat"}', "'classes' cat is not a list of names"),
    ('{"classes": ["cat"], "class_pixels": [5]}', "is not a list of 2 or more pixel counts"),
    ('{"classes": ["cat"], "class_pixels": [5, -1]}', "is not a list of 2 or more pixel"),
    ('{"classes": ["cat"], "class_pixels": [5, 1, 2]}',
     "'class_pixels' counts 2 classes but 'classes' names 1"),
    ('[1, 2]', "holds no JSON object"),
    ('{"classes": [', "is unreadable"),
])
def test_a_bad_stats_file_is_one_error(tmp_path, stats, words):
    (tmp_path / "a-train-stats.json").write_text(stats)
    with pytest.raises(cli.UserError, match="re-run convert_coco.py") as e:
        shards.record_classes([("--train-records", str(tmp_path / "a-train-*"))])
    assert words in str(e.value) and "a-train-stats.json" in str(e.value)


@pytest.mark.parametrize("pixels,weights", [
    ((600, 300, 150), (0.5, 1.0, 2.0)),  # median 300
    ((500, 300, 150, 50), (0.45, 0.75, 1.5, 4.5)),  # median of 4: (300 + 150) / 2
    ((600, 300, 0), (0.75, 1.5, 1.0)),  # an absent class: median of the others, weight 1
])
def test_median_frequency_weights_exact(pixels, weights):
    assert shards.ClassPixels("s", pixels).median_frequency_weights() == weights


def test_class_pixels_add_the_training_sets_up(tmp_path):
    _stats(tmp_path / "a-train-stats.json", ["cat", "dog"], [300, 200, 100])
    _stats(tmp_path / "b-train-stats.json", ["cat", "dog"], [300, 100, 50])
    got = shards.class_pixels((str(tmp_path / "a-train-*"), str(tmp_path / "b-train-*")), 2)
    assert got.pixels == (600, 300, 150)
    assert got.path == f"{tmp_path}/a-train-stats.json,{tmp_path}/b-train-stats.json"
    one = shards.class_pixels("ignored-*", 2, str(tmp_path / "a-train-stats.json"))
    assert one.pixels == (300, 200, 100)
    with pytest.raises(cli.UserError, match="has no class_pixels for 3 classes"):
        shards.class_pixels(str(tmp_path / "a-train-*"), 3)
    with pytest.raises(cli.UserError, match="nope-train-stats.json is missing"):
        shards.class_pixels(str(tmp_path / "nope-train-*"), 2)
