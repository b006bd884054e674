"""Which token offsets each batch starts its rows at: a pure function of (seed, rank, batch).

`RandomOffsets` is nanoGPT's sampling (uniform offsets, with replacement); `EpochOffsets`
visits every window of block_size tokens once per epoch, in a shuffled order dealt disjointly
to the ranks. Either gives batch i directly, which makes a resume exact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tokbin.errors import TokbinError

# Distinct SeedSequence spawn keys keep the random and the epoch streams independent.
_RANDOM_STREAM, _EPOCH_STREAM = 0, 1


class RandomOffsets:
    """nanoGPT's sampling: B uniform offsets in [0, n - T - 1] per batch, with replacement.

    Each rank has its own PCG64 stream from (seed, rank). A batch takes exactly B raw 64-bit
    draws, so batch i starts at draw i*B: `advance` jumps there directly on a resume. The
    offsets are draw % (n - T), whose bias, (n - T) / 2**64, is far below anything measurable.
    """

    def __init__(self, n: int, block_size: int, batch_size: int, seed: int, rank: int):
        self.count, self.batch_size = n - block_size, batch_size
        self._seed = np.random.SeedSequence(seed, spawn_key=(_RANDOM_STREAM, rank))
        self._bits, self._next = None, None

    def __call__(self, batch: int) -> np.ndarray:
        if batch != self._next:
            self._bits = np.random.PCG64(self._seed)
            self._bits.advance(batch * self.batch_size)
        draws = self._bits.random_raw(self.batch_size)
        self._next = batch + 1
        return (draws % np.uint64(self.count)).astype(np.intp)


class EpochOffsets:
    """Window starts k*T, every window once per epoch, this rank's share of a shuffled order.

    The order of epoch e is a permutation from (seed, e), the same on every rank; rank r takes
    positions r, r + W, r + 2W, ... of its first per_rank * W entries (W = world_size). The rank's
    stream is its epochs back to back and batch i is stream[i*B : (i+1)*B], so a batch may run
    from one epoch into the next rather than dropping or repeating windows at the boundary.
    """

    def __init__(self, n: int, block_size: int, batch_size: int, seed: int, rank: int,
                 world_size: int, path: Path):
        self.windows = (n - 1) // block_size
        self.per_rank = self.windows // world_size
        if self.per_rank == 0:
            raise TokbinError(f"{path} has {self.windows} windows of block_size {block_size}, "
                              f"fewer than world_size {world_size}: every rank needs at least one; "
                              "use a smaller block_size, fewer ranks or more data")
        self.block_size, self.batch_size = block_size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._cache: dict[int, np.ndarray] = {}

    def epoch_starts(self, epoch: int) -> np.ndarray:
        """This rank's window start offsets for `epoch`, in the order it sees them."""
        if epoch not in self._cache:
            seq = np.random.SeedSequence(self.seed, spawn_key=(_EPOCH_STREAM, epoch))
            order = np.random.Generator(np.random.PCG64(seq)).permutation(self.windows)
            mine = order[self.rank:self.per_rank * self.world_size:self.world_size]
            self._cache = {e: s for e, s in self._cache.items() if e == epoch - 1}
            self._cache[epoch] = (mine * self.block_size).astype(np.intp)
        return self._cache[epoch]

    def __call__(self, batch: int) -> np.ndarray:
        start, end = batch * self.batch_size, (batch + 1) * self.batch_size
        parts = []
        while start < end:
            epoch, index = divmod(start, self.per_rank)
            part = self.epoch_starts(epoch)[index:index + end - start]
            parts.append(part)
            start += len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
