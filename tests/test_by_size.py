import json

import numpy as np
from test_evaluate import F, X, make_images, write_records
from test_predict import make_run, reference_probabilities

from benchmarks import by_size
from core import metrics
from utils import cli


def test_bins_pool_each_size_and_share_out_the_errors():
    # (tp, fp, fn, tn): a negative, a 1% cat, a 10% cat, a 50% cat, and no valid pixel
    model = [[0, 6, 0, 94], [0, 0, 1, 99], [5, 2, 5, 88], [40, 2, 10, 48], [0, 0, 0, 0]]
    ceiling = [[0, 0, 0, 100], [0, 0, 1, 99], [9, 0, 1, 90], [50, 0, 0, 50], [0, 0, 0, 0]]
    bins = by_size.bins_of(model, ceiling, edges=(0.0, 0.02, 0.2, 1.0))
    assert [(b.low, b.high, b.photos) for b in bins] == [
        (0.0, 0.0, 1), (0.0, 0.02, 1), (0.02, 0.2, 1), (0.2, 1.0, 1)]
    assert [b.iou for b in bins] == [None, 0.0, 5 / 12, 40 / 52]
    assert [b.ceiling_iou for b in bins] == [None, 0.0, 0.9, 1.0]
    assert [b.missed_share for b in bins] == [0.0, 1 / 16, 5 / 16, 10 / 16]
    assert [b.false_share for b in bins] == [0.6, 0.0, 0.2, 0.2]


def test_the_ceiling_loses_what_the_scale_cannot_hold(tmp_path):
    image = np.zeros([40, 40, 3], np.uint8)
    mask = np.zeros([40, 40], np.uint8)
    mask[10:30, 10:30] = F  # a square of 20 px: survives 10 px whole
    mask[35, :] = F  # a 1 px line: a tenth of a pixel at 4 px, cut away
    mask[0, :] = X  # ignored pixels count for nothing
    write_records(tmp_path / "r-00000-of-00001.tfrecord", [(image, mask, "a.png")])
    files = [str(tmp_path / "r-00000-of-00001.tfrecord")]
    full = by_size.ceiling_counts(files, 0)
    assert full.tolist() == [[440, 0, 0, 1120]]
    (tp, fp, fn, tn), = by_size.ceiling_counts(files, 4)
    assert fn >= 40 and tp + fn == 440 and tp + fp + fn + tn == 1560


def test_the_command_prints_and_writes_the_model_bins(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    items = make_images()
    write_records(tmp_path / "v-00000-of-00001.tfrecord", items)
    out = tmp_path / "by_size.json"
    code = cli.run_main(by_size.main, ["--run", str(run), "--checkpoint", str(run),
                                       "--records", str(tmp_path / "v-*"),
                                       "--output", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert table.startswith("cat share of photo") and "no cat" in table
    got = json.loads(out.read_text())["bins"]
    # image 2 is the negative, image 4 has no valid pixel, 0, 1 and 3 are cats of 35-37%
    assert [(b["high"], b["photos"]) for b in got] == [(0.0, 1), (0.4, 3)]
    counts = sum(metrics.confusion(reference_probabilities(run, image), mask, [0.5])[0]
                 for image, mask, _ in (items[0], items[1], items[3]))
    tp, fp, fn, _ = counts
    assert np.isclose(got[1]["iou"], tp / (tp + fp + fn))
    assert got[1]["ceiling_iou"] == 1.0  # the run's photos are scored as stored
    assert np.isclose(sum(b["missed_share"] for b in got), 1.0)


def test_a_run_of_several_classes_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run, classes=("cat", "dog"))
    code = cli.run_main(by_size.main, ["--run", str(run), "--records", str(tmp_path / "v-*")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "several classes" in err


def test_records_without_an_image_are_one_line_naming_the_glob(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    write_records(tmp_path / "v-00000-of-00001.tfrecord", [])
    code = cli.run_main(by_size.main, ["--run", str(run), "--checkpoint", str(run),
                                       "--records", str(tmp_path / "v-*")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "v-*" in err and "hold no images" in err
