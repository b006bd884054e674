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


PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "tokbin", "sample", ".dvc/config",
                 ".dvc/.gitignore", ".dvcignore", ".gitignore"]


def make_project(dest: Path, **params) -> Path:
    """A fresh git + DVC repo at `dest` holding the project's pipeline, params overridden by
    `params` given as {"section__key": value} (e.g. download__dataset="./sample")."""
    import shutil
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    set_params(dest, **params)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], dest)
    return dest


def set_params(repo: Path, **params) -> None:
    """Overrides params.yaml keys given as section__key=value."""
    import yaml
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in params.items():
        section, name = key.split("__")
        data[section][name] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def sample_project(tmp_path) -> Path:
    """The project, configured to build the bundled sample dataset."""
    return make_project(tmp_path / "project", download__dataset="./sample")
