"""Tokenizing a split into a bin, in parallel, streaming, in dataset order.

Two local executors, one output. When a dataset's parquet files hold at least
`PROCESSES_FROM_BYTES` of text, each parquet split is cut into shards of row groups, and a pool
of worker processes, one per core, reads and encodes them (`ProcessEncoders`): each process
has its own GIL, which the threads of one process share (making the `str` fastokens needs
holds it, a third of the work). Smaller datasets, and ``.jsonl``/``.txt`` files, which have no
row groups, are read by the main thread in batches of about `BATCH_BYTES` of text for a pool
of encoding threads (`ThreadEncoders`), which start at once where processes take ~0.6 s.
Either way the main thread writes results strictly in submission order, with a few per worker
in flight, so memory is bounded whatever the corpus size and the output is identical whatever
the executor and worker count. Every document is encoded on its own with `encode_ordinary`
semantics (a literal <|endoftext|> is text); the engines return a batch in the joined layout
(each document followed by the end-of-text id) and `place_eot` turns that into the eot
policy's.

Besides the bin, a split gets a lengths file ``<split>.doclens``: each document's token count
(without the end-of-text id) as little-endian uint32, in document order; binarize turns it
into the document-length plot.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import threading
import types
from collections import deque
from contextlib import ExitStack, contextmanager
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from tokbin.engines import effective_engine, make_engine
from tokbin.errors import TokbinError
from tokbin.format import BinWriter, check_ids, choose_dtype
from tokbin.source import BATCH_BYTES, InputShard, TextBatch, input_shards

T = TypeVar("T")
PROCESSES_FROM_BYTES = 256 << 20  # text in a dataset's parquet files (uncompressed size)
SHARD_BYTES = 4 << 20  # text per shard a worker process reads (at least one row group)
DOCLENS_DTYPE = np.dtype("<u4")


def get_encoding(name: str):
    import tiktoken
    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise TokbinError(f"unknown tiktoken encoding {name!r}; set tokenize.encoding to one of "
                          f"{', '.join(tiktoken.list_encoding_names())}") from None
    except OSError as e:  # requests' connection errors are OSErrors
        raise TokbinError(f"tiktoken could not fetch the {name!r} vocabulary ({type(e).__name__});"
                          " connect to the internet once, or set TIKTOKEN_CACHE_DIR to a folder "
                          "holding tiktoken's cached files") from None


def default_workers() -> int:
    """TOKBIN_WORKERS, else every core this process may run on."""
    value = os.environ.get("TOKBIN_WORKERS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise TokbinError(f"TOKBIN_WORKERS must be a positive integer, got {value!r}")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass(frozen=True)
class EncodingInfo:
    name: str
    n_vocab: int
    eot_token: int
    dtype: str  # the compact dtype that holds every id of this encoding


def encoding_info(name: str) -> EncodingInfo:
    enc = get_encoding(name)
    return EncodingInfo(name, enc.n_vocab, enc.eot_token, choose_dtype("auto", enc.n_vocab))


# --- encoding a batch ---------------------------------------------------------------------

def place_eot(ids: np.ndarray, lengths: np.ndarray, eot: str) -> np.ndarray:
    """The batch's ids per the eot policy, from the engines' joined layout (every document
    followed by the end-of-text id, which is already eot: append)."""
    if eot == "prepend":  # d1 E d2 E .. dn E -> E d1 E d2 .. E dn: a rotation by one
        return np.roll(ids, 1)
    if eot == "none":
        return np.delete(ids, np.cumsum(lengths + 1) - 1)
    return ids


class BatchEncoder:
    """What encodes each batch: the engine and the eot policy; returns the batch's ids (eot
    placed, in the encoding's compact dtype) and its documents' lengths."""

    def __init__(self, encoding: str, eot: str, engine: str):
        self.info = encoding_info(encoding)
        self.engine = make_engine(engine, get_encoding(encoding))
        self.eot = eot

    def __call__(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        try:
            ids, lengths = self.engine.encode_batch(batch)
        except UnicodeDecodeError as e:
            raise TokbinError(f"a document is not valid UTF-8 ({e.reason} at byte {e.start} of "
                              "its batch); re-encode the dataset as UTF-8") from None
        ids = place_eot(ids, lengths, self.eot)
        return ids.astype(self.info.dtype), lengths.astype(DOCLENS_DTYPE)

    def thread_copy(self) -> "BatchEncoder":
        copy = object.__new__(BatchEncoder)
        copy.info, copy.eot, copy.engine = self.info, self.eot, self.engine.thread_copy()
        return copy


@functools.lru_cache(maxsize=1)
def batch_encoder(encoding: str, eot: str, engine: str) -> BatchEncoder:
    """This process's encoder: built once per process (a Ray worker, which Ray reuses across
    runs, builds a new one for a run with other settings)."""
    return BatchEncoder(encoding, eot, engine)


@dataclass(frozen=True)
class SpilledIds:
    """A worker process's ids for one shard, in a file (the bin's dtype, checked)."""
    path: Path
    count: int


@dataclass
class SplitCounts:
    tokens: int = 0
    documents: int = 0


class ThreadEncoders:
    """Batches encoded by a pool of threads, one per core.

    Both engines encode in Rust with the GIL released, so threads keep the cores busy with
    one load of the vocabularies and nothing copied between processes. The encoder loads on a
    pool thread (about 0.4 s) while the main thread starts reading; each thread then encodes
    with its own `thread_copy` of it.
    """

    def __init__(self, settings: tuple[str, str, str], workers: int):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tokbin-encode")
        self._loaded = self._pool.submit(batch_encoder, *settings)
        self._per_thread = threading.local()

    def encoding_info(self) -> EncodingInfo:
        """The encoding; a bad encoding or engine name fails here with a clear message."""
        return self._loaded.result().info

    def submit(self, batch: TextBatch) -> Future:
        return self._pool.submit(self._encode, batch)

    def _encode(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        encoder = getattr(self._per_thread, "encoder", None)
        if encoder is None:
            encoder = self._per_thread.encoder = self._loaded.result().thread_copy()
        return encoder(batch)

    def __enter__(self) -> "ThreadEncoders":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)


def encode_shard(shard: InputShard, text_column: str, settings: tuple[str, str, str],
                 write_ids: Callable[[np.ndarray], object]) -> np.ndarray:
    """Reads and encodes one shard batch by batch, handing each batch's ids to `write_ids`;
    returns its documents' lengths. What a worker process and a Ray task run."""
    encoder = batch_encoder(*settings)
    lengths = [np.zeros(0, DOCLENS_DTYPE)]
    for batch in shard.batches(text_column):
        ids, batch_lengths = encoder(batch)
        write_ids(ids)
        lengths.append(batch_lengths)
    return np.concatenate(lengths)


