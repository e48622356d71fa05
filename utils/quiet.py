"""Import TensorFlow without its start-up noise; import this first in entry points.

TensorFlow 2.21 prints several lines on every start (oneDNN notice, "Could not
find cuda drivers", CPU feature hints, a failed cuInit on machines without a
GPU), some before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL cannot
silence them. They would bury the one `error:` line a bad input gets. So the
import and the first device query run with file descriptor 2 captured; lines
known to be harmless are dropped, everything else (e.g. a CUDA library that
fails to load on a GPU machine) is written back to stderr unchanged.

    from utils import quiet  # noqa: F401  (first: before anything imports TensorFlow)
    # isort: split

A Ctrl-C during those seconds of start-up, before cli.run_main is reached, prints
the same one `interrupted` line run_main prints instead of an import traceback.
"""

import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_HARMLESS = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|Could not find cuda drivers|cpu_feature_guard|To enable the following instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags|failed call to cuInit")


def _captured(fn):
    """Run fn() with fd 2 redirected to a temporary file; return (result, text)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            result = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [line for line in text.splitlines() if not _HARMLESS.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
    return result


def _interrupted_quietly(kind, value, tb, report=sys.excepthook):
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)  # Python still exits as killed by SIGINT
    else:
        report(kind, value, tb)


def _import_tensorflow():
    import tensorflow as tf

    tf.config.list_physical_devices()  # triggers the CUDA probe (and its cuInit line) now
    return tf


sys.excepthook = _interrupted_quietly
if "tensorflow" not in sys.modules:
    _captured(_import_tensorflow)
