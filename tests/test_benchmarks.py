"""Correctness of the benchmark suite (no timings are asserted: speed is for benchmarks)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import unet
from benchmarks import ceiling, cpu_ops, flops, keras_peer, run, worker
from core import device
from utils import cli

v1 = tf.compat.v1

TINY = {"base": 4, "depth": 1, "size": 44, "batch": 2, "warmup": 1}


# ------------------------------------------------------------ FLOP counter


def test_flops_of_a_tiny_net_by_hand():
    # depth 1, 4 filters, 44x44 RGB: 44 -> 42 -> 40, pool 20 -> 18 -> 16, up 32 -> 30 -> 28.
    assert flops.layer_flops(44, depth=1, base_filters=4) == [
        ("contract1/conv1", 2 * 42 * 42 * 9 * 3 * 4),
        ("contract1/conv2", 2 * 40 * 40 * 9 * 4 * 4),
        ("bottom/conv1", 2 * 18 * 18 * 9 * 4 * 8),
        ("bottom/conv2", 2 * 16 * 16 * 9 * 8 * 8),
        ("expand1/up_conv", 2 * 32 * 32 * 8 * 4),
        ("expand1/conv1", 2 * 30 * 30 * 9 * 8 * 4),
        ("expand1/conv2", 2 * 28 * 28 * 9 * 4 * 4),
        ("output", 2 * 28 * 28 * 4 * 1),
    ]
    assert flops.forward_flops(44, 1, 4) == 2_139_360
    assert flops.train_step_flops(44, 1, 4, batch=2) == 3 * 2 * 2_139_360


@pytest.mark.parametrize("size,depth,base,outputs", [(44, 1, 4, 1), (92, 2, 8, 3)])
def test_flops_match_tensorflows_own_count_of_the_graph(size, depth, base, outputs):
    g = tf.Graph()
    with g.as_default():
        # TensorFlow counts no flops for conv2d_transpose; the matmul up-conv it does count.
        with cpu_ops.building(cpu_ops.TRICKS):
            unet.unet(v1.placeholder(tf.float32, [1, size, size, 3]), False, depth, base,
                      outputs)
        opts = v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        profile = v1.profiler.profile(g, options=opts)
    convs = {c.name: c.total_float_ops for c in profile.children
             if c.name.endswith(("Conv2D", "MatMul"))}  # up-convs are matmuls
    ours = flops.layer_flops(size, depth, base, outputs)
    assert len(convs) == len(ours)
    assert sum(convs.values()) == flops.forward_flops(size, depth, base, outputs)


def test_layers_list_the_papers_shapes():
    layers = flops.layers(572)
    assert len(layers) == 10 + 4 * 3 + 1
    assert layers[0] == ("contract1/conv1", "conv3x3", 572, 3, 64)
    assert layers[9] == ("bottom/conv2", "conv3x3", 30, 1024, 1024)
    assert layers[10] == ("expand4/up_conv", "up_conv", 28, 1024, 512)
    assert layers[11] == ("expand4/conv1", "conv3x3", 56, 1024, 512)
    assert layers[-1] == ("output", "conv1x1", 388, 64, 1)


def test_flops_of_the_papers_network_match_the_issue():
    assert flops.forward_flops(572) == 301_586_148_864  # "301.6 GFLOP per image"
    assert round(flops.train_step_flops(572) / 1e9) == 905
    with pytest.raises(ValueError, match="not valid"):
        flops.forward_flops(571)


# ------------------------------------------------------------ Keras peer


@pytest.mark.parametrize("size,depth,base", [(44, 1, 4), (92, 2, 8)])
def test_keras_peer_has_the_same_parameters_and_shapes(size, depth, base):
    model = keras_peer.build_model(size, depth, base)
    assert keras_peer.trainable_parameter_count(model) == flops.parameter_count(depth, base)
    out = unet.output_size(size, depth)
    assert tuple(model.output.shape) == (None, out, out, 1)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 4 * depth + 2 + 1
    assert kinds.count("BatchNormalization") == 4 * depth + 2
    assert kinds.count("Conv2DTranspose") == depth


def test_keras_peer_trains():
    model = keras_peer.compiled_model(44, 1, 4, jit_compile=False)
    x, y = keras_peer.synthetic_batch(2, 44, 1)
    assert x.shape == (2, 44, 44, 3) and y.shape == (2, 28, 28, 1)
    losses = [float(model.train_on_batch(x, y)) for _ in range(5)]
    assert losses[-1] < losses[0]


@pytest.mark.skipif(not run.has_torch(), reason="torch not installed (an optional peer)")
def test_torch_peer_worker_has_the_same_network_and_trains(tmp_path):
    # In its own worker, as the suite runs it: torch never shares a process with TensorFlow.
    results = run.run_group([("pytorch", {"kind": "torch", **TINY})], 3, str(tmp_path))
    r = results["pytorch"]
    assert "error" not in r, r.get("error")
    assert r["ready"]["parameters"] == flops.parameter_count(TINY["depth"], TINY["base"])
    assert r["ready"]["same_parameters_as_unet"] is True
    losses = [r["ready"]["warmup_values"]["train"]] + [x["values"]["train"] for x in r["rounds"]]
    assert 0.3 < losses[0] < 3.0 and losses[-1] < losses[0]


# ------------------------------------------------------------ our step and options


def test_synthetic_input_matches_the_trainers_input():
    g = tf.Graph()
    with g.as_default():
        ds = worker.synthetic_dataset(2, 44, 1)
        assert ds.element_spec[0].shape.as_list() == [None, 44, 44, 3]
        assert ds.element_spec[0].dtype == tf.float32
        assert ds.element_spec[1].shape.as_list() == [None, 28, 28, 1]
        images, masks = v1.data.make_one_shot_iterator(ds).get_next()
        with v1.Session() as sess:
            images, masks = sess.run([images, masks])
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) == {0, 1, 255}


def test_in_process_speed_options_give_the_plain_loss():
    def losses(**spec):
        session, loss = worker.build_train_step({**TINY, **spec})
        with session:
            return [float(session.run(loss)) for _ in range(3)]

    plain = losses()
    assert plain[2] < plain[0]
    session, loss = worker.build_train_step({**TINY, "xla": "compile"})
    with session:
        assert worker.ran_xla(session, loss)
    np.testing.assert_allclose(losses(xla="compile"), plain, rtol=1e-4)
    bf16 = losses(precision="bfloat16")
    np.testing.assert_allclose(bf16, plain, rtol=2e-2)
    # oneDNN rewrites to bfloat16 only on CPUs with AVX-512 (or native bf16); on others
    # (e.g. AVX2-only) TensorFlow leaves the graph in float32.
    flags = device.cpu_flags(device.read_cpuinfo() or "")
    if "avx512f" in flags or set(device.CPU_BF16_FLAGS) & set(flags):
        assert bf16 != plain  # the bfloat16 rewrite really ran


def test_every_benchmarked_option_gives_the_plain_loss_in_its_own_worker(tmp_path):
    # The same workers and protocol benchmarks/run.py uses: warm-up step, then 2 rounds.
    # Settings fixed per process; xla compile and bfloat16 are covered in-process above.
    spec = {"kind": "ours", **TINY}
    members = [("plain", spec),
               ("xla auto", {**spec, "xla": "auto"}),
               ("onednn off", {**spec, "onednn": False}),
               ("threads 1 1", {**spec, "intra": 1, "inter": 1})]
    results = run.run_group(members, 2, str(tmp_path))
    assert [results[m]["ready"]["xla_ran"] for m, _ in members] == [False, True, False, False]

    def losses(label):
        r = results[label]
        assert "error" not in r, r.get("error")
        assert len(r["rounds"]) == 2 and r["done"]["rss_mb"] > 100
        return [r["ready"]["warmup_values"]["train"]] + [x["values"]["train"]
                                                          for x in r["rounds"]]

    plain = losses("plain")
    assert plain[-1] < plain[0]
    for label in ("xla auto", "onednn off", "threads 1 1"):
        np.testing.assert_allclose(losses(label), plain, rtol=1e-4, err_msg=label)


def test_peak_worker_reports_every_op(tmp_path):
    spec = {"kind": "peak", "convs": [(18, 8)], "matmuls": [16], "bf16_conv": 8, "warmup": 1}
    results = run.run_group([("peak", spec)], 2, str(tmp_path))
    summary = run.peak_summary(results["peak"], spec)
    assert set(summary["ops_gflops"]) == {"conv3x3 18x18x8->8 float32",
                                          "conv3x3 18x18x8->8 bfloat16", "matmul 16x16 float32"}
    assert results["peak"]["ready"]["flops"]["conv3x3 18x18x8->8 float32"] == 2 * 16 * 16 * 9 * 64
    assert all(v > 0 for v in summary["ops_gflops"].values())


def test_group_members_take_turns_in_rotating_order(tmp_path, monkeypatch):
    calls = []

    class FakeWorker:
        def __init__(self, label, spec, log_dir):
            self.label = label

        def expect(self, tag):
            return {"warmup_values": {}}

        def step(self):
            calls.append(self.label)
            return {"times": {"train": 1.0}, "values": {}}

        def close(self):
            return {"rss_mb": 1.0}

        def kill(self):
            pass

    monkeypatch.setattr(run, "Worker", FakeWorker)
    results = run.run_group([("a", {}), ("b", {}), ("c", {})], 4, str(tmp_path))
    assert calls == list("abc" "bca" "cab" "abc")
    assert [len(results[m]["rounds"]) for m in "abc"] == [4, 4, 4]
    assert len(results["a"]["load_1min"]) == 5  # before the first round and after each


def test_a_crashing_worker_is_reported_not_raised(tmp_path):
    results = run.run_group([("bad", {"kind": "ours", **TINY, "size": 45})], 1, str(tmp_path))
    assert "ValueError" in results["bad"]["error"] and "before READY" in results["bad"]["error"]


# ------------------------------------------------------------ report


def _result(times, flops_by_name=None):
    return {"ready": {"warmup_values": {"train": 0.7}, "flops": flops_by_name or {}},
            "rounds": [{"times": t} for t in times], "done": {"rss_mb": 512.0}}


def test_summaries_from_hand_made_timings():
    plan = {"size": 44, "depth": 1}
    s = run.step_summary(_result([{"train": 2.0}, {"train": 1.0}, {"train": 4.0}]), 4, 2, plan)
    step = flops.train_step_flops(44, 1, 4, batch=2)
    assert s["s_per_step"] == 2.0 and s["s_min"] == 1.0 and s["images_per_s"] == 1.0
    assert s["gflops"] == pytest.approx(step / 2.0 / 1e9) and s["rss_mb"] == 512.0
    peak = run.peak_summary(_result(
        [{"conv3x3 a float32": 1.0, "conv3x3 b float32": 0.5, "matmul c float32": 2.0}],
        {"conv3x3 a float32": 4e9, "conv3x3 b float32": 4e9, "matmul c float32": 4e9}), {})
    assert peak["conv_gflops"] == 8.0 and peak["matmul_gflops"] == 2.0
    assert peak["conv_bf16_gflops"] is None


def test_report_skips_sections_whose_modules_are_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(run.NEEDS, "predict", ("no_such_module_xyz",))
    out = tmp_path / "r" / "results.json"
    lines = []
    report = run.run(str(out), quick=True, sections=["predict"], log=lines.append)
    assert report["skipped"] == {"predict": "needs no_such_module_xyz"}
    assert json.loads(out.read_text())["skipped"] == report["skipped"]
    table = (tmp_path / "r" / "results.md").read_text()
    assert "predict: skipped (needs no_such_module_xyz)" in table and table in lines
    assert sorted(os.listdir(tmp_path / "r")) == ["results.json", "results.md"]


@pytest.mark.parametrize("argv,match", [
    (["--sections", "train,bogus"], "sections are"),
    (["--records", "/nonexistent/*.tfrecord"], "matches no file"),
    (["--rounds"], "unrecognized arguments"),
    (["--train-groups", "16by1"], "expected BASExBATCH"),
    (["--quick", "--sections", "train", "--train-groups", "64x1", "--out", "/dev/null/x.json"],
     "matches none of this plan's groups"),
])
def test_bad_flags_are_usage_errors(argv, match, capsys):
    assert cli.run_main(run.main, argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


# ------------------------------------------------------------ ceiling


def test_ceiling_times_every_conv_of_a_tiny_net():
    lines = []
    result = ceiling.measure(44, depth=1, base_filters=4, repeats=1, log=lines.append)
    layers = result["layers"]
    assert [r["layer"] for r in layers] == [name for name, *_ in flops.layers(44, 1, 4)]
    assert "input_grad" not in layers[0]["seconds"]  # no gradient w.r.t. the images
    assert all(set(r["seconds"]) == set(ceiling.PARTS) for r in layers[1:])
    total = sum(sum(r["seconds"].values()) for r in layers)
    assert result["bound_s"] == pytest.approx(total)
    assert result["bound_gflops"] == pytest.approx(
        flops.train_step_flops(44, 1, 4) / total / 1e9)
    assert len(lines) == len(layers) and lines[0].startswith("| contract1/conv1 | 44x44x3 -> 4")


def test_ceiling_rejects_an_invalid_size(capsys):
    assert cli.run_main(ceiling.main, ["--size", "571"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--size 571 is not valid for depth 4; try 572" in err and err.count("\n") == 1
