import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from core import config, device
from utils.cli import UsageError

v1 = tf.compat.v1
ON = rewriter_config_pb2.RewriterConfig.ON
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def cfg(**kw):
    return config.Config(**kw)


def test_defaults_leave_threads_to_tensorflow_and_xla_off():
    c = device.session_config(config.Config())
    assert c.intra_op_parallelism_threads == 0 and c.inter_op_parallelism_threads == 0
    assert c.graph_options.optimizer_options.global_jit_level == 0
    assert c.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 != ON
    assert c.graph_options.rewrite_options.auto_mixed_precision != ON
    assert c.allow_soft_placement and c.gpu_options.allow_growth


def test_threads_and_precision_reach_the_config():
    c = device.session_config(cfg(intra_op_threads=2, inter_op_threads=1, precision="bfloat16"))
    assert (c.intra_op_parallelism_threads, c.inter_op_parallelism_threads) == (2, 1)
    assert c.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == ON
    g = device.session_config(cfg(precision="mixed_float16"), gpu=True)
    assert g.graph_options.rewrite_options.auto_mixed_precision == ON


def test_xla_auto_sets_jit_level_and_needs_the_cpu_flag_in_the_environment(monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=true")  # a default
    with pytest.raises(UsageError, match=r"--xla auto on a CPU needs "
                                         r"TF_XLA_FLAGS=--tf_xla_cpu_global_jit"):
        device.session_config(cfg(xla="auto"))
    flags = f"--tf_xla_enable_lazy_compilation=true {device.XLA_CPU_FLAGS}"
    monkeypatch.setenv("TF_XLA_FLAGS", flags)
    c = device.session_config(cfg(xla="auto"))
    assert c.graph_options.optimizer_options.global_jit_level == v1.OptimizerOptions.ON_2
    assert os.environ["TF_XLA_FLAGS"] == flags  # read, never changed
    monkeypatch.delenv("TF_XLA_FLAGS")
    gpu = device.session_config(cfg(xla="auto"), gpu=True)  # a GPU needs no CPU flag
    assert gpu.graph_options.optimizer_options.global_jit_level == v1.OptimizerOptions.ON_2


XLA_PROBE = """
from utils import quiet  # entry points do this first: TensorFlow reads TF_XLA_FLAGS there
import tensorflow as tf
from core import config
from core import device
v1 = tf.compat.v1
config = device.session_config(config.Config(xla="auto"))
with tf.Graph().as_default():
    x = v1.get_variable("x", [8, 8])
    y = tf.reduce_sum(tf.nn.relu(tf.matmul(x, x) + 1.0) * 2.0)
    with v1.Session(config=config) as sess:
        sess.run(v1.global_variables_initializer())
        meta = v1.RunMetadata()
        sess.run(y, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                 run_metadata=meta)
print(sorted({n.timeline_label.split(" = ")[-1].split("(")[0]
              for d in meta.step_stats.dev_stats for n in d.node_stats}))
"""


def test_xla_auto_compiles_with_the_cpu_flag_set_before_the_start():
    # A fresh process: TensorFlow reads TF_XLA_FLAGS once, at start-up.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": root,
           "TF_XLA_FLAGS": device.XLA_CPU_FLAGS}
    done = subprocess.run([sys.executable, "-c", XLA_PROBE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr[-2000:]
    ops = done.stdout.strip().splitlines()[-1]
    assert "'_XlaRun'" in ops and "MatMul'" not in ops


@pytest.mark.parametrize("bad,gpu,match", [
    (dict(precision="mixed_float16"), False, "needs a GPU"),
    (dict(precision="bfloat16"), True, "CPU option"),
])
def test_bad_settings_are_one_line_usage_errors(bad, gpu, match):
    with pytest.raises(UsageError, match=match):
        device.session_config(cfg(**bad), gpu=gpu)


@pytest.mark.parametrize("bad,match", [
    (dict(precision="float16"), "--precision must be one of float32, bfloat16, mixed_float16, "
     "auto, got 'float16'"),
    (dict(xla="on"), "--xla must be one of off, auto, got 'on'"),
    (dict(intra_op_threads=-1), r"--intra-op-threads must be >= 0 \(0 = one per core\), got -1"),
    (dict(inter_op_threads="2"), "--inter-op-threads must be >= 0 .*, got '2'"),
])
def test_bad_values_are_refused_by_the_config_rules_not_here(bad, match):
    with pytest.raises(UsageError, match=match):
        config.check(cfg(**bad))


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2 avx2 {extra}
"""


@pytest.mark.parametrize("extra,gpu,system,expected,why", [
    ("avx512f amx_bf16 amx_tile", False, "Linux", "bfloat16", "amx_bf16"),
    ("avx512f avx512_bf16", False, "Linux", "bfloat16", "avx512_bf16"),
    ("avx512f amx_bf16 avx512_bf16", False, "Linux", "bfloat16", "amx_bf16 and avx512_bf16"),
    ("avx512f avx512_vnni", False, "Linux", "float32", "neither amx_bf16 nor avx512_bf16"),
    ("avx512_bf16", True, "Linux", "mixed_float16", "GPU"),  # the GPU wins
    ("avx512_bf16", False, "Darwin", "float32", "not probed on Darwin"),
    ("", True, "Windows", "mixed_float16", "GPU"),
])
def test_auto_precision_follows_the_cpu_flags_and_the_gpu(extra, gpu, system, expected, why):
    got, reason = device.resolve_precision("auto", gpu, CPUINFO.format(extra=extra), system)
    assert got == expected and why in reason


def test_concrete_precision_passes_through_and_cpuinfo_is_parsed():
    assert device.resolve_precision("bfloat16", gpu=True) == ("bfloat16", None)
    assert device.cpu_flags(CPUINFO.format(extra="amx_bf16")) == {"fpu", "sse2", "avx2",
                                                                   "amx_bf16"}
    assert device.cpu_flags("processor\t: 0\n") == set()  # e.g. an ARM cpuinfo: no x86 flags
    assert device.resolve_precision("auto", False, "", "Linux")[0] == "float32"


def test_unreadable_cpuinfo_means_float32(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "CPUINFO", str(tmp_path / "missing"))
    assert device.resolve_precision("auto", False, system="Linux") == (
        "float32", f"{tmp_path / 'missing'} is unreadable")


def test_unresolved_auto_is_a_caller_bug():
    with pytest.raises(ValueError, match="resolve_precision"):
        device.session_config(cfg(precision="auto"))
