"""meta.json: what a reader needs to trust the bins beside it.

**meta.json** sits beside the bins and is what a reader needs to trust them::

    {
      "format": "tokbin",            # always this string
      "version": 5,                  # FORMAT_VERSION; readers refuse versions they don't know
      "encoding": "gpt2",            # tokenize.encoding as given: a tiktoken encoding name,
                                     # hf:<model id>[@<revision>], or a tokenizer file's path
      "n_vocab": 50257,              # every id in the bins is < n_vocab
      "eot_token": 50256,            # the end-of-text id
      "eot": "append",               # append | prepend | none
      "dtype": "uint16",             # uint16 | uint32, always little-endian
      "bin_format": "nanogpt",       # nanogpt (headerless) | llmc (llm.c's header first)
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
                           "bytes": 246,                 # tokens * itemsize (+ 1024: llmc)
                           "crc32": "1c291ca3",          # zlib CRC-32 of the file's bytes
                           "docs": "train.docs",         # its document index (binarize's)
                           "docs_crc32": "5e0d3b2a"}},   # zlib CRC-32 of the index's bytes
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
have none), and every stage writes it. ``bin_format`` is required from version 4 on, absent
before (nanogpt); ``docs`` is in binarize's meta.json only, with ``docs_crc32`` from version 5
on (optional like ``crc32``: readers check the index against it where it is set), and
``doclens_crc32`` (the CRC-32 of the split's doclens file, so that binarize publishes no
document index from a doclens changed since) in tokenize's only.

**holdout** (``download.holdout``): the ``validation`` split holds the documents of the dataset's
train split that are *held out*, the ``train`` split the others, each in dataset order. A
document is held out when the first 8 bytes of ``blake2b(its UTF-8 bytes, digest_size=8,
key=seed as 8 little-endian bytes)``, read as a little-endian integer, are below ``int(fraction
* 2**64)``: a function of the seed and the document's text only, so identical documents land in
the same split, and no worker count, executor or file order changes the result.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from tokbin.errors import TokbinError
from tokbin.format.spec import (BIN_FORMATS, DTYPES, EOT_POLICIES, FORMAT_NAME, FORMAT_VERSION,
                                LLMC_HEADER_BYTES, META_FILENAME, READS_VERSIONS, REBUILD,
                                TIKTOKEN, TOKENIZER_KINDS, exact_fields, load_json,
                                parse_object)
from tokbin.fsio import write_text_atomic

HOLDOUT_BIN, HOLDOUT_FROM = "validation", "train"  # a holdout: validation drawn from train


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
    docs: str | None = None  # the document index file (binarize's meta.json only)
    docs_crc32: str | None = None  # of the document index file, where `docs` is set
    doclens_crc32: str | None = None  # of the doclens file (tokenize's meta.json only)

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


def header_bytes(bin_format: str) -> int:
    """Bytes before the ids in each bin of `bin_format` (llm.c's header, or none)."""
    return LLMC_HEADER_BYTES if bin_format == "llmc" else 0


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
    bin_format: str = "nanogpt"

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def header_bytes(self) -> int:
        """Bytes before the ids in each bin."""
        return header_bytes(self.bin_format)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        for key in ("encoding", "n_vocab", "eot_token", "eot", "dtype", "bin_format"):
            body[key] = fields.pop(key)  # in the order the docstring lists them
        body.update(fields)
        for split in body["splits"].values():  # optional fields only where they are set
            for entry in [split, *(split["shards"] or [])]:
                for optional in ("shards", "crc32", "docs", "docs_crc32", "doclens_crc32"):
                    if entry[optional] is None:
                        del entry[optional]
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = META_FILENAME) -> "Meta":
        raw = load_json(text, where)
        fields = exact_fields(raw, cls, where, header={"format": str, "version": int})
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
        if ("bin_format" in fields) != (fields["version"] >= 4):  # a version 4 field
            raise TokbinError(f"{where}: format version {fields['version']} "
                              f"{'needs a' if fields['version'] >= 4 else 'has no'} field "
                              f"'bin_format'; the file is damaged: {REBUILD}")
        bin_format = fields.get("bin_format", "nanogpt")
        if bin_format not in BIN_FORMATS:
            raise TokbinError(f"{where}: bin_format {bin_format!r} is not one of "
                              f"{list(BIN_FORMATS)}")
        if fields["dtype"] not in DTYPES:
            raise TokbinError(f"{where}: dtype {fields['dtype']!r} is not one of {list(DTYPES)}")
        if fields["eot"] not in EOT_POLICIES:
            raise TokbinError(f"{where}: eot {fields['eot']!r} is not one of {list(EOT_POLICIES)}")
        source = parse_object(fields["source"], Source, f"{where}: source")
        header = header_bytes(bin_format)
        splits = {name: _parse_split(split, fields["dtype"], header, f"{where}: splits.{name}")
                  for name, split in fields["splits"].items()}
        holdout = fields.get("holdout")
        if holdout is not None:
            holdout = parse_object(holdout, Holdout, f"{where}: holdout")
        tokenizer = (_parse_tokenizer(fields["tokenizer"], f"{where}: tokenizer")
                     if "tokenizer" in fields else TIKTOKEN_NAMED)
        return cls(encoding=fields["encoding"], n_vocab=fields["n_vocab"],
                   eot_token=fields["eot_token"], eot=fields["eot"], dtype=fields["dtype"],
                   source=source, splits=splits, holdout=holdout, tokenizer=tokenizer,
                   bin_format=bin_format)


