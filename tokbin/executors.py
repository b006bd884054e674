"""What runs the encoding on this machine: a pool of threads or of worker processes.

Both follow one protocol, as `tokbin.ray_executor.RayExecutor` does: a context manager with
`encoding_info()` and `tokenize_split(files, text_column, out_bin, out_doclens, info, progress)`,
which writes a split's ids to `out_bin` and its documents' lengths to `out_doclens` and returns
their counts. Whatever the executor and worker count, the main thread writes results strictly
in submission order (`write_in_order`) with a few per worker in flight, so memory is bounded
whatever the corpus size and the output is the same.

- `ThreadExecutor`: the main thread reads batches of about `BATCH_BYTES` of text for a pool of
  encoding threads. Both engines encode in Rust with the GIL released; threads start at once.
- `ProcessExecutor`: worker processes, one per core, each reading its own work units (row
  groups of a parquet file) with its own GIL: making the `str` fastokens needs holds the GIL,
  which threads of one process share. Processes take a while to start, so they are used only
  for parquet datasets of at least `PROCESSES_FROM_BYTES` of text (`worth_processes`).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import types
import zlib
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from tokbin.encode import EncodeSettings, EncodingInfo, batch_encoder, encode_work_unit
from tokbin.errors import TokbinError
from tokbin.format import BinWriter, check_ids
from tokbin.readers import (BATCH_BYTES, WorkUnit, iter_text_batches, row_group_bytes,
                            use_lean_arrow_memory, work_units)

T = TypeVar("T")
PROCESSES_FROM_BYTES = 256 << 20  # text in a dataset's parquet files (uncompressed size)
UNIT_BYTES = 4 << 20  # text per work unit a worker process reads (at least one row group)


def default_workers() -> int:
    """TOKBIN_WORKERS, else every core this process may run on."""
    value = os.environ.get("TOKBIN_WORKERS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise TokbinError(f"TOKBIN_WORKERS must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def worth_processes(files: list[Path]) -> bool:
    """Whether worker processes pay for their start: parquet files (all a dataset's splits
    together) holding at least PROCESSES_FROM_BYTES of text, and a fork server to start them
    from (not on Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    size = sum(sum(row_group_bytes(p)) for p in files if p.suffix == ".parquet")
    return size >= PROCESSES_FROM_BYTES


@dataclass
class SplitCounts:
    tokens: int = 0
    documents: int = 0
    crc32: str = ""  # of the bin written (format.BinWriter.crc32)


@dataclass(frozen=True)
class SpilledIds:
    """A worker process's ids for one work unit, in a file (the bin's dtype, checked), and
    the CRC-32 of the file's bytes, computed as the worker wrote them."""
    path: Path
    count: int
    crc32: int


def write_in_order(submitted: Iterable[T], in_flight: int,
                   result: Callable[[T], tuple[np.ndarray | SpilledIds, np.ndarray]],
                   cancel: Callable[[T], object], out_bin: Path, out_doclens: Path,
                   info: EncodingInfo, progress: Callable[[int], None]) -> SplitCounts:
    """Writes the (ids, lengths) results of `submitted` work in submission order, pulling new
    work only while fewer than `in_flight` results are pending: output order never depends on
    which worker finishes first, and memory stays bounded whatever the corpus size."""
    counts = SplitCounts()
    pending: deque = deque()
    with BinWriter(out_bin, info.dtype, info.n_vocab) as bins, open(out_doclens, "wb") as lens:
        def write_oldest() -> None:
            ids, lengths = result(pending.popleft())
            if isinstance(ids, SpilledIds):
                bins.append_file(ids.path, ids.count, ids.crc32)
                ids.path.unlink()
                counts.tokens += ids.count
            else:
                bins.write(ids)
                counts.tokens += ids.size
            lens.write(memoryview(lengths))
            counts.documents += lengths.size
            progress(lengths.size)

        try:
            for work in submitted:
                pending.append(work)
                if len(pending) >= in_flight:
                    write_oldest()
            while pending:
                write_oldest()
        finally:
            for work in pending:
                cancel(work)
    counts.crc32 = bins.crc32
    return counts


class ThreadExecutor:
    """Batches encoded by a pool of threads, one per core.

    The encoder loads on a pool thread while the main thread starts reading; each thread
    then encodes with its own `thread_copy` of it.
    """

    def __init__(self, settings: EncodeSettings, workers: int):
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tokbin-encode")
        self._loaded = self._pool.submit(batch_encoder, settings)
        self._per_thread = threading.local()

    def encoding_info(self) -> EncodingInfo:
        """The encoding; a bad encoding name fails here with a clear message."""
        return self._loaded.result().info

    def tokenize_split(self, files: list[Path], text_column: str, out_bin: Path,
                       out_doclens: Path, info: EncodingInfo,
                       progress: Callable[[int], None] = lambda n: None) -> SplitCounts:
        batches = (b for path in files for b in iter_text_batches(path, text_column, BATCH_BYTES))
        futures = (self._pool.submit(self._encode, batch) for batch in batches)
        return write_in_order(futures, 2 * self.workers, lambda future: future.result(),
                              lambda future: future.cancel(), out_bin, out_doclens, info,
                              progress)

    def _encode(self, batch) -> tuple[np.ndarray, np.ndarray]:
        encoder = getattr(self._per_thread, "encoder", None)
        if encoder is None:
            encoder = self._per_thread.encoder = self._loaded.result().thread_copy()
        return encoder(batch)

    def __enter__(self) -> "ThreadExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)


class ProcessExecutor:
    """Work units encoded by worker processes, one per core, each reading its own row groups.

    A worker writes a unit's ids to a spill file (beside the output bin, inside the output's
    temporary folder) and returns its documents' lengths; the main thread appends the file to
    the bin and deletes it. Workers fork from a server process that imported tokbin but never
    encoded (a fork of a process whose fastokens had started its thread pool could hang), and
    load the encoder at once, so a bad setting fails there with its own message. A worker exits
    with the main process, even a killed one.
    """

    def __init__(self, settings: EncodeSettings, workers: int):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tokbin.executors"])
        self.settings, self.workers = settings, workers
        self._pool = ProcessPoolExecutor(workers, mp_context=context,
                                         initializer=_start_worker_process)
        # Every worker starts (the executor starts one per task submitted while none is idle)
        # and loads the encoder now, while this process goes on.
        with _main_script_not_rerun():
            self._loaded = [self._pool.submit(_load_encoder, settings) for _ in range(workers)]

    def encoding_info(self) -> EncodingInfo:
        """The encoding, from a worker (this process loads no vocabulary); a bad encoding name
        fails here with a clear message."""
        return self._result(self._loaded[0], "loading the encoder")

    def tokenize_split(self, files: list[Path], text_column: str, out_bin: Path,
                       out_doclens: Path, info: EncodingInfo,
                       progress: Callable[[int], None] = lambda n: None) -> SplitCounts:
        spill_dir = out_bin.with_name(f".{out_bin.stem}.spill")
        spill_dir.mkdir()

        def submit(index: int, unit: WorkUnit) -> tuple[Path, WorkUnit, Future]:
            spill = spill_dir / f"{index}.ids"
            future = self._pool.submit(_encode_to_file, unit, text_column, self.settings,
                                       str(spill))
            return spill, unit, future

        def spilled(work) -> tuple[SpilledIds, np.ndarray]:
            spill, unit, future = work
            count, crc32, lengths = self._result(future, f"tokenizing {unit}")
            return SpilledIds(spill, count, crc32), lengths

        submitted = (submit(i, unit) for i, unit in enumerate(work_units(files, UNIT_BYTES)))
        # Results wait as files, not in memory: a deeper queue keeps every worker busy.
        counts = write_in_order(submitted, 4 * self.workers, spilled,
                                lambda work: work[2].cancel(), out_bin, out_doclens, info,
                                progress)
        spill_dir.rmdir()
        return counts

    @staticmethod
    def _result(future: Future, what: object):
        try:
            return future.result()
        except BrokenProcessPool:
            raise TokbinError(f"a worker process died while {what} (killed, or out of "
                              "memory); check the machine's memory, or set TOKBIN_WORKERS "
                              "lower, then rerun") from None

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)


@contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Workers started in here do not import the main process's ``__main__`` (what spawn and
    forkserver workers otherwise do, to find functions defined there): they run tokbin's
    functions only, and a script calling tokbin without an ``if __name__ == "__main__":``
    guard, or read from stdin, would break them. multiprocessing skips a main module whose
    spec is named ``__main__``."""
    main = sys.modules["__main__"]
    spec = main.__dict__.get("__spec__")
    main.__spec__ = types.SimpleNamespace(name="__main__")
    try:
        yield
    finally:
        main.__spec__ = spec


def _start_worker_process() -> None:
    import pyarrow as pa
    # A worker blocks on its task queue, which nothing closes if the main process is killed:
    # it watches the main process and exits with it instead of lingering.
    threading.Thread(target=_exit_with, args=(multiprocessing.parent_process(),),
                     daemon=True).start()
    pa.set_cpu_count(1)  # one process per core already: Arrow decodes on this thread
    pa.set_io_thread_count(1)
    use_lean_arrow_memory()


def _exit_with(main_process) -> None:
    main_process.join()  # returns when the main process has exited
    os._exit(1)


def _load_encoder(settings: EncodeSettings) -> EncodingInfo:
    return batch_encoder(settings).info


def _encode_to_file(unit: WorkUnit, text_column: str, settings: EncodeSettings,
                    spill: str) -> tuple[int, int, np.ndarray]:
    """The unit's ids written to `spill`: returns how many, their CRC-32 and the documents'
    lengths."""
    n_vocab = batch_encoder(settings).info.n_vocab
    written = crc = 0

    def write_ids(ids: np.ndarray) -> None:
        nonlocal written, crc
        check_ids(ids, n_vocab)  # here, so that the main process appends the file unread
        data = memoryview(ids)
        f.write(data)
        crc = zlib.crc32(data, crc)  # here too: the main process combines the units' CRCs
        written += ids.size

    with open(spill, "wb") as f:
        lengths = encode_work_unit(unit, text_column, settings, write_ids)
    return written, crc, lengths
