"""Where the text comes from: a Hugging Face Hub dataset repo, a local directory laid out like
one, or such a folder in object storage (s3://, gs://; tokbin.buckets); its configured splits'
data files copied into data/raw with its source.json, or, with ``download.materialize:
false``, only recorded there (each file's size and checksum or version, read where it is by
tokbin.remote).

Which files a split is, and which reader reads them, is what ``datasets.load_dataset(dataset,
config, data_files=...)`` would take (tokbin.resolve asks datasets itself): README configs and
their globs, split names in file and folder names, the default config. Only those files are
fetched, at the resolved commit, several at once (tokbin.hub). No dataset script or other
remote code is ever run: only data files are fetched and parsed.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from tokbin import buckets, hub
from tokbin.errors import TokbinError
from tokbin.format import (HOLDOUT_BIN, HOLDOUT_FROM, SourceRecord, Stream, bin_splits,
                           write_source)
from tokbin.readers import Reading, check_columns, check_file_type
from tokbin.location import dataset_location
from tokbin.remote import identities, map_files, record_file

def materialize(dataset: str, revision: str, splits: list[str] | dict[str, str],
                text_column: str, out: Path, *, config: str | None = None,
                data_files: dict[str, list[str]] | None = None,
                copy: bool = True) -> SourceRecord:
    """Fills `out` with the data files of `dataset`'s splits, at their repo paths, plus
    source.json; with `copy` False, source.json alone, recording where each file is and what
    it is. `splits`: bin names, or {bin name: dataset split}.

    Returns the source record: dataset, requested revision and resolved commit sha (both None
    for local directories and object storage), config, files, reader and (not copied) stream.
    """
    from tokbin.resolve import resolve_files  # imports datasets: seconds, download stage only

    bins = bin_splits(splits)
    bucket, root = dataset_location(dataset, revision, copy)
    sha = hub.resolve(dataset, revision) if bucket is None and root is None else None
    if bucket:
        resolution = buckets.resolve(bucket, config, data_files)
    else:
        resolution = resolve_files(dataset, root, sha, config, data_files)
    _check_splits(bins, resolution.files, dataset, resolution.config)
    files = {split: resolution.files[split] for split in dict.fromkeys(bins.values())}
    names = list(dict.fromkeys(name for names in files.values() for name in names))
    record = SourceRecord(dataset, revision if sha else None, sha, resolution.config,
                          data_files, bins, files, resolution.builder, resolution.options)
    for name in names:
        check_file_type(record.origin(name), resolution.builder)
    if not copy:
        url = bucket or f"hf://datasets/{dataset}@{sha}"
        found = identities([f"{url}/{name}" for name in names])
        record = dataclasses.replace(record, stream=Stream(url, dict(zip(names, found))))
    elif bucket:
        buckets.copy(bucket, names, out)
    elif root is None:
        hub.fetch(dataset, sha, names, out)
    else:
        _copy_local(root, names, out)
    reading = Reading(resolution.builder, text_column, resolution.options)
    map_files(lambda file: check_columns(file, reading),
              [record_file(record, out, name) for name in names])
    write_source(out, record)
    return record


def _check_splits(bins: dict[str, str], found: dict[str, list[str]], dataset: str,
                  config: str) -> None:
    """Every bin's dataset split exists; else which do, and how to map or hold out."""
    for bin_name, split in bins.items():
        if split in found:
            continue
        others = [s for s in found if s not in bins.values()]
        fixes = []
        if others:
            mapping = ", ".join(f"{b}: {found_split}" for b, found_split in
                                {**{b: s for b, s in bins.items() if s in found},
                                 bin_name: others[0]}.items())
            fixes.append(f"map the bin to one of them (download.splits: {{{mapping}}})")
        if bin_name == HOLDOUT_BIN and HOLDOUT_FROM in found:
            kept = [b for b in bins if b != HOLDOUT_BIN]
            fixes.append(f"draw {HOLDOUT_BIN}.bin from {HOLDOUT_FROM} (download.splits: "
                         f"[{', '.join(kept)}] and download.holdout: "
                         "{fraction: 0.0005, seed: 2357})")
        raise TokbinError(f"download.splits: {dataset} (config {config!r}) has no split "
                          f"{split!r}; its splits are {', '.join(found)}"
                          + (f": {' or '.join(fixes)}" if fixes else ""))


def _copy_local(root: Path, names: list[str], out: Path) -> None:
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, out / name)
