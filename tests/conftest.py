"""Shared test setup: quiet TensorFlow, make the project importable, let Ctrl-C through."""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A shell starts a background job (`cmd &`, nohup) with SIGINT ignored, and every process
# it starts inherits that, so the Ctrl-C tests would see nothing happen. A handler, unlike
# an ignore, is reset to the default in children, where Python installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
