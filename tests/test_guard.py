"""datasets/guard.py: every record checked before training, bad ones named or skipped."""

import json
import os

import pytest
from test_reliability import offsets, write_records

from core import rundir
from datasets import guard, pipeline
from utils.cli import UserError


def test_corrupt_length_header_resyncs_to_the_next_record(tmp_path):
    path = tmp_path / "h-00000-of-00001.tfrecord"
    write_records(path, 5)
    starts = offsets(path)
    raw = bytearray(path.read_bytes())
    raw[starts[2] + 1] ^= 0x10  # the length of record #2: its header CRC fails
    path.write_bytes(bytes(raw))
    walked = list(guard.iterate_shard(str(path), skip_corrupt=True))
    kinds = [(i, off, isinstance(rec, guard.BadRecord)) for i, off, rec in walked]
    assert kinds == [(0, starts[0], False), (1, starts[1], False), (2, starts[2], True),
                     (3, starts[3], False), (4, starts[4], False)]


def test_scan_counts_the_records_of_each_shard_in_one_pass(tmp_path):
    for k, n in enumerate((3, 5)):
        write_records(tmp_path / f"s-0000{k}-of-00002.tfrecord", n)
    files, counts = guard.scan_records(str(tmp_path / "s-*"))
    assert [os.path.basename(f) for f in files] == ["s-00000-of-00002.tfrecord",
                                                   "s-00001-of-00002.tfrecord"]
    assert counts == [3, 5]


def test_without_tensorflows_offset_reader_skip_corrupt_fails_loudly(tmp_path, monkeypatch):
    path = tmp_path / "m-00000-of-00001.tfrecord"
    write_records(path, 4)
    monkeypatch.setattr(guard, "RandomRecordReader", None)  # a TensorFlow that moved it
    with pytest.raises(UserError, match=r"--skip-corrupt-records needs TensorFlow's "
                                        r"RandomRecordReader .* lacks"):
        guard.scan_records(str(path), rundir.corrupt_records(str(tmp_path / "run")))
    assert guard.scan_records(str(path)) == ([str(path)], [4])  # counting still works
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) - 30])  # a truncated shard is still one clear error
    with pytest.raises(UserError, match=r"cannot read records .*m-00000-of-00001"):
        guard.scan_records(str(path))


def test_scan_sets_checks_every_set_and_makes_the_weights_concrete(tmp_path):
    for name, n in (("a", 3), ("b", 5), ("v", 2)):
        write_records(tmp_path / f"{name}-00000-of-00001.tfrecord", n)
    a, b, v = (str(tmp_path / f"{name}-*") for name in "abv")
    one = guard.scan_sets(a, v)
    assert one == guard.Scanned([str(tmp_path / "a-00000-of-00001.tfrecord")], [3],
                                [[str(tmp_path / "v-00000-of-00001.tfrecord")]], ())
    mixed = guard.scan_sets((a, b), "")
    assert [s.weight for s in mixed.train_files] == [3.0, 5.0]  # default: the record counts
    assert mixed.counts == [[3], [5]] and mixed.val_files == [] and mixed.weights == (3.0, 5.0)
    assert guard.scan_sets((a, b), "", (1.0, 2.0)).weights == (1.0, 2.0)
    assert all(isinstance(s, pipeline.RecordSet) for s in mixed.train_files)


def test_skipped_records_go_where_the_run_dir_says(tmp_path):
    path = tmp_path / "c-00000-of-00001.tfrecord"
    write_records(path, 4)
    write_records(tmp_path / "d-00000-of-00001.tfrecord", 2)
    starts = offsets(path)
    raw = bytearray(path.read_bytes())
    raw[starts[1] + 40] ^= 0xFF  # record #1's data no longer matches its CRC
    path.write_bytes(bytes(raw))
    c, d, run = str(tmp_path / "c-*"), str(tmp_path / "d-*"), str(tmp_path / "run")
    with pytest.raises(UserError, match=r"c-00000-of-00001\.tfrecord: record #1 at byte"):
        guard.scan_sets((c, d), "")  # without skip_to the first bad record stops the run
    scanned = guard.scan_sets((c, d), "", skip_to=rundir.corrupt_records(run))
    # Each set's clean copies in a folder named for it, the report beside them.
    clean = os.path.join(run, rundir.CLEAN_DIR, "train-c", path.name)
    good = str(tmp_path / "d-00000-of-00001.tfrecord")  # an intact shard is read in place
    assert [s.files for s in scanned.train_files] == [(clean,), (good,)]
    assert scanned.counts == [[3], [2]] and scanned.weights == (3.0, 2.0)
    assert sorted(os.listdir(run)) == [rundir.CLEAN_DIR, rundir.CORRUPT_REPORT]
    report = json.loads(open(os.path.join(run, rundir.CORRUPT_REPORT)).read())
    assert list(report) == ["train-c"] and report["train-c"]["skipped"] == 1
    assert report["train-c"]["good"] == 3 and report["train-c"]["bad"][0]["offset"] == starts[1]