class ProcessEncoders:
    """Shards encoded by worker processes, one per core, each reading its own row groups.

    A worker writes a shard's ids to a spill file (in the output's temporary folder) and
    returns its documents' lengths; the main thread appends the file to the bin and deletes
    it. Workers fork from a server process that imported tokbin but never encoded (a fork of
    a process whose fastokens had started its thread pool could hang), and load the encoder
    at once, so a bad setting fails there with its own message. A worker exits with the main
    process, even a killed one.
    """

    def __init__(self, settings: tuple[str, str, str], workers: int):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tokbin.tokenize"])
        self.settings = settings
        self._pool = ProcessPoolExecutor(workers, mp_context=context,
                                         initializer=_start_worker_process)
        # Every worker starts (the executor starts one per task submitted while none is idle)
        # and loads the encoder (~0.4 s) now, while this process goes on.
        with _main_script_not_rerun():
            self._loaded = [self._pool.submit(_load_encoder, settings) for _ in range(workers)]

    def encoding_info(self) -> EncodingInfo:
        """The encoding, from a worker (this process loads no vocabulary); a bad encoding or
        engine name fails here with a clear message."""
        return self.result(self._loaded[0], "loading the encoder")

    @staticmethod
    def result(future: Future, what: object) -> T:
        try:
            return future.result()
        except BrokenProcessPool:
            raise TokbinError(f"a worker process died while {what} (killed, or out of "
                              "memory); check the machine's memory, or set TOKBIN_WORKERS "
                              "lower, then rerun") from None

    def submit(self, shard: InputShard, text_column: str, spill: Path) -> Future:
        return self._pool.submit(_encode_shard_to_file, shard, text_column, self.settings,
                                 str(spill))

    def __enter__(self) -> "ProcessEncoders":
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

    from tokbin.source import use_lean_arrow_memory
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


