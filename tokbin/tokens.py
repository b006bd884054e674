"""A split's tokens on disk, as the loader reads them: one memory-mapped token stream.

`open_tokens` maps a bin (size checked against meta.json, or a bare nanoGPT-style bin of a
given dtype; nanoGPT's headerless format or llm.c's) or every bin of a shard directory, read
as one stream. `rows_view` makes it rows whose row o is tokens[o : o + T + 1], so a batch
is one fancy-index (tokbin.gathers copies rows and packed segments from it);
`open_document_index` reads the split's document index. `MappedPages` keeps the mapped pages
that gathers touch from piling up in the process's RSS (the creep nanoGPT avoids by reopening
the memmap every batch).
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from tokbin.errors import TokbinError
from tokbin.format import (DTYPES, LLMC_HEADER_BYTES, META_FILENAME, Meta, bare_llmc_header,
                           ids_crc32, open_bin, open_split, read_docs, read_meta)

# RSS budget for the bins' mapped pages (see MappedPages), checked every CHECK_EVERY_ROWS rows.
RELEASE_MAPPED_BYTES = 1 << 30
CHECK_EVERY_ROWS = 64  # a statm read per 64 rows; what 64 rows map is the overshoot
FAULT_AROUND_BYTES = 64 << 10  # what a row maps at least (Linux's fault-around block)


def open_tokens(path: Path, dtype) -> "np.ndarray | ShardedTokens":
    """Memory-maps a bin (or each bin of a shard directory). dtype=None: its meta.json's dtype,
    size checked by `open_bin`.

    With an explicit dtype, a meta.json beside the bin that lists it must agree; a file no
    meta.json lists is llm.c's own (read by its header, which an explicit dtype must agree with)
    or a bare bin whose size must be a whole number of tokens.
    """
    if path.is_dir():
        return _open_shard_directory(path, dtype)
    if not path.is_file():
        raise TokbinError(f"{path} not found (or not a file): build the data with `dvc repro` "
                          "or fetch it with `dvc pull`")
    meta = read_meta(path) if (path.parent / META_FILENAME).is_file() else None
    listed = meta is not None and path.name in {info.file for info in meta.splits.values()}
    llmc = None if listed else bare_llmc_header(path)
    if llmc is not None:  # llm.c's own file (or a copy meta.json does not list): its header
        return _open_bare_llmc(path, dtype, *llmc)
    if dtype is None:
        meta = meta or read_meta(path)  # without one: the error that says what to do
        return open_bin(path, meta, _split_of(path, meta))
    wanted = parse_dtype(dtype)
    if listed:
        if meta.np_dtype != wanted:
            raise TokbinError(f"dtype {wanted.name} disagrees with {path.parent / META_FILENAME}, "
                              f"which says {path.name} is {meta.dtype}; pass dtype=None to use "
                              "meta.json's")
        return open_bin(path, meta, _split_of(path, meta))
    if meta is not None:
        _refuse_a_file_that_is_not_a_bin(path, meta)
    size = path.stat().st_size
    if size % wanted.itemsize:
        raise TokbinError(f"{path} is {size} bytes, not a whole number of {wanted.name} tokens "
                          f"({wanted.itemsize} bytes each): the file is truncated or its dtype "
                          "is not " + wanted.name)
    if size == 0:
        return np.zeros(0, dtype=wanted)
    return np.memmap(path, dtype=wanted, mode="r")


def _open_bare_llmc(path: Path, dtype, header_dtype: str, count: int) -> np.ndarray:
    if dtype is not None and parse_dtype(dtype) != np.dtype(header_dtype):
        raise TokbinError(f"{path} is an llm.c token file of {count:,} {header_dtype} ids (its "
                          f"header says so), not {parse_dtype(dtype).name}; pass "
                          f"dtype={header_dtype!r} or dtype=None")
    if count == 0:
        return np.zeros(0, dtype=header_dtype)
    return np.memmap(path, dtype=header_dtype, mode="r", offset=LLMC_HEADER_BYTES)


def _open_shard_directory(path: Path, dtype) -> "ShardedTokens":
    if (path / META_FILENAME).is_file():
        bins = [str(path / info.file) for info in read_meta(path).splits.values()]
        raise TokbinError(f"{path} is a data folder, not a bin: pass one of the bins its "
                          f"meta.json lists ({', '.join(bins)})")
    meta = read_meta(path.parent)  # a shard directory's meta.json is beside it, like a bin's
    split = _split_of(path, meta)
    if meta.splits[split].shards is None:
        raise TokbinError(f"{path} is a directory but {path.parent / META_FILENAME} lists "
                          f"{split!r} as the single bin {meta.splits[split].file}")
    if dtype is not None and parse_dtype(dtype) != meta.np_dtype:
        raise TokbinError(f"dtype {parse_dtype(dtype).name} disagrees with "
                          f"{path.parent / META_FILENAME}, which says {path.name} is "
                          f"{meta.dtype}; pass dtype=None to use meta.json's")
    return ShardedTokens(open_split(path.parent, meta, split))


class ShardedTokens:
    """A shard directory's bins as one token stream, each shard mapped on its own."""

    def __init__(self, shards: list[np.ndarray]):
        self.dtype = shards[0].dtype
        self.shards = [shard for shard in shards if len(shard)]
        self.starts = np.cumsum([0] + [len(shard) for shard in self.shards])  # global offsets

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, positions: np.ndarray) -> np.ndarray:
        """tokens[positions] of the concatenated stream, shard by shard."""
        flat = positions.reshape(-1)
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(self.shards) + 1))
        out = np.empty(len(flat), self.dtype)
        for index in np.flatnonzero(np.diff(bounds)):
            picked = order[bounds[index]:bounds[index + 1]]
            out[picked] = self.shards[index][flat[picked] - self.starts[index]]
        return out.reshape(positions.shape)


