"""Failing cleanly: the one useful line of an error, and files written whole or not at all.

`summary` is the single rule for reducing any error (TensorFlow's long runtime
messages included) to the line a user needs; `disk_problem` recognises "no space",
"file too large", "permission denied" and "read-only file system" from Python or
TensorFlow (core/rundir.py turns them into one `error:` line while a run trains).
`write_atomic`, `write_json` and `atomic_dir` are the only way the project writes
a file or directory in place: the content goes to `temp_path(path)` first and is
renamed over `path` when complete, so a crash or a full disk never leaves half a
file that looks whole.

The exceptions themselves (`cli.UserError`, `cli.UsageError`) stay in utils/cli.py
beside `run_main`, which turns them into the `error:` line and the exit code:
they are the command-line contract every entry point already imports.
"""

import contextlib
import errno
import json
import os
import re
import shutil

# Lines of a TensorFlow error that say where it happened, not what went wrong.
_WHERE = ("Graph execution error", "Detected at node", "File ", "Node:", "[[")
_ASSERTION = re.compile(r"assertion failed: \[([^\]]*)\]")
_ITERATOR = re.compile(r"^Error in user-defined function.*?Iterator(::\w+)+: ")
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
               errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
               errno.EDQUOT: "disk quota exceeded", errno.EPERM: "operation not permitted"}
DISK_WORDS = ("No space left", "File too large", "Permission denied", "Read-only file system",
              "Disk quota exceeded", "Operation not permitted")


def summary(error):
    """The one line of an error (TensorFlow's or any other) that says what went wrong.

    TensorFlow messages also list graph nodes and, inside tf.data, the iterator
    chain; a failed tf.debugging assertion is reduced to its own message, and
    the record reader's truncated/corrupted record to what that means.
    """
    text = getattr(error, "message", None) or str(error)
    line = next((s.strip() for s in text.splitlines()
                 if s.strip() and not s.strip().startswith(_WHERE)), "")
    if not line:
        return type(error).__name__
    # TensorFlow's reader says "truncated record at N' failed with ..." / "corrupted record at N".
    if "truncated record" in line:
        return "truncated record: the shard ends inside it"
    if "corrupted record" in line:
        return "corrupted record: its checksum does not match"
    found = _ASSERTION.search(line)
    if found:
        return found.group(1)
    return _ITERATOR.sub("", line)[:300]


def temp_path(path):
    """Where `path` is written before the rename: beside it, hidden, one per process.

    The `.tmp` ending keeps it out of record globs (pipeline.list_records skips it).
    """
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{os.getpid()}.tmp")


def write_atomic(path, content):
    """Write str or bytes, or call content(binary file), into path: all of it or nothing.

    OSError reaches the caller (which names the file in its error line); the
    temporary file is removed first.
    """
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def write_json(path, obj, sort_keys=True):
    """write_atomic of obj as indented JSON with a final newline."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory name (not yet created) that replaces path on success.

    The old directory is moved aside and removed only after the new one is in
    place; on an exception the temporary one is removed and path is untouched.
    """
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        old = temp_path(path) + ".old"
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def disk_problem(error):
    """("what", "where") if error says the disk refused a write, else None."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return DISK_ERRNOS[error.errno], error.filename
    # TensorFlow reports it as OutOfRange/Unknown/..., and its event writer thread even as
    # IndexError: "<path>; File too large".
    text = (getattr(error, "message", None) or str(error)).strip()
    for words in DISK_WORDS:
        if words.lower() in text.lower():
            head = text.splitlines()[0].split(";")[0].strip()
            return words.lower(), head if head.startswith(os.sep) else None
    return None
