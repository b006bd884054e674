"""The tokbin data format: every file the pipeline writes and reads back, defined once.

A **bin** (``<split>.bin``) is a flat array of token ids: little-endian unsigned integers of
``dtype`` (``uint16`` or ``uint32``), no header, documents in dataset order. Around each document
sits the end-of-text id ``eot_token`` per the ``eot`` policy: ``append`` (after each document),
``prepend`` (before each) or ``none`` (no separator: byte-identical to the seed notebook's
output). A literal ``<|endoftext|>`` inside a text is ordinary text, never ``eot_token``. Any
nanoGPT-style reader works: ``np.memmap(path, dtype="<u2", mode="r")``.

With ``bin_format: llmc`` (``binarize.format``) each bin instead starts with **llm.c's header**
(karpathy/llm.c dev/data/data_common.py): 256 little-endian int32 (1024 bytes): [0] magic,
[1] version, [2] the count of ids that follow, [3..255] zero; magic 20240520 version 1 for
uint16 ids, 20240801 version 7 for uint32. Then exactly ``count`` ids, nothing after. The count
is an int32 and llm.c's C loader seeks with an ``int`` offset, so a file holds at most
``llmc_max_tokens(dtype)`` ids (uint16: the file stays under 2**31 bytes).

**meta.json** sits beside the bins and is what a reader needs to trust them::

    {
      "format": "tokbin",            # always this string
      "version": 1,                  # FORMAT_VERSION; readers refuse versions they don't know
      "encoding": "gpt2",            # tiktoken encoding name
      "n_vocab": 50257,              # every id in the bins is < n_vocab
      "eot_token": 50256,            # the end-of-text id
      "eot": "append",               # append | prepend | none
      "dtype": "uint16",             # uint16 | uint32, always little-endian
      "bin_format": "nanogpt",       # nanogpt (headerless) | llmc (llm.c's header first)
      "source": {"dataset": "roneneldan/TinyStories",   # Hub id or local directory
                 "revision": "main",                     # as requested (null for local)
                 "sha": "<40 hex chars>"},               # resolved commit (null for local)
      "splits": {"train": {"file": "train.bin",         # relative to meta.json's folder
                           "tokens": 123,                # ids in the file
                           "documents": 4,               # documents in the file
                           "bytes": 246,                 # tokens * itemsize (+ 1024: llmc)
                           "docs": "train.docs"}}        # its document index (binarize's)
    }

A split may instead be a **shard directory** (``binarize.shard_tokens: N > 0``): its ``file`` names
a folder beside meta.json (``"train"``) holding bins ``000000.bin``, ``000001.bin``, ... (each a
bin as above). Shard i holds tokens [i*N, (i+1)*N) of the split, so the shards concatenated in
order are byte for byte the split's single bin; a document may straddle two shards. (llmc: the
split's n ids are cut into ceil(n / N) shards of near-equal size instead, so that no last shard
is too small for llm.c's loaders.) The split's entry then has one more field, ``shards``,
listing the same four fields per shard (``file`` relative to the split's folder;
``documents``: documents that start in the shard), and its own four fields are the shards'
totals.

**<split>.docs** (the **document index**, binarize's, beside meta.json; its ``docs`` field):
little-endian int64, documents + 1 entries: entry i is where document i's first token is in
the split's token stream (its end-of-text id for eot prepend; shards concatenated, headers
left out), the last entry the split's token count. An empty document (eot none) repeats its
successor's offset. It is the only boundary record with eot none. The name never ends in
``.bin``, so llm.c's and modded-nanogpt's ``*.bin`` globs skip it.

**<split>.doclens** (the tokenize stage's, beside its bins): each document's token count,
without the end-of-text id, as little-endian uint32, in document order.

**source.json** (the download stage's, in data/raw): what was downloaded, as
``{"dataset", "revision", "sha"}`` as in meta.json's source, plus ``"files"``: per split the
data files' paths relative to data/raw, in reading order.

Parsing is strict: a missing, unknown or ill-typed field is an error, so a reader never
guesses. Every file is written under a temporary name and renamed into place (tokbin.fsio).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from tokbin import schema
from tokbin.errors import TokbinError
from tokbin.fsio import Writeback, copy_into, write_text_atomic

FORMAT_NAME = "tokbin"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: headerless bins and no document index
META_FILENAME = "meta.json"
SOURCE_FILENAME = "source.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
DOCLENS_DTYPE = np.dtype("<u4")
EOT_POLICIES = ("append", "prepend", "none")
BIN_FORMATS = ("nanogpt", "llmc")
DOCS_DTYPE = np.dtype("<i8")
LLMC_HEADER_BYTES = 1024  # 256 int32
LLMC_VARIANTS = {"uint16": (20240520, 1), "uint32": (20240801, 7)}  # dtype: (magic, version)
INT32_MAX = 2**31 - 1
REBUILD = "rebuild it with `dvc repro`"
RESTORE = "fetch it with `dvc pull` or rebuild it with `dvc repro`"


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
    docs: str | None = None  # the document index file (binarize's meta.json only)

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
    bin_format: str = "nanogpt"

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def header_bytes(self) -> int:
        """Bytes before the ids in each bin."""
        return LLMC_HEADER_BYTES if self.bin_format == "llmc" else 0

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        for key in ("encoding", "n_vocab", "eot_token", "eot", "dtype", "bin_format"):
            body[key] = fields.pop(key)  # in the order the docstring lists them
        body.update(fields)
        for split in body["splits"].values():  # "shards" and "docs" only where they exist
            for entry in [split, *(split["shards"] or [])]:
                for key in ("shards", "docs"):
                    if entry[key] is None:
                        del entry[key]
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = META_FILENAME) -> "Meta":
        raw = _load_json(text, where)
        fields = _fields(raw, cls, where, header={"format": str, "version": int})
        if fields["format"] != FORMAT_NAME:
            raise TokbinError(f"{where}: format is {fields['format']!r}, expected {FORMAT_NAME!r}")
        if fields["version"] not in READABLE_VERSIONS:
            raise TokbinError(f"{where}: format version {fields['version']} is not supported by "
                              f"this tokbin (it reads versions {READABLE_VERSIONS}); upgrade "
                              "tokbin or rebuild the data")
        if ("bin_format" in fields) != (fields["version"] > 1):  # a version 2 field
            raise TokbinError(f"{where}: format version {fields['version']} "
                              f"{'has no' if fields['version'] == 1 else 'needs a'} field "
                              f"'bin_format'; the file is damaged: {REBUILD}")
        bin_format = fields.get("bin_format", "nanogpt")
        if bin_format not in BIN_FORMATS:
            raise TokbinError(f"{where}: bin_format {bin_format!r} is not one of "
                              f"{list(BIN_FORMATS)}")
        if fields["dtype"] not in DTYPES:
            raise TokbinError(f"{where}: dtype {fields['dtype']!r} is not one of {list(DTYPES)}")
        if fields["eot"] not in EOT_POLICIES:
            raise TokbinError(f"{where}: eot {fields['eot']!r} is not one of {list(EOT_POLICIES)}")
        source = Source(**_fields(fields["source"], Source, f"{where}: source"))
        header = LLMC_HEADER_BYTES if bin_format == "llmc" else 0
        splits = {name: _parse_split(split, fields["dtype"], header, f"{where}: splits.{name}")
                  for name, split in fields["splits"].items()}
        return cls(encoding=fields["encoding"], n_vocab=fields["n_vocab"],
                   eot_token=fields["eot_token"], eot=fields["eot"], dtype=fields["dtype"],
                   source=source, splits=splits, bin_format=bin_format)


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """source.json: the dataset's identity and the data files taken per split."""
    dataset: str
    revision: str | None
    sha: str | None
    files: dict[str, list[str]]

    @property
    def source(self) -> Source:
        return Source(self.dataset, self.revision, self.sha)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def _load_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TokbinError(f"{where} is not valid JSON ({e}); {REBUILD} or restore it with "
                          "`dvc pull`") from None


