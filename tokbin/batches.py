"""Batch index -> host arrays -> device tensors: the gathers behind BinLoader, and the thread
that runs them ahead of the training step.

`host_batch` may run on the prefetch thread; `to_device` runs on the caller's thread (it issues
the device work on its current stream). CPU: the ids are widened to int64 on the host, straight
into the batch's tensors. Elsewhere the compact dtype travels (as the same-width signed type,
which every backend supports, masked back to unsigned after widening on the device), from
pinned memory on CUDA with non_blocking copies; a document layout travels the same way.
"""
from __future__ import annotations

import queue
import threading
from typing import NamedTuple

import numpy as np
import torch

from tokbin.doc_sampling import ranges
from tokbin.gathers import gather_rows, gather_segments
from tokbin.tokens import ShardedTokens, mapped_pages, rows_view


class Documents(NamedTuple):
    """Where the documents are in one batch (BinLoader(return_documents=True)), on the
    batch's device. A segment is a run of one document's tokens inside one row; every row
    boundary is a segment boundary.

    cu_seqlens: int32 [segments + 1]: 0, then the segments' cumulative lengths in the flattened
        [batch_size * block_size] batch (flash-attn's varlen convention: pass it as
        cu_seqlens_q and cu_seqlens_k).
    position_ids: int64 [batch_size, block_size]: each token's position in its segment, 0 at
        every segment's first token (exactly at cu_seqlens[:-1]).
    max_seqlen: the longest segment, a Python int (flash-attn's max_seqlen_q/k).
    """
    cu_seqlens: torch.Tensor
    position_ids: torch.Tensor
    max_seqlen: int


class TokenGather:
    """Rows of T + 1 consecutive tokens from the `offsets` each batch starts at."""

    def __init__(self, tokens, block_size: int, offsets, device: torch.device):
        self.block_size, self.offsets, self.device = block_size, offsets, device
        item = tokens.dtype.itemsize
        self.rows = rows_view(tokens, block_size)
        self.compact_transfer = device.type != "cpu"
        self.pinned = device.type == "cuda"
        self.signed = torch.int16 if item == 2 else torch.int32
        self.mask = (1 << (8 * item)) - 1
        self._mapped = mapped_pages(tokens)

    def host_batch(self, batch: int):
        starts = self.offsets(batch)
        host = self._gather_rows(starts)
        self._mapped.touched(len(starts))
        return host

    def _gather_rows(self, starts: np.ndarray):
        if not self.compact_transfer:
            rows = self.rows[starts]
            shape = (len(starts), self.block_size)
            x, y = torch.empty(shape, dtype=torch.int64), torch.empty(shape, dtype=torch.int64)
            np.copyto(x.numpy(), rows[:, :-1])
            np.copyto(y.numpy(), rows[:, 1:])
            return (x, y)
        # A fresh buffer per batch: torch's pinned-memory cache does not hand a block out
        # again until the non_blocking copy that reads it has finished.
        host = torch.empty((len(starts), self.block_size + 1), dtype=self.signed,
                           pin_memory=self.pinned)
        host.numpy().view(self.rows.dtype)[...] = self.rows[starts]
        return host

    def to_device(self, host) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.compact_transfer:
            return host
        compact = host.to(self.device, non_blocking=self.pinned)
        return self._widen(compact[:, :-1]), self._widen(compact[:, 1:])

    def _widen(self, compact: torch.Tensor) -> torch.Tensor:
        wide = torch.empty(compact.shape, dtype=torch.int64, device=self.device)
        return wide.copy_(compact).bitwise_and_(self.mask)


