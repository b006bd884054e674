"""What runs the encoding on this machine: a pool of threads or of worker processes.

Both follow one protocol, as `tokbin.ray_executor.RayExecutor` does: a context manager with
`encoding_info()` and `tokenize_split(job, info, progress)`, which reads a `SplitJob`'s files
and writes each document's ids to an output's bin and its length to that output's doclens,
and returns the counts per output. A job has one output, or two with a holdout (the kept
documents, the held-out ones): the encoder decides each document's output as it encodes, so
both are written in the one pass. Whatever the executor and worker count, the main thread
writes results strictly in submission order (`tokbin.split_writer`) with a few per worker in
flight, so memory is bounded whatever the corpus size and the output is the same.

- `ThreadExecutor`: the main thread reads batches of about `BATCH_BYTES` of text (at most
  `BATCH_DOCUMENTS` documents) for a pool of encoding threads. Both engines encode in Rust
  with the GIL released; threads start at once.
- `ProcessExecutor`: worker processes, one per core, each reading its own work units (row
  groups of a parquet file, or a whole file of another format) with its own GIL: making the
  `str` fastokens needs holds the GIL, which threads of one process share. Processes take a
  while to start, so they are used only for datasets of at least `PROCESSES_FROM_BYTES` of
  text that cut into enough work units (`worth_processes`).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import types
import zlib
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tokbin.encode import (EncodeSettings, EncodingInfo, batch_encoder, encode_work_unit,
                           encoding_info)
from tokbin.errors import TokbinError
from tokbin.format import Holdout, check_ids
from tokbin.readers import (DataFile, Reading, WorkUnit, iter_text_batches, row_group_bytes,
                            use_lean_arrow_memory, work_units)
from tokbin.remote import map_files
from tokbin.split_writer import Result, SpilledIds, SplitCounts, SplitJob, write_in_order

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


def text_bytes(files: list[DataFile], reading: Reading) -> int:
    """The text of a dataset's files (all its splits together): parquet's uncompressed size,
    from the footers; any other format's files' size, compressed or not."""
    if reading.builder == "parquet":
        return sum(map(sum, map_files(row_group_bytes, files)))
    return sum(f.size() for f in files)


def worth_processes(files: list[DataFile], reading: Reading, workers: int,
                    size: int | None = None) -> bool:
    """Whether worker processes pay for their start: a dataset of at least
    PROCESSES_FROM_BYTES of text (`size`, else `text_bytes`) that cuts into enough work units
    for the workers to share (a whole file is one unless it is parquet), and a fork server to
    start them from (not on Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if reading.builder != "parquet" and len(files) < 2 * workers:
        return False
    return (text_bytes(files, reading) if size is None else size) >= PROCESSES_FROM_BYTES


class ThreadExecutor:
    """Batches encoded by a pool of threads, one per core.

    The encoder loads on a pool thread while the main thread reads the first batches (its
    start, fastokens' tokenizer build above all, is most of a small build's time); each
    thread then encodes with its own `thread_copy` of it.
    """

    def __init__(self, settings: EncodeSettings, workers: int):
        self.workers, self.settings = workers, settings
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tokbin-encode")
        self._loaded = self._pool.submit(batch_encoder, settings)
        self._per_thread = threading.local()

    def encoding_info(self) -> EncodingInfo:
        """The encoding, from the vocabulary (`settings_for` loaded it): not waiting for the
        engine, whose own errors (fastokens') stop the first batch with their message."""
        return encoding_info(self.settings.tokenizer)

    def tokenize_split(self, job: SplitJob, info: EncodingInfo,
                       progress: Callable[[int], None] = lambda n: None) -> list[SplitCounts]:
        batches = (b for file in job.files for b in iter_text_batches(file, job.reading))
        futures = (self._pool.submit(self._encode, batch, job.holdout) for batch in batches)
        return write_in_order(futures, 2 * self.workers, lambda future: future.result(),
                              lambda future: future.cancel(), job.outputs, info, progress)

    def _encode(self, batch, holdout: Holdout | None) -> Result:
        encoder = getattr(self._per_thread, "encoder", None)
        if encoder is None:
            encoder = self._per_thread.encoder = self._loaded.result().thread_copy()
        return encoder.routed(batch, holdout)

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
        """The encoding, from a worker once it has loaded its encoder: an engine that fails to
        load there fails here with a clear message."""
        return self._result(self._loaded[0], "loading the encoder")

    def tokenize_split(self, job: SplitJob, info: EncodingInfo,
                       progress: Callable[[int], None] = lambda n: None) -> list[SplitCounts]:
        out_bin = job.outputs[0].bin
        spill_dir = out_bin.with_name(f".{out_bin.stem}.spill")
        spill_dir.mkdir()

        def submit(index: int, unit: WorkUnit) -> tuple[list[Path], WorkUnit, Future]:
            spills = [spill_dir / f"{index}.{k}.ids" for k in range(len(job.outputs))]
            future = self._pool.submit(_encode_to_files, unit, self.settings, job.holdout,
                                       [str(spill) for spill in spills])
            return spills, unit, future

        def spilled(work) -> Result:
            spills, unit, future = work
            results = self._result(future, f"tokenizing {unit}")
            return [(SpilledIds(spill, count, crc32), lengths)
                    for spill, (count, crc32, lengths) in zip(spills, results)]

        units = work_units(job.files, job.reading, UNIT_BYTES)
        submitted = (submit(i, unit) for i, unit in enumerate(units))
        # Results wait as files, not in memory: a deeper queue keeps every worker busy.
        counts = write_in_order(submitted, 4 * self.workers, spilled,
                                lambda work: work[2].cancel(), job.outputs, info, progress)
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


class _SpillWriter:
    """A worker's ids for one output, appended to its spill file, checked against n_vocab
    and hashed (CRC-32) here, so that the main process appends the file unread."""

    def __init__(self, f, n_vocab: int):
        self.f, self.n_vocab, self.written, self.crc32 = f, n_vocab, 0, 0

    def __call__(self, ids: np.ndarray) -> None:
        check_ids(ids, self.n_vocab)
        data = memoryview(ids)
        self.f.write(data)
        self.crc32 = zlib.crc32(data, self.crc32)  # the main process combines the units'
        self.written += ids.size


def _encode_to_files(unit: WorkUnit, settings: EncodeSettings, holdout: Holdout | None,
                     spills: list[str]) -> list[tuple[int, int, np.ndarray]]:
    """The unit's ids for each output written to its spill file: returns, per output, how
    many, their CRC-32, and its documents' lengths."""
    n_vocab = batch_encoder(settings).info.n_vocab
    with ExitStack() as stack:
        writers = [_SpillWriter(stack.enter_context(open(spill, "wb")), n_vocab)
                   for spill in spills]
        lengths = encode_work_unit(unit, settings, holdout, writers)
    return [(writer.written, writer.crc32, unit_lengths)
            for writer, unit_lengths in zip(writers, lengths)]