def _parse_tokenizer(raw, where: str) -> TokenizerRecord:
    fields = dict(exact_fields(raw, TokenizerRecord, where))
    if fields["kind"] not in TOKENIZER_KINDS:
        raise TokbinError(f"{where}.kind {fields['kind']!r} is not one of {list(TOKENIZER_KINDS)}")
    if fields["hub"] is not None:
        fields["hub"] = parse_object(fields["hub"], HubFile, f"{where}.hub")
    return TokenizerRecord(**fields)


def _parse_split(raw, dtype: str, header: int, where: str, shard: bool = False) -> SplitInfo:
    fields = dict(exact_fields(raw, SplitInfo, where))
    for key in ("crc32", "docs_crc32", "doclens_crc32"):
        if key in fields and not re.fullmatch("[0-9a-f]{8}", str(fields[key])):
            raise TokbinError(f"{where}.{key} must be 8 lowercase hex digits, got "
                              f"{fields[key]!r}; the file is damaged")
    for key in ("shards", "docs", "docs_crc32", "doclens_crc32"):  # some entries, never null
        if key in fields and (fields[key] is None or shard):
            raise TokbinError(f"{where}: field {key!r} is {fields[key]!r} where it cannot be; "
                              f"it was not written by this version of tokbin: {REBUILD}")
    if "docs_crc32" in fields and "docs" not in fields:
        raise TokbinError(f"{where}: docs_crc32 without docs; the file is damaged: {REBUILD}")
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


def meta_path(path: str | os.PathLike) -> Path:
    """meta.json for a data folder, a meta.json path, or a bin or shard directory inside a
    data folder."""
    path = Path(path)
    if path.is_dir():
        beside = path.parent / META_FILENAME
        if not (path / META_FILENAME).is_file() and _lists_shard_directory(beside, path.name):
            return beside  # described beside it, as a bin is
        return path / META_FILENAME
    return path if path.name == META_FILENAME else path.parent / META_FILENAME


def _lists_shard_directory(where: Path, name: str) -> bool:
    try:
        meta = Meta.from_json(where.read_text(encoding="utf-8"), str(where))
    except (OSError, TokbinError):  # none, or damaged: not this folder's description
        return False
    return any(info.file == name and info.shards for info in meta.splits.values())


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
