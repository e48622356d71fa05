"""How fast could the training step be? Every conv of the network, timed alone.

    python -m benchmarks.ceiling --base 64     # ~40 s on 2 cores (run.py's ceiling section)

For each layer of unet.unet (as flops.layers lists them) this times, one op at
a time, the forward conv, the gradient w.r.t. its input (skipped for the first
layer, as in training) and the gradient w.r.t. its weights, each on its own
shape, batch 1, median of --repeats runs. The sum is a lower bound on a
training step made of TensorFlow's kernels: convs alone, each at its solo
speed, nothing else (no batch norm, ReLU, crop, concat, Adam). Its ratio to
the conv peak (benchmarks/run.py) is the most any float32 step built from
these kernels could reach; the gap between the bound and our measured step
is everything else.

Up-convs are timed as unet.py builds them.
"""

import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: flops imports unet, which imports TensorFlow)

# isort: split
import tensorflow as tf  # noqa: E402

import unet  # noqa: E402
from benchmarks import flops  # noqa: E402
from utils import cli  # noqa: E402

v1 = tf.compat.v1
PARTS = ("forward", "input_grad", "weight_grad")


def layer_graph(kind, size, cin, cout):
    """(graph, {part: fetch}) for one layer on a random [1, size, size, cin] input."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.get_variable("x", initializer=tf.random.stateless_normal([1, size, size, cin],
                                                                        seed=[0, 1]))
        if kind == "up_conv":
            y = unet._up_conv(x, cout)
            (w,) = [v for v in v1.global_variables() if v.name == "up_weights:0"]
        else:
            k = 3 if kind == "conv3x3" else 1
            w = v1.get_variable("w", initializer=tf.random.stateless_normal(
                [k, k, cin, cout], seed=[0, 2]) * 0.05)
            y = tf.nn.conv2d(x, w, 1, "VALID")
        dy = v1.get_variable("dy", initializer=tf.random.stateless_normal(y.shape, seed=[0, 3]))
        dx, dw = tf.gradients(y, [x, w], dy)
        # Tiny fetches: a corner (the op still runs whole), so no copy is timed.
        fetches = {"forward": y[0, 0, 0, 0], "input_grad": dx[0, 0, 0, 0],
                   "weight_grad": tf.reshape(dw, [-1])[0]}
        init = v1.global_variables_initializer()
    return graph, init, fetches


def median_seconds(session, fetch, repeats):
    session.run(fetch)  # warm-up: oneDNN picks and caches its kernel
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(fetch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(input_size=572, depth=4, base_filters=64, repeats=4, log=print):
    """{"layers": [...], "bound_s": ..., "flops": ...} for one training step of batch 1."""
    rows, bound = [], 0.0
    for i, (name, kind, size, cin, cout) in enumerate(
            flops.layers(input_size, depth, base_filters)):
        graph, init, fetches = layer_graph(kind, size, cin, cout)
        if i == 0:
            fetches.pop("input_grad")  # nothing needs the gradient w.r.t. the images
        with v1.Session(graph=graph) as session:
            session.run(init)
            seconds = {part: median_seconds(session, f, repeats) for part, f in fetches.items()}
        layer_flops = flops.flops_of(kind, size, cin, cout)
        row = {"layer": name, "kind": kind, "input": [size, size, cin], "out_channels": cout,
               "gflop": layer_flops / 1e9, "seconds": seconds,
               "gflops": {p: layer_flops / s / 1e9 for p, s in seconds.items()}}
        rows.append(row)
        bound += sum(seconds.values())
        log(f"| {name} | {size}x{size}x{cin} -> {cout} | {layer_flops / 1e9:.2f} | "
            + " | ".join(f"{row['gflops'][p]:.0f}" if p in seconds else "-" for p in PARTS)
            + " |")
    step_flops = flops.train_step_flops(input_size, depth, base_filters)
    return {"layers": rows, "bound_s": bound, "step_gflop": step_flops / 1e9,
            "bound_gflops": step_flops / bound / 1e9, "base": base_filters, "depth": depth,
            "size": input_size}


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--base", type=cli.positive_int, default=64,
                        help="base filters (default: %(default)s)")
    parser.add_argument("--depth", type=cli.positive_int, default=4)
    parser.add_argument("--size", type=cli.positive_int, default=572,
                        help="input tile (default: %(default)s)")
    parser.add_argument("--repeats", type=cli.positive_int, default=4)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if not unet.is_valid_input_size(args.size, args.depth):
        raise cli.UsageError(f"--size {args.size} is not valid for depth {args.depth}; "
                             f"try {unet.valid_input_size(args.size, args.depth)}")
    print("| layer | input -> out ch | GFLOP | forward GFLOP/s | input grad GFLOP/s | "
          "weight grad GFLOP/s |\n|---|---|---|---|---|---|")
    result = measure(args.size, args.depth, args.base, args.repeats)
    print(f"\nconvs alone, each at its solo speed: {result['bound_s']:.3f} s per training step "
          f"({result['step_gflop']:.1f} GFLOP), {result['bound_gflops']:.1f} GFLOP/s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
