"""The DVC stages: thin scripts that read params.yaml, call tokbin and report."""
# `python -m stages.<name>` runs this before the stage module's own (slow) imports: a Ctrl-C
# from here until run_stage() starts the stage ends it with one line instead of a traceback.
import os as _os
import signal as _signal


def _interrupted_before_start(signum, frame):
    name = _os.environ.get("DVC_STAGE", "stage")  # DVC sets it for every stage command
    _os.write(2, f"{name}: interrupted before it started; nothing was written\n".encode())
    _os._exit(130)


if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_before_start)
