"""utils/cli.py, utils/quiet.py: one error line, the right exit codes, a quiet TensorFlow start."""

import os
import signal
import subprocess
import sys

import pytest

from utils import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 1800  # s: only a hung subprocess takes this long, also on a 10x slower machine


def _main_raising(error):
    def main(argv):
        raise error
    return main


@pytest.mark.parametrize("error,code", [(cli.UserError("no such file x.json: pass --coco-dir"), 1),
                                        (cli.UsageError("--epochs must be > 0"), 2),
                                        (KeyboardInterrupt(), 130)])
def test_run_main_turns_errors_into_one_line_and_exit_code(error, code, capsys):
    assert cli.run_main(_main_raising(error)) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    if isinstance(error, cli.UserError):
        assert err == f"error: {error}\n"


def test_parser_errors_are_usage_errors():
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=cli.positive_int, required=True)
    with pytest.raises(cli.UsageError, match=r"--n: .*positive integer.*see tool --help"):
        parser.parse_args(["--n", "0"])
    with pytest.raises(cli.UsageError, match="required"):
        parser.parse_args([])


@pytest.mark.parametrize("fn,text,ok", [(cli.fraction, "1.0", True), (cli.fraction, "1.5", False),
                                        (cli.non_negative_int, "0", True),
                                        (cli.positive_float, "0", False),
                                        (cli.rate, "0", True), (cli.rate, "0.5", True),
                                        (cli.rate, "1", False), (cli.rate, "-0.1", False),
                                        (cli.rate, "nan", False),
                                        (cli.positive_int, "1.5", False),
                                        (cli.positive_float_or_auto, "auto", True)])
def test_argument_types(fn, text, ok):
    if ok:
        fn(text)
    else:
        with pytest.raises(Exception, match="must be"):
            fn(text)


@pytest.mark.parametrize("kind,wanted", [
    (cli.positive_int, "a positive integer"), (cli.non_negative_int, ">= 0"),
    (cli.non_negative_float, ">= 0"), (cli.positive_float, "a positive number"),
    (cli.positive_float_or_auto, "a positive number or 'auto'"), (cli.fraction, "in [0, 1]"),
    (cli.rate, "at least 0 and below 1")])
def test_text_for_a_number_says_what_the_flag_wants(kind, wanted):
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=kind)
    with pytest.raises(cli.UsageError) as raised:
        parser.parse_args(["--n", "abc"])
    # Not argparse's "invalid positive_int value: 'abc'": the function's name means nothing.
    assert str(raised.value) == f"argument --n: must be {wanted}, got abc (see tool --help)"


def test_a_rule_with_a_flag_rule_parses_by_it_and_checks_by_its_own():
    rule = cli.Rule(float, lambda v: v <= 0.5, "in [0, 0.5]", flag=cli.NON_NEGATIVE_FLOAT)
    assert rule.parse("0.7") == 0.7  # the flag lets it through: config.check names the range
    with pytest.raises(Exception) as raised:
        rule.parse("-1")
    assert str(raised.value) == "must be >= 0, got -1"
    assert [rule.valid(v) for v in (0.5, 0.7)] == [True, False]


def test_quiet_tensorflow_start_leaves_stderr_empty():
    code = ("from utils import quiet\nimport tensorflow as tf\n"
            "with tf.compat.v1.Session() as s: print(s.run(tf.constant(41) + 1))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0 and done.stdout == "42\n"
    assert done.stderr == ""


def test_quiet_replays_unknown_stderr_lines():
    code = ("import os, sys\nsys.modules.pop('tensorflow', None)\nfrom utils import quiet\n"
            "quiet._captured(lambda: os.write(2, b'real warning\\ncpu_feature_guard x\\n'))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG_GUARD)
    assert done.returncode == 0 and done.stderr == "real warning\n"


def test_ctrl_c_while_tensorflow_imports_is_one_line(tmp_path):
    # A stand-in TensorFlow whose import is interrupted, as by a Ctrl-C in its seconds
    # of start-up, while utils/quiet.py holds stderr.
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        "import signal\nsignal.raise_signal(signal.SIGINT)\n")
    done = subprocess.run([sys.executable, "-c", "from utils import quiet"], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=HANG_GUARD)
    assert done.stderr == "interrupted\n"
    assert done.returncode == -signal.SIGINT  # as Python exits on Ctrl-C: a shell shows 130


def test_run_flags_are_shared_and_run_is_an_alias_of_run_dir():
    parser = cli.ArgumentParser(prog="tool")
    cli.add_run_flags(parser, "threshold", threshold_default=0.5, progress=False)
    for flag in ("--run-dir", "--run"):
        args = parser.parse_args([flag, "logs/a", "--checkpoint", "c", "--batch-size", "2"])
        assert (args.run_dir, args.checkpoint, args.threshold, args.batch_size) == \
            ("logs/a", "c", 0.5, 2)
    assert not hasattr(args, "no_progress")
    for bad in (["--threshold", "1.5"], ["--threshold", "nan"], ["--batch-size", "0"]):
        with pytest.raises(cli.UsageError, match="must be"):
            parser.parse_args(["--run", "r", *bad])
    with pytest.raises(cli.UsageError, match="required: --run-dir/--run"):
        parser.parse_args([])
    parser = cli.ArgumentParser(prog="tool")
    cli.add_run_flags(parser, "threshold")
    args = parser.parse_args(["--run-dir", "r", "--no-progress"])
    assert args.no_progress and args.threshold is None and args.checkpoint is None
