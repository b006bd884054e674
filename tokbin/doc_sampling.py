"""Document layouts of batches: for BinLoader(align="document") where each row starts, and
for return_documents where the documents are inside each row. Like tokbin.sampling's offsets,
batch i is a pure function of (seed, rank, world_size, i).

A layout is described by **segments**: runs of consecutive tokens of one document, in the
order they fill the flattened rows, never crossing a row. Segment k fills positions out[k] ..
out[k] + length[k] - 1 with tokens src[k] .. of the split's stream, and the target of every
token is the token after it in the stream (for eot prepend: the last token of a document
predicts the next one's end-of-text id). Empty documents (eot none) have no segment.

Layouts are made a **block** of rows at a time (vectorized; `parts` says which rows of which
blocks a batch is), then sliced per batch:
- `RandomDocuments` (align="document", sampling="random"): row starts are document starts
  drawn uniformly, with replacement, among the documents that start at or before n - T - 1; a
  row is the T + 1 tokens from there on (the next documents in file order, the last one cut at
  the row's end). Uniform over documents, not tokens: a short document starts a row as often
  as a long one. Nothing is packed, so nothing is dropped.
- `TokenRowDocuments` (align="token" with return_documents): token rows, cut where
  documents start inside them (a row's first segment usually starts mid-document).
- `tokbin.packing.EpochDocuments` (align="document", sampling="epoch"): packed rows, every
  document once per epoch.
"""
from __future__ import annotations

import numpy as np

# SeedSequence spawn keys apart from tokbin.sampling's (0, 1): independent streams
RANDOM_DOCUMENTS, EPOCH_DOCUMENTS = 2, 3
BLOCK_TOKENS = 1 << 20  # rows are laid out (and gathered) about this many tokens at a time


class Segments:
    """Segments in output order (see the module docstring): int64 arrays `out`, `src` and
    `length`."""

    __slots__ = ("out", "src", "length")

    def __init__(self, out: np.ndarray, src: np.ndarray, length: np.ndarray):
        self.out, self.src, self.length = out, src, length


class Block:
    """Rows laid out together. `starts`: each row is the T + 1 tokens from there; None: the
    rows are packed, `segments` say where every token comes from. `segments` (out counted
    from the block's first row; None: consecutive rows whose layout nobody asked for) and
    `ptr`: row r's segments are ptr[r] .. ptr[r + 1] - 1."""

    __slots__ = ("starts", "segments", "ptr")

    def __init__(self, starts: np.ndarray | None, segments: Segments | None,
                 ptr: np.ndarray | None):
        self.starts, self.segments, self.ptr = starts, segments, ptr


def document_spans(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the non-empty documents of a document index, the one holding the
    split's last token a token shorter: that token has no target."""
    starts = offsets[:-1]
    lengths = np.minimum(offsets[1:], offsets[-1] - 1) - starts  # empty ones after it: < 0
    keep = lengths > 0
    return starts[keep], lengths[keep]


def ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, index) of every index in [lo[row], hi[row]), row by row."""
    counts = hi - lo
    row = np.repeat(np.arange(len(lo)), counts)
    first = np.cumsum(counts) - counts
    return row, np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first - lo, counts)


def consecutive_rows(starts: np.ndarray, row_starts: np.ndarray, first: np.ndarray,
                     end: np.ndarray, block_size: int, documents: bool) -> Block:
    """A block of rows of consecutive tokens: row b runs from row_starts[b] through the
    documents first[b] .. end[b] - 1 (first[b]: the one row_starts[b] is in)."""
    if not documents:
        return Block(row_starts, None, None)
    row, doc = ranges(first, end)
    src = np.maximum(starts[doc], row_starts[row])
    out = row * block_size + (src - row_starts[row])
    length = np.diff(out, append=len(row_starts) * block_size)
    return Block(row_starts, Segments(out, src, length),
                 np.concatenate([[0], np.cumsum(end - first)]))


class RandomDocuments:
    """Rows at uniformly drawn document starts: PCG64 raw draws from (seed, rank), B per
    batch, so that batch i's are draws i*B .. (a resume is an `advance`). A block is
    `per_block` batches."""

    def __init__(self, starts: np.ndarray, n: int, block_size: int, batch_size: int, seed: int,
                 rank: int, documents: bool):
        self.starts, self.block_size, self.batch_size = starts, block_size, batch_size
        self.documents = documents
        # drawable: a prefix, never empty (the first document starts at 0, and n > T)
        self.count = int(np.searchsorted(starts, n - block_size, "left"))
        # how many document starts each row holds: found once, not per batch in the index
        first = starts[:self.count]
        self.inside = np.searchsorted(starts, first + block_size, "left") - np.arange(self.count)
        self.per_block = max(1, BLOCK_TOKENS // (batch_size * block_size))
        self._seed = np.random.SeedSequence(seed, spawn_key=(RANDOM_DOCUMENTS, rank))

    def parts(self, batch: int) -> list[tuple[int, int, int]]:
        block, index = divmod(batch, self.per_block)
        return [(block, index * self.batch_size, (index + 1) * self.batch_size)]

    def block(self, block: int) -> Block:
        rows = self.per_block * self.batch_size
        bits = np.random.PCG64(self._seed)
        bits.advance(block * rows)
        doc = (bits.random_raw(rows) % np.uint64(self.count)).astype(np.intp)
        return consecutive_rows(self.starts, self.starts[doc], doc, doc + self.inside[doc],
                                self.block_size, self.documents)


class TokenRowDocuments:
    """align="token" with return_documents: the token sampler's rows (tokbin.sampling), a
    block per batch."""

    def __init__(self, offsets, starts: np.ndarray, block_size: int, batch_size: int):
        self.offsets, self.starts = offsets, starts
        self.block_size, self.batch_size = block_size, batch_size

    def parts(self, batch: int) -> list[tuple[int, int, int]]:
        return [(batch, 0, self.batch_size)]

    def block(self, batch: int) -> Block:
        rows = self.offsets(batch)
        first = np.searchsorted(self.starts, rows, "right") - 1
        end = np.searchsorted(self.starts, rows + self.block_size, "left")
        return consecutive_rows(self.starts, rows, first, end, self.block_size, True)
