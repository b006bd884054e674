"""What every stage script shares: run `main`, turning a TokbinError into one clear line."""
from __future__ import annotations

import sys
from typing import Callable

from tokbin.errors import TokbinError


def run_stage(name: str, main: Callable[[], None]) -> None:
    try:
        main()
    except TokbinError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)
