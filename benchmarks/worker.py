"""One measured thing per process: `python -m benchmarks.worker '<json spec>'`.

benchmarks/run.py starts one worker per setting, because thread pools, oneDNN
and XLA flags are fixed per process and because peak RSS must be per setting.
Kinds:

  stepping workers (driven over stdin, so run.py can interleave them):
    ours   one training step of the project's graph (unet + optim.pixel_loss +
           Adam + UPDATE_OPS, core/device.py settings), fed by tf.data
    keras  the Keras 3 peer (keras_peer.py) with train_on_batch
    torch  the PyTorch eager peer (torch_peer.py), when torch is installed
    peak   TensorFlow's conv2d and matmul throughput on large shapes
  one-shot workers (print one RESULT line and exit):
    pipeline   pipeline.make_dataset records/s on real shards (optionally augmented)
    converter  convert_coco.convert images/s on a demo dataset
    predict    predict.Predictor megapixels/s on a 640x480 image
    ceiling    benchmarks/ceiling.py: every conv of the network timed alone

Protocol of a stepping worker: it builds, runs `warmup` rounds, prints
`READY <json>`; then every stdin line `run` runs one round of each of its
steps and prints `TIMES {"times": {name: seconds}, "values": {name: value}}`
(the value of a training step is its loss); `quit` (or EOF) prints
`DONE {"rss_mb": ...}`. Only protocol lines go to stdout.
"""

import json
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LEARNING_RATE = 1e-4
STEP_DEFAULTS = {"base": 16, "depth": 4, "size": 572, "batch": 1, "xla": "off",
                 "precision": "float32", "intra": 0, "inter": 0, "onednn": True,
                 "records": None, "static_batch": False, "seed": 0, "warmup": 2}


