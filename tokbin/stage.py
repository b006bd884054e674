"""What every stage script shares: run `main`, turning a TokbinError into one clear line, and a
Ctrl-C into one too."""
from __future__ import annotations

import signal
import sys
from typing import Callable

from tokbin.errors import TokbinError


def run_stage(name: str, main: Callable[[], None]) -> None:
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        # stages/__init__ ended the process on a Ctrl-C during the imports; from here on it
        # is a KeyboardInterrupt, so that every output's temporary is cleaned up
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except TokbinError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written (`dvc repro` runs it again)",
              file=sys.stderr)
        sys.exit(130)
    # The outputs are complete: a Ctrl-C while the interpreter exits (joining worker threads)
    # would kill it by SIGINT ("exited with -2"), and DVC would not record the finished stage.
    # Ignored, DVC records it and stops at the next stage.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