class DocumentGather(TokenGather):
    """Batches of a document layout (tokbin.doc_sampling): `layout.parts(batch)` names the
    rows of the layout's blocks a batch is, `layout.block(key)` lays a block out. A block is
    gathered once (rows of consecutive tokens like TokenGather's, or packed rows segment by
    segment), then sliced batch by batch. With `documents`, each batch carries its
    `Documents`."""

    def __init__(self, tokens, block_size: int, batch_size: int, device: torch.device,
                 layout, documents: bool):
        super().__init__(tokens, block_size, None, device)
        self.layout, self.documents, self.batch_size = layout, documents, batch_size
        self.tokens = tokens if isinstance(tokens, ShardedTokens) else tokens.view(np.ndarray)
        # a position's dtype on the host (and on the way to the device)
        self.small, self.small_torch = ((np.int16, torch.int16) if block_size <= 1 << 15
                                        else (np.int32, torch.int32))
        self._blocks: dict = {}
        self._tiled = np.zeros(0, self.small)

    def host_batch(self, batch: int):
        B, T, parts, row = self.batch_size, self.block_size, [], 0
        for key, first, end in self.layout.parts(batch):
            parts.append((self._block(key, (first - row) % B), first, end))
            row += end - first
        if self.compact_transfer:  # the ids' bytes as the signed type, positions apart
            ids = torch.empty((2, B, T), dtype=self.signed, pin_memory=self.pinned)
            arrays = list(ids.numpy().view(self.rows.dtype))
            if self.documents:
                position_ids = torch.empty((B, T), dtype=self.small_torch,
                                           pin_memory=self.pinned)
                arrays.append(position_ids.numpy())
        else:  # x, y and position_ids widened into one int64 buffer
            ids = torch.empty((2 + self.documents, B, T), dtype=torch.int64)
            arrays, position_ids = list(ids.numpy()), None
        row = 0
        for block, first, end in parts:
            for dest, source in zip(arrays, (block.x, block.y, block.position_ids)):
                np.copyto(dest[row:row + end - first], source[first:end])
            row += end - first
        if not self.documents:
            return ids, None
        cu, longest = (parts[0][0].batch_layout(parts[0][1]) if len(parts) == 1
                       else self._joined_layout(parts))
        if self.pinned:
            cu = torch.empty(len(cu), dtype=torch.int32, pin_memory=True).copy_(cu)
        return ids, (cu, position_ids, longest)

    def _joined_layout(self, parts) -> tuple[torch.Tensor, int]:
        """cu_seqlens and the longest segment of a batch made of parts of blocks."""
        T, row, pieces = self.block_size, 0, []
        for block, first, end in parts:  # each block's offsets, from this batch's start
            a, b = block.ptr[first], block.ptr[end]
            pieces.append(block.out[a:b] - (first - row) * T)
            row += end - first
        cu = np.concatenate([*pieces, [row * T]]).astype(np.int32)
        return torch.from_numpy(cu), int(np.diff(cu).max())

    def row_positions(self, rows: int) -> np.ndarray:
        """0 .. T - 1, `rows` times over (made once, for the largest block)."""
        if len(self._tiled) < rows * self.block_size:
            self._tiled = np.tile(np.arange(self.block_size, dtype=self.small), rows)
        return self._tiled[:rows * self.block_size]

    def _block(self, key, phase: int) -> "_GatheredBlock":
        """The gathered block `key`; `phase`: the first of its rows that begins a batch."""
        if key not in self._blocks:
            if len(self._blocks) >= 2:  # a batch spans at most two blocks
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = _GatheredBlock(self, self.layout.block(key), phase)
        return self._blocks[key]

    def to_device(self, host):
        ids, layout = host
        if self.compact_transfer:
            compact = ids.to(self.device, non_blocking=self.pinned)
            x, y = self._widen(compact[0]), self._widen(compact[1])
        else:
            x, y, *rest = ids.unbind(0)
        if layout is None:
            return x, y
        cu, position_ids, longest = layout
        if self.compact_transfer:
            cu = cu.to(self.device, non_blocking=self.pinned)
            position_ids = position_ids.to(self.device, non_blocking=self.pinned).long()
        else:
            position_ids = rest[0]
        return x, y, Documents(cu, position_ids, longest)


