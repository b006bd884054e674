"""Test setup: offline tiktoken vocabularies, no DVC analytics, shared fixtures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = ROOT.parent / "shared" / "tiktoken-cache"

if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def gpt2():
    import tiktoken
    return tiktoken.get_encoding("gpt2")


def write_parquet_dataset(root: Path, splits: dict[str, list], column: str = "text") -> Path:
    """A local dataset directory in Hub layout: root/data/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, texts in splits.items():
        pq.write_table(pa.table({column: pa.array(texts, type=pa.string())}),
                       root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=7)
    return root


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs a command (python -m ..., dvc, git) with this interpreter's environment."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result
