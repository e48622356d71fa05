import json
import os

from test_evaluate import make_images, write_records
from test_predict import make_run

import evaluate
from benchmarks import score_sets
from core import rundir
from utils import cli


def test_every_set_is_scored_as_evaluate_scores_it_and_no_threshold_is_adopted(tmp_path,
                                                                               capsys):
    run = tmp_path / "run"
    make_run(run)
    items = make_images()
    write_records(tmp_path / "a-00000-of-00001.tfrecord", items[:2])
    write_records(tmp_path / "b-00000-of-00001.tfrecord", items[2:])
    sets = [("first", str(tmp_path / "a-*")), ("second", str(tmp_path / "b-*"))]
    code = cli.run_main(score_sets.main, ["--run", str(run), "--checkpoint", str(run),
                                          "--threshold", "0.4",
                                          *(f"--set={n}={p}" for n, p in sets)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["scored", "first"], ["scored", "second"]]
    for (_, pattern), line in zip(sets, lines):
        with open(line.split(" ", 2)[2]) as f:
            got = json.load(f)
        assert got["records"] == pattern and got["threshold"] == 0.4
        alone = evaluate.evaluate(str(run), pattern, checkpoint=str(run), threshold=0.4,
                                  adopt=False, progress=False)
        assert got["model"] == alone.model and got["images"] == alone.images
        assert got["adopted_threshold"] is False
    assert not os.path.exists(rundir.threshold_path(str(run)))


def test_a_missing_set_fails_before_any_scoring_and_a_bad_record_after_the_good_sets(
        tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    write_records(tmp_path / "a-00000-of-00001.tfrecord", make_images()[:2])
    (tmp_path / "bad-00000-of-00001.tfrecord").write_bytes(b"not a record")
    code = cli.run_main(score_sets.main, ["--run", str(run), f"--set=a={tmp_path}/a-*",
                                          f"--set=b={tmp_path}/missing-*"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and "missing-*" in captured.err
    code = cli.run_main(score_sets.main, ["--run", str(run), f"--set=a={tmp_path}/a-*",
                                          f"--set=b={tmp_path}/bad-*"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("\n") == 1 and "bad-00000-of-00001.tfrecord" in captured.err
    (line,) = captured.out.splitlines()
    assert line.startswith("scored a ") and os.path.exists(line.split(" ", 2)[2])


def test_a_bad_set_or_run_flag_is_a_usage_error(capsys):
    for bad in ("tune", "=glob", "tune="):
        assert cli.run_main(score_sets.main, ["--run", "r", f"--set={bad}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argument --set: must be NAME=GLOB") and err.count("\n") == 1
    # the run flags are evaluate.py's, with its checks
    assert cli.run_main(score_sets.main, ["--run", "r", "--set=a=g", "--threshold", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --threshold: must be in [0, 1], got 2")
