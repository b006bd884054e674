"""source.json: what the download stage took, and how to read it.

**source.json** (the download stage's, in data/raw): what was downloaded and how to read it:
every field of meta.json's source (``files`` relative to data/raw), plus ``"builder"``, the
reader Hugging Face ``datasets`` picked for the files (``parquet``, ``json``, ``csv``, ``text``
or ``arrow``), and ``"reader_options"``, that reader's options from the dataset's config (for
``csv``, the ``pandas.read_csv`` arguments datasets would pass). With ``download.materialize:
false`` data/raw holds no data file, and source.json one more field, ``"stream"``: where the
files are read from and what each one was at download (tokbin.remote reads exactly that)::

    "stream": {"url": "hf://datasets/<id>@<sha>",   # or s3://bucket/folder, gs://bucket/folder
               "files": {"data/train-00000-of-00004.parquet":     # every file of "files"
                         {"size": 249000000,                       # bytes
                          "checksum": "sha256:<64 hex>",           # see below
                          "version": null}}}                       # or the object's version

``checksum`` is what the source itself reports for the file: ``sha256:`` the Hub's LFS sha256
of the content, ``git-sha1:`` the Hub's git blob id (a file kept in git), ``etag:`` an
object's ETag (s3://, gs://). ``version`` is the object's S3 VersionId or GCS generation
(null: an unversioned bucket, or the Hub, where the commit sha in ``url`` is the version).
Without ``"stream"`` (and in every source.json written before it existed) the files are in
data/raw.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.format.meta import Source
from tokbin.format.spec import (REBUILD, SOURCE_FILENAME, exact_fields, load_json,
                                parse_object)
from tokbin.fsio import write_text_atomic

READERS = ("parquet", "json", "csv", "text", "arrow")  # datasets' builders tokbin reads


def bin_splits(splits: list[str] | dict[str, str]) -> dict[str, str]:
    """download.splits as {bin: the dataset split it holds}: a list names splits that are
    their own bins."""
    return dict(splits) if isinstance(splits, dict) else {split: split for split in splits}


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A streamed data file as the download stage found it at its source (source.json)."""
    size: int
    checksum: str          # sha256:<hex> | git-sha1:<hex> (the Hub) | etag:<ETag> (s3, gs)
    version: str | None    # S3 VersionId or GCS generation; None: unversioned, or the Hub


@dataclasses.dataclass(frozen=True)
class Stream:
    """Where the data files of a source.json without copies are read from, and each one's
    recorded identity."""
    url: str                               # the dataset's root: hf://datasets/<id>@<sha>, s3://..
    files: dict[str, SourceFile]           # data file (relative to url) -> as recorded


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """source.json: the dataset's identity, the data files taken and how to read them."""
    dataset: str
    revision: str | None
    sha: str | None
    config: str
    data_files: dict[str, list[str]] | None
    splits: dict[str, str]                 # bin -> dataset split
    files: dict[str, list[str]]            # dataset split -> data files (data/raw or stream)
    builder: str
    reader_options: dict[str, object]
    stream: Stream | None = None           # None: the files are in data/raw

    @property
    def source(self) -> Source:
        return Source(self.dataset, self.revision, self.sha, self.config, self.data_files,
                      self.splits, self.files)

    def origin(self, name: str) -> str:
        """What messages call data file `name`: the user's own path for a local dataset,
        its hf:// address for a Hub one (data/raw's copy is an implementation detail)."""
        if self.sha is None:
            return os.path.join(self.dataset, name)
        return f"hf://datasets/{self.dataset}/{name}"

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        if body["stream"] is None:  # a materialized download's source.json is as it always was
            del body["stream"]
        return json.dumps(body, indent=2) + "\n"


def read_source(raw_dir: Path) -> SourceRecord:
    where = raw_dir / SOURCE_FILENAME
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbinError(f"{where} not found: run the download stage (`dvc repro`)") from None
    raw = load_json(text, str(where))
    record = parse_object(raw, SourceRecord, str(where))
    if record.builder not in READERS:
        raise TokbinError(f"{where}: builder {record.builder!r} is not one of {list(READERS)}; "
                          f"{REBUILD}")
    if "stream" not in raw:
        return record
    if raw["stream"] is None:
        raise TokbinError(f"{where}: field 'stream' has the wrong type (None)")
    stream = exact_fields(raw["stream"], Stream, f"{where}: stream")
    files = {name: parse_object(entry, SourceFile, f"{where}: stream.files.{name}")
             for name, entry in stream["files"].items()}
    missing = [n for names in record.files.values() for n in names if n not in files]
    if missing or len(files) != len({n for names in record.files.values() for n in names}):
        raise TokbinError(f"{where}: stream.files must list exactly the data files of 'files' "
                          f"(missing: {missing[:3]}); the file is damaged: {REBUILD}")
    return dataclasses.replace(record, stream=Stream(stream["url"], files))


def write_source(raw_dir: Path, record: SourceRecord) -> Path:
    return write_text_atomic(raw_dir / SOURCE_FILENAME, record.to_json())
