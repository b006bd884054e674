"""Document boundaries: the tokenize stage's doclens and binarize's document index.

**<split>.docs** (the **document index**, binarize's, beside meta.json; its ``docs`` field):
little-endian int64, documents + 1 entries: entry i is where document i's first token is in
the split's token stream (its end-of-text id for eot prepend; shards concatenated, headers
left out), the last entry the split's token count. An empty document (eot none) repeats its
successor's offset. It is the only boundary record with eot none. The name never ends in
``.bin``, so llm.c's and modded-nanogpt's ``*.bin`` globs skip it.

**<split>.doclens** (the tokenize stage's, beside its bins): each document's token count,
without the end-of-text id, as little-endian uint32, in document order.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from tokbin.crc import crc32_hex
from tokbin.errors import TokbinError
from tokbin.format.bins import read_chunks
from tokbin.format.meta import Meta, SplitInfo, meta_path
from tokbin.format.spec import DOCS_DTYPE

def doclens_file(split: str) -> str:
    return f"{split}.doclens"


def docs_file(split: str) -> str:
    """The name of a split's document index."""
    return f"{split}.docs"


def recorded_crcs(meta: Meta) -> dict[str, str | None]:
    """{path relative to meta.json's folder: the CRC-32 meta.json records of it (None: none)}
    for every file it lists: bins (each shard of a shard directory), document indexes, doclens."""
    crcs: dict[str, str | None] = {}
    for split, info in meta.splits.items():
        crcs.update((relative, bin_info.crc32) for relative, bin_info in info.bins())
        if info.docs is not None:
            crcs[info.docs] = info.docs_crc32
        if info.doclens_crc32 is not None:
            crcs[doclens_file(split)] = info.doclens_crc32
    return crcs


def token_ends(lengths: np.ndarray, separated: bool = True) -> np.ndarray:
    """Where each document ends (exclusive) in a stream of the documents of `lengths` tokens,
    each with one end-of-text id when `separated`."""
    return np.cumsum(lengths.astype(np.int64) + separated)


def document_offsets(lengths: Iterator[np.ndarray], separated: bool) -> Iterator[np.ndarray]:
    """The document index's entries, chunk by chunk, from the documents' lengths (doclens
    chunks), each document followed or preceded by one end-of-text id when `separated`."""
    start = 0
    yield np.zeros(1, DOCS_DTYPE)
    for chunk in lengths:
        ends = start + token_ends(chunk, separated)
        start = int(ends[-1]) if len(ends) else start
        yield ends


def docs_problem(path: Path, info: SplitInfo, offsets: np.ndarray | None = None) -> str | None:
    """What is wrong with a split's document index against its meta.json entry (its size, its
    first and last entries, entries that decrease; read in chunks, or `offsets`: the file's
    entries already read), or None."""
    if not path.is_file():
        return f"{path} is missing (meta.json lists it)"
    size = path.stat().st_size
    if size != (info.documents + 1) * DOCS_DTYPE.itemsize:
        return (f"{path} is {size} bytes, not the {(info.documents + 1) * 8} of "
                f"{info.documents} documents + 1 int64 offsets")
    previous, first = None, None
    for chunk in read_chunks(path, DOCS_DTYPE) if offsets is None else [offsets]:
        first = int(chunk[0]) if first is None else first
        if (previous is not None and chunk[0] < previous) or np.any(np.diff(chunk) < 0):
            return f"{path}: document offsets decrease"
        previous = int(chunk[-1])
    if (first, previous) != (0, info.tokens):
        return (f"{path} runs from {first} to {previous}, not from 0 to the split's "
                f"{info.tokens} tokens")
    return None


def docs_crc_problem(path: Path, info: SplitInfo, offsets: np.ndarray | None = None) -> str | None:
    """Where meta.json records the index's CRC-32 (docs_crc32): a mismatch (an index of the
    right shape can still be another build's or edited, and with eot none nothing in the bins
    marks a boundary to check it against), or None."""
    if info.docs_crc32 is None:
        return None
    crc = 0
    for chunk in read_chunks(path, DOCS_DTYPE) if offsets is None else [offsets]:
        crc = zlib.crc32(chunk, crc)
    if crc32_hex(crc) == info.docs_crc32:
        return None
    return (f"{path}: its CRC-32 {crc32_hex(crc)} differs from the {info.docs_crc32} meta.json "
            "records: the document index changed after it was written")


def read_docs(folder: Path, meta: Meta, split: str) -> np.ndarray:
    """A split's document index (int64 [documents + 1]), checked against meta.json."""
    info = meta.splits[split]
    if info.docs is None:
        raise TokbinError(f"{meta_path(folder)} lists no document index for split {split!r}: "
                          "the data was built before tokbin wrote one; rebuild it with "
                          f"`dvc repro` (binarize then writes {docs_file(split)})")
    path = folder / info.docs
    offsets = np.fromfile(path, DOCS_DTYPE) if path.is_file() else None  # read once, checked
    problem = docs_problem(path, info, offsets) or docs_crc_problem(path, info, offsets)
    if problem:
        raise TokbinError(f"{problem}; in its DVC project `python -m tokbin repair` restores "
                          "it, `dvc pull binarize` fetches it")
    return offsets
