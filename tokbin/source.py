"""Where the text comes from: a Hugging Face Hub dataset repo or a local directory laid out
like one, copied into data/raw with its source.json.

Layout (the Hub's convention for data files): ``data/<split>-*.parquet`` (or ``.jsonl``,
``.txt``), also ``data/<split>.<ext>``, ``<split>-*.<ext>`` and ``<split>.<ext>`` at the top.
A split's files are read in name order. Parquet and JSON Lines rows are documents; a ``.txt``
file holds one document per line, as Hugging Face's ``text`` builder reads it. No dataset
script or other remote code is ever run: only data files are fetched and parsed.
"""
from __future__ import annotations

import shutil
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from tokbin import hub
from tokbin.errors import TokbinError
from tokbin.format import SourceRecord, write_source
from tokbin.readers import EXTENSIONS, check_text_column


def split_file_patterns(split: str) -> list[str]:
    return [f"data/{split}-*", f"data/{split}.*", f"{split}-*", f"{split}.*"]


def select_split_files(names: list[str], split: str) -> list[str]:
    """The data files of `split` among repo-relative `names`, by the first pattern that matches."""
    for pattern in split_file_patterns(split):
        folder = PurePosixPath(pattern).parent
        hits = sorted(n for n in names if fnmatchcase(n, pattern) and n.endswith(EXTENSIONS)
                      and PurePosixPath(n).parent == folder)
        if hits:
            kinds = {PurePosixPath(h).suffix for h in hits}
            if len(kinds) > 1:
                raise TokbinError(f"split {split!r} mixes file types {sorted(kinds)} "
                                  f"({', '.join(hits)}); keep one type per split")
            return hits
    return []


def is_local_dataset(dataset: str) -> bool:
    return dataset.startswith(("/", "./", "../", "~")) or Path(dataset).exists()


def materialize(dataset: str, revision: str, splits: list[str], text_column: str,
                out: Path) -> SourceRecord:
    """Fills `out` with the split files of `dataset`, in its Hub layout, plus source.json.

    Returns the source record: dataset, requested revision and resolved commit sha (both None
    for local directories) and the files taken.
    """
    if is_local_dataset(dataset):
        files = _copy_local(Path(dataset).expanduser(), splits, out)
        record = SourceRecord(dataset, None, None, files)
    else:
        sha, names = hub.resolve(dataset, revision)
        files = {split: select_split_files(names, split) for split in splits}
        check_splits_found(files, f"Hub dataset {dataset}@{sha}", names)
        hub.fetch(dataset, sha, [name for split in splits for name in files[split]], out)
        record = SourceRecord(dataset, revision, sha, files)
    for split in splits:
        for name in files[split]:
            check_text_column(out / name, text_column)
    write_source(out, record)
    return record


def local_split_files(root: Path, splits: list[str]) -> dict[str, list[str]]:
    """Each split's data files in a local dataset directory, relative to it; every split must
    have some."""
    if not root.is_dir():
        raise TokbinError(f"download.dataset {str(root)!r} is not a directory: give a local "
                          "directory laid out like a Hub dataset repo (data/<split>-*.parquet) "
                          "or a Hub dataset id such as roneneldan/TinyStories")
    names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    files = {split: select_split_files(names, split) for split in splits}
    check_splits_found(files, f"local directory {root}", names)
    return files


def _copy_local(root: Path, splits: list[str], out: Path) -> dict[str, list[str]]:
    files = local_split_files(root, splits)
    for split_files in files.values():
        for name in split_files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, out / name)
    return files


def check_splits_found(files: dict[str, list[str]], where: str, names: list[str]) -> None:
    missing = [split for split, found in files.items() if not found]
    if missing:
        data_files = sorted(n for n in names if n.endswith(EXTENSIONS))[:10]
        raise TokbinError(f"split {missing[0]!r} has no data files in {where} (looked for "
                          f"{', '.join(split_file_patterns(missing[0]))} ending in "
                          f"{'/'.join(EXTENSIONS)}; data files there: {data_files or 'none'}); "
                          "fix download.splits or the files' names")
