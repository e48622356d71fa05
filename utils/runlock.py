"""One training per run directory: a lock file naming its owner, stale locks detected.

    with runlock.RunLock(run_dir, rundir.lock_path(run_dir)):
        ...train...

holds an exclusive fcntl.flock on the lock file (core/rundir.py names it, in the run
dir) holding {"pid", "host", "started", "argv"}, so a second training on the run dir
refuses with one line naming the owner instead of interleaving checkpoints with the
first (docs/reliability.md). The kernel
drops a flock when its process dies, even by SIGKILL, so a killed run's lock is taken
over. Where flock is a no-op (some network mounts) the pid + host are the fallback: a
lock from another host is honoured until the user removes it, because we cannot see
that machine's processes.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time

from utils.cli import UserError

log = logging.getLogger("runlock")


def read_owner(path):
    """The owner dict stored in a lock file, or None if absent or unreadable."""
    try:
        with open(path) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError, OverflowError):  # gone, or not a pid
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(owner):
    if not owner:
        return "another process"
    return (f"pid {owner.get('pid')} on {owner.get('host')} (started "
            f"{owner.get('started', '?')})")


class RunLock:
    """Context manager holding the lock file `path` of run_dir; UserError if it is taken."""

    def __init__(self, run_dir, path):
        self.run_dir, self.path = run_dir, path

    def acquire(self):
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.path} ({e.strerror}): choose a "
                            "writable --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UserError(f"cannot lock {self.path} ({e.strerror})") from None
            raise UserError(f"{self.run_dir} is in use by {_describe(read_owner(self.path))}: "
                            "wait for it to finish or stop it, or train into another "
                            "--run-dir") from None
        owner = read_owner(self.path)
        me = socket.gethostname()
        if owner and owner.get("pid") != os.getpid():
            if owner.get("host") == me and pid_alive(owner.get("pid")):
                # flock says free but the owner lives: flock is not enforced on this mount.
                os.close(fd)
                raise UserError(f"{self.run_dir} is in use by {_describe(owner)}: wait for it "
                                "to finish or stop it, or train into another --run-dir")
            if owner.get("host") not in (None, me):
                os.close(fd)
                raise UserError(f"{self.run_dir} is locked by {_describe(owner)}: if no "
                                f"training runs there any more, delete {self.path}")
            log.warning("taking over the stale lock of %s (that run was killed)",
                        _describe(owner))
        info = {"pid": os.getpid(), "host": me, "argv": sys.argv,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot write the lock file {self.path} ({e.strerror}): free "
                            "some disk space or choose a writable --run-dir") from None
        self._fd = fd
        return self

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        # Remove the file before unlocking, so nobody sees our stale pid afterwards.
        with contextlib.suppress(OSError):
            if (read_owner(self.path) or {}).get("pid") == os.getpid():
                os.remove(self.path)
        os.close(self._fd)  # also drops the flock

