"""Shared command-line plumbing: one clear error line instead of a traceback.

Every entry point raises `UserError` for bad input (a missing file, a bad flag,
a corrupt record) and is run through `run_main`, which prints

    error: <what is wrong and how to fix it>

on stderr and exits non-zero. Usage errors (bad flags) exit 2 like argparse;
everything else the user can fix exits 1. Unexpected exceptions still show a
traceback, because those are our bugs and the traceback is what we need.
"""

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Callable

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


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one value must be, written once: its flag's argparse type (`parse`) and the
    checks of Python callers and stored files (core/config.py's `check`) all ask it.

    kind: int, float, str or bool; `ok(value)` says whether a value of that kind is
    allowed, `wanted` completes "must be ..."; `also` are values taken as they are
    ('auto', None); `choices` makes a flag an argparse choice.

    `flag`, where given, is the looser rule the flag's argparse type checks: a value it
    lets through but this rule refuses is named by `check`'s "--name must be ..." line.
    That keeps the two lines such flags have always printed (--hue -1: "argument --hue:
    must be >= 0"; --hue 0.7: "--hue must be in [0, 0.5], got 0.7").
    """

    kind: type
    ok: Callable = lambda value: True
    wanted: str = ""
    note: str = ""  # why a limit value is allowed, e.g. " (0 = none)"
    also: tuple = ()
    choices: tuple = ()
    flag: "Rule | None" = None

    def valid(self, value):
        if value in self.also and not isinstance(value, bool | int | float):
            return True
        if self.kind is bool or isinstance(value, bool):
            return self.kind is bool and isinstance(value, bool)
        kinds = (int, float) if self.kind is float else self.kind
        return isinstance(value, kinds) and (value in self.choices if self.choices
                                             else self.ok(value))

    def parse(self, text):
        """The argparse type: text as kind if the rule allows it, else the flag's error
        (what it must be, never the type function's name, argparse's own message)."""
        if self.flag is not None:
            return self.flag.parse(text)
        if text in self.also:
            return text
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self.wanted}, got {text}")
        return value


POSITIVE_INT = Rule(int, lambda v: v > 0, "a positive integer")
NON_NEGATIVE_INT = Rule(int, lambda v: v >= 0, ">= 0")
NON_NEGATIVE_FLOAT = Rule(float, lambda v: v >= 0 and math.isfinite(v), ">= 0")  # no nan, inf
POSITIVE_FLOAT = Rule(float, lambda v: v > 0, "a positive number")
FRACTION = Rule(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
POSITIVE_FLOAT_OR_AUTO = Rule(float, lambda v: v > 0, "a positive number or 'auto'",
                              also=("auto",))
RATE = Rule(float, lambda v: 0.0 <= v < 1.0, "at least 0 and below 1")

positive_int = POSITIVE_INT.parse
non_negative_int = NON_NEGATIVE_INT.parse
non_negative_float = NON_NEGATIVE_FLOAT.parse
positive_float = POSITIVE_FLOAT.parse
positive_float_or_auto = POSITIVE_FLOAT_OR_AUTO.parse
fraction = FRACTION.parse
rate = RATE.parse


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


def add_max_pixels_flag(parser, default, what):
    """--max-pixels, the one pixel cap of predict, evaluate and export: `what` it refuses."""
    parser.add_argument("--max-pixels", type=positive_int, default=default, help=(
        f"{what} (height x width, read from the header before decoding; default "
        "%(default)s, about 2.5 GB of peak memory)"))


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
