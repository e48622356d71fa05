"""Session settings for a fast step: threads, XLA, precision, and the device config.

The defaults are what measured fastest on a 2-core CPU (docs/performance.md has
the figures): TensorFlow's own thread counts, its oneDNN kernels, XLA off (0.5-0.7x
on a CPU; worth a try on a GPU, and on a CPU it needs TF_XLA_FLAGS=--tf_xla_cpu_global_jit
before the process starts, since TensorFlow reads it once and its in-process switch
is private). bfloat16 (CPU) and mixed_float16 (GPU, with core/optim.py's loss scaling)
are grappler's auto-mixed-precision rewrites, opt-in because they trade accuracy;
"auto" picks one per machine from /proc/cpuinfo (TensorFlow has no public API for CPU
features) and is made concrete before a run starts, so config.json says what ran.

The settings are read from a config.Config (or any object with its four fields),
whose values core/config.py's rules have checked.
"""

import logging
import os
import platform

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from utils.cli import UsageError

v1 = tf.compat.v1
log = logging.getLogger("speed")

XLA_MODES = ("off", "auto")
PRECISIONS = ("float32", "bfloat16", "mixed_float16")
PRECISION_CHOICES = PRECISIONS + ("auto",)  # flag values; "auto" is resolved before a run
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bfloat16 math
CPUINFO = "/proc/cpuinfo"
SETTINGS = ("intra_op_threads", "inter_op_threads", "xla", "precision")  # Config fields
# XLA auto-clustering of CPU ops needs this flag besides the session's global_jit_level.
XLA_CPU_FLAGS = "--tf_xla_cpu_global_jit"
XLA_FLAGS_ENV = "TF_XLA_FLAGS"


def settings(cfg):
    """The four speed settings of cfg, as core/config.py's rules checked them."""
    s = {k: getattr(cfg, k) for k in SETTINGS}
    if s["precision"] == "auto":  # a caller's bug: the run must know what it runs
        raise ValueError("precision 'auto' must be resolved first (device.resolve_precision)")
    return s


def cpu_flags(cpuinfo_text):
    """The feature flags of the first CPU in /proc/cpuinfo text (x86 'flags' line)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def read_cpuinfo():
    """/proc/cpuinfo's text, or None where there is none (not Linux) or it is unreadable."""
    try:
        with open(CPUINFO) as f:
            return f.read()
    except OSError:
        return None


def resolve_precision(requested, gpu, cpuinfo_text=None, system=None):
    """(concrete precision, why) for a requested one; 'auto' picks per machine.

    gpu: TensorFlow sees a GPU. cpuinfo_text: /proc/cpuinfo's text (default: read
    it on Linux). system: platform.system() (default: this one). A concrete
    request comes back unchanged, with why = None.
    """
    if requested != "auto":
        return requested, None
    if gpu:
        return "mixed_float16", "a GPU is present"
    system = system or platform.system()
    if system != "Linux":
        return "float32", f"CPU features are not probed on {system}"
    text = read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    if text is None:
        return "float32", f"{CPUINFO} is unreadable"
    found = [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags(text)]
    if found:
        return "bfloat16", f"the CPU has {' and '.join(found)}"
    return "float32", f"the CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"


def session_config(cfg, gpu=False):
    """A ConfigProto with the threads, XLA and precision settings of cfg.

    Raises UsageError for a precision the device cannot use (mixed_float16 needs
    a GPU; bfloat16 is the CPU option), or xla="auto" on a CPU without
    XLA_CPU_FLAGS in the environment.
    """
    s = settings(cfg)
    if s["precision"] == "mixed_float16" and not gpu:
        raise UsageError("precision mixed_float16 needs a GPU; on a CPU use bfloat16 "
                         "(fast with AVX512_BF16) or float32")
    if s["precision"] == "bfloat16" and gpu:
        raise UsageError("precision bfloat16 is the CPU option; on a GPU use mixed_float16")
    config = v1.ConfigProto(intra_op_parallelism_threads=s["intra_op_threads"],
                            inter_op_parallelism_threads=s["inter_op_threads"],
                            allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if s["xla"] == "auto":
        config.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_2
        if not gpu and XLA_CPU_FLAGS not in os.environ.get(XLA_FLAGS_ENV, "").split():
            raise UsageError(f"--xla auto on a CPU needs {XLA_FLAGS_ENV}={XLA_CPU_FLAGS} in "
                             "the environment before the command starts (it measured 0.7x "
                             "on CPU; use --xla off)")
    rewrite = config.graph_options.rewrite_options
    if s["precision"] == "bfloat16":
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    elif s["precision"] == "mixed_float16":
        rewrite.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
    return config


def device_config(cfg):
    """session_config for this machine's devices, with GPU memory growth; logs the device.

    Call it before any Session (XLA flags are read at the first one).
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process; allow_growth covers it
            pass
    log.info("device: %s", f"GPU ({', '.join(gpu.name for gpu in gpus)})" if gpus
             else "CPU (TensorFlow sees no GPU)")
    config = session_config(cfg, gpu=bool(gpus))  # allows memory growth too
    config.log_device_placement = cfg.log_device_placement
    return config
