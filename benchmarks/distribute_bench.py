"""Training images/s with 1 vs 2 replicas (issue 7), on logical CPU devices or GPUs.

    python -m benchmarks.distribute_bench                      # 2 logical CPUs, ~3 min
    python -m benchmarks.distribute_bench --devices /gpu:0,/gpu:1 --base-filters 64

Settings, each measured in its own process (logical devices are fixed per
process), repeated --repeats times interleaved so a shared machine's load hits
all of them alike; the median is reported:

    none         train.py's single-device graph, batch B
    mirrored-1   MirroredStrategy over the first device, batch B (the strategy's overhead)
    mirrored-2   MirroredStrategy over both devices, B per replica = global batch 2B

Scaling ratio = images/s of mirrored-2 / images/s of none (weak scaling: same
per-replica batch). Input is train.py's real tf.data pipeline on generated
record shards; a step is train.build_graph's training fetch (forward, loss,
backward, all-reduce, Adam, batch-norm updates).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])
from core import distribute
devices = distribute.parse_devices(spec["devices"])
strategy = distribute.make_strategy(spec["strategy"], devices)  # before TF's runtime starts
import tensorflow as tf
import train
from core import config, device
from datasets import guard
cfg = config.resolve(config.Config(
    train_records=spec["records"], val_records="", depth=spec["depth"],
    base_filters=spec["base_filters"], input_size=spec["input_size"], batch_size=spec["batch"],
    seed=1, shuffle_buffer=16, strategy=spec["strategy"], devices=spec["devices"]))
data = guard.scan_sets(cfg.train_records, cfg.val_records)  # what train.train plans with
plan = distribute.plan(strategy, cfg, data.train_files, data.counts, data.val_files)
target, session_config, _server = distribute.session_target(strategy, device.session_config(cfg))
with tf.Graph().as_default(), distribute.scope(strategy):
    g = train.build_graph(cfg, plan, strategy)
    with tf.compat.v1.Session(target, config=session_config) as sess:
        sess.run(g.init)
        sess.run(g.train.iterator.initializer)
        for _ in range(spec["warmup"]):
            sess.run(g.train.op)
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            sess.run(g.train.op)
        seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"seconds": seconds, "images": spec["steps"] * g.global_batch,
                              "global_batch": g.global_batch}))
"""


def write_records(directory, count, size, seed=0):
    """`count` random images with disk masks, 4 shards (enough for warm-up + timed steps)."""
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    from datasets import records

    rng = np.random.default_rng(seed)
    for shard in range(4):
        path = os.path.join(directory, f"bench-train-{shard:05d}-of-00004.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard, count, 4):
                image = rng.integers(0, 255, (size, size, 3)).astype(np.uint8)
                rows, cols = np.mgrid[:size, :size]
                cy, cx, r = rng.integers(0, size, 3)
                mask = (((rows - cy) ** 2 + (cols - cx) ** 2) < (r // 2) ** 2).astype(np.uint8)
                writer.write(records.make_example(
                    tf.io.encode_jpeg(image).numpy(), "jpeg", size, size, i, f"{i}.jpg",
                    tf.io.encode_png(mask[..., None]).numpy()))
    return os.path.join(directory, "bench-train-*")


def run_setting(spec, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    return result["images"] / result["seconds"], result["global_batch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="/cpu:0,/cpu:1", help="the two devices to compare")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--input-size", type=int, default=140, help="valid for --depth")
    p.add_argument("--batch", type=int, default=4, help="per replica")
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600, help="seconds per setting")
    p.add_argument("--out", help="also write the results here as JSON")
    args = p.parse_args(argv)
    first = args.devices.split(",")[0]
    settings = [("none", "none", ""), ("mirrored-1", "mirrored", first),
                ("mirrored-2", "mirrored", args.devices)]
    rates = {name: [] for name, _, _ in settings}
    batches = {}
    with tempfile.TemporaryDirectory() as tmp:
        per_setting = (args.warmup + args.steps + 1) * args.batch * 2
        records = write_records(tmp, per_setting, args.input_size + 24)
        for repeat in range(args.repeats):
            for name, strategy, devices in settings:
                spec = {"name": name, "root": ROOT, "strategy": strategy, "devices": devices,
                        "records": records, "depth": args.depth,
                        "base_filters": args.base_filters, "input_size": args.input_size,
                        "batch": args.batch, "steps": args.steps, "warmup": args.warmup}
                rate, batches[name] = run_setting(spec, args.timeout)
                rates[name].append(rate)
                print(f"repeat {repeat + 1}/{args.repeats} {name:11s} global batch "
                      f"{batches[name]:2d}: {rate:7.2f} images/s", flush=True)
    median = {name: statistics.median(r) for name, r in rates.items()}
    report = {"config": vars(args), "images_per_s": rates, "median_images_per_s": median,
              "global_batch": batches, "cpu_count": os.cpu_count(),
              "ratio_2_replicas_vs_none": median["mirrored-2"] / median["none"],
              "ratio_mirrored_1_vs_none": median["mirrored-1"] / median["none"]}
    print(f"2 replicas / 1 device: {report['ratio_2_replicas_vs_none']:.2f}x images/s; "
          f"MirroredStrategy on 1 device / plain graph: {report['ratio_mirrored_1_vs_none']:.2f}x")
    if args.out:
        tmp_out = args.out + ".tmp"
        with open(tmp_out, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp_out, args.out)
    return report


if __name__ == "__main__":
    main()
