"""utils/errors.py: the one useful line of an error, and writes that are whole or absent."""

import json
import os

import pytest
import tensorflow as tf

from utils import errors


def op_error(message):
    return tf.errors.InvalidArgumentError(None, None, message)


@pytest.mark.parametrize("error,line", [
    (op_error("Graph execution error:\n\nDetected at node 'x'\n  File \"a.py\"\nreal problem here"
              "\n\t [[{{node decode}}]]"), "real problem here"),
    (op_error("assertion failed: [image has no pixels] [Condition x > 0 did not hold]"),
     "image has no pixels"),
    (op_error("Error in user-defined function passed to Map: Iterator::Root::Map: bad mask"),
     "bad mask"),
    (tf.errors.DataLossError(None, None, "truncated record at 120' failed with Data loss"),
     "truncated record: the shard ends inside it"),
    (tf.errors.DataLossError(None, None, "corrupted record at 12"),
     "corrupted record: its checksum does not match"),
    (ValueError("first line\nsecond line"), "first line"),
    (ValueError(""), "ValueError"),
    (op_error("Graph execution error:\n"), "InvalidArgumentError"),
])
def test_summary_is_the_line_that_says_what_went_wrong(error, line):
    assert errors.summary(error) == line


def test_summary_is_at_most_300_characters():
    assert errors.summary(ValueError("x" * 1000)) == "x" * 300


def test_temp_path_is_hidden_beside_the_target_and_per_process(tmp_path):
    tmp = errors.temp_path(str(tmp_path / "a.json"))
    assert tmp == str(tmp_path / f".a.json.{os.getpid()}.tmp")


@pytest.mark.parametrize("content,expected", [("text é", "text é".encode()),
                                              (b"\x00\x01", b"\x00\x01"),
                                              (lambda f: f.write(b"called"), b"called")])
def test_write_atomic_writes_str_bytes_or_a_writer(tmp_path, content, expected):
    path = tmp_path / "out"
    path.write_bytes(b"old")
    assert errors.write_atomic(str(path), content) == str(path)
    assert path.read_bytes() == expected and os.listdir(tmp_path) == ["out"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        errors.write_atomic(str(path), fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


def test_write_json_is_indented_with_a_final_newline(tmp_path):
    path = tmp_path / "a.json"
    errors.write_json(str(path), {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    errors.write_json(str(path), {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(path.read_text())) == ["b", "a"]


def test_atomic_dir_replaces_the_old_directory_only_when_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with errors.atomic_dir(str(out)) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "new.txt"), "w").close()
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["old.txt"]
    with errors.atomic_dir(str(out)) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "new.txt"), "w").close()
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["new.txt"]
