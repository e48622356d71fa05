"""Shared command-line plumbing: one clear error line instead of a traceback.

Every entry point raises `UserError` for bad input (a missing file, a bad flag,
a corrupt record) and is run through `run_main`, which prints

    error: <what is wrong and how to fix it>

on stderr and exits non-zero. Usage errors (bad flags) exit 2 like argparse;
everything else the user can fix exits 1. Unexpected exceptions still show a
traceback, because those are our bugs and the traceback is what we need.
"""

import argparse
import logging
import math
import sys

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """An error the user can fix; its message is printed as one line."""

    def __init__(self, message, exit_code=EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(UserError):
    """A bad flag or flag combination (exit 2, like argparse)."""

    def __init__(self, message):
        super().__init__(message, EXIT_USAGE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as one `error:` line with exit code 2."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _number(text, kind, ok, wanted):
    """text as kind if ok(value), else the flag's error: what it must be, never the
    type function's name (argparse's own message for a ValueError)."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value


def positive_int(text):
    return _number(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, ">= 0")


def non_negative_float(text):
    # also refuses nan and inf
    return _number(text, float, lambda v: v >= 0 and math.isfinite(v), ">= 0")


def positive_float(text):
    return _number(text, float, lambda v: v > 0, "a positive number")


def positive_float_or_auto(text):
    return text if text == "auto" else _number(text, float, lambda v: v > 0,
                                                 "a positive number or 'auto'")


def fraction(text):
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def rate(text):
    return _number(text, float, lambda v: 0.0 <= v < 1.0, "at least 0 and below 1")


def add_run_flags(parser, threshold_help, threshold_default=None, batch_help="tiles per "
                  "network run", progress=True):
    """The flags every command that reads a trained run shares, with the same names and checks.

    --run-dir (alias --run, its old name), --checkpoint, --threshold (checked
    here only, by `fraction`), --batch-size and, when the command shows a
    progress bar, --no-progress. Parsed into args.run_dir, .checkpoint, ...
    """
    a = parser.add_argument
    a("--run-dir", "--run", dest="run_dir", required=True,
      help="run directory written by train.py (--run is the old name)")
    a("--checkpoint", help="checkpoint prefix or directory (default: the run's best/, else its "
      "latest; one torn by a crash is passed over for the newest that reads)")
    a("--threshold", type=fraction, default=threshold_default, help=threshold_help)
    a("--batch-size", type=positive_int, default=4, help=f"{batch_help} (default: %(default)s)")
    if progress:
        a("--no-progress", action="store_true", help="hide the progress bar")


def setup_logging(verbose=False):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(main, argv=None):
    """Call `main(argv)` and turn UserError / Ctrl-C into an exit code."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if code is None else code
