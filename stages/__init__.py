"""The DVC stages: thin scripts that read params.yaml, call tokbin and report."""
# `python -m stages.<name>` runs this before the stage module's own (slow) imports: a Ctrl-C or
# SIGTERM from here until run_stage() starts the stage ends it with one line, not a traceback.
import os as _os
import signal as _signal


def _interrupted_before_start(signum, frame):
    name = _os.environ.get("DVC_STAGE", "stage")  # DVC sets it for every stage command
    _os.write(2, f"{name}: interrupted before it started; nothing was written\n".encode())
    _os._exit(128 + signum)


if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_before_start)
if _signal.getsignal(_signal.SIGTERM) is _signal.SIG_DFL:
    _signal.signal(_signal.SIGTERM, _interrupted_before_start)
