"""The tokbin data format: every file the pipeline writes and reads back, defined once.

A **bin** (``<split>.bin``) is a flat array of token ids: little-endian unsigned integers of
``dtype`` (``uint16`` or ``uint32``), no header, documents in dataset order. Around each document
sits the end-of-text id ``eot_token`` per the ``eot`` policy: ``append`` (after each document),
``prepend`` (before each) or ``none`` (no separator: byte-identical to the seed notebook's
output). ``eot_token`` is the id of a special token of the tokenizer (``tokenizer.eot_name``: by
default its end-of-text token, e.g. ``<|endoftext|>``; Llama 3's ``<|begin_of_text|>`` with
``prepend`` is a BOS). A special token's text inside a document is ordinary text, never a
special id. Any nanoGPT-style reader works: ``np.memmap(path, dtype="<u2", mode="r")``.

**meta.json** sits beside the bins and is what a reader needs to trust them::

    {
      "format": "tokbin",            # always this string
      "version": 3,                  # FORMAT_VERSION; readers refuse versions they don't know
      "encoding": "gpt2",            # tokenize.encoding as given: a tiktoken encoding name,
                                     # hf:<model id>[@<revision>], or a tokenizer file's path
      "n_vocab": 50257,              # every id in the bins is < n_vocab
      "eot_token": 50256,            # the end-of-text id
      "eot": "append",               # append | prepend | none
      "dtype": "uint16",             # uint16 | uint32, always little-endian
      "source": {"dataset": "roneneldan/TinyStories",   # Hub id or local directory
                 "revision": "main",                     # as requested (null for local)
                 "sha": "<40 hex chars>",                # resolved commit (null for local)
                 "config": "default",                    # the config (subset) read
                 "data_files": null,                     # as requested: {split: [globs]}
                 "splits": {"train": "train"},           # bin -> the dataset split it holds
                 "files": {"train": ["data/train-00000-of-00004.parquet"]}},
                                                         # dataset split -> its data files,
                                                         # in reading order (repo paths)
      "splits": {"train": {"file": "train.bin",         # relative to meta.json's folder
                           "tokens": 123,                # ids in the file
                           "documents": 4,               # documents in the file
                           "bytes": 246,                 # == tokens * itemsize
                           "crc32": "1c291ca3"}},        # zlib CRC-32 of the file's bytes
      "holdout": null,               # or {"fraction": 0.0005, "seed": 2357}: see below
      "tokenizer": {"kind": "tiktoken",  # tiktoken (an encoding name) | tiktoken_rank_file |
                                         # tokenizer_json | sentencepiece
                    "file": null,        # the tokenizer file: its path as tokenize.encoding
                                         # gives it, or its name in the Hub repo
                    "sha256": null,      # of the file's bytes
                    "hub": null,         # {"repo", "revision", "sha"}: the Hub model, the
                                         # revision asked for, the commit it was fetched at
                    "pattern": null,     # a rank file's split regex
                    "special_tokens": null,  # a rank file's special tokens {text: id}
                    "eot_name": "<|endoftext|>"}  # the special token whose id is eot_token
    }

The source fields from ``config`` on, and ``holdout``, may be absent (data built before they
existed); readers take them as null. ``tokenizer`` is absent from version 1 and 2 files (their
``encoding`` is a tiktoken encoding name) and required from version 3.

``crc32`` is computed while the file is written (tokbin.crc), so a reader can tell the bytes on
disk are the ones the writer wrote; it is optional (version 1 files, a meta.json made by hand
have none), and every stage writes it.

**holdout** (``download.holdout``): the ``validation`` split holds the documents of the dataset's
train split that are *held out*, the ``train`` split the others, each in dataset order. A
document is held out when the first 8 bytes of ``blake2b(its UTF-8 bytes, digest_size=8,
key=seed as 8 little-endian bytes)``, read as a little-endian integer, are below ``int(fraction
* 2**64)``: a function of the seed and the document's text only, so identical documents land in
the same split, and no worker count, executor or file order changes the result.

A split may instead be a **shard directory** (``binarize.shard_tokens: N > 0``): its ``file`` names
a folder beside meta.json (``"train"``) holding bins ``000000.bin``, ``000001.bin``, ... (each a
bin as above). Shard i holds tokens [i*N, (i+1)*N) of the split, so the shards concatenated in
order are byte for byte the split's single bin; a document may straddle two shards. The split's
entry then has one more field, ``shards``, listing the same fields per shard (``file``
relative to the split's folder; ``documents``: documents that start in the shard), and its own
are the shards' totals (``crc32``: of the shards concatenated in order).

**<split>.doclens** (the tokenize stage's, beside its bins): each document's token count,
without the end-of-text id, as little-endian uint32, in document order.

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

Parsing is strict: a missing, unknown or ill-typed field is an error, so a reader never
guesses. Every file is written under a temporary name and renamed into place (tokbin.fsio).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from tokbin import schema
from tokbin.crc import crc32_combine, crc32_hex
from tokbin.errors import TokbinError
from tokbin.fsio import Writeback, copy_into, write_text_atomic

FORMAT_NAME = "tokbin"
FORMAT_VERSION = 3
READS_VERSIONS = (1, 2, 3)  # 2 added crc32, 3 "tokenizer"
META_FILENAME = "meta.json"
SOURCE_FILENAME = "source.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
DOCLENS_DTYPE = np.dtype("<u4")
EOT_POLICIES = ("append", "prepend", "none")
REBUILD = "rebuild it with `dvc repro`"
REPAIR = ("run `python -m tokbin repair`: it restores every damaged output from the DVC remote, "
          "or says which `dvc repro` rebuilds it")
# tokenizer.kind: what tokenize.encoding named, told apart by content (tokbin.tokenizer_files)
TIKTOKEN = "tiktoken"              # a tiktoken encoding name (no file)
RANK_FILE = "tiktoken_rank_file"
TOKENIZER_JSON = "tokenizer_json"
SENTENCEPIECE = "sentencepiece"
TOKENIZER_KINDS = (TIKTOKEN, RANK_FILE, TOKENIZER_JSON, SENTENCEPIECE)


@dataclasses.dataclass(frozen=True)
class Source:
    dataset: str
    revision: str | None
    sha: str | None
    config: str | None = None
    data_files: dict[str, list[str]] | None = None
    splits: dict[str, str] | None = None       # bin -> dataset split
    files: dict[str, list[str]] | None = None  # dataset split -> data files, in reading order


@dataclasses.dataclass(frozen=True)
class Holdout:
    """validation.bin drawn from the train split: which documents, see the module docstring."""
    fraction: float
    seed: int

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise TokbinError(f"fraction is {self.fraction!r}: it must be between 0 and 1 "
                              "(e.g. 0.0005)")
        if not 0 <= self.seed < 1 << 64:
            raise TokbinError(f"seed is {self.seed!r}: it must be an integer from 0 to 2**64-1")

    @property
    def threshold(self) -> int:
        """A document whose 8-byte keyed hash is below this is held out."""
        return int(self.fraction * 2.0 ** 64)

    @property
    def key(self) -> bytes:
        return self.seed.to_bytes(8, "little")


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    file: str
    tokens: int
    documents: int
    bytes: int
    crc32: str | None = None  # of the bytes, as written (None: not recorded)
    shards: tuple["SplitInfo", ...] | None = None  # a shard directory's bins, in order

    def bins(self) -> list[tuple[str, "SplitInfo"]]:
        """(path relative to meta.json's folder, info) of each bin of the split, in order."""
        if self.shards is None:
            return [(self.file, self)]
        return [(f"{self.file}/{shard.file}", shard) for shard in self.shards]


@dataclasses.dataclass(frozen=True)
class HubFile:
    repo: str       # the Hub model's id
    revision: str   # as requested
    sha: str        # the commit it resolved to


@dataclasses.dataclass(frozen=True)
class TokenizerRecord:
    kind: str
    file: str | None
    sha256: str | None
    hub: HubFile | None
    pattern: str | None
    special_tokens: dict[str, int] | None
    eot_name: str


# What a version 1 or 2 meta.json's tokenizer is: a tiktoken name, <|endoftext|> its eot.
TIKTOKEN_NAMED = TokenizerRecord(TIKTOKEN, None, None, None, None, None, "<|endoftext|>")


@dataclasses.dataclass(frozen=True)
class Meta:
    encoding: str
    n_vocab: int
    eot_token: int
    eot: str
    dtype: str
    source: Source
    splits: dict[str, SplitInfo]
    holdout: Holdout | None = None
    tokenizer: TokenizerRecord = TIKTOKEN_NAMED

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def to_json(self) -> str:
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **dataclasses.asdict(self)}
        for split in body["splits"].values():  # only a shard directory has a "shards" field
            for entry in [split, *(split["shards"] or [])]:
                for optional in ("shards", "crc32"):
                    if entry[optional] is None:
                        del entry[optional]
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = META_FILENAME) -> "Meta":
        raw = _load_json(text, where)
        fields = _fields(raw, cls, where, header={"format": str, "version": int})
        if fields["format"] != FORMAT_NAME:
            raise TokbinError(f"{where}: format is {fields['format']!r}, expected {FORMAT_NAME!r}")
        if fields["version"] not in READS_VERSIONS:
            raise TokbinError(f"{where}: format version {fields['version']} is not supported by "
                              f"this tokbin (it reads versions {READS_VERSIONS}); upgrade tokbin "
                              "or rebuild the data")
        if (fields["version"] < 3) != ("tokenizer" not in fields):
            raise TokbinError(f"{where}: a version {fields['version']} meta.json "
                              f"{'has no' if fields['version'] >= 3 else 'has a'} tokenizer "
                              f"field; the file is damaged: {REBUILD}")
        if fields["dtype"] not in DTYPES:
            raise TokbinError(f"{where}: dtype {fields['dtype']!r} is not one of {list(DTYPES)}")
        if fields["eot"] not in EOT_POLICIES:
            raise TokbinError(f"{where}: eot {fields['eot']!r} is not one of {list(EOT_POLICIES)}")
        source = _parse(fields["source"], Source, f"{where}: source")
        splits = {name: _parse_split(split, fields["dtype"], f"{where}: splits.{name}")
                  for name, split in fields["splits"].items()}
        holdout = fields.get("holdout")
        if holdout is not None:
            holdout = _parse(holdout, Holdout, f"{where}: holdout")
        tokenizer = (_parse_tokenizer(fields["tokenizer"], f"{where}: tokenizer")
                     if "tokenizer" in fields else TIKTOKEN_NAMED)
        return cls(encoding=fields["encoding"], n_vocab=fields["n_vocab"],
                   eot_token=fields["eot_token"], eot=fields["eot"], dtype=fields["dtype"],
                   source=source, splits=splits, holdout=holdout, tokenizer=tokenizer)


