"""utils/runlock.py: one training per run directory, stale and foreign locks."""

import json
import os
import subprocess
import sys

import pytest

from core import rundir
from utils import runlock
from utils.cli import UserError


def test_stale_and_foreign_locks(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    lock = rundir.lock_path(str(run))
    with open(lock, "w") as f:
        json.dump({"pid": dead.pid, "host": runlock.socket.gethostname()}, f)
    with runlock.RunLock(str(run), lock):  # the dead pid's lock is stale: taken over
        assert runlock.read_owner(lock)["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"in use by pid {os.getpid()}"):
            runlock.RunLock(str(run), lock).acquire()
    assert not os.path.exists(lock)
    with open(lock, "w") as f:
        json.dump({"pid": 1, "host": "gpu-box-7"}, f)
    with pytest.raises(UserError, match="locked by pid 1 on gpu-box-7.*delete .*train.lock"):
        runlock.RunLock(str(run), lock).acquire()
