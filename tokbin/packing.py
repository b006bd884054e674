"""Packed rows (BinLoader(align="document", sampling="epoch")): every document once per epoch,
each rank its own documents, rows that start at a document and waste almost nothing.

Documents longer than T (block_size) are cut into pieces of T tokens; only a document's first
piece is a document start. Each epoch shuffles the documents (seed, epoch) and deals
contiguous token-balanced runs of that order to the ranks (each document to one rank). A rank
lays its pieces out as its document starts in that order, each continuation piece right after
a start (the longest after the shortest, so that a start falls in every T tokens wherever the
lengths allow), and cuts that stream into windows of T tokens. A window becomes a row rotated
to begin at its first document start: [that start .. the window's end][the window's beginning
.. that start]. So every row starts at a document's first token and nothing is padded.

Split, not truncated: a document crossing a window's end has its head at the end of one row
and its tail as a segment of its own (positions restarting at 0, without the head as context)
in another; so do a long document's pieces. Dropped per epoch, and nothing else: windows with
no document start in them (inside a run of continuation pieces), each rank's last partial
window and windows beyond the count every rank has (R, the minimum over the ranks), and the
split's last token as an input. So an epoch has at most one row per document: documents many
rows long lose most of their windows. `EpochPlan.dropped_tokens` counts them; docs/loader.md
measures them.

A rank's rows run its epochs back to back and batch i is rows i*B .. i*B + B - 1 of that
stream, so a batch may end one epoch and begin the next.
"""
from __future__ import annotations

import bisect
import threading
from pathlib import Path

import numpy as np

from tokbin.doc_sampling import BLOCK_TOKENS, EPOCH_DOCUMENTS, Block, Segments, ranges
from tokbin.errors import TokbinError


def _small(a: np.ndarray) -> np.ndarray:
    return a.astype(np.uint16) if len(a) and a.max() < 1 << 16 else a


def _stable_order(length: np.ndarray, rank: np.ndarray | None) -> np.ndarray:
    """np.lexsort((length, rank)) of small non-negative ints, by radix sorts."""
    order = np.argsort(_small(length), kind="stable")
    return order if rank is None else order[np.argsort(_small(rank[order]), kind="stable")]


def _shortest(length: np.ndarray, count: int) -> np.ndarray:
    """np.argsort(length, kind="stable")[:count], without sorting all of `length` where
    `count` is small (a few long documents: their continuations need that many hosts)."""
    if count * 8 >= len(length):
        return np.argsort(_small(length), kind="stable")[:count]
    kth = int(np.searchsorted(np.cumsum(np.bincount(length)), count))  # the count-th smallest
    below = np.flatnonzero(length < kth)
    picked = np.concatenate([below, np.flatnonzero(length == kth)[:count - len(below)]])
    return picked[np.argsort(length[picked], kind="stable")]


class EpochPlan:
    """One epoch's layout: the pieces in stream order (`order`: piece ids; each starting at
    `c` in the stream; c ends with the stream's length), and this rank's R rows as (the
    window's offset in the stream, the rotation to its first document start, that start's
    index in `order`)."""

    def __init__(self, order, c, window, rotation, start_piece, rows, dropped_tokens):
        self.order, self.c, self.window, self.rotation = order, c, window, rotation
        self.start_piece, self.rows, self.dropped_tokens = start_piece, rows, dropped_tokens