def spec_env(spec):
    """Environment variables a worker needs before TensorFlow loads."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    if spec.get("onednn") is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if spec["onednn"] else "0"
    if spec.get("xla") == "auto":  # XLA on CPU is switched on only by the environment
        from core import device

        env[device.XLA_FLAGS_ENV] = device.XLA_CPU_FLAGS
    env.update(spec.get("env") or {})  # experiments, e.g. {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
    return env


def rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------ our step


def synthetic_dataset(batch, input_size, depth, seed=0, distinct=2, static_batch=False):
    """tf.data of (image [B, in, in, 3] float32 in [0, 1], mask [B, out, out, 1] uint8).

    uint8 tensors cast on the graph side, like pipeline.make_dataset's output; the
    batch dimension is unknown, as in the trainer, unless static_batch (which
    measured the same speed). A few mask pixels are IGNORE.
    """
    import tensorflow as tf

    import unet
    from datasets import records

    rng = np.random.default_rng(seed)
    out = unet.output_size(input_size, depth)
    n = batch * distinct
    images = rng.integers(0, 256, [n, input_size, input_size, 3], dtype=np.uint8)
    masks = (rng.random([n, out, out, 1]) < 0.3).astype(np.uint8) * records.FOREGROUND
    masks[:, :2] = records.IGNORE
    ds = tf.data.Dataset.from_tensor_slices((images, masks)).repeat()
    ds = ds.map(lambda i, m: (tf.cast(i, tf.float32) / 255.0, m))
    return ds.batch(batch, drop_remainder=static_batch).prefetch(tf.data.AUTOTUNE)


def settings_of(spec):
    """core/device.py settings for a step spec; xla 'compile' is benchmark-only (explicit XLA)."""
    from types import SimpleNamespace

    return SimpleNamespace(intra_op_threads=spec["intra"], inter_op_threads=spec["inter"],
                           xla="off" if spec["xla"] == "compile" else spec["xla"],
                           precision=spec["precision"])


def build_train_step(spec):
    """(session, loss fetch) of one training step; running the fetch trains one step."""
    import tensorflow as tf

    import unet
    from core import device, optim

    v1 = tf.compat.v1
    spec = {**STEP_DEFAULTS, **spec}
    cfg = settings_of(spec)
    session_config = device.session_config(cfg)  # first: xla=auto must precede any Session
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(spec["seed"])
        if spec["records"]:
            from datasets import pipeline

            ds = pipeline.make_dataset(spec["records"], spec["batch"], True, spec["size"],
                                   spec["depth"], spec["seed"]).repeat()
        else:
            ds = synthetic_dataset(spec["batch"], spec["size"], spec["depth"], spec["seed"],
                                   static_batch=spec["static_batch"])
        images, masks = v1.data.make_one_shot_iterator(ds).get_next()
        global_step = v1.train.get_or_create_global_step()
        optimizer = optim.optimizer(cfg, LEARNING_RATE)

        def step(images, masks):  # [B, in, in, 3] float32, [B, out, out, 1] uint8
            logits = unet.unet(images, True, spec["depth"], spec["base"])
            loss, _, _ = optim.pixel_loss(logits, masks, pos_weight=1.0)
            with tf.control_dependencies([optim.minimize(optimizer, loss, global_step)]):
                return tf.identity(loss)

        if spec["xla"] == "compile":
            (loss,) = tf.xla.experimental.compile(step, [images, masks])
        else:
            loss = step(images, masks)
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph, config=session_config)
    session.run(init)
    graph.finalize()
    return session, loss


def ran_xla(session, fetch):
    """Run fetch once with tracing; True when XLA-compiled clusters executed."""
    import tensorflow as tf

    v1 = tf.compat.v1
    meta = v1.RunMetadata()
    session.run(fetch, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                run_metadata=meta)
    return any("_XlaRun" in node.timeline_label or "XlaLaunch" in node.timeline_label
               for dev in meta.step_stats.dev_stats for node in dev.node_stats)


def ours_steps(spec):
    session, loss = build_train_step(spec)
    # Also a warm-up step: proves an XLA setting took effect (it can silently not).
    return {"train": lambda: float(session.run(loss))}, {"xla_ran": ran_xla(session, loss)}


def keras_steps(spec):
    from benchmarks import flops, keras_peer

    spec = {**STEP_DEFAULTS, **spec}
    model = keras_peer.compiled_model(spec["size"], spec["depth"], spec["base"],
                                      jit_compile=spec.get("jit", True))
    x, y = keras_peer.synthetic_batch(spec["batch"], spec["size"], spec["depth"])
    params = keras_peer.trainable_parameter_count(model)
    info = {"parameters": params,
            "same_parameters_as_unet": params == flops.parameter_count(spec["depth"],
                                                                      spec["base"])}
    return {"train": lambda: float(model.train_on_batch(x, y))}, info


def torch_steps(spec):
    import torch

    from benchmarks import flops, torch_peer

    spec = {**STEP_DEFAULTS, **spec}
    step, model = torch_peer.train_step_fn(spec["size"], spec["depth"], spec["base"],
                                           spec["batch"])
    params = torch_peer.trainable_parameter_count(model)
    info = {"parameters": params, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "same_parameters_as_unet": params == flops.parameter_count(spec["depth"],
                                                                      spec["base"])}
    return {"train": step}, info


# ------------------------------------------------------------ peak


def peak_steps(spec):
    """Large conv2d / matmul ops, each timed alone; names say shape and dtype."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    fetches, flops = {}, {}
    with graph.as_default():
        def var(name, shape, dtype="float32"):
            # Variables of the op's dtype, so the timed op reads them as they are.
            value = tf.random.stateless_normal(shape, seed=[0, len(fetches)])
            return v1.get_variable(name, initializer=tf.cast(value, dtype), trainable=False)

        for hw, ch in spec.get("convs", []):
            for dtype in ["float32"] + (["bfloat16"] if ch == spec.get("bf16_conv") else []):
                name = f"conv3x3 {hw}x{hw}x{ch}->{ch} {dtype}"
                with v1.variable_scope(f"conv_{hw}_{ch}_{dtype}"):
                    y = tf.nn.conv2d(var("x", [1, hw, hw, ch], dtype),
                                     var("w", [3, 3, ch, ch], dtype), 1, "VALID")
                # A corner of the output keeps the fetch tiny; the conv still runs whole.
                fetches[name] = tf.reduce_sum(tf.cast(y[:, :1, :1, :1], tf.float32))
                flops[name] = 2 * (hw - 2) ** 2 * 9 * ch * ch
        for n in spec.get("matmuls", []):
            name = f"matmul {n}x{n} float32"
            with v1.variable_scope(f"matmul_{n}"):
                product = tf.matmul(var("a", [n, n]), var("b", [n, n]))
            fetches[name] = tf.reduce_sum(product[:1, :1])
            flops[name] = 2 * n**3
        init_op = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init_op)
    graph.finalize()
    steps = {name: (lambda f=f: float(session.run(f))) for name, f in fetches.items()}
    return steps, {"flops": flops}


STEPPING = {"ours": ours_steps, "keras": keras_steps, "torch": torch_steps,
            "peak": peak_steps}


