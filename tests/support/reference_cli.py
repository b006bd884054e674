"""The command line the reference pipelines (seed notebook, llm.c-style) share: they take a
dataset directory and an output directory, and print their stage times as JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


def run_reference(prepare: Callable[[Path, Path, int | None], dict], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num-proc", type=int, default=None)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(prepare(args.dataset_dir, args.out_dir, args.num_proc)))