def _load_encoder(settings: tuple[str, str, str]) -> EncodingInfo:
    return batch_encoder(*settings).info


def _encode_shard_to_file(shard: InputShard, text_column: str, settings: tuple[str, str, str],
                          spill: str) -> tuple[int, np.ndarray]:
    """The shard's ids written to `spill`: returns how many, and its documents' lengths."""
    n_vocab = batch_encoder(*settings).info.n_vocab
    written = 0

    def write_ids(ids: np.ndarray) -> None:
        nonlocal written
        check_ids(ids, n_vocab)  # here, so that the main process appends the file unread
        f.write(memoryview(ids))
        written += ids.size

    with open(spill, "wb") as f:
        lengths = encode_shard(shard, text_column, settings, write_ids)
    return written, lengths


def tokenize_shards(encoders: ProcessEncoders, workers: int, shards: list[InputShard],
                    text_column: str, spill_dir: Path, out_bin: Path, out_doclens: Path,
                    info: EncodingInfo, progress: Callable[[int], None] = lambda n: None
                    ) -> SplitCounts:
    """Writes the tokens of `shards` to `out_bin` and their lengths to `out_doclens`."""
    spill_dir.mkdir()

    def submit(index: int, shard: InputShard) -> tuple[Path, InputShard, Future]:
        spill = spill_dir / f"{index}.ids"
        return spill, shard, encoders.submit(shard, text_column, spill)

    def spilled(work) -> tuple[SpilledIds, np.ndarray]:
        spill, shard, future = work
        count, lengths = encoders.result(future, f"tokenizing {shard}")
        return SpilledIds(spill, count), lengths

    submitted = (submit(index, shard) for index, shard in enumerate(shards))

    # Results wait as files, not in memory: a deeper queue keeps every worker busy.
    counts = write_in_order(submitted, 4 * workers, spilled, lambda work: work[2].cancel(),
                            out_bin, out_doclens, info, progress)
    spill_dir.rmdir()
    return counts


def tokenize_stream(encoders: ThreadEncoders, workers: int,
                    batches: Iterable[TextBatch], out_bin: Path, out_doclens: Path,
                    info: EncodingInfo, progress: Callable[[int], None] = lambda n: None
                    ) -> SplitCounts:
    """Writes the tokens of `batches` to `out_bin` and their lengths to `out_doclens`."""
    futures = (encoders.submit(batch) for batch in batches)
    return write_in_order(futures, 2 * workers, lambda future: future.result(),
                          lambda future: future.cancel(), out_bin, out_doclens, info, progress)


