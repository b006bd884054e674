"""BinLoader: training batches from a token bin, on any torch device.

    loader = BinLoader("data/train.bin", batch_size=64, block_size=256, device="cuda")
    x, y = loader.next_batch()      # int64 [64, 256] on the device; y is x shifted by one

Batch `i` of a loader is a pure function of (seed, rank, world_size, i): that is what makes a
resume exact (`state_dict` is just the count of batches handed out) and lets a background
thread gather batches ahead of the training step without changing what the step sees.

How a batch is made:
- The bin is memory-mapped once. A strided view of it has one row per token position, each row
  the T+1 tokens that start there, so a batch is one fancy-index of B rows into a [B, T+1]
  buffer in the bin's own dtype (no per-batch reopen, no Python loop over rows).
- CPU: the buffer is widened to int64 straight into the x and y tensors.
- CUDA: the buffer is pinned host memory, copied with `non_blocking=True` in the compact dtype
  (a quarter of the seed's int64 traffic for uint16) and widened to int64 on the device. The
  bytes travel as int16/int32, which every backend supports, and are masked back to unsigned.
- Memory: pages of the mapping that the gathers touch count towards the process's RSS;
  `tokbin.tokens.MappedPages` unmaps them once they pass a budget.

Reading the tokens on disk is tokbin.tokens'; choosing each batch's offsets, tokbin.sampling's.
"""
from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np
import torch

from tokbin.errors import TokbinError
from tokbin.sampling import EpochOffsets, RandomOffsets
from tokbin.tokens import mapped_pages, open_tokens, rows_view

SAMPLINGS = ("random", "epoch")
STATE_VERSION = 1
DEFAULT_PREFETCH = 2