def open_document_index(path: Path) -> np.ndarray:
    """The document index of the split whose bin (or shard directory) is `path`."""
    if not (path.parent / META_FILENAME).is_file():
        raise TokbinError(f"{path} has no {META_FILENAME} beside it, so no document index: "
                          "align='document' and return_documents need binarize's "
                          "<split>.docs (build with `dvc repro` or fetch with `dvc pull`)")
    meta = read_meta(path.parent / META_FILENAME)
    return read_docs(path.parent, meta, _split_of(path, meta))


def recorded_ids_crc32(path: Path) -> str | None:
    """The CRC-32 of the ids (tokbin.format.ids_crc32) of the split whose bin (or shard
    directory) is `path`, from the meta.json beside it; None for a bin that none lists."""
    if not (path.parent / META_FILENAME).is_file():
        return None
    meta = read_meta(path.parent / META_FILENAME)
    split = next((s for s, info in meta.splits.items() if info.file == path.name), None)
    return None if split is None else ids_crc32(meta, split)


def row_items(tokens: np.ndarray, width: int) -> np.ndarray:
    """A view whose item o is tokens[o : o + width], one void item a token apart (no copy;
    writeable where `tokens` is, for a buffer filled through overlapping items as
    tokbin.gathers does). A fancy index copies each item with one memcpy: much faster than
    indexing a 2-D strided view, which copies row by row, token by token."""
    item = tokens.dtype.itemsize
    return np.ndarray(shape=(max(0, len(tokens) - width + 1),),
                      dtype=np.dtype((np.void, width * item)), buffer=tokens, strides=(item,))


