"""Bins: the token files, as nanoGPT's readers or llm.c's read them, and shard directories.

A **bin** (``<split>.bin``) is a flat array of token ids: little-endian unsigned integers of
``dtype`` (``uint16`` or ``uint32``), no header, documents in dataset order. Around each document
sits the end-of-text id ``eot_token`` per the ``eot`` policy: ``append`` (after each document),
``prepend`` (before each) or ``none`` (no separator: byte-identical to the seed notebook's
output). ``eot_token`` is the id of a special token of the tokenizer (``tokenizer.eot_name``: by
default its end-of-text token, e.g. ``<|endoftext|>``; Llama 3's ``<|begin_of_text|>`` with
``prepend`` is a BOS). A special token's text inside a document is ordinary text, never a
special id. Any nanoGPT-style reader works: ``np.memmap(path, dtype="<u2", mode="r")``.

With ``bin_format: llmc`` (``binarize.format``) each bin instead starts with **llm.c's header**
(karpathy/llm.c dev/data/data_common.py): 256 little-endian int32 (1024 bytes): [0] magic,
[1] version, [2] the count of ids that follow, [3..255] zero; magic 20240520 version 1 for
uint16 ids, 20240801 version 7 for uint32. Then exactly ``count`` ids, nothing after. The count
is an int32 and llm.c's C loader seeks with an ``int`` offset, so a file holds at most
``llmc_max_tokens(dtype)`` ids (uint16: the file stays under 2**31 bytes).

A split may instead be a **shard directory** (``binarize.shard_tokens: N > 0``): its ``file`` names
a folder beside meta.json (``"train"``) holding bins ``000000.bin``, ``000001.bin``, ... (each a
bin as above). Shard i holds tokens [i*N, (i+1)*N) of the split, so the shards concatenated in
order are byte for byte the split's single bin; a document may straddle two shards. (llmc: the
split's n ids are cut into ceil(n / N) shards of near-equal size instead, so that no last shard
is too small for llm.c's loaders.) The split's entry then has one more field, ``shards``,
listing the same fields per shard (``file`` relative to the split's folder; ``documents``:
documents that start in the shard; no ``docs``), and its own are the shards' totals
(``crc32``: of the shards concatenated in order).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from tokbin.crc import crc32_combine, crc32_hex
from tokbin.errors import TokbinError
from tokbin.format.meta import Meta, SplitInfo
from tokbin.format.spec import (DTYPES, INT32_MAX, LLMC_HEADER_BYTES, LLMC_VARIANTS,
                                META_FILENAME, REBUILD, REPAIR)
from tokbin.fsio import Writeback, copy_into

def shard_file(index: int) -> str:
    """The name of a shard directory's `index`th bin."""
    return f"{index:06d}.bin"


def is_shard_file(name: str) -> bool:
    return name.endswith(".bin") and name.removesuffix(".bin").isdigit()


def choose_dtype(requested: str, n_vocab: int) -> str:
    """`auto` picks uint16 when every id fits (n_vocab <= 65536), else uint32."""
    if requested == "auto":
        return "uint16" if n_vocab <= 1 << 16 else "uint32"
    if n_vocab > np.iinfo(DTYPES[requested]).max + 1:
        raise TokbinError(f"binarize.dtype {requested} cannot hold a vocabulary of {n_vocab} ids; "
                          "set binarize.dtype to auto or uint32")
    return requested


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


def bin_header(bin_format: str, dtype: str, count: int) -> bytes:
    """What a bin of `bin_format` holding `count` ids starts with (nanogpt: nothing)."""
    return llmc_header(dtype, count) if bin_format == "llmc" else b""


def ids_crc32(meta: Meta, split: str) -> str | None:
    """The CRC-32 of the split's ids alone, in order: the same for the same tokens in either
    bin_format, as one bin or as shards (each header's part taken out of its bin's recorded
    CRC). None where meta.json records no CRC-32."""
    crc = 0
    for _, info in meta.splits[split].bins():
        if info.crc32 is None:
            return None
        header = bin_header(meta.bin_format, meta.dtype, info.tokens)
        ids = info.bytes - len(header)
        # CRC(header + ids) = CRC(header) shifted past the ids, xor CRC(ids)
        own = int(info.crc32, 16) ^ crc32_combine(zlib.crc32(header), 0, ids)
        crc = crc32_combine(crc, own, ids)
    return crc32_hex(crc)


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
        raise TokbinError(f"{path}: {problem}: the llm.c header is damaged; in its DVC project "
                          "`python -m tokbin repair` restores it")
    return dtype, count


def bare_llmc_header(path: Path) -> tuple[str, int] | None:
    """(dtype, count) of a file meta.json does not describe that opens with llm.c's magic and
    version, after `read_llmc_header`'s checks (a damaged header is an error, never 512 ids);
    None for a headerless bin (which would open so only if its first four ids were 55432, 308,
    1, 0, or 55713, 308, 7, 0)."""
    with open(path, "rb") as f:
        opening = f.read(8)
    words = tuple(int.from_bytes(opening[i:i + 4], "little", signed=True) for i in (0, 4))
    if len(opening) < 8 or words not in LLMC_VARIANTS.values():
        return None
    return read_llmc_header(path, path.stat().st_size)


# --- reading -----------------------------------------------------------------------------------

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
    if meta.bin_format == "llmc":
        dtype, count = read_llmc_header(path, size)
        if (dtype, count) != (meta.dtype, info.tokens):
            raise TokbinError(f"{path}: its llm.c header says {count} {dtype} ids but meta.json "
                              f"says {info.tokens} {meta.dtype}: it is from another build; in "
                              "its DVC project `python -m tokbin repair` restores it")
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

    def __init__(self, path: Path, dtype: str, n_vocab: int, header: bytes = b""):
        self.path, self.dtype, self.n_vocab = path, DTYPES[dtype], n_vocab
        self.tokens = 0
        self._file: BinaryIO = open(path, "wb")
        self._file.write(header)  # llmc: `llmc_header` of the ids that will follow
        self._crc = zlib.crc32(header)
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