READERS = ("parquet", "json", "csv", "text", "arrow")  # datasets' builders tokbin reads


def bin_splits(splits: list[str] | dict[str, str]) -> dict[str, str]:
    """download.splits as {bin: the dataset split it holds}: a list names splits that are
    their own bins."""
    return dict(splits) if isinstance(splits, dict) else {split: split for split in splits}
HOLDOUT_BIN, HOLDOUT_FROM = "validation", "train"  # a holdout: validation drawn from train


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


def _parse_tokenizer(raw, where: str) -> TokenizerRecord:
    fields = dict(_fields(raw, TokenizerRecord, where))
    if fields["kind"] not in TOKENIZER_KINDS:
        raise TokbinError(f"{where}.kind {fields['kind']!r} is not one of {list(TOKENIZER_KINDS)}")
    if fields["hub"] is not None:
        fields["hub"] = _parse(fields["hub"], HubFile, f"{where}.hub")
    return TokenizerRecord(**fields)


def _parse(raw, cls, where: str):
    """A nested object of `cls`'s exact fields, built (its own checks run)."""
    fields = _fields(raw, cls, where)
    try:
        return cls(**fields)
    except TokbinError as e:
        raise TokbinError(f"{where}: {e}") from None


def _parse_split(raw, dtype: str, where: str, shard: bool = False) -> SplitInfo:
    fields = dict(_fields(raw, SplitInfo, where))
    if "crc32" in fields and not re.fullmatch("[0-9a-f]{8}", str(fields["crc32"])):
        raise TokbinError(f"{where}.crc32 must be 8 lowercase hex digits, got "
                          f"{fields['crc32']!r}; the file is damaged")
    if "shards" in fields:
        if fields["shards"] is None:
            raise TokbinError(f"{where}: field 'shards' has the wrong type (None)")
        if shard:
            raise TokbinError(f"{where}: unknown fields ['shards'], missing fields []; it was "
                              f"not written by this version of tokbin: {REBUILD}")
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


