"""What every stage script shares: remove the temporaries killed stages left beside any stage's
outputs, then run `main`, turning a TokbinError into one clear line, and a Ctrl-C or a SIGTERM
(timeout, docker stop, Kubernetes, Slurm) into one too."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Callable

import yaml

from tokbin.errors import TokbinError
from tokbin.fsio import remove_stale_temps


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where a Ctrl-C would be, so it unwinds the same way (every temporary
    removed, the executor's workers stopped)."""


def _terminate(signum, frame) -> None:
    raise Terminated


def run_stage(name: str, main: Callable[[], None]) -> None:
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        # stages/__init__ ended the process on a Ctrl-C during the imports; from here on it
        # is a KeyboardInterrupt, so that every output's temporary is cleaned up
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # every stage's, not only this one's: DVC may restore a killed stage from its run cache
        for folder in output_folders(Path("dvc.yaml")):
            remove_stale_temps(folder)
        main()
    except TokbinError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"{name}: interrupted; no output was written (`dvc repro` runs it again)",
              file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT))
    # The outputs are complete: a Ctrl-C or SIGTERM while the interpreter exits (joining worker
    # threads) would kill it by that signal ("exited with -2"), and DVC would not record the
    # finished stage. Ignored, DVC records it and stops at the next stage.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def output_folders(dvc_yaml: Path) -> set[Path]:
    """Where the stages of `dvc_yaml` write temporaries: beside each output, and inside each
    output folder (reports/doc_lengths is written file by file). None without a readable
    dvc.yaml: the check stage reports that one."""
    try:
        stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"].values()
        outs = [Path(next(iter(out)) if isinstance(out, dict) else out) for stage in stages
                for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, StopIteration):
        return set()
    return {folder for out in outs for folder in (out.parent, out)}
