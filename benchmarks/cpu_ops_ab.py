"""A/B of cpu_ops' tricks: single-device training step time, plain ops vs each trick.

    python -m benchmarks.cpu_ops_ab --bases 16,64 --rounds 5 --steps 3

Every arm (plain, each trick alone, all tricks) gets its own graph and session
in this one process; the arms step in turn, round after round, so a slow spell
on a shared machine hits them alike. Prints each arm's median step time and its
ratio to plain (>1: faster than plain) per base.
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: quiets TensorFlow's start-up logs)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import unet  # noqa: E402
from benchmarks import cpu_ops  # noqa: E402

v1 = tf.compat.v1
ARMS = {
    "plain": cpu_ops.PLAIN,
    "ordered_grads": dataclasses.replace(cpu_ops.PLAIN, ordered_grads=True),
    "matmul_up_conv": dataclasses.replace(cpu_ops.PLAIN, up_conv=cpu_ops.matmul_up_conv),
    "slice_crop": dataclasses.replace(cpu_ops.PLAIN, crop=cpu_ops.slice_crop),
    "all_tricks": cpu_ops.TRICKS,
}


def build(ops, base, size, batch, depth):
    graph = tf.Graph()
    with graph.as_default():
        tf.random.set_seed(0)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(size=[batch, size, size, 3]), tf.float32)
        out = unet.output_size(size, depth)
        y = tf.constant(rng.integers(0, 2, [batch, out, out, 1]), tf.float32)
        with cpu_ops.building(ops):
            logits = unet.unet(x, True, depth, base)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            step = v1.train.AdamOptimizer(1e-4).minimize(loss)
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
        sess.run(step)  # warm-up: oneDNN primitives are made on the first run
    return sess, step


def run(bases, rounds, steps, size, batch, depth, arms):
    results = {}
    for base in bases:
        arms_built = {name: build(ARMS[name], base, size, batch, depth) for name in arms}
        times = {name: [] for name in arms}
        for _ in range(rounds):
            for name, (sess, step) in arms_built.items():
                for _ in range(steps):
                    start = time.perf_counter()
                    sess.run(step)
                    times[name].append(time.perf_counter() - start)
        for sess, _ in arms_built.values():
            sess.close()
        plain = statistics.median(times["plain"])
        for name in arms:
            median = statistics.median(times[name])
            results[(base, name)] = (median, plain / median)
            print(f"base {base:3d}  {name:15s} median {median * 1000:8.1f} ms  "
                  f"x{plain / median:.3f} vs plain  (n={len(times[name])})", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="16,64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per arm and round")
    parser.add_argument("--size", type=int, default=572)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args(argv)
    run([int(b) for b in args.bases.split(",")], args.rounds, args.steps, args.size,
        args.batch, args.depth, args.arms.split(","))


if __name__ == "__main__":
    main()