def doclens_file(split: str) -> str:
    return f"{split}.doclens"


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
    raw = _load_json(text, str(where))
    record = _parse(raw, SourceRecord, str(where))
    if record.builder not in READERS:
        raise TokbinError(f"{where}: builder {record.builder!r} is not one of {list(READERS)}; "
                          f"{REBUILD}")
    if "stream" not in raw:
        return record
    if raw["stream"] is None:
        raise TokbinError(f"{where}: field 'stream' has the wrong type (None)")
    stream = _fields(raw["stream"], Stream, f"{where}: stream")
    files = {name: _parse(entry, SourceFile, f"{where}: stream.files.{name}")
             for name, entry in stream["files"].items()}
    missing = [n for names in record.files.values() for n in names if n not in files]
    if missing or len(files) != len({n for names in record.files.values() for n in names}):
        raise TokbinError(f"{where}: stream.files must list exactly the data files of 'files' "
                          f"(missing: {missing[:3]}); the file is damaged: {REBUILD}")
    return dataclasses.replace(record, stream=Stream(stream["url"], files))


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
        raise TokbinError(f"{path} is missing (meta.json lists it); in its DVC project "
                          "`python -m tokbin repair` restores it") from None
    if size != info.bytes:
        raise TokbinError(f"{path} is {size} bytes but meta.json says {info.bytes} "
                          f"({info.tokens} {meta.dtype} tokens): the file is truncated, padded or "
                          "from another build; in its DVC project `python -m tokbin repair` "
                          "restores it")
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