def _fields(raw, cls, where: str, header: dict | None = None) -> dict:
    """`raw` checked to be a JSON object with exactly `cls`'s fields (and `header`'s)."""
    if not isinstance(raw, dict):
        raise TokbinError(f"{where} must be a JSON object, got {type(raw).__name__}")
    unknown, missing = schema.key_differences(raw, cls, header)
    if unknown or missing:
        raise TokbinError(f"{where}: unknown fields {unknown}, missing fields {missing}; it was "
                          f"not written by this version of tokbin: {REBUILD}")
    for key, hint in {**schema.fields_of(cls), **(header or {})}.items():
        if key in raw and not schema.matches(raw[key], hint):
            raise TokbinError(f"{where}: field {key!r} has the wrong type ({raw[key]!r})")
    return raw


def _parse_split(raw, dtype: str, header: int, where: str, shard: bool = False) -> SplitInfo:
    fields = dict(_fields(raw, SplitInfo, where))
    for key in ("shards", "docs"):  # present in some entries, never as null
        if key in fields and (fields[key] is None or shard):
            raise TokbinError(f"{where}: field {key!r} is {fields[key]!r} where it cannot be; "
                              f"it was not written by this version of tokbin: {REBUILD}")
    if "shards" in fields:
        shards = tuple(_parse_split(s, dtype, header, f"{where}.shards[{i}]", shard=True)
                       for i, s in enumerate(fields["shards"]))
        totals = {key: sum(getattr(s, key) for s in shards)
                  for key in ("tokens", "documents", "bytes")}
        if not shards or any(fields[key] != total for key, total in totals.items()):
            raise TokbinError(f"{where}: tokens, documents and bytes must be the sums over a "
                              f"non-empty shards list ({totals}); the file is damaged")
        fields["shards"] = shards
    info = SplitInfo(**fields)
    headers = header * len(info.shards or [info])
    if info.bytes != info.tokens * DTYPES[dtype].itemsize + headers:
        raise TokbinError(f"{where}.bytes ({info.bytes}) != tokens ({info.tokens}) x {dtype} "
                          f"size + {headers} header bytes; the file is damaged")
    for name in (info.file, info.docs or info.file):
        if Path(name).name != name:
            raise TokbinError(f"{where}: a file must be a plain file name, got {name!r}")
    return info