class _GatheredBlock:
    """A block's rows on the host, [rows, T] each: x, y (the bin's dtype) and, with
    documents, position_ids (int16, or int32 for rows longer than 32768) and the layout of
    every batch that lies wholly in the block (cu_seqlens as slices of one int32 array, and
    the longest segment), found together; `out` (int32), `ptr` for the other batches."""

    def __init__(self, gather: DocumentGather, block, phase: int):
        T, seg = gather.block_size, block.segments
        if block.starts is not None:  # rows of consecutive tokens, as a token batch's
            rows = gather_rows(gather.rows, block.starts, gather._mapped.touched)
            self.x, self.y = rows[:, :-1], rows[:, 1:]
        else:
            total = int(seg.out[-1] + seg.length[-1])
            ids = gather_segments(gather.tokens, seg.src, seg.out, seg.length, total,
                                  gather._mapped.touched)
            self.x, self.y = ids[0].reshape(-1, T), ids[1].reshape(-1, T)
        self.position_ids = None
        if gather.documents:
            self.ptr, self.out = block.ptr, seg.out.astype(np.int32)
            # a token's place in its row, less its segment's
            self.position_ids = np.subtract(
                gather.row_positions(len(self.x)),
                np.repeat((seg.out % T).astype(gather.small), seg.length)).reshape(-1, T)
            self._batches(gather.batch_size, T, phase, seg.length)

    def _batches(self, B: int, T: int, phase: int, length: np.ndarray) -> None:
        """cu_seqlens of each whole batch: its segments' offsets from its first row, then
        B * T, laid end to end in one array; and each one's longest segment."""
        firsts = np.arange(phase, len(self.x) - B + 1, B)
        self.batch_of_row = {int(first): j for j, first in enumerate(firsts)}
        if not len(firsts):
            return
        lo, hi = self.ptr[firsts], self.ptr[firsts + B]
        self.cu_at = np.cumsum(hi - lo + 1) - (hi - lo + 1)  # batch j's from cu_at[j]
        self.cu_all = np.full(int(self.cu_at[-1] + hi[-1] - lo[-1] + 1), B * T, np.int32)
        batch, index = ranges(lo, hi)
        self.cu_all[self.cu_at[batch] + index - lo[batch]] = self.out[index] - firsts[batch] * T
        self.cu_end = self.cu_at + hi - lo + 1
        self.longest = np.maximum.reduceat(length[lo[0]:hi[-1]], lo - lo[0]).tolist()

    def batch_layout(self, first: int) -> tuple[torch.Tensor, int]:
        """(cu_seqlens, longest segment) of the batch of rows first .. first + B - 1."""
        j = self.batch_of_row[first]
        # a copy: the batch's own, as x and y are (a training step may write into it)
        return (torch.from_numpy(self.cu_all[self.cu_at[j]:self.cu_end[j]].copy()),
                self.longest[j])


class Prefetcher:
    """A daemon thread that gathers batches start, start+1, ... into a bounded queue.

    It holds the gather, not the loader, so a dropped loader is still garbage-collected (and
    its __del__ stops the thread). An exception in the thread is re-raised by `get`.
    """

    def __init__(self, gather: TokenGather, start: int, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gather, start), daemon=True,
                                        name="tokbin-prefetch")
        self._thread.start()

    def _run(self, gather: TokenGather, batch: int) -> None:
        try:
            if gather.device.type == "cuda":
                # A new thread's current device is 0: pinned allocations made here should use
                # this rank's CUDA context, not create one on GPU 0.
                torch.cuda.set_device(gather.device)
            while not self._stop.is_set():
                self._queue.put((True, gather.host_batch(batch)))
                batch += 1
        except BaseException as e:  # handed to the consumer, which raises it
            self._queue.put((False, e))

    def get(self):
        ok, item = self._queue.get()
        if not ok:
            self._stop.set()
            raise item
        return item

    def stop(self) -> None:
        """Ends the thread. Emptying the queue unblocks a pending put; after that put the
        thread sees the stop flag, so join returns."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.01)
