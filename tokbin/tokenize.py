"""Tokenizing a split into a bin, in parallel, streaming, in dataset order.

The main thread reads documents in batches of about `BATCH_BYTES` of text and hands them to a
pool of encoding threads, one per core (`ThreadEncoders`); it writes their results strictly in
submission order, with at most `2 x workers` batches in flight, so memory is bounded whatever
the corpus size and the output is identical whatever the thread count. Every document is
encoded on its own with `encode_ordinary` semantics (a literal <|endoftext|> is text); the
engines return a batch in the joined layout (each document followed by the end-of-text id)
and `place_eot` turns that into the eot policy's.

Besides the bin, a split gets a lengths file ``<split>.doclens``: each document's token count
(without the end-of-text id) as little-endian uint32, in document order; binarize turns it
into the document-length plot.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np

from tokbin.engines import make_engine
from tokbin.errors import TokbinError
from tokbin.format import BinWriter, choose_dtype
from tokbin.source import TextBatch

T = TypeVar("T")
BATCH_BYTES = 1 << 20
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
            bins.write(ids)
            lens.write(memoryview(lengths))
            counts.tokens += ids.size
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


def tokenize_dataset(raw_dir: Path, out_dir: Path, splits: list[str], text_column: str,
                     encoding: str, eot: str, engine: str = "tiktoken",
                     workers: int | None = None, executor: str = "local") -> "Meta":
    """Tokenizes every split of a downloaded dataset into `out_dir` (bins, doclens, meta.json).

    `out_dir` appears whole or not at all. executor "ray" runs the encoding as Ray tasks
    (tokbin.ray_executor) with identical output.
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
    split_infos = {}
    local_workers = workers if executor == "local" else 1  # ray: only checks the names
    with atomic_path(out_dir) as tmp, ThreadEncoders((encoding, eot, engine),
                                                     local_workers) as encoders:
        tmp.mkdir(parents=True)
        info = encoders.encoding_info()
        for split in splits:
            known = [count_documents(p) for p in files[split]]
            total = None if None in known else sum(known)
            batches = (b for p in files[split] for b in iter_text_batches(p, text_column,
                                                                          BATCH_BYTES))
            with tqdm(total=total, desc=f"tokenize {split}", unit="doc", unit_scale=True,
                      mininterval=1.0) as bar:
                if executor == "ray":
                    from tokbin.ray_executor import tokenize_files_on_ray
                    counts = tokenize_files_on_ray(files[split], text_column, encoding, eot,
                                                   engine, tmp / f"{split}.bin",
                                                   tmp / f"{split}.doclens", info, workers,
                                                   bar.update)
                else:
                    counts = tokenize_stream(encoders, workers, batches, tmp / f"{split}.bin",
                                             tmp / f"{split}.doclens", info, bar.update)
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