def shard_file(index: int) -> str:
    """The name of a shard directory's `index`th bin."""
    return f"{index:06d}.bin"


def is_shard_file(name: str) -> bool:
    return name.endswith(".bin") and name.removesuffix(".bin").isdigit()


def doclens_file(split: str) -> str:
    return f"{split}.doclens"


def docs_file(split: str) -> str:
    """The name of a split's document index."""
    return f"{split}.docs"


def choose_dtype(requested: str, n_vocab: int) -> str:
    """`auto` picks uint16 when every id fits (n_vocab <= 65536), else uint32."""
    if requested == "auto":
        return "uint16" if n_vocab <= 1 << 16 else "uint32"
    if n_vocab > np.iinfo(DTYPES[requested]).max + 1:
        raise TokbinError(f"binarize.dtype {requested} cannot hold a vocabulary of {n_vocab} ids; "
                          "set binarize.dtype to auto or uint32")
    return requested


def token_ends(lengths: np.ndarray, separated: bool = True) -> np.ndarray:
    """Where each document ends (exclusive) in a stream of the documents of `lengths` tokens,
    each with one end-of-text id when `separated`."""
    return np.cumsum(lengths.astype(np.int64) + separated)


# --- llm.c's header ----------------------------------------------------------------------------

def llmc_max_tokens(dtype: str) -> int:
    """The most ids one llm.c file may hold: its count is an int32, and llm.c's C loader (which
    reads uint16 files only) seeks with an int offset, so a uint16 file stays below 2**31 bytes."""
    return (INT32_MAX - LLMC_HEADER_BYTES) // 2 if dtype == "uint16" else INT32_MAX