class EpochDocuments:
    """The packed rows of every epoch (see the module docstring), a block of `block_rows`
    rows of an epoch at a time."""

    def __init__(self, starts: np.ndarray, lengths: np.ndarray, block_size: int,
                 batch_size: int, seed: int, rank: int, world_size: int, path: Path):
        T = block_size
        self.T, self.B, self.seed, self.rank, self.W = T, batch_size, seed, rank, world_size
        self.doc_len = lengths
        per = -(-lengths // T)  # pieces per document: the first (a start), then continuations
        self.first_piece = np.cumsum(per) - per
        self.piece_doc, k = ranges(np.zeros_like(per), per)  # k: the piece's index in its document
        self.piece_src = starts[self.piece_doc] + k * T
        self.piece_len = np.minimum(T, lengths[self.piece_doc] - k * T)
        self.continuations = np.flatnonzero(k)
        self.start_len = np.minimum(lengths, T)  # each document's first piece
        self.block_rows = max(batch_size, BLOCK_TOKENS // T)
        self._plans: dict[int, EpochPlan] = {}
        self.epoch_rows: list[int] = []  # R of epochs 0, 1, ...
        self._epoch_ends = [0]           # the stream's first row of each epoch, then the next
        self._lock = threading.Lock()  # the prefetch thread and BinLoader.epoch both count
        self._last = (0, 0, 0)  # (epoch, its first row in the stream, the next epoch's)
        self._count_rows(0)  # known from the start: a resumed state's counts are checked on it
        if self.epoch_rows[0] == 0:
            raise TokbinError(f"{path}: no window of block_size {block_size} tokens that starts "
                              f"at a document is left for every one of {world_size} rank(s); "
                              "use a smaller block_size, fewer ranks or more data")

    # -- the epoch's layout -------------------------------------------------------------------

    def plan(self, epoch: int) -> EpochPlan:
        if epoch in self._plans:
            return self._plans[epoch]
        T, W = self.T, self.W
        seed = np.random.SeedSequence(self.seed, spawn_key=(EPOCH_DOCUMENTS, epoch))
        rng = np.random.Generator(np.random.PCG64(seed))
        # the epoch's document order, cut into contiguous token-balanced runs, one per rank
        perm = rng.permutation(len(self.doc_len))
        cd = np.zeros(len(perm) + 1, dtype=np.int64)
        np.cumsum(self.doc_len[perm], out=cd[1:])
        bounds = np.searchsorted(cd, np.arange(W + 1, dtype=np.int64) * int(cd[-1]) // W)
        bounds[-1] = len(perm)
        order, start_at = self._layout(rng, perm, bounds)
        c = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(self.piece_len[order], out=c[1:])
        # windows of T per rank; a window is a row when a document start lies inside it: the
        # window of every start, then the first start of each window that has one
        base, windows = cd[bounds[:-1]], np.diff(cd[bounds]) // T
        first_window = np.cumsum(windows) - windows  # of each rank, in all ranks' windows
        starts = c[start_at]  # the stream offset of every document start, ascending
        if W > 1:
            rank = np.repeat(np.arange(W), np.diff(bounds))
            window = (starts - base[rank]) // T
            # a start past a rank's last whole window starts no row
            whole = np.flatnonzero(window < windows[rank])
            window, start_at, rank = (window[whole] + first_window[rank[whole]],
                                      start_at[whole], rank[whole])
        else:  # one rank: its windows ascend from 0, so the whole ones are a prefix
            window = starts // T
            whole = int(np.searchsorted(window, windows[0], "left"))
            window, start_at = window[:whole], start_at[:whole]
        first = np.ones(len(window), bool)
        np.not_equal(window[1:], window[:-1], out=first[1:])
        first = np.flatnonzero(first)
        window, start_at = window[first], start_at[first]
        rows = len(window)
        if W > 1:
            rank = rank[first]
            rows = int(np.bincount(rank, minlength=W).min())
            mine = np.flatnonzero(rank == self.rank)[:rows]
            window, start_at = window[mine], start_at[mine]
        g = base[self.rank] + (window - first_window[self.rank]) * T
        plan = EpochPlan(order, c, g, c[start_at] - g, start_at, rows,
                         int(cd[-1]) - W * rows * T)
        if epoch < len(self.epoch_rows) and self.epoch_rows[epoch] != rows:  # a state's count
            raise TokbinError(f"loader state's epoch_rows[{epoch}] is {self.epoch_rows[epoch]}, "
                              f"but this data's epoch {epoch} has {rows} rows: the state is "
                              "from other data, or was edited")
        self._plans = {e: p for e, p in self._plans.items() if e == epoch - 1}
        self._plans[epoch] = plan
        return plan

    def _layout(self, rng: np.random.Generator, perm: np.ndarray,
                bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(piece ids in stream order, the stream index of each document start): the starts
        in the epoch's document order, each rank's continuation pieces after its starts, the
        longest after the shortest (so a start falls in every T tokens wherever it can)."""
        conts = self.continuations
        if not len(conts):
            return self.first_piece[perm], np.arange(len(perm))
        conts = rng.permutation(conts)  # ties in random order
        if self.W == 1 and len(conts) <= len(perm):  # the shortest starts, one each
            conts = conts[np.argsort(-self.piece_len[conts], kind="stable")]  # longest first
            host = _shortest(self.start_len[perm], len(conts))
        else:
            rank_at = np.repeat(np.arange(self.W), np.diff(bounds))  # of each order position
            where = np.empty(len(perm), dtype=np.int64)
            where[perm] = np.arange(len(perm))
            c_rank = rank_at[where[self.piece_doc[conts]]]
            conts = conts[np.lexsort((-self.piece_len[conts], c_rank))]  # longest first
            c_rank = np.sort(c_rank)
            shortest = _stable_order(self.start_len[perm], rank_at if self.W > 1 else None)
            c_count = np.bincount(c_rank, minlength=self.W)
            i = np.arange(len(conts)) - (np.cumsum(c_count) - c_count)[c_rank]
            host = shortest[bounds[c_rank] + i % np.diff(bounds)[c_rank]]  # an order position
        hosted = np.bincount(host, minlength=len(perm))
        before = np.cumsum(hosted) - hosted  # continuations hosted before each start
        start_at = np.arange(len(perm)) + before
        order = np.empty(len(self.piece_len), dtype=np.int64)
        order[start_at] = self.first_piece[perm]
        by_host = np.argsort(host, kind="stable")
        after = np.arange(len(conts)) - before[host[by_host]]
        order[start_at[host[by_host]] + 1 + after] = conts[by_host]
        return order, start_at

    def rows_in(self, epoch: int) -> int:
        self._count_rows(epoch)
        return self.epoch_rows[epoch]

    def _count_rows(self, epoch: int, row: int = -1) -> None:
        """Lays out epochs until `epoch` and the stream's `row` are counted."""
        with self._lock:
            while len(self.epoch_rows) <= epoch or self._epoch_ends[-1] <= row:
                self.epoch_rows.append(self.plan(len(self.epoch_rows)).rows)
                self._epoch_ends.append(self._epoch_ends[-1] + self.epoch_rows[-1])

    def resume(self, epoch_rows: list[int]) -> None:
        """Takes the row counts of earlier epochs from a saved state (BinLoader.state_dict),
        so that locating a late batch lays out no earlier epoch again."""
        if not (isinstance(epoch_rows, list) and all(
                isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in epoch_rows)):
            raise TokbinError(f"loader state's epoch_rows must be a list of row counts, "
                              f"got {epoch_rows!r}")
        with self._lock:
            known = self.epoch_rows[:len(epoch_rows)]
            if epoch_rows[:len(known)] != known:
                raise TokbinError("loader state's epoch_rows disagree with this data's epochs "
                                  f"({epoch_rows[:len(known)]} vs {known}): it is from other data")
            if len(epoch_rows) > len(self.epoch_rows):
                self.epoch_rows = list(epoch_rows)
                self._epoch_ends = [0, *np.cumsum(epoch_rows).tolist()]

    def locate(self, row: int) -> tuple[int, int]:
        """(epoch, row within it) of the rank's row stream's `row`."""
        self._count_rows(0, row)
        epoch = bisect.bisect_right(self._epoch_ends, row) - 1
        return epoch, row - self._epoch_ends[epoch]

    # -- a batch's rows -------------------------------------------------------------------------

    def parts(self, batch: int) -> list[tuple[tuple[int, int], int, int]]:
        """The batch's rows as ((epoch, block), first, end): rows first .. end - 1 of that
        block. Usually one part; more where the batch crosses a block or an epoch."""
        parts, row, end = [], batch * self.B, (batch + 1) * self.B
        epoch, lo, hi = self._last  # most batches lie in one block of the last epoch met
        first = row - lo
        if lo <= row and end <= hi and first % self.block_rows + self.B <= self.block_rows:
            return [((epoch, first // self.block_rows), first % self.block_rows,
                     first % self.block_rows + self.B)]
        while row < end:
            epoch, local = self.locate(row)
            self._last = (epoch, self._epoch_ends[epoch], self._epoch_ends[epoch + 1])
            block, first = divmod(local, self.block_rows)
            take = min(end - row, self.epoch_rows[epoch] - local, self.block_rows - first)
            parts.append(((epoch, block), first, first + take))
            row += take
        return parts

    def block(self, key: tuple[int, int]) -> Block:
        """Rows [block * K, (block + 1) * K) of an epoch (K = block_rows), laid out together."""
        epoch, block = key
        plan, T = self.plan(epoch), self.T
        rows = slice(block * self.block_rows, min((block + 1) * self.block_rows, plan.rows))
        g, rot = plan.window[rows], plan.rotation[rows]
        # the pieces this block's windows meet: a short stretch of the stream (cache-warm)
        base = int(np.searchsorted(plan.c, g[0], "right")) - 1
        c = plan.c[base:int(np.searchsorted(plan.c, g[-1] + T, "left")) + 1]
        m0 = np.searchsorted(c, g, "right") - 1   # the piece holding the window's start
        h = np.searchsorted(c, g + T, "left")     # pieces m0 .. h-1 meet the window
        js = plan.start_piece[rows] - base  # the start piece: c[js] == g + rot
        met = h - m0
        ptr = np.zeros(len(met) + 1, np.int64)
        np.cumsum(met, out=ptr[1:])
        row = np.repeat(np.arange(len(met)), met)
        # rotated: js .. h-1, then m0 .. js-1 (no modulo: it is slow)
        m = np.arange(ptr[-1]) + (js - ptr[:-1])[row]
        m -= met[row] * (m >= h[row])
        gr, cm = g[row], c[m]
        lo, hi = np.maximum(cm, gr), np.minimum(c[m + 1], gr + T)
        at = lo - gr - rot[row]  # in (-T, T): the row begins at the rotation
        at += T * (at < 0)
        out = row * T + at
        src = self.piece_src[plan.order[base + m]] + (lo - cm)
        return Block(None, Segments(out, src, hi - lo), ptr)