CHUNK_TOKENS = 1 << 22  # 8 MB of uint16 per read: big reads that stay in the CPU's cache


def read_chunks(path: Path, dtype: np.dtype, chunk_tokens: int = CHUNK_TOKENS
                ) -> Iterator[np.ndarray]:
    """The ids of a bin (or lengths of a doclens file), `chunk_tokens` at a time, read into one
    reused buffer.

    Plain reads, not slices of a memmap: mapped pages read stay in the process's resident
    memory until it unmaps them, so a memmap copy's RSS grows to the file's size; this one's
    stays at one buffer whatever the corpus size.
    """
    buffer = np.empty(chunk_tokens, dtype)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            yield buffer[:size // dtype.itemsize]


def read_checked(path: Path, dtype: np.dtype, crc32: str | None,
                 chunk_tokens: int = CHUNK_TOKENS) -> Iterator[np.ndarray]:
    """`read_chunks`, then, once every chunk is read, a TokbinError unless the bytes read have
    the CRC-32 that meta.json records for them: the file is the one its writer wrote."""
    if crc32 is None:
        raise TokbinError(f"meta.json records no crc32 for {path} (an older tokbin wrote it): "
                          f"{REBUILD}")
    crc = 0
    for chunk in read_chunks(path, dtype, chunk_tokens):
        crc = zlib.crc32(chunk, crc)
        yield chunk
    if crc32_hex(crc) != crc32:
        raise TokbinError(f"{path} is not the file its stage wrote: its CRC-32 is "
                          f"{crc32_hex(crc)}, {path.parent / META_FILENAME} records {crc32}. It "
                          "was changed in place (and with it the DVC cache object it is "
                          f"hard-linked to); {REPAIR}")


# --- writing -----------------------------------------------------------------------------------

def check_ids(ids: np.ndarray, n_vocab: int) -> None:
    """Refuses ids outside the encoding's vocabulary: a model would index past its embedding."""
    if ids.size and int(ids.max()) >= n_vocab:
        raise TokbinError(f"token id {int(ids.max())} is >= n_vocab {n_vocab}: the tokenized "
                          "data does not match its encoding; rebuild with "
                          "`dvc repro --force tokenize`")


class BinWriter:
    """Appends token ids to a bin of `dtype`, checking every id is < n_vocab and computing the
    file's CRC-32 as it goes (`crc32`); the file is fdatasynced as it grows (`Writeback`), every
    `WRITEBACK_BYTES`."""

    WRITEBACK_BYTES = 64 << 20

    def __init__(self, path: Path, dtype: str, n_vocab: int):
        self.path, self.dtype, self.n_vocab = path, DTYPES[dtype], n_vocab
        self.tokens = 0
        self._crc = 0
        self._file: BinaryIO = open(path, "wb")
        self._writeback = Writeback(self._file, self.WRITEBACK_BYTES)

    @property
    def crc32(self) -> str:
        """The CRC-32 of everything written so far, as meta.json records it."""
        return crc32_hex(self._crc)

    def write(self, ids: np.ndarray) -> None:
        check_ids(ids, self.n_vocab)
        data = memoryview(ids.astype(self.dtype, copy=False))
        self._file.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self.tokens += ids.size
        self._writeback.wrote(data.nbytes)

    def append_file(self, path: Path, count: int, crc32: int) -> None:
        """Appends the `count` ids that `path` holds, in this bin's dtype, already checked
        against n_vocab by whoever wrote it (`check_ids`), whose CRC-32 it computed as it wrote
        them (`crc32`), by a copy inside the kernel: this process never reads the ids."""
        size = count * self.dtype.itemsize
        with open(path, "rb") as source:
            actual = os.fstat(source.fileno()).st_size
            if actual != size:
                raise TokbinError(f"{path} holds {actual} bytes, not the {size} of {count} ids; "
                                  "rerun")
            copy_into(source, self._file, size)
        self._crc = crc32_combine(self._crc, crc32, size)
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
