"""What dvc.lock records of the pipeline's outputs (and dvc.yaml of their caching), and the md5
DVC gives a file.

dvc.lock lists, per stage, each output's path (relative to the project root) with its ``md5``
(a directory's ends in ``.dir``: the md5 of its listing) and ``size``. `verify` compares the
workspace against it; `pinned_path` reads it from git to fetch a data version.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from tokbin.errors import TokbinError

LOCK_FILE = "dvc.lock"


def find_dvc_lock(folder: Path) -> Path | None:
    """The dvc.lock of the project holding `folder`: the nearest one in it or above it."""
    for candidate in [folder, *folder.parents]:
        if (candidate / LOCK_FILE).is_file():
            return candidate / LOCK_FILE
    return None


def lock_stage_outputs(text: str, where: str) -> dict[str, list[dict]]:
    """{stage: [{"path", "md5", "size", ...}, ...]}: the outputs a dvc.lock's text records."""
    lock = _load_yaml(text, where)
    return {name: [out for out in stage.get("outs", []) if "md5" in out]
            for name, stage in lock.get("stages", {}).items()}


def lock_outputs(text: str, where: str) -> dict[str, dict]:
    """{output path: {"md5", "size", ...}} of every output in a dvc.lock's text."""
    return {out["path"]: out for outs in lock_stage_outputs(text, where).values() for out in outs}


def uncached_outputs(text: str, where: str) -> set[str]:
    """The outputs a dvc.yaml's text declares with `cache: false` (outs, metrics, plots): DVC
    keeps no copy of them in its cache."""
    paths = set()
    for stage in _load_yaml(text, where).get("stages", {}).values():
        for entry in (e for kind in ("outs", "metrics", "plots") for e in stage.get(kind, [])):
            if isinstance(entry, dict):
                paths |= {path for path, options in entry.items()
                          if (options or {}).get("cache", True) is False}
    return paths


def _load_yaml(text: str, where: str) -> dict:
    import yaml  # here: the loader's light install (tokbin[loader]) has no PyYAML
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise TokbinError(f"{where} is not valid YAML ({e}); restore it from git") from None


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file: dvc.lock's `hash: md5` is the plain md5 of the bytes
    (DVC 2's md5-dos2unix differs only for text files with CRLF line ends, which tokbin never
    writes)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()