class BinLoader:
    """Endless (x, y) batches of int64 [batch_size, block_size] tensors on `device`.

    path: a token bin. With dtype=None its meta.json (beside it) gives the dtype and is checked
        against the file's size; with dtype="uint16"/"uint32" (or a numpy dtype) it may be a bare
        nanoGPT-style bin with no meta.json. Or a shard directory (binarize.shard_tokens > 0,
        e.g. "data/train"): its shards are read as one token stream, so it gives exactly the
        batches of the single bin it was cut from (every shard listed in meta.json must be
        there).
    sampling: "random": each row starts at a uniform random offset in [0, n - T - 1], drawn with
        replacement (nanoGPT's get_batch); "epoch": the non-overlapping windows
        [k*T, k*T + T + 1) for k < (n - 1) // T, each once per epoch in an order shuffled per
        epoch, dealt disjointly to the ranks (see `windows_per_epoch`).
    seed: the batches are a function of (seed, rank, world_size) only.
    rank, world_size: default to torch.distributed's when it is initialized, else 0 and 1.
    prefetch: batches a background thread gathers ahead of `next_batch`; 0 gathers inline.
        Default: 2 on CUDA/MPS, where the host is otherwise idle while the device computes;
        0 on CPU, where the gather (tens of microseconds) is cheaper than a thread hand-off
        and a thread would compete with the training step for the same cores.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int, block_size: int,
                 device: str | torch.device = "cpu", sampling: str = "random", seed: int = 1337,
                 rank: int | None = None, world_size: int | None = None,
                 dtype: str | np.dtype | type | None = None, prefetch: int | None = None):
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("block_size", block_size, minimum=1)
        _check_int("seed", seed, minimum=0)
        self.device = _check_device(device)
        if prefetch is None:
            prefetch = 0 if self.device.type == "cpu" else DEFAULT_PREFETCH
        _check_int("prefetch", prefetch, minimum=0)
        if sampling not in SAMPLINGS:
            raise TokbinError(f"sampling {sampling!r} is not one of {list(SAMPLINGS)}")
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)
        self.path = Path(path)
        self.batch_size, self.block_size, self.sampling, self.seed = (batch_size, block_size,
                                                                      sampling, seed)
        self.prefetch = prefetch
        tokens = open_tokens(self.path, dtype)
        self.dtype = tokens.dtype
        self.tokens = len(tokens)
        if self.tokens < block_size + 1:
            raise TokbinError(f"block_size {block_size} needs at least {block_size + 1} tokens "
                              f"(x and its shifted y) but {self.path} has {self.tokens}; use a "
                              "smaller block_size or more data")
        if sampling == "random":
            self._offsets = RandomOffsets(self.tokens, block_size, batch_size, seed, self.rank)
        else:
            self._offsets = EpochOffsets(self.tokens, block_size, batch_size, seed, self.rank,
                                          self.world_size, self.path)
        self._gather = _Gather(tokens, block_size, self._offsets, self.device)
        self._batches = 0
        self._thread: _Prefetcher | None = None

    # -- batches ------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y): int64 [batch_size, block_size] on the device, y[:, t] == x[:, t+1]."""
        if self.prefetch == 0:
            host = self._gather.host_batch(self._batches)
        else:
            if self._thread is None:
                self._thread = _Prefetcher(self._gather, self._batches, self.prefetch)
            try:
                host = self._thread.get()
            except BaseException:
                self._stop_prefetch()  # the next call starts over from the same batch
                raise
        self._batches += 1
        return self._gather.to_device(host)

    def __iter__(self):
        while True:
            yield self.next_batch()

    @property
    def batches(self) -> int:
        """Batches handed out so far (the resume point)."""
        return self._batches

    @property
    def windows_per_epoch(self) -> int | None:
        """sampling="epoch": the windows this rank sees per epoch; None for "random".

        The (n - 1) // T windows are shuffled once per epoch (the same order on every rank) and
        dealt round-robin; the last `windows % world_size` of the shuffled order are skipped that
        epoch, so every rank gets the same count (like DistributedSampler's drop_last) and ranks
        stay in step. The skipped windows differ from epoch to epoch.
        """
        return self._offsets.per_rank if self.sampling == "epoch" else None

    @property
    def epoch(self) -> int | None:
        """sampling="epoch": the epoch the next batch starts in (batches run across epoch
        boundaries, so no window is dropped at an epoch's end); None for "random"."""
        if self.sampling != "epoch":
            return None
        return self._batches * self.batch_size // self._offsets.per_rank

    # -- resume -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What resumes this loader exactly: save it with the model's checkpoint.

        It leaves the rank out: ranks step in lock-step, so the state rank 0 saves resumes every
        rank of the same world_size.
        """
        return {"version": STATE_VERSION, "batches": self._batches, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the next batch is the one an uninterrupted run would yield."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise TokbinError("loader state is not a BinLoader.state_dict() of this tokbin "
                              f"(version {STATE_VERSION})")
        different = {k: (state.get(k), v) for k, v in self._identity().items()
                     if state.get(k) != v}
        if different:
            listed = ", ".join(f"{k}: saved {s!r}, now {v!r}" for k, (s, v) in different.items())
            raise TokbinError(f"loader state is from a different setup ({listed}); resume with "
                              "the same bin, sizes, sampling, seed and world_size")
        batches = state.get("batches")
        _check_int("state['batches']", batches, minimum=0)
        self._stop_prefetch()
        self._batches = batches

    def _identity(self) -> dict:
        return {"tokens": self.tokens, "batch_size": self.batch_size,
                "block_size": self.block_size, "sampling": self.sampling, "seed": self.seed,
                "world_size": self.world_size}

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the prefetch thread (also done when the loader is garbage-collected)."""
        self._stop_prefetch()

    def _stop_prefetch(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def __enter__(self) -> "BinLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self._thread.stop()

    def __repr__(self) -> str:
        return (f"BinLoader({str(self.path)!r}, batch_size={self.batch_size}, "
                f"block_size={self.block_size}, device={str(self.device)!r}, "
                f"sampling={self.sampling!r}, seed={self.seed}, rank={self.rank}, "
                f"world_size={self.world_size}, dtype={self.dtype.name!r}, "
                f"tokens={self.tokens})")


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise TokbinError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _rank_and_world_size(rank, world_size) -> tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist
        initialized = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialized else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialized else 1
    _check_int("world_size", world_size, minimum=1)
    _check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise TokbinError(f"rank {rank} is not < world_size {world_size}: ranks are numbered "
                          f"0 .. {world_size - 1}")
    return int(rank), int(world_size)


def _check_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise TokbinError(f"device {device!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TokbinError(f"device {str(device)!r} asked for but torch.cuda.is_available() is "
                          "False: use device='cpu' or a CUDA build of torch")
    if device.type == "cuda" and device.index is None:
        # Pin "cuda" to the device current now (under DDP: this rank's, once set_device ran),
        # so batches do not follow later set_device calls or the prefetch thread's default 0.
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TokbinError("device 'mps' asked for but torch.backends.mps.is_available() is "
                          "False: use device='cpu'")
    return device


class _Gather:
    """Batch index -> host batch -> device tensors. host_batch may run on the prefetch thread;
    to_device runs on the caller's thread (it issues the device work on its current stream)."""

    def __init__(self, tokens: np.ndarray, block_size: int, offsets, device: torch.device):
        self.block_size, self.offsets, self.device = block_size, offsets, device
        item = tokens.dtype.itemsize
        self.rows = rows_view(tokens, block_size)
        # CPU: widen on the host, straight into x and y. Elsewhere: send the compact dtype and
        # widen on the device. The bytes travel as the same-width signed type, which every
        # backend supports, and the sign extension is masked away after widening.
        self.compact_transfer = device.type != "cpu"
        self.pinned = device.type == "cuda"
        self.signed = torch.int16 if item == 2 else torch.int32
        self.mask = (1 << (8 * item)) - 1
        self._mapped = mapped_pages(tokens)

    def host_batch(self, batch: int):
        starts = self.offsets(batch)
        if not self.compact_transfer:
            rows = self.rows[starts]
            shape = (len(starts), self.block_size)
            x, y = torch.empty(shape, dtype=torch.int64), torch.empty(shape, dtype=torch.int64)
            np.copyto(x.numpy(), rows[:, :-1])
            np.copyto(y.numpy(), rows[:, 1:])
            host = (x, y)
        else:
            # A fresh buffer per batch: torch's pinned-memory cache does not hand a block out
            # again until the non_blocking copy that reads it has finished.
            host = torch.empty((len(starts), self.block_size + 1), dtype=self.signed,
                               pin_memory=self.pinned)
            host.numpy().view(self.rows.dtype)[...] = self.rows[starts]
        self._mapped.touched(len(starts))
        return host

    def to_device(self, host) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.compact_transfer:
            return host
        compact = host.to(self.device, non_blocking=self.pinned)
        shape = (compact.shape[0], self.block_size)
        x = torch.empty(shape, dtype=torch.int64, device=self.device)
        y = torch.empty(shape, dtype=torch.int64, device=self.device)
        x.copy_(compact[:, :-1]).bitwise_and_(self.mask)
        y.copy_(compact[:, 1:]).bitwise_and_(self.mask)
        return x, y


class _Prefetcher:
    """A daemon thread that gathers batches start, start+1, ... into a bounded queue.

    It holds the _Gather, not the loader, so a dropped loader is still garbage-collected (and
    its __del__ stops the thread). An exception in the thread is re-raised by `get`.
    """

    def __init__(self, gather: _Gather, start: int, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gather, start), daemon=True,
                                        name="tokbin-prefetch")
        self._thread.start()

    def _run(self, gather: _Gather, batch: int) -> None:
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
