"""A split job and its ordered writer: what every executor (threads, worker processes, Ray)
is given, and how its results reach the bins: strictly in submission order, with a bounded
number in flight, so the output never depends on which worker finishes first."""
from __future__ import annotations

import zlib
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np

from tokbin.crc import crc32_hex
from tokbin.encode import EncodingInfo
from tokbin.format import BinWriter, Holdout
from tokbin.readers import DataFile, Reading

T = TypeVar("T")


@dataclass(frozen=True)
class SplitOutput:
    bin: Path
    doclens: Path


@dataclass(frozen=True)
class SplitJob:
    """A split to tokenize: `files` read with `reading`, in order, into `outputs[0]`; with a
    `holdout`, the documents it draws go to `outputs[1]` instead."""
    files: list[DataFile]
    reading: Reading
    outputs: list[SplitOutput]
    holdout: Holdout | None = None

    def __post_init__(self):
        if len(self.outputs) != 1 + (self.holdout is not None):
            raise ValueError("a split job has one output, or two with a holdout")


@dataclass
class SplitCounts:
    tokens: int = 0
    documents: int = 0
    crc32: str = ""  # of the bin written (format.BinWriter.crc32)
    doclens_crc32: str = ""  # of the doclens file written


@dataclass(frozen=True)
class SpilledIds:
    """A worker process's ids for one work unit, in a file (the bin's dtype, checked), and
    the CRC-32 of the file's bytes, computed as the worker wrote them."""
    path: Path
    count: int
    crc32: int


Result = list[tuple[np.ndarray | SpilledIds, np.ndarray]]  # (ids, lengths) per output


def write_in_order(submitted: Iterable[T], in_flight: int, result: Callable[[T], Result],
                   cancel: Callable[[T], object], outputs: list[SplitOutput],
                   info: EncodingInfo, progress: Callable[[int], None]) -> list[SplitCounts]:
    """Writes the results of `submitted` work in submission order, (ids, lengths) to each
    output, pulling new work only while fewer than `in_flight` results are pending: output
    order never depends on which worker finishes first, and memory stays bounded whatever the
    corpus size."""
    counts = [SplitCounts() for _ in outputs]
    doclens_crcs = [0] * len(outputs)
    pending: deque = deque()
    with ExitStack() as stack:
        files = [(stack.enter_context(BinWriter(out.bin, info.dtype, info.n_vocab)),
                  stack.enter_context(open(out.doclens, "wb"))) for out in outputs]

        def write_oldest() -> None:
            for k, ((ids, lengths), (bins, lens), count) in enumerate(zip(
                    result(pending.popleft()), files, counts)):
                if isinstance(ids, SpilledIds):
                    bins.append_file(ids.path, ids.count, ids.crc32)
                    ids.path.unlink()
                    count.tokens += ids.count
                else:
                    bins.write(ids)
                    count.tokens += ids.size
                lens.write(memoryview(lengths))
                doclens_crcs[k] = zlib.crc32(memoryview(lengths), doclens_crcs[k])
                count.documents += lengths.size
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
        for count, (bins, _), doclens_crc in zip(counts, files, doclens_crcs):
            count.crc32, count.doclens_crc32 = bins.crc32, crc32_hex(doclens_crc)
    return counts
