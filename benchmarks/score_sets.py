"""Score one run on several record sets in one process (the quality benchmark's scorer).

    python -m benchmarks.score_sets --run runs/base --checkpoint runs/base \
        --set tune='data/tune-*' --set pets='data/pets-*' --threshold 0.5 [--flip-test]

The quality benchmark scores every recipe on five sets. One evaluate.py per set would pay
TensorFlow's start-up (about 7 s of a core) five times per recipe, so this calls
evaluate.evaluate on each set in turn, exactly as `evaluate.py --run R --records GLOB
--no-adopt-threshold --no-progress` with the same run flags (cli.add_run_flags) and
--flip-test would, and prints one line per set:

    scored <name> <report.json>

A glob that matches nothing stops it before any scoring; a bad record stops it with
evaluate.py's own one-line error, the reports of the sets before it complete (each is
written atomically, and its line printed), the later ones not written.
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import argparse
import sys

import evaluate
from datasets import pipeline
from utils import cli


def named_glob(text):
    """--set's argparse type: 'NAME=GLOB' -> (name, glob)."""
    name, sep, pattern = text.partition("=")
    if not sep or not name or not pattern:
        raise argparse.ArgumentTypeError(f"must be NAME=GLOB, got {text!r}")
    return name, pattern


def score_sets(run_dir, sets, threshold, checkpoint=None, batch_size=4, flip_test=False):
    """Yield (name, Report): evaluate.evaluate of run_dir's checkpoint (evaluate.py's
    default when None) on every (name, glob) of sets, in order, never adopting a
    threshold. Every glob is listed first, so a missing set fails before minutes of
    scoring the others."""
    for _, pattern in sets:
        pipeline.list_records(pattern)
    for name, pattern in sets:
        yield name, evaluate.evaluate(run_dir, pattern, checkpoint, threshold, batch_size,
                                      adopt=False, progress=False, flip_test=flip_test)


def main(argv=None):
    parser = cli.ArgumentParser(
        description="Score a run's checkpoint on several record sets in one process.")
    cli.add_run_flags(parser, "threshold of the reports' main table (default: %(default)s)",
                      0.5, progress=False)
    parser.add_argument("--set", dest="sets", type=named_glob, action="append", required=True,
                        metavar="NAME=GLOB", help="a set to score (repeat); quote the glob")
    parser.add_argument("--flip-test", action="store_true",
                        help="average each image's map with its mirror's, as evaluate.py's")
    args = parser.parse_args(argv)
    for name, report in score_sets(args.run_dir, args.sets, args.threshold, args.checkpoint,
                                   args.batch_size, args.flip_test):
        print(f"scored {name} {report.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