class Rows:
    """rows[starts] is the [len(starts), T + 1] array of tokens[o : o + T + 1] for o in
    starts; `rows.items(starts)` the same rows as void items (see `row_items`)."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        self.dtype, self.width = tokens.dtype, block_size + 1
        self._items = row_items(tokens, block_size + 1)

    def __len__(self) -> int:
        return len(self._items)

    def items(self, starts: np.ndarray) -> np.ndarray:
        return self._items[starts]

    def __getitem__(self, starts: np.ndarray) -> np.ndarray:
        return self._items[starts].view(self.dtype).reshape(len(starts), self.width)


class ShardRows:
    """rows[o] is tokens[o : o + T + 1] of the shards' concatenation, as `Rows` is for
    one bin: a row inside a shard is a row of that shard's `Rows`; the few rows that run into
    the next shard are pieced together."""

    def __init__(self, tokens: ShardedTokens, block_size: int):
        self.tokens, self.width, self.dtype = tokens, block_size + 1, tokens.dtype
        self.views = [Rows(shard, block_size) for shard in tokens.shards]
        self.inside_rows = np.array([len(view) for view in self.views])

    def __getitem__(self, starts: np.ndarray) -> np.ndarray:
        out = np.empty((len(starts), self.width), self.dtype)
        shard = np.searchsorted(self.tokens.starts, starts, side="right") - 1
        local = starts - self.tokens.starts[shard]
        inside = local < self.inside_rows[shard]
        for index in np.unique(shard[inside]):
            picked = inside & (shard == index)
            out[picked] = self.views[index][local[picked]]
        for row in np.flatnonzero(~inside):
            out[row] = self._across(int(shard[row]), int(local[row]))
        return out

    def items(self, starts: np.ndarray) -> np.ndarray:
        return self[starts].view(np.dtype((np.void, self.width * self.dtype.itemsize)))[:, 0]

    def _across(self, shard: int, local: int) -> np.ndarray:
        pieces, needed = [], self.width
        while needed:
            piece = self.tokens.shards[shard][local:local + needed]
            pieces.append(piece)
            needed -= len(piece)
            shard, local = shard + 1, 0
        return np.concatenate(pieces)


def _split_of(path: Path, meta: Meta) -> str:
    for split, info in meta.splits.items():
        if info.file == path.name:
            return split
    _refuse_a_file_that_is_not_a_bin(path, meta)
    listed = ", ".join(f"{path.parent / info.file}"
                       + (" (a shard directory)" if info.shards is not None else "")
                       for info in meta.splits.values())
    own = (f". A bin of your own without a {META_FILENAME} belongs in a folder of its own (read "
           "it there with dtype=)" if path.is_file() else "")
    raise TokbinError(f"{path} is not one of the bins {path.parent / META_FILENAME} lists: not "
                      "part of the build it describes (a leftover of an earlier one?); read "
                      f"what it lists instead: {listed}{own}")


def _refuse_a_file_that_is_not_a_bin(path: Path, meta: Meta) -> None:
    """A document index, meta.json or another file that is no .bin, given for a bin: read as
    ids it would be garbage, with dtype= or without."""
    index = next((split for split, i in meta.splits.items() if i.docs == path.name), None)
    if index or path.name == META_FILENAME or (path.is_file() and path.suffix != ".bin"):
        what = (f"{index}'s document index" if index else META_FILENAME
                if path.name == META_FILENAME else "not a token bin")
        raise TokbinError(f"{path} is {what}, not one of the bins {path.parent / META_FILENAME} "
                          f"lists: pass one of {sorted(i.file for i in meta.splits.values())}")


def parse_dtype(dtype) -> np.dtype:
    try:
        wanted = np.dtype(dtype)
    except TypeError:
        wanted = None
    for known in DTYPES.values():
        if wanted == known:
            return known
    raise TokbinError(f"dtype {dtype!r} is not a token dtype: use None (read meta.json), "
                      f"{' or '.join(repr(d) for d in DTYPES)}")



def rows_view(tokens: "np.ndarray | ShardedTokens", block_size: int) -> "Rows | ShardRows":
    """rows[o] is tokens[o : o + T + 1], for a bin or a shard directory's stream."""
    if isinstance(tokens, ShardedTokens):
        return ShardRows(tokens, block_size)
    return Rows(tokens, block_size)


def mapped_pages(tokens: "np.ndarray | ShardedTokens") -> "MappedPages":
    bins = tokens.shards if isinstance(tokens, ShardedTokens) else [tokens]
    return MappedPages([b.base for b in bins if isinstance(b.base, mmap.mmap)])


class MappedPages:
    """Keeps the bins' mapped pages from piling up in the process's RSS.

    A page the gather reads stays mapped, so RSS climbs towards the bin's size. Every
    CHECK_EVERY_ROWS rows this reads the process's resident file-backed memory (Linux:
    /proc/self/statm; elsewhere it assumes FAULT_AROUND_BYTES per row) and once that has grown by
    RELEASE_MAPPED_BYTES since the last release, unmaps the bins' pages with
    madvise(MADV_DONTNEED). The page cache keeps the data, so a re-read is a minor fault, not a
    disk read; but a kernel that maps a whole large folio per fault (up to 2 MiB) makes re-reads
    costly, hence a budget large enough that bins below it are never released.
    """

    def __init__(self, mappings: list[mmap.mmap]):
        usable = hasattr(mmap, "MADV_DONTNEED")
        self.mappings = [m for m in mappings if usable and hasattr(m, "madvise")]
        self.budget = RELEASE_MAPPED_BYTES
        if sum(len(m) for m in self.mappings) <= self.budget:
            self.mappings = []  # the bins fit in the budget: nothing to watch
        self.rows = self.rows_at_check = self.rows_at_release = 0
        self.resident_at_release = _resident_file_bytes()

    def touched(self, rows: int) -> None:
        self.rows += rows
        if not self.mappings or self.rows - self.rows_at_check < CHECK_EVERY_ROWS:
            return
        self.rows_at_check = self.rows
        resident = _resident_file_bytes()
        if resident is None or self.resident_at_release is None:
            grown = (self.rows - self.rows_at_release) * FAULT_AROUND_BYTES
        else:
            grown = resident - self.resident_at_release
        if grown >= self.budget:
            for mapping in self.mappings:
                mapping.madvise(mmap.MADV_DONTNEED)
            self.rows_at_release = self.rows
            self.resident_at_release = _resident_file_bytes()


def _resident_file_bytes() -> int | None:
    """The process's resident file-backed and shared memory (statm's third field), or None
    where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None