def llmc_header(dtype: str, count: int) -> bytes:
    if not 0 <= count <= llmc_max_tokens(dtype):
        raise TokbinError(f"{count:,} ids do not fit one llm.c file (at most "
                          f"{llmc_max_tokens(dtype):,} {dtype} ids); shard the split")
    header = np.zeros(LLMC_HEADER_BYTES // 4, dtype="<i4")
    header[:3] = (*LLMC_VARIANTS[dtype], count)
    return header.tobytes()


def read_llmc_header(path: Path, size: int) -> tuple[str, int]:
    """(dtype, count) of an llm.c file of `size` bytes, after llm.c's loader's checks (magic,
    version, count against the file size) and one more: the reserved words are zero."""
    if size < LLMC_HEADER_BYTES:
        raise TokbinError(f"{path} is {size} bytes, shorter than llm.c's 1024-byte header")
    with open(path, "rb") as f:
        words = np.frombuffer(f.read(LLMC_HEADER_BYTES), dtype="<i4")
    magic, version, count = (int(w) for w in words[:3])
    variants = {m: (dtype, v) for dtype, (m, v) in LLMC_VARIANTS.items()}
    if magic not in variants:
        raise TokbinError(f"{path}: magic number {magic} is not llm.c's (20240520 for uint16 "
                          "ids, 20240801 for uint32): not an llm.c token file")
    dtype, expected = variants[magic]
    problem = (f"version {version}, but magic {magic} goes with version {expected}"
               if version != expected else f"negative token count {count}" if count < 0
               else "reserved header words 3..255 are not zero" if words[3:].any()
               else f"{size} bytes, but its header's {count} {dtype} ids need "
                    f"{LLMC_HEADER_BYTES + count * DTYPES[dtype].itemsize}"
               if size != LLMC_HEADER_BYTES + count * DTYPES[dtype].itemsize else None)
    if problem:
        raise TokbinError(f"{path}: {problem}: the llm.c header is damaged; restore the file "
                          "with `dvc pull` or rebuild it with `dvc repro`")
    return dtype, count


# --- reading -----------------------------------------------------------------------------------

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
    return write_text_atomic(Path(folder) / META_FILENAME, meta.to_json())


def read_source(raw_dir: Path) -> SourceRecord:
    where = raw_dir / SOURCE_FILENAME
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbinError(f"{where} not found: run the download stage (`dvc repro`)") from None
    return SourceRecord(**_fields(_load_json(text, str(where)), SourceRecord, str(where)))


def write_source(raw_dir: Path, record: SourceRecord) -> Path:
    return write_text_atomic(raw_dir / SOURCE_FILENAME, record.to_json())


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
    if meta.bin_format == "llmc":
        dtype, count = read_llmc_header(path, size)
        if (dtype, count) != (meta.dtype, info.tokens):
            raise TokbinError(f"{path}: its llm.c header says {count} {dtype} ids but meta.json "
                              f"says {info.tokens} {meta.dtype}: it is from another build; "
                              "restore it with `dvc pull` or `dvc repro`")
    if info.tokens == 0:
        return np.zeros(0, dtype=meta.np_dtype)
    return np.memmap(path, dtype=meta.np_dtype, mode="r", offset=meta.header_bytes)


def open_split(folder: str | os.PathLike, meta: Meta, split: str) -> list[np.memmap]:
    """Memory-maps every bin of a split (one, or each shard of a shard directory), in order,
    each size-checked against meta.json."""
    if split not in meta.splits:
        raise TokbinError(f"split {split!r} is not in meta.json (it has {sorted(meta.splits)})")
    folder = Path(folder)
    return [open_bin(folder / relative, meta, split, info)
            for relative, info in meta.splits[split].bins()]


def document_offsets(lengths: Iterator[np.ndarray], separated: bool) -> Iterator[np.ndarray]:
    """The document index's entries, chunk by chunk, from the documents' lengths (doclens
    chunks), each document followed or preceded by one end-of-text id when `separated`."""
    start = 0
    yield np.zeros(1, DOCS_DTYPE)
    for chunk in lengths:
        ends = start + token_ends(chunk, separated)
        start = int(ends[-1]) if len(ends) else start
        yield ends


def docs_problem(path: Path, info: SplitInfo) -> str | None:
    """What is wrong with a split's document index against its meta.json entry (its size, its
    first and last entries, entries that decrease; read in chunks) and the fix, or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    previous, first = None, None
    if size == (info.documents + 1) * DOCS_DTYPE.itemsize:
        for chunk in read_chunks(path, DOCS_DTYPE):
            first = int(chunk[0]) if first is None else first
            if (previous is not None and chunk[0] < previous) or np.any(np.diff(chunk) < 0):
                return f"{path}: document offsets decrease; {RESTORE}"
            previous = int(chunk[-1])
    if size is None:
        return f"{path} is missing (meta.json lists it); {RESTORE}"
    if size != (info.documents + 1) * DOCS_DTYPE.itemsize:
        return (f"{path} is {size} bytes, not the {(info.documents + 1) * 8} of "
                f"{info.documents} documents + 1 int64 offsets; {RESTORE}")
    if (first, previous) != (0, info.tokens):
        return (f"{path} runs from {first} to {previous}, not from 0 to the split's "
                f"{info.tokens} tokens; {RESTORE}")
    return None


def read_docs(folder: Path, meta: Meta, split: str) -> np.ndarray:
    """A split's document index (int64 [documents + 1]), checked against meta.json."""
    info = meta.splits[split]
    if info.docs is None:
        raise TokbinError(f"{meta_path(folder)} lists no document index for split {split!r}: "
                          "the data was built before tokbin wrote one; rebuild it with "
                          f"`dvc repro` (binarize then writes {docs_file(split)})")
    problem = docs_problem(folder / info.docs, info)
    if problem:
        raise TokbinError(problem)
    return np.fromfile(folder / info.docs, DOCS_DTYPE)


CHUNK_TOKENS = 1 << 22  # 8 MB of uint16 per read: big reads that stay in the CPU's cache


def read_chunks(path: Path, dtype: np.dtype, chunk_tokens: int = CHUNK_TOKENS,
                offset: int = 0) -> Iterator[np.ndarray]:
    """The ids of a bin (or lengths of a doclens file), `chunk_tokens` at a time from byte
    `offset` (a bin's `header_bytes`), read into one reused buffer.

    Plain reads, not slices of a memmap: mapped pages read stay in the process's resident
    memory until it unmaps them, so a memmap copy's RSS grows to the file's size; this one's
    stays at one buffer whatever the corpus size.
    """
    buffer = np.empty(chunk_tokens, dtype)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while size := f.readinto(buffer):
            yield buffer[:size // dtype.itemsize]


# --- writing -----------------------------------------------------------------------------------

def check_ids(ids: np.ndarray, n_vocab: int) -> None:
    """Refuses ids outside the encoding's vocabulary: a model would index past its embedding."""
    if ids.size and int(ids.max()) >= n_vocab:
        raise TokbinError(f"token id {int(ids.max())} is >= n_vocab {n_vocab}: the tokenized "
                          "data does not match its encoding; rebuild with "
                          "`dvc repro --force tokenize`")


class BinWriter:
    """Appends token ids to a bin of `dtype`, checking every id is < n_vocab; the file is
    fdatasynced as it grows (`Writeback`), every `WRITEBACK_BYTES`."""

    WRITEBACK_BYTES = 64 << 20

    def __init__(self, path: Path, dtype: str, n_vocab: int, header: bytes = b""):
        self.path, self.dtype, self.n_vocab = path, DTYPES[dtype], n_vocab
        self.tokens = 0
        self._file: BinaryIO = open(path, "wb")
        self._file.write(header)  # llmc: `llmc_header` of the ids that will follow
        self._writeback = Writeback(self._file, self.WRITEBACK_BYTES)

    def write(self, ids: np.ndarray) -> None:
        check_ids(ids, self.n_vocab)
        data = memoryview(ids.astype(self.dtype, copy=False))
        self._file.write(data)
        self.tokens += ids.size
        self._writeback.wrote(data.nbytes)

    def append_file(self, path: Path, count: int) -> None:
        """Appends the `count` ids that `path` holds, in this bin's dtype and already checked
        against n_vocab by whoever wrote it (`check_ids`), by a copy inside the kernel."""
        size = count * self.dtype.itemsize
        with open(path, "rb") as source:
            actual = os.fstat(source.fileno()).st_size
            if actual != size:
                raise TokbinError(f"{path} holds {actual} bytes, not the {size} of {count} ids; "
                                  "rerun")
            copy_into(source, self._file, size)
        self.tokens += count
        self._writeback.wrote(size)

    def close(self) -> None:
        try:
            self._writeback.finish()
        finally:
            self._file.close()

    def __enter__(self) -> "BinWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
