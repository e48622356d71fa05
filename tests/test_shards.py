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
    """A stand-in converter's worker: a 4x6 record, or a bad image for names "bad*"."""
    index, name = task
    if name.startswith("bad"):
        return index, None, None, ("corrupt", f"image {name} is corrupt")
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :index + 1] = records.FOREGROUND
    mask[0, 5] = records.IGNORE
    image = cv2.imencode(".png", np.full((4, 6, 3), index, np.uint8))[1].tobytes()
    counts = {"instances": 1, "foreground_pixels": int((mask == 1).sum()),
              "ignore_pixels": 1, "pixels": 24}
    return (index, (image, "png", 4, 6, 100 + index, name, cv2.imencode(".png", mask)[1]
                    .tobytes()), counts, None)


def job(output, names, num_shards=2, positives=(0, 1)):
    settings = {"split": "s", "classes": ["thing"], "category_ids": [7], "crowd": "ignore",
                "negatives": 0.5, "seed": 3}
    plan = {**settings, "num_shards": num_shards, "images": len(names)}
    return shards.Job(str(output), "s", plan, settings, list(enumerate(names)),
                      frozenset(positives), encode, "test_shards")


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
    assert json.loads((tmp_path / "t-s-stats.json").read_text()) == stats
    assert not os.path.exists(shards.progress_path(str(tmp_path / "t"), "s"))


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
