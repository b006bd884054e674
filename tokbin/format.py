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

A split may instead be a **shard directory** (``binarize.shard_tokens: N > 0``): its ``file`` names
a folder beside meta.json (``"train"``) holding bins ``000000.bin``, ``000001.bin``, ... (each a
bin as above). Shard i holds tokens [i*N, (i+1)*N) of the split, so the shards concatenated in
order are byte for byte the split's single bin; a document may straddle two shards. The split's
entry then has one more field, ``shards``, listing the same four fields per shard (``file``
relative to the split's folder; ``documents``: documents that start in the shard), and its own
four fields are the shards' totals::

      "splits": {"train": {"file": "train", "tokens": 250, "documents": 7, "bytes": 500,
                           "shards": [{"file": "000000.bin", "tokens": 200, "documents": 5,
                                       "bytes": 400},
                                      {"file": "000001.bin", "tokens": 50, "documents": 2,
                                       "bytes": 100}]}}

Parsing is strict: a missing, unknown or ill-typed field is an error, so a reader never
guesses. Files are written under a temporary name in the same folder and renamed into place,
so a reader sees either no file or a complete one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import threading
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
    shards: tuple["SplitInfo", ...] | None = None  # a shard directory's bins, in order

    def bins(self) -> list[tuple[str, "SplitInfo"]]:
        """(path relative to meta.json's folder, info) of each bin of the split, in order."""
        if self.shards is None:
            return [(self.file, self)]
        return [(f"{self.file}/{shard.file}", shard) for shard in self.shards]


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
        for split in body["splits"].values():  # only a shard directory has a "shards" field
            for entry in [split, *(split["shards"] or [])]:
                if entry["shards"] is None:
                    del entry["shards"]
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
        splits = {name: _parse_split(split, fields["dtype"], f"{where}: splits.{name}")
                  for name, split in fields["splits"].items()}
        return cls(encoding=fields["encoding"], n_vocab=fields["n_vocab"],
                   eot_token=fields["eot_token"], eot=fields["eot"], dtype=fields["dtype"],
                   source=source, splits=splits)


def _parse_split(raw, dtype: str, where: str, shard: bool = False) -> SplitInfo:
    schema = {"file": str, "tokens": int, "documents": int, "bytes": int}
    if not shard and isinstance(raw, dict) and "shards" in raw:
        schema["shards"] = list
    fields = _check_object(raw, schema, where)
    if "shards" in fields:
        shards = tuple(_parse_split(s, dtype, f"{where}.shards[{i}]", shard=True)
                       for i, s in enumerate(fields["shards"]))
        totals = {key: sum(getattr(s, key) for s in shards)
                  for key in ("tokens", "documents", "bytes")}
        if not shards or any(fields[key] != total for key, total in totals.items()):
            raise TokbinError(f"{where}: tokens, documents and bytes must be the sums over a "
                              f"non-empty shards list ({totals}); the file is damaged")
        fields["shards"] = shards
    info = SplitInfo(**fields)
    if info.bytes != info.tokens * DTYPES[dtype].itemsize:
        raise TokbinError(f"{where}.bytes ({info.bytes}) != tokens ({info.tokens}) x {dtype} "
                          "size; the file is damaged")
    if Path(info.file).name != info.file:
        raise TokbinError(f"{where}.file must be a plain file name, got {info.file!r}")
    return info


def shard_file(index: int) -> str:
    """The name of a shard directory's `index`th bin."""
    return f"{index:06d}.bin"


def is_shard_file(name: str) -> bool:
    return name.endswith(".bin") and name.removesuffix(".bin").isdigit()


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


def open_bin(path: str | os.PathLike, meta: Meta, split: str,
             info: SplitInfo | None = None) -> np.memmap:
    """Memory-maps one split's bin (or, given its `info`, one shard) after checking its size
    against meta.json."""
    info = info or meta.splits.get(split)
    if info is None:
        raise TokbinError(f"split {split!r} is not in meta.json (it has {sorted(meta.splits)})")
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise TokbinError(f"{path} is missing (meta.json lists it); fetch it with `dvc pull` "
                          "or rebuild it with `dvc repro`") from None
    if size != info.bytes:
        raise TokbinError(f"{path} is {size} bytes but meta.json says {info.bytes} "
                          f"({info.tokens} {meta.dtype} tokens): the file is truncated, padded or "
                          "from another build; restore it with `dvc pull` or `dvc repro`")
    if info.tokens == 0:
        return np.zeros(0, dtype=meta.np_dtype)
    return np.memmap(path, dtype=meta.np_dtype, mode="r")


def open_split(folder: str | os.PathLike, meta: Meta, split: str) -> list[np.memmap]:
    """Memory-maps every bin of a split (one, or each shard of a shard directory), in order,
    each size-checked against meta.json."""
    if split not in meta.splits:
        raise TokbinError(f"split {split!r} is not in meta.json (it has {sorted(meta.splits)})")
    folder = Path(folder)
    return [open_bin(folder / relative, meta, split, info)
            for relative, info in meta.splits[split].bins()]


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/tokbin (~/.cache/tokbin): files that every project on this machine reuses."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tokbin"


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
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        written = _tree_bytes(tmp)
        _remove(tmp)  # first, so the free space reported below is what a rerun will have
        raise disk_full_error(final, written) from None
    finally:
        _remove(tmp)


def disk_full_error(final: Path, written: int) -> TokbinError:
    free = shutil.disk_usage(final.parent).free
    return TokbinError(f"disk full while writing {final}: it needs more than the "
                       f"{written / 1e6:.1f} MB written before the disk filled and only "
                       f"{free / 1e6:.1f} MB are free (the partial output was removed); free "
                       f"space on that disk or move {final.parent} to a bigger one, then rerun "
                       "`dvc repro`")


def _tree_bytes(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Removes temporaries left in `folder` by writers that are no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name, _, pid = entry.name.rpartition(TEMP_MARKER)
        if name.startswith(".") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove(entry)


def check_ids(ids: np.ndarray, n_vocab: int) -> None:
    """Refuses ids outside the encoding's vocabulary: a model would index past its embedding."""
    if ids.size and int(ids.max()) >= n_vocab:
        raise TokbinError(f"token id {int(ids.max())} is >= n_vocab {n_vocab}: the tokenized "
                          "data does not match its encoding; rebuild with "
                          "`dvc repro --force tokenize`")


class BinWriter:
    """Appends token ids to a bin of `dtype`, checking every id is < n_vocab.

    Every `WRITEBACK_BYTES` a helper thread fdatasyncs what is written so far, so the disk
    writes while this process goes on producing ids, and the final fsync (atomic_path's)
    waits for the last few megabytes instead of the whole file.
    """

    WRITEBACK_BYTES = 64 << 20

    def __init__(self, path: Path, dtype: str, n_vocab: int):
        self.path, self.dtype, self.n_vocab = path, DTYPES[dtype], n_vocab
        self.tokens = 0
        self._file = open(path, "wb")
        self._unsynced = 0
        self._writeback: threading.Thread | None = None
        self._writeback_error: OSError | None = None

    def write(self, ids: np.ndarray) -> None:
        check_ids(ids, self.n_vocab)
        data = memoryview(ids.astype(self.dtype, copy=False))
        self._file.write(data)
        self.tokens += ids.size
        self._unsynced += data.nbytes
        if self._unsynced >= self.WRITEBACK_BYTES:
            self._start_writeback()

    def append_file(self, path: Path, count: int) -> None:
        """Appends the `count` ids that `path` holds, in this bin's dtype and already checked
        against n_vocab by whoever wrote it (`check_ids`), by a copy inside the kernel."""
        self._file.flush()
        size = count * self.dtype.itemsize
        with open(path, "rb") as source:
            if os.fstat(source.fileno()).st_size != size:
                raise TokbinError(f"{path} holds {os.fstat(source.fileno()).st_size} bytes, not "
                                  f"the {size} of {count} ids; rerun")
            copy = getattr(os, "copy_file_range", None)
            done = 0
            while done < size:
                try:
                    if copy is None:
                        raise OSError(errno.ENOSYS, "no copy_file_range")
                    copied = copy(source.fileno(), self._file.fileno(), size - done)
                except OSError as e:
                    if e.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    source.seek(done)
                    shutil.copyfileobj(source, self._file, 8 << 20)
                    self._file.flush()
                    copied = size - done
                if copied == 0:
                    raise TokbinError(f"{path} ended early; rerun")
                done += copied
        self._file.seek(0, os.SEEK_END)  # the buffered file learns where the kernel wrote
        self.tokens += count
        self._unsynced += size
        if self._unsynced >= self.WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        if self._writeback is not None and self._writeback.is_alive():
            return  # the running fdatasync is still busy; the next one will cover these bytes
        self._raise_writeback_error()
        self._file.flush()
        self._unsynced = 0
        self._writeback = threading.Thread(target=self._fdatasync, daemon=True)
        self._writeback.start()

    def _fdatasync(self) -> None:
        try:
            os.fdatasync(self._file.fileno())
        except OSError as e:  # reported by the writer: the kernel tells a write error only once
            self._writeback_error = e

    def _raise_writeback_error(self) -> None:
        if self._writeback_error is not None:
            error, self._writeback_error = self._writeback_error, None
            raise error

    def close(self) -> None:
        try:
            if self._writeback is not None:
                self._writeback.join()
            self._raise_writeback_error()
        finally:
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
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed writer stays a zombie until its parent reaps it (init may take seconds): it
    answers kill(pid, 0) but will never finish its temporary."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS) or already gone
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


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
