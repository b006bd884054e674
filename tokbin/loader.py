"""BinLoader: training batches from a token bin, on any torch device.

    loader = BinLoader("data/train.bin", batch_size=64, block_size=256, device="cuda")
    x, y = loader.next_batch()      # int64 [64, 256] on the device; y is x shifted by one
    loader = BinLoader(..., align="document", return_documents=True)
    x, y, docs = loader.next_batch()  # rows start at documents; docs.cu_seqlens, .position_ids

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

Reading the tokens on disk is tokbin.tokens'; choosing each batch's offsets, tokbin.sampling's
(token rows) and tokbin.doc_sampling's (document rows); gathering them, tokbin.batches'.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tokbin.batches import DocumentGather, Prefetcher, TokenGather
from tokbin.doc_sampling import RandomDocuments, TokenRowDocuments, document_spans
from tokbin.packing import EpochDocuments
from tokbin.errors import TokbinError
from tokbin.loader_args import check_device, check_int, rank_and_world_size
from tokbin.sampling import EpochOffsets, RandomOffsets
from tokbin.tokens import open_document_index, open_tokens, recorded_ids_crc32

_FORKS = [0]  # forks of this process so far: a loader copied by one would repeat the parent's
os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))

SAMPLINGS = ("random", "epoch")
ALIGNS = ("token", "document")
STATE_VERSION = 1
DEFAULT_PREFETCH = 2


class BinLoader:
    """Endless (x, y) batches of int64 [batch_size, block_size] tensors on `device` (and the
    batch's `Documents` with return_documents=True).

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
    align: "token": rows start where `sampling` says. "document": every row starts at a
        document's first token (for eot prepend its end-of-text id), read from the split's
        document index (<split>.docs, beside the bin): sampling="random" draws document starts
        uniformly, with replacement, a row running on into the next documents; "epoch" packs
        every document once per epoch, in a shuffled order, each to one rank, documents longer
        than block_size cut into pieces; a document crossing a row's end is split, its tail a
        segment of its own in another row, and the only tokens dropped are the few no row can
        start (tokbin.doc_sampling says which; docs/loader.md measures them).
    return_documents: next_batch() returns (x, y, docs): docs.cu_seqlens (int32, the segments'
        cumulative lengths in the flattened batch), docs.position_ids (int64 [B, T], 0 at each
        segment's start) and docs.max_seqlen, on the device (`tokbin.Documents`).
    seed: the batches are a function of (seed, rank, world_size) only.
    rank, world_size: default to torch.distributed's when it is initialized, else 0 and 1, so
        build the loader after init_process_group (one built before refuses its first batch once
        a group disagrees with those defaults). Passed, they are the data-parallel rank and size
        (the global RANK, not LOCAL_RANK), which may differ from the group's.
    prefetch: batches a background thread gathers ahead of `next_batch`; 0 gathers inline.
        Default: 2 on CUDA/MPS, where the host is otherwise idle while the device computes;
        0 on CPU, where the gather (tens of microseconds) is cheaper than a thread hand-off
        and a thread would compete with the training step for the same cores.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int, block_size: int,
                 device: str | torch.device = "cpu", sampling: str = "random", seed: int = 1337,
                 rank: int | None = None, world_size: int | None = None,
                 dtype: str | np.dtype | type | None = None, prefetch: int | None = None,
                 align: str = "token", return_documents: bool = False):
        check_int("batch_size", batch_size, minimum=1)
        check_int("block_size", block_size, minimum=1)
        check_int("seed", seed, minimum=0)
        self._forks = _FORKS[0]
        self.device = check_device(device)
        if prefetch is None:
            prefetch = 0 if self.device.type == "cpu" else DEFAULT_PREFETCH
        check_int("prefetch", prefetch, minimum=0)
        if sampling not in SAMPLINGS:
            raise TokbinError(f"sampling {sampling!r} is not one of {list(SAMPLINGS)}")
        if align not in ALIGNS:
            raise TokbinError(f"align {align!r} is not one of {list(ALIGNS)}")
        if not isinstance(return_documents, bool):
            raise TokbinError(f"return_documents must be True or False, got {return_documents!r}")
        self.rank, self.world_size, origin = rank_and_world_size(rank, world_size)
        # what was defaulted for want of a process group: checked against one at the first batch
        self._defaulted = tuple(name for name, came in origin.items() if came == "default")
        self.path = Path(path)
        # plain ints: a state_dict of numpy scalars is refused by json and torch.load's default
        self.batch_size, self.block_size, self.sampling, self.seed = (int(batch_size),
                                                                      int(block_size), sampling,
                                                                      int(seed))
        self.prefetch, self.align, self.return_documents = int(prefetch), align, return_documents
        batch_size, block_size, seed = self.batch_size, self.block_size, self.seed
        tokens = open_tokens(self.path, dtype)
        self.dtype = tokens.dtype
        self.tokens = len(tokens)
        crc = recorded_ids_crc32(self.path)  # what a state checks its data by, beyond the sizes
        self._ids = None if crc is None else {"dtype": self.dtype.name, "crc32": crc}
        if self.tokens < block_size + 1:
            raise TokbinError(f"block_size {block_size} needs at least {block_size + 1} tokens "
                              f"(x and its shifted y) but {self.path} has {self.tokens}; use a "
                              "smaller block_size or more data")
        self.documents = None  # documents in the index, where one is read
        if align == "token":
            if sampling == "random":
                self._offsets = RandomOffsets(self.tokens, block_size, batch_size, seed,
                                              self.rank)
            else:
                self._offsets = EpochOffsets(self.tokens, block_size, batch_size, seed,
                                              self.rank, self.world_size, self.path)
        if align == "token" and not return_documents:
            self._gather = TokenGather(tokens, block_size, self._offsets, self.device)
        else:
            self._gather = self._document_gather(tokens)
        self._batches = 0
        self._thread: Prefetcher | None = None

    def _document_gather(self, tokens) -> DocumentGather:
        offsets = open_document_index(self.path)  # checked: it ends at the split's tokens
        self.documents = len(offsets) - 1
        starts, lengths = document_spans(offsets)
        T, B, docs = self.block_size, self.batch_size, self.return_documents
        if self.align == "token":
            layout = TokenRowDocuments(self._offsets, starts, T, B)
        elif self.sampling == "random":
            layout = RandomDocuments(starts, self.tokens, T, B, self.seed, self.rank, docs)
        else:
            layout = EpochDocuments(starts, lengths, T, B, self.seed, self.rank,
                                    self.world_size, self.path)
        if self.align == "document":
            self._offsets = layout
        return DocumentGather(tokens, T, B, self.device, layout, docs)

    # -- batches ------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """The next (x, y): int64 [batch_size, block_size] on the device; y[:, t] is the token
        after x[:, t] in the split. With return_documents=True, (x, y, docs)."""
        if self._forks != _FORKS[0]:
            raise TokbinError("this BinLoader was built before a fork (a DataLoader worker?): "
                              "every copy would hand out the same batches; build it in the "
                              "process that uses it, with its own rank= and world_size=, and "
                              "use it without DataLoader workers (its prefetch thread reads "
                              "ahead)")
        if self._defaulted:  # the first batch only: then it is ()
            self._check_defaults_against_process_group()
        if self.prefetch == 0:
            host = self._gather.host_batch(self._batches)
        else:
            if self._thread is None:
                self._thread = Prefetcher(self._gather, self._batches, self.prefetch)
            try:
                host = self._thread.get()
            except BaseException:
                self._stop_prefetch()  # the next call starts over from the same batch
                raise
        self._batches += 1
        return self._gather.to_device(host)

    def _check_defaults_against_process_group(self, first_batch: bool = True) -> None:
        """A loader built before init_process_group took rank 0 of world_size 1 on every
        process: all of them would train on the same batches. Its first batch refuses that once
        a group is there; passed values are not checked (a data-parallel rank and size under
        tensor or pipeline parallelism differ from the group's on purpose)."""
        import torch.distributed as dist
        initialized = dist.is_available() and dist.is_initialized()
        if initialized:
            group = {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
            taken = {"rank": self.rank, "world_size": self.world_size}
            if any(group[name] != taken[name] for name in self._defaulted):
                raise TokbinError(
                    f"this BinLoader was built before init_process_group: it took rank "
                    f"{self.rank} of world_size {self.world_size}, but this process is rank "
                    f"{group['rank']} of {group['world_size']} in torch.distributed, so ranks "
                    "would train on the same batches; build the loader after "
                    "init_process_group (or pass rank= and world_size=)")
        if first_batch or initialized:  # a load before the group: the first batch checks again
            self._defaulted = ()

    def __iter__(self):
        while True:
            yield self.next_batch()

    def __reduce__(self):  # pickled, its memory-mapped views would be copies of the whole bin
        raise TypeError("a BinLoader does not pickle (nor deepcopy): build it in the process "
                        "that uses it; it needs no DataLoader workers (its prefetch thread "
                        "reads ahead), and each DDP rank builds its own (rank=, world_size=)")

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

        align="document": the rows of the epoch the next batch starts in, the same on every
        rank (each epoch packs differently, so the count varies a little).
        """
        if self.sampling != "epoch":
            return None
        if self.align == "document":
            return self._offsets.rows_in(self.epoch)
        return self._offsets.per_rank

    @property
    def epoch(self) -> int | None:
        """sampling="epoch": the epoch the next batch starts in (batches run across epoch
        boundaries, so no window is dropped at an epoch's end); None for "random"."""
        if self.sampling != "epoch":
            return None
        if self.align == "document":
            return self._offsets.locate(self._batches * self.batch_size)[0]
        return self._batches * self.batch_size // self._offsets.per_rank

    # -- resume -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What resumes this loader exactly: save it with the model's checkpoint.

        It leaves the rank out: ranks step in lock-step, so the state rank 0 saves resumes every
        rank of the same world_size. align="document" with sampling="epoch" adds the row counts
        of the epochs before the next batch's, so a resume need not lay those epochs out again.
        """
        state = {"version": STATE_VERSION, "batches": self._batches, **self._identity()}
        if self._ids is not None:
            state["ids"] = dict(self._ids)
        if self.align == "document" and self.sampling == "epoch":
            state["epoch_rows"] = self._offsets.epoch_rows[:self.epoch]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the next batch is the one an uninterrupted run would yield."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise TokbinError("loader state is not a BinLoader.state_dict() of this tokbin "
                              f"(version {STATE_VERSION})")
        if self._defaulted:  # a state saved on every rank says world_size too: name the cause
            self._check_defaults_against_process_group(first_batch=False)
        saved = {"align": "token", **state}  # states saved before align existed
        different = {k: (saved.get(k), v) for k, v in self._identity().items()
                     if saved.get(k) != v}
        if different:
            listed = ", ".join(f"{k}: saved {s!r}, now {v!r}" for k, (s, v) in different.items())
            raise TokbinError(f"loader state is from a different setup ({listed}); resume with "
                              "the same bin, sizes, sampling, align, seed and world_size")
        self._check_ids(state.get("ids"))
        batches = state.get("batches")
        check_int("state['batches']", batches, minimum=0)
        self._stop_prefetch()
        if "epoch_rows" in state and self.align == "document" and self.sampling == "epoch":
            self._offsets.resume(state["epoch_rows"])
        self._batches = int(batches)

    def _check_ids(self, saved) -> None:
        """A state records its split's ids' CRC-32 where meta.json gave one: the same sizes
        with other tokens (another data version) are refused. States without it (older ones,
        bare bins) and ids in another dtype (whose bytes differ) are not compared."""
        if saved is None:
            return
        if not (isinstance(saved, dict) and set(saved) == {"dtype", "crc32"}
                and all(isinstance(v, str) for v in saved.values())):
            raise TokbinError(f"loader state's 'ids' must be {{'dtype': ..., 'crc32': ...}} as "
                              f"state_dict() wrote it, got {saved!r}")
        ids = self._ids
        if ids is None or saved["dtype"] != ids["dtype"] or saved["crc32"] == ids["crc32"]:
            return
        raise TokbinError(f"loader state is from other data: {self.path} has the saved sizes "
                          f"({self.tokens:,} tokens) but other ids (CRC-32 {ids['crc32']}, the "
                          f"state's {saved['crc32']}). Resume on the data version it was saved "
                          "with (`git checkout <that commit> && dvc pull`, or "
                          "BinLoader(pinned_path(rev), ...)); to go on with this data anyway, "
                          "load the state without its 'ids'")

    def _identity(self) -> dict:
        identity = {"tokens": self.tokens, "batch_size": self.batch_size,
                    "block_size": self.block_size, "sampling": self.sampling, "seed": self.seed,
                    "world_size": self.world_size, "align": self.align}
        if self.align == "document":
            identity["documents"] = self.documents
        return identity

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
                f"align={self.align!r}, return_documents={self.return_documents}, "
                f"tokens={self.tokens})")
