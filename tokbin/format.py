"""The tokbin data format: token bins and the meta.json that describes them.

This module is the single definition of the format: the stages write through it and the
loader and the CLI read through it.

A **bin** (``<split>.bin``) is a flat array of token ids: little-endian unsigned integers of
``dtype`` (``uint16`` or ``uint32``), no header, documents in dataset order. Around each document
sits the end-of-text id ``eot_token`` per the ``eot`` policy: ``append`` (after each document),
``prepend`` (before each) or ``none`` (no separator: byte-identical to the seed notebook's
output). A literal ``<|endoftext|>`` inside a text is ordinary text, never ``eot_token``. Any
nanoGPT-style reader works: ``np.memmap(path, dtype="<u2", mode="r")``.

**meta.json** sits beside the bins and is what a reader needs to trust them::

    {
      "format": "tokbin",            # always this string
      "version": 1,                  # FORMAT_VERSION; readers refuse versions they don't know
      "encoding": "gpt2",            # tiktoken encoding name
      "n_vocab": 50257,              # every id in the bins is < n_vocab
      "eot_token": 50256,            # the end-of-text id
      "eot": "append",               # append | prepend | none
      "dtype": "uint16",             # uint16 | uint32, always little-endian
      "source": {"dataset": "roneneldan/TinyStories",   # Hub id or local directory
                 "revision": "main",                     # as requested (null for local)
                 "sha": "<40 hex chars>"},               # resolved commit (null for local)
      "splits": {"train": {"file": "train.bin",         # relative to meta.json's folder
                           "tokens": 123,                # ids in the file
                           "documents": 4,               # documents in the file
                           "bytes": 246}}                # == tokens * itemsize
    }

Parsing is strict: a missing, unknown or ill-typed field is an error, so a reader never
guesses. Files are written under a temporary name in the same folder and renamed into place,
so a reader sees either no file or a complete one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from tokbin.errors import TokbinError

FORMAT_NAME = "tokbin"
FORMAT_VERSION = 1
META_FILENAME = "meta.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
EOT_POLICIES = ("append", "prepend", "none")
TEMP_MARKER = ".tmp-"


@dataclasses.dataclass(frozen=True)
class Source:
    dataset: str
    revision: str | None
    sha: str | None


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    file: str
    tokens: int
    documents: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class Meta:
    encoding: str
    n_vocab: int
    eot_token: int
    eot: str
    dtype: str
    source: Source
    splits: dict[str, SplitInfo]

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def to_json(self) -> str:
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **dataclasses.asdict(self)}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = META_FILENAME) -> "Meta":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise TokbinError(f"{where} is not valid JSON ({e}); rebuild it with `dvc repro` "
                              "or restore it with `dvc pull`") from None
        fields = _check_object(raw, {"format": str, "version": int, "encoding": str,
                                     "n_vocab": int, "eot_token": int, "eot": str, "dtype": str,
                                     "source": dict, "splits": dict}, where)
        if fields["format"] != FORMAT_NAME:
            raise TokbinError(f"{where}: format is {fields['format']!r}, expected {FORMAT_NAME!r}")
        if fields["version"] != FORMAT_VERSION:
            raise TokbinError(f"{where}: format version {fields['version']} is not supported by "
                              f"this tokbin (it reads version {FORMAT_VERSION}); upgrade tokbin "
                              "or rebuild the data")
        if fields["dtype"] not in DTYPES:
            raise TokbinError(f"{where}: dtype {fields['dtype']!r} is not one of {list(DTYPES)}")
        if fields["eot"] not in EOT_POLICIES:
            raise TokbinError(f"{where}: eot {fields['eot']!r} is not one of {list(EOT_POLICIES)}")
        source = Source(**_check_object(fields["source"], {"dataset": str, "revision": (str, None),
                                                           "sha": (str, None)}, f"{where}: source"))
        splits = {}
        for name, split in fields["splits"].items():
            info = SplitInfo(**_check_object(split, {"file": str, "tokens": int, "documents": int,
                                                     "bytes": int}, f"{where}: splits.{name}"))
            if info.bytes != info.tokens * DTYPES[fields["dtype"]].itemsize:
                raise TokbinError(f"{where}: splits.{name}.bytes ({info.bytes}) != tokens "
                                  f"({info.tokens}) x {fields['dtype']} size; the file is damaged")
            if Path(info.file).name != info.file:
                raise TokbinError(f"{where}: splits.{name}.file must be a plain file name, "
                                  f"got {info.file!r}")
            splits[name] = info
        return cls(encoding=fields["encoding"], n_vocab=fields["n_vocab"],
                   eot_token=fields["eot_token"], eot=fields["eot"], dtype=fields["dtype"],
                   source=source, splits=splits)


def _check_object(raw, schema: dict, where: str) -> dict:
    """Checks that `raw` is a JSON object with exactly `schema`'s keys and value types."""
    if not isinstance(raw, dict):
        raise TokbinError(f"{where} must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema))
    missing = sorted(set(schema) - set(raw))
    if unknown or missing:
        raise TokbinError(f"{where}: unknown fields {unknown}, missing fields {missing}; it was "
                          "not written by this version of tokbin: rebuild it with `dvc repro`")
    for key, kinds in schema.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = raw[key]
        ok = any(value is None if k is None else
                 isinstance(value, k) and not (k is int and isinstance(value, bool))
                 for k in kinds)
        if not ok:
            raise TokbinError(f"{where}: field {key!r} has the wrong type ({value!r})")
    return raw


def choose_dtype(requested: str, n_vocab: int) -> str:
    """`auto` picks uint16 when every id fits (n_vocab <= 65536), else uint32."""
    if requested == "auto":
        return "uint16" if n_vocab <= 1 << 16 else "uint32"
    if requested not in DTYPES:
        raise TokbinError(f"binarize.dtype {requested!r} is not one of auto, {', '.join(DTYPES)}")
    if n_vocab > np.iinfo(DTYPES[requested]).max + 1:
        raise TokbinError(f"binarize.dtype {requested} cannot hold a vocabulary of {n_vocab} ids; "
                          "set binarize.dtype to auto or uint32")
    return requested


def meta_path(path: str | os.PathLike) -> Path:
    """meta.json for a data folder, a meta.json path, or a bin inside a data folder."""
    path = Path(path)
    if path.is_dir():
        return path / META_FILENAME
    return path if path.name == META_FILENAME else path.parent / META_FILENAME


def read_meta(path: str | os.PathLike) -> Meta:
    where = meta_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbinError(f"{where} not found: build the data with `dvc repro`, fetch it with "
                          "`dvc pull`, or pass dtype= for a bare bin without meta.json") from None
    return Meta.from_json(text, str(where))


def write_meta(folder: str | os.PathLike, meta: Meta) -> Path:
    path = Path(folder) / META_FILENAME
    with atomic_path(path) as tmp:
        tmp.write_text(meta.to_json(), encoding="utf-8")
    return path


def open_bin(path: str | os.PathLike, meta: Meta, split: str) -> np.memmap:
    """Memory-maps one split's bin after checking its size against meta.json."""
    info = meta.splits.get(split)
    if info is None:
        raise TokbinError(f"split {split!r} is not in meta.json (it has {sorted(meta.splits)})")
    path = Path(path)
    size = path.stat().st_size
    if size != info.bytes:
        raise TokbinError(f"{path} is {size} bytes but meta.json says {info.bytes} "
                          f"({info.tokens} {meta.dtype} tokens): the file is truncated, padded or "
                          "from another build; restore it with `dvc pull` or `dvc repro`")
    if info.tokens == 0:
        return np.zeros(0, dtype=meta.np_dtype)
    return np.memmap(path, dtype=meta.np_dtype, mode="r")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `final` (file or folder); renames it into place on success.

    On any error the temporary is removed and `final` is untouched, so readers never see a
    partial output. A temporary left by a killed process is removed by `remove_stale_temps`.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMP_MARKER}{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.is_dir() and not final.is_symlink():
            _remove(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        _remove(tmp)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Removes temporaries left in `folder` by writers that are no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name, _, pid = entry.name.rpartition(TEMP_MARKER)
        if name.startswith(".") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove(entry)


class BinWriter:
    """Appends token ids to a bin of `dtype`, checking every id is < n_vocab."""

    def __init__(self, path: Path, dtype: str, n_vocab: int):
        self.path, self.dtype, self.n_vocab = path, DTYPES[dtype], n_vocab
        self.tokens = 0
        self._file = open(path, "wb")

    def write(self, ids: np.ndarray) -> None:
        if ids.size and int(ids.max()) >= self.n_vocab:
            raise TokbinError(f"token id {int(ids.max())} is >= n_vocab {self.n_vocab}: the "
                              "tokenized data does not match its encoding; rebuild with "
                              "`dvc repro --force tokenize`")
        self._file.write(memoryview(ids.astype(self.dtype, copy=False)))
        self.tokens += ids.size

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "BinWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_tree(path: Path) -> None:
    paths = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.is_dir():
        for d in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
