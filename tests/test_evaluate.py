import dataclasses
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf
from test_predict import make_run, reference_probabilities, scaled_reference_probabilities

import evaluate
from core import config, metrics, rundir
from datasets import records
from utils import cli

F, B, X = records.FOREGROUND, records.BACKGROUND, records.IGNORE


# ------------------------------------------------------------ evaluate()


def encode_png(array):
    data = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", data)[1].tobytes()


def make_images(seed=0):
    """(image, mask, filename): blobs with ignore borders, a negative and an all-ignore image."""
    rng = np.random.default_rng(seed)
    items = []
    for i, (h, w) in enumerate([(30, 41), (17, 23), (25, 25), (12, 40), (20, 9)]):
        image = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
        mask = np.zeros([h, w], np.uint8)
        if i != 2:  # image 2 has no foreground at all
            mask[h // 4: 3 * h // 4, w // 3:] = F
            mask[0, :] = X
        if i == 4:
            mask[:] = X
        items.append((image, mask, f"{i:012d}.png"))
    return items


def write_records(path, items):
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, (image, mask, name) in enumerate(items):
            h, w_ = mask.shape
            w.write(records.make_example(encode_png(image), "png", h, w_, 100 + i, name,
                                         encode_png(mask)))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A run evaluated on its own val_records (the default), which adopts the threshold."""
    tmp = tmp_path_factory.mktemp("eval")
    run = tmp / "run"
    cfg = make_run(run)
    rundir.save_config(dataclasses.replace(cfg, val_records=str(tmp / "val-*")), str(run))
    items = make_images()
    write_records(tmp / "val-00000-of-00002.tfrecord", items[:3])
    write_records(tmp / "val-00001-of-00002.tfrecord", items[3:])
    result = evaluate.evaluate(str(run), save_overlays=2, progress=False)
    return run, items, result


def test_metrics_equal_numpy_on_full_image_forward_passes(evaluated):
    run, items, result = evaluated
    counts = np.stack([metrics.confusion(reference_probabilities(run, image), mask,
                                          [0.5] + list(evaluate.SWEEP))
                       for image, mask, _ in items])
    assert result.images == 5 and result.record_files == 2
    assert result.images_without_valid_pixels == 1
    assert result.valid_pixels == sum(int((m != X).sum()) for _, m, _ in items)
    assert result.foreground_pixels == sum(int((m == F).sum()) for _, m, _ in items)
    assert result.model == pytest.approx(metrics.summarize(counts[:, 0]))
    assert result.all_background["foreground_iou"] == 0.0
    assert 0 < result.model["foreground_iou"] < 1
    ious = [metrics.summarize(counts[:, 1 + i])["foreground_iou"]
            for i in range(len(evaluate.SWEEP))]
    assert [r["threshold"] for r in result.sweep] == pytest.approx(list(evaluate.SWEEP))
    assert [r["foreground_iou"] for r in result.sweep] == pytest.approx(ious)
    assert result.best_threshold_iou == pytest.approx(max(ious))
    assert result.best_threshold in list(evaluate.SWEEP)
    per_image = metrics.rates(counts[:4, 0])["foreground_iou"]
    assert [e["iou"] for e in result.worst_images] == pytest.approx(sorted(per_image))
    assert result.worst_images[0]["image_id"] == 100 + int(np.argmin(per_image))


def test_long_side_run_is_scored_against_the_full_resolution_masks(tmp_path):
    run = tmp_path / "run"
    make_run(run, long_side=20)
    items = make_images()
    write_records(tmp_path / "val.tfrecord", items)
    result = evaluate.evaluate(str(run), str(tmp_path / "val.tfrecord"), progress=False)
    counts = np.stack([metrics.confusion(scaled_reference_probabilities(run, image, 20), mask,
                                          [0.5])[0] for image, mask, _ in items])
    assert result.long_side == 20
    assert result.valid_pixels == sum(int((m != X).sum()) for _, m, _ in items)
    assert result.model == pytest.approx(metrics.summarize(counts))
    assert 0 < result.model["foreground_iou"] < 1


def test_own_val_records_write_eval_json_and_adopt_the_threshold(evaluated):
    run, _, result = evaluated
    with open(run / rundir.EVAL_JSON) as f:
        stored = json.load(f)
    assert result.report == str(run / rundir.EVAL_JSON)
    assert stored["best_threshold"] == result.best_threshold
    assert stored["model"] == pytest.approx(result.model)
    assert stored["global_step"] == 7 and stored["long_side"] == 0
    # The file keeps today's keys in today's order: the Report's fields less its paths.
    assert list(stored) == [f.name for f in dataclasses.fields(evaluate.Report)][:-2]
    assert stored["adopted_threshold"] is True
    with open(run / rundir.THRESHOLD_JSON) as f:
        adopted = json.load(f)
    assert adopted["threshold"] == result.best_threshold
    assert adopted["foreground_iou"] == result.best_threshold_iou
    assert adopted["report"] == rundir.EVAL_JSON and adopted["checkpoint"].endswith("ckpt-7")
    assert rundir.default_threshold(str(run)) == (result.best_threshold,
                                                   str(run / rundir.THRESHOLD_JSON))


def test_other_records_never_move_the_threshold_unless_adopted(evaluated, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(evaluated[0], run)
    before = {name: (run / name).read_bytes()
              for name in (rundir.EVAL_JSON, rundir.THRESHOLD_JSON)}
    other = str(tmp_path / "cats-00000-of-00001.tfrecord")
    write_records(other, make_images(seed=1)[:3])
    result = evaluate.evaluate(str(run), other, save_overlays=1, progress=False)
    name = evaluate.report_name(other)
    assert name.startswith("eval-cats-00000-of-00001-") and len(name) == 31
    assert result.report == str(run / f"{name}.json")
    assert result.adopted_threshold is False
    assert result.adoption_reason == "not the run's val_records"
    assert json.loads((run / f"{name}.json").read_text())["records"] == other
    assert any(n.startswith("events") for n in os.listdir(run / name / "model"))
    assert len(os.listdir(run / name / "overlays")) == 2
    assert {n: (run / n).read_bytes() for n in before} == before
    assert rundir.default_threshold(str(run)) == (evaluated[2].best_threshold,
                                                   str(run / rundir.THRESHOLD_JSON))

    argv = ["--run", str(run), "--records", other, "--no-progress", "--threshold", "0.3"]
    assert cli.run_main(evaluate.main, argv + ["--adopt-threshold"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / name}.json" in out
    adopted = json.loads((run / rundir.THRESHOLD_JSON).read_text())
    assert f"adopted threshold {adopted['threshold']:.2f} (--adopt-threshold)" in out
    assert adopted["records"] == other and adopted["report"] == f"{name}.json"
    assert rundir.default_threshold(str(run))[0] == result.best_threshold
    assert (run / rundir.EVAL_JSON).read_bytes() == before[rundir.EVAL_JSON]


def test_own_records_adopt_only_with_the_default_checkpoint(evaluated, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(evaluated[0], run)
    (run / rundir.THRESHOLD_JSON).write_text(json.dumps({"threshold": 0.15}))
    for suffix in (".index", ".data-00000-of-00001"):  # an older checkpoint, same weights
        shutil.copy(run / f"model.ckpt-7{suffix}", run / f"model.ckpt-3{suffix}")
    older = ["--run", str(run), "--no-progress", "--checkpoint", str(run / "model.ckpt-3")]
    assert cli.run_main(evaluate.main, older) == 0
    out = capsys.readouterr().out
    assert "not adopted (not the run's default checkpoint)" in out
    assert "pass --adopt-threshold" in out
    assert json.loads((run / rundir.EVAL_JSON).read_text())["global_step"] == 3
    assert cli.run_main(evaluate.main, ["--run", str(run), "--no-progress",
                                        "--no-adopt-threshold"]) == 0
    assert "not adopted (--no-adopt-threshold)" in capsys.readouterr().out
    assert rundir.default_threshold(str(run))[0] == 0.15


def event_tags(log_dir):
    """{tag: (step, value)} of the single events file in log_dir."""
    events = [os.path.join(log_dir, n) for n in os.listdir(log_dir) if n.startswith("events")]
    assert len(events) == 1
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            tags[value.tag] = (event.step, value)
    return tags


def test_tensorboard_has_pr_curve_and_scalars_at_the_checkpoint_step(evaluated):
    run, _, result = evaluated
    tags = event_tags(run / "eval" / "model")
    step, pr = tags["foreground/pr_curves"]
    assert step == 7 and pr.metadata.plugin_data.plugin_name == "pr_curves"
    data = tf.make_ndarray(pr.tensor)  # [6 (tp, fp, tn, fn, precision, recall), 101]
    assert data.shape == (6, 101)
    assert data[0, 0] + data[3, 0] == result.foreground_pixels  # tp + fn at threshold 0
    assert tags["eval/foreground_iou"][1].simple_value == pytest.approx(
        result.model["foreground_iou"])
    assert tags["eval/best_threshold"][1].simple_value == pytest.approx(result.best_threshold)
    # The baseline under the same tags in its own run: one chart, two lines.
    baseline = event_tags(run / "eval" / "baseline")
    assert baseline["eval/foreground_iou"][1].simple_value == pytest.approx(
        result.all_background["foreground_iou"])
    assert baseline["eval/pixel_accuracy"][0] == 7
    assert set(baseline) == {f"eval/{k}" for k in result.all_background}
    assert set(baseline) < set(tags)


def test_overlays_of_worst_and_best_images(evaluated):
    run, items, result = evaluated
    names = sorted(os.listdir(run / "eval" / "overlays"))
    assert len(names) == 4 and [n[:8] for n in names] == ["best-01-", "best-02-",
                                                          "worst-01", "worst-02"]
    worst = result.worst_images[0]
    assert names[2] == f"worst-01-iou{worst['iou']:.3f}-{worst['filename'][:-4]}.png"
    image = items[worst["image_id"] - 100][0]
    overlay = cv2.imread(str(run / "eval" / "overlays" / names[2]))
    assert overlay.shape == image.shape


def test_table_lists_model_and_baseline(evaluated):
    table = evaluate.format_table(evaluated[2])
    assert "foreground IoU" in table and "all-background" in table
    assert f"best threshold {evaluated[2].best_threshold:.2f}" in table


def test_corrupt_and_missing_records_are_one_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    items = make_images()[:2]
    write_records(tmp_path / "good.tfrecord", items)
    data = (tmp_path / "good.tfrecord").read_bytes()
    (tmp_path / "bad.tfrecord").write_bytes(data[: len(data) - 30])  # truncated 2nd record

    def error(*argv):
        code = cli.run_main(evaluate.main, ["--run", str(run), "--no-progress", *argv])
        lines = capsys.readouterr().err.strip().splitlines()
        return code, lines[-1]

    code, line = error("--records", str(tmp_path / "bad.tfrecord"))
    assert code == 1 and "bad.tfrecord: record #1 is unreadable" in line
    code, line = error("--records", str(tmp_path / "none-*"))
    assert code == 1 and "no record files match" in line
    code, line = error("--records", str(tmp_path / "good.tfrecord"), "--threshold", "-0.1")
    assert code == 2 and "must be in [0, 1]" in line
    assert not os.path.exists(run / rundir.EVAL_JSON)
    # A mask whose size disagrees with its image.
    with tf.io.TFRecordWriter(str(tmp_path / "odd.tfrecord")) as w:
        image, mask, name = items[0]
        w.write(records.make_example(encode_png(image), "png", *mask.shape, 1, name,
                                     encode_png(mask[:-1])))
    code, line = error("--records", str(tmp_path / "odd.tfrecord"))
    assert code == 1 and "record #0 is unreadable (record mask size" in line


def test_a_record_over_the_pixel_cap_is_one_error_line(evaluated, capsys):
    run, items, _ = evaluated
    before = sorted(os.listdir(run))
    argv = ["--run", str(run), "--max-pixels", "10", "--no-progress"]
    assert cli.run_main(evaluate.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "record #0: image is over the 10-pixel cap: shrink it, or " \
        "raise the cap with --max-pixels" in err[0], err
    assert sorted(os.listdir(run)) == before


@pytest.mark.parametrize("run_classes,num_outputs,stats_classes,described", [
    (("cat",), 1, ["cat", "dog"], "1 class (cat)"),
    (("dog", "cat"), 3, ["cat", "dog"], "2 classes (dog, cat)"),
])
def test_records_of_other_classes_than_the_run_are_one_error(
        tmp_path, run_classes, num_outputs, stats_classes, described):
    """Checked from the stats before any checkpoint is read (shards.record_classes)."""
    run = tmp_path / "run"
    rundir.save_config(config.RunConfig(run_dir=str(run), classes=run_classes,
                                        num_outputs=num_outputs), str(run))
    write_records(tmp_path / "two-00000-of-00001.tfrecord", make_images()[:1])
    (tmp_path / "two-stats.json").write_text(json.dumps(
        {"classes": stats_classes, "class_pixels": [6, 3, 1]}))
    with pytest.raises(cli.UserError) as e:
        evaluate.evaluate(str(run), str(tmp_path / "two-*"), progress=False)
    assert str(e.value) == (
        f"class lists differ: --records '{tmp_path}/two-*' ({tmp_path}/two-stats.json) holds "
        f"2 classes (cat, dog), the run {run} was trained on {described}: convert the records "
        "with the run's classes, in its order")


def test_flip_test_scores_the_flip_averaged_maps_and_says_so(evaluated, tmp_path):
    run, items, _ = evaluated
    write_records(tmp_path / "other-00000-of-00001.tfrecord", items)
    result = evaluate.evaluate(str(run), str(tmp_path / "other-*"), progress=False,
                               flip_test=True)
    counts = np.stack([metrics.confusion(
        (reference_probabilities(run, image) + reference_probabilities(
            run, np.ascontiguousarray(image[:, ::-1]))[:, ::-1]) / 2, mask, [0.5])
        for image, mask, _ in items])
    assert result.model == pytest.approx(metrics.summarize(counts[:, 0]))
    with open(result.report) as f:
        assert json.load(f)["flip_test"] is True
    with open(run / rundir.EVAL_JSON) as f:
        assert json.load(f)["flip_test"] is False  # the default evaluation's