def serve(spec, stdin=sys.stdin, stdout=sys.stdout):
    steps, info = STEPPING[spec["kind"]](spec)
    values = {}
    for _ in range(spec.get("warmup", STEP_DEFAULTS["warmup"])):
        values = {name: fn() for name, fn in steps.items()}
    print("READY", json.dumps({**info, "warmup_values": values, "rss_mb": rss_mb()}),
          file=stdout, flush=True)
    for line in stdin:
        if line.strip() != "run":
            break
        times, values = {}, {}
        for name, fn in steps.items():
            start = time.perf_counter()
            values[name] = fn()
            times[name] = time.perf_counter() - start
        print("TIMES", json.dumps({"times": times, "values": values}), file=stdout, flush=True)
    print("DONE", json.dumps({"rss_mb": rss_mb()}), file=stdout, flush=True)


# ------------------------------------------------------------ one-shot kinds


def _median_rate(amounts_and_seconds):
    rates = [a / s for a, s in amounts_and_seconds]
    return float(np.median(rates)), rates


def pipeline_result(spec):
    """Records/s of pipeline.make_dataset alone (decode, crop, mirror-pad, augment, batch).

    spec["augment"]: the --augment groups (default "flip", train.py's default).
    """
    import tensorflow as tf

    from datasets import augment, pipeline

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        settings = augment.Settings(augment.parse_groups(spec.get("augment", "flip")))
        ds = pipeline.make_dataset(spec["records"], spec["batch"], True, spec["size"],
                               spec["depth"], seed=0, augmentation=settings).repeat()
        images, _ = v1.data.make_one_shot_iterator(ds).get_next()
        count = tf.shape(images)[0]
    session = v1.Session(graph=graph)
    for _ in range(spec.get("warmup_batches", 5)):
        session.run(count)
    windows = []
    for _ in range(spec.get("windows", 5)):
        start, n = time.perf_counter(), 0
        for _ in range(spec.get("batches", 10)):
            n += int(session.run(count))
        windows.append((n, time.perf_counter() - start))
    rate, rates = _median_rate(windows)
    return {"records_per_s": rate, "window_rates": rates}


def converter_result(spec):
    """Images/s of convert_coco.convert on the demo dataset at spec['workers']."""
    import convert_coco

    start = time.perf_counter()
    stats = convert_coco.convert(spec["coco_dir"], spec["split"], output=spec["output"],
                                 num_shards=spec.get("num_shards"), workers=spec["workers"],
                                 overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    return {"images": stats["images"], "seconds": seconds,
            "images_per_s": stats["images"] / seconds}


def make_run_dir(run_dir, base, depth, size):
    """A run dir as train.py leaves it: config.json and a (random-weight) checkpoint."""
    import tensorflow as tf

    import unet
    from core import config, rundir

    v1 = tf.compat.v1
    rundir.save_config(config.Config(input_size=size, depth=depth, base_filters=base), run_dir)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        unet.unet(v1.placeholder(tf.float32, [1, size, size, 3]), False, depth, base)
        saver = v1.train.Saver(v1.global_variables("unet"))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            saver.save(session, rundir.checkpoint_prefix(run_dir), global_step=0)


def predict_result(spec):
    """Megapixels/s of predict.Predictor (decode, overlap-tile, network, stitch)."""
    import cv2

    import predict

    if spec.get("make_run"):
        make_run_dir(spec["run_dir"], **spec["make_run"])

    rng = np.random.default_rng(0)
    h, w = spec.get("height", 480), spec.get("width", 640)
    image = rng.integers(0, 256, [h, w, 3], dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    encoded = encoded.tobytes()
    runs = []
    with predict.Predictor(spec["run_dir"], batch_size=spec.get("batch", 4)) as predictor:
        for i in range(spec.get("warmup", 1) + spec.get("repeats", 3)):
            start = time.perf_counter()
            _, prob = predictor(encoded)
            if i >= spec.get("warmup", 1):
                runs.append((h * w / 1e6, time.perf_counter() - start))
    assert prob.shape == (h, w)
    rate, rates = _median_rate(runs)
    return {"megapixels_per_s": rate, "rates": rates, "image": f"{w}x{h}",
            **(spec.get("make_run") or {})}


def ceiling_result(spec):
    from benchmarks import ceiling

    return ceiling.measure(spec["size"], spec["depth"], spec["base"], spec["repeats"],
                           log=lambda line: print(line, file=sys.stderr))


ONE_SHOT = {"pipeline": pipeline_result, "converter": converter_result,
            "predict": predict_result, "ceiling": ceiling_result}


def main(argv=None):
    from utils import quiet  # noqa: F401  (TensorFlow's start-up lines would bury a worker's error)

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    if spec["kind"] in STEPPING:
        serve(spec)
    else:
        result = ONE_SHOT[spec["kind"]](spec)
        print("RESULT", json.dumps({**result, "rss_mb": rss_mb()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