def write_in_order(submitted: Iterable[T], in_flight: int,
                   result: Callable[[T], tuple[np.ndarray, np.ndarray]],
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
                bins.append_file(ids.path, ids.count)
                ids.path.unlink()
            else:
                bins.write(ids)
            lens.write(memoryview(lengths))
            counts.tokens += ids.count if isinstance(ids, SpilledIds) else ids.size
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
    return counts


def worth_processes(files: list[Path]) -> bool:
    """Whether worker processes pay for their start (~0.6 s): parquet files (all a dataset's
    splits together) holding at least PROCESSES_FROM_BYTES of text, and a fork server to start
    them from (not on Windows)."""
    import pyarrow.parquet as pq
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    size = 0
    for path in files:
        if path.suffix == ".parquet":
            metadata = pq.ParquetFile(path).metadata
            size += sum(metadata.row_group(i).total_byte_size
                        for i in range(metadata.num_row_groups))
    return size >= PROCESSES_FROM_BYTES


def tokenize_dataset(raw_dir: Path, out_dir: Path, splits: list[str], text_column: str,
                     encoding: str, eot: str, engine: str = "tiktoken",
                     workers: int | None = None, executor: str = "local") -> "Meta":
    """Tokenizes every split of a downloaded dataset into `out_dir` (bins, doclens, meta.json).

    `out_dir` appears whole or not at all. executor "local" runs worker processes or threads
    (see the module's docstring), "ray" runs Ray tasks (tokbin.ray_executor); all give the
    same output.
    """
    from tqdm.auto import tqdm

    from tokbin.format import Meta, Source, SplitInfo, atomic_path, write_meta
    from tokbin.source import (check_text_column, count_documents, iter_text_batches,
                               read_source, use_lean_arrow_memory)

    workers = workers or default_workers()
    use_lean_arrow_memory()
    source = read_source(raw_dir)
    files = {}
    for split in splits:
        if split not in source["files"]:
            raise TokbinError(f"split {split!r} was not downloaded (data/raw has "
                              f"{sorted(source['files'])}); run `dvc repro` to download it")
        files[split] = [raw_dir / name for name in source["files"][split]]
        for path in files[split]:
            check_text_column(path, text_column)
    engine = effective_engine(engine, encoding)  # checks the name, tells of a fallback
    settings = (encoding, eot, engine)
    use_processes = (executor == "local" and workers > 1
                     and worth_processes([p for split in splits for p in files[split]]))
    in_processes = {split: use_processes and all(p.suffix == ".parquet" for p in files[split])
                    for split in splits}
    split_infos = {}
    with atomic_path(out_dir) as tmp, ExitStack() as executors:
        processes = threads = None
        if any(in_processes.values()):
            processes = executors.enter_context(ProcessEncoders(settings, workers))
        if executor == "local" and not all(in_processes.values()):
            threads = executors.enter_context(ThreadEncoders(settings, workers))
        info = ((processes or threads).encoding_info() if executor == "local"
                else encoding_info(encoding))
        tmp.mkdir(parents=True)
        for split in splits:
            known = [count_documents(p) for p in files[split]]
            total = None if None in known else sum(known)
            out_bin, out_doclens = tmp / f"{split}.bin", tmp / f"{split}.doclens"
            with tqdm(total=total, desc=f"tokenize {split}", unit="doc", unit_scale=True,
                      mininterval=1.0) as bar:
                if executor == "ray":
                    from tokbin.ray_executor import tokenize_files_on_ray
                    counts = tokenize_files_on_ray(files[split], text_column, encoding, eot,
                                                   engine, out_bin, out_doclens, info, workers,
                                                   bar.update)
                elif in_processes[split]:
                    counts = tokenize_shards(processes, workers,
                                             input_shards(files[split], SHARD_BYTES), text_column,
                                             tmp / f".{split}.spill", out_bin, out_doclens, info,
                                             bar.update)
                else:
                    batches = (b for p in files[split]
                               for b in iter_text_batches(p, text_column, BATCH_BYTES))
                    counts = tokenize_stream(threads, workers, batches, out_bin, out_doclens,
                                             info, bar.update)
            if counts.documents == 0:
                raise TokbinError(f"split {split!r} is empty (no documents in "
                                  f"{', '.join(source['files'][split])}); remove it from "
                                  "download.splits or fix the dataset")
            split_infos[split] = SplitInfo(f"{split}.bin", counts.tokens, counts.documents,
                                           counts.tokens * np.dtype(info.dtype).itemsize)
        meta = Meta(encoding=encoding, n_vocab=info.n_vocab, eot_token=info.eot_token, eot=eot,
                    dtype=info.dtype, source=Source(source["dataset"], source["revision"],
                                                    source["sha"]), splits=split_infos)
        write_meta(tmp, meta)
    return meta
