"""Reading documents back from a split's data files, as batches of UTF-8 bytes.

Parquet and JSON Lines rows are documents; a ``.txt`` file holds one document per line, as
Hugging Face's ``text`` builder reads it. A **work unit** is what one worker process or Ray
task reads by itself: some row groups of a parquet file, or a whole file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokbin.errors import TokbinError

EXTENSIONS = (".parquet", ".jsonl", ".txt")
BATCH_BYTES = 1 << 20  # text per TextBatch: what one encoding step takes


def check_text_column(path: Path, text_column: str) -> None:
    """Fails early, before any worker starts, when a parquet file lacks the text column."""
    if path.suffix != ".parquet":
        return
    try:
        schema = pq.read_schema(path)
    except pa.ArrowException as e:
        raise TokbinError(f"{path} is not a readable parquet file ({e})") from None
    if text_column not in schema.names:
        raise TokbinError(f"{path} has no column {text_column!r} (columns: "
                          f"{', '.join(schema.names)}); set download.text_column to one of them")
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise TokbinError(f"{path}: column {text_column!r} holds {kind}, not strings; set "
                          "download.text_column to the column that holds the text")


@dataclass
class TextBatch:
    """Documents as UTF-8 bytes: document i is data[offsets[i]:offsets[i+1]].

    Two buffers instead of many Python strings: what the reader makes and what an engine
    routes and encodes.
    """
    offsets: np.ndarray
    data: bytes

    @classmethod
    def from_texts(cls, texts: list[str]) -> "TextBatch":
        parts = [text.encode("utf-8", "surrogatepass") for text in texts]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=offsets[1:])
        return cls(offsets, b"".join(parts))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def texts(self, members: np.ndarray | None = None) -> list[str]:
        """The documents as strings (only those where `members` is True, when given)."""
        data, offsets = self.data, self.offsets
        if members is None:
            bounds = offsets.tolist()
            return [data[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]
        chosen = np.flatnonzero(members)
        return [data[a:b].decode("utf-8")
                for a, b in zip(offsets[chosen].tolist(), offsets[chosen + 1].tolist())]

    def document(self, i: int) -> bytes:
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    @classmethod
    def from_arrow(cls, array: pa.StringArray | pa.LargeStringArray) -> "TextBatch":
        """The documents of a non-empty string or large_string array (or slice of one), bytes
        copied."""
        offsets = _offsets_of(array)
        first, last = int(offsets[0]), int(offsets[-1])
        return cls(offsets.astype(np.int64) - first,
                   memoryview(array.buffers()[2])[first:last].tobytes())

    def joined(self, separator: str, members: np.ndarray | None = None) -> list[str]:
        """The documents (those where `members` is True, when given), each followed by
        `separator`: one text per run of consecutive members, joined in Arrow's C++ straight
        from the batch's buffer (no copy of the other documents, no string per document)."""
        n = len(self)
        if members is None:
            members = np.ones(n, dtype=bool)
        if not members.any():
            return []
        # Runs of members and of non-members alternate; every run becomes a list of documents.
        edges = np.flatnonzero(np.diff(members, prepend=~members[:1]))
        run_is_member = members[edges]
        # An empty document closing each run puts the separator after its last real one.
        run_ends = np.append(edges[1:], n)
        values = _string_array_from(np.insert(self.offsets, run_ends, self.offsets[run_ends]),
                                    self.data)
        lists = pa.LargeListArray.from_arrays(
            pa.Array.from_buffers(pa.int64(), len(edges) + 1, [None, pa.py_buffer(
                np.append(edges + np.arange(len(edges)), n + len(edges)))]), values)
        sep = separator.encode()
        runs = pc.binary_join(lists, _string_array_from(np.arange(len(edges) + 1) * len(sep),
                                                        sep * len(edges)))
        # Decoded straight from Arrow's buffer: Scalar.as_py copies it to bytes first.
        text, bounds = memoryview(runs.buffers()[2]), _offsets_of(runs)
        return [str(text[bounds[i]:bounds[i + 1]], "utf-8")
                for i in np.flatnonzero(run_is_member).tolist()]


def _string_array_from(offsets: np.ndarray, data: bytes) -> pa.LargeStringArray:
    # Not pa.array or pa.scalar: their first call imports pandas to look for pandas types.
    return pa.LargeStringArray.from_buffers(len(offsets) - 1,
                                            pa.py_buffer(offsets.astype(np.int64, copy=False)),
                                            pa.py_buffer(data))


def use_lean_arrow_memory() -> None:
    """Makes Arrow allocate with jemalloc (else the system allocator) unless the user chose
    one (ARROW_DEFAULT_MEMORY_POOL). Arrow's default here, mimalloc, keeps what the parquet
    reader frees, so RSS grows well past what is allocated at once (docs/performance.md)."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())


def count_documents(path: Path) -> int | None:
    """Rows in a parquet file from its footer (None for formats that would need a full read)."""
    return pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None


def iter_text_batches(path: Path, text_column: str, batch_bytes: int) -> Iterator[TextBatch]:
    """Streams the documents of one data file as TextBatches of about `batch_bytes` of text."""
    readers = {".parquet": _parquet_arrays, ".jsonl": _jsonl_arrays, ".txt": _txt_arrays}
    for array in readers[path.suffix](path, text_column):
        yield from slice_text_array(array, path, text_column, batch_bytes)


def _parquet_arrays(path: Path, text_column: str) -> Iterator[pa.Array]:
    check_text_column(path, text_column)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=[text_column]):
        yield batch.column(0)


def _jsonl_arrays(path: Path, text_column: str) -> Iterator[pa.Array]:
    texts = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise TokbinError(f"{path}:{lineno}: not a JSON object ({e}); fix the line "
                                  "(JSON Lines: one object per line)") from None
            if not isinstance(row, dict) or text_column not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise TokbinError(f"{path}:{lineno}: no {text_column!r} field (fields: {keys});"
                                  " set download.text_column to the field that holds the text")
            texts.append(row[text_column])
            if len(texts) == 8192:
                yield _string_array(texts, path, text_column)
                texts = []
    if texts:
        yield _string_array(texts, path, text_column)


def _string_array(texts: list, path: Path, text_column: str) -> pa.Array:
    nulls = sum(t is None for t in texts)
    if nulls:
        raise _nulls_error(path, text_column, nulls)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TokbinError(f"{path}: column {text_column!r} holds a {type(bad).__name__} "
                          f"({str(bad)[:40]!r}), not text; every document must be a string")
    return _large_strings(texts)


def _large_strings(texts: list[str]) -> pa.LargeStringArray:
    batch = TextBatch.from_texts(texts)
    return _string_array_from(batch.offsets, batch.data)


def _nulls_error(path: Path, text_column: str, count: int) -> TokbinError:
    return TokbinError(f"{path}: column {text_column!r} has {count} null value(s); drop or fill "
                       "those rows in the dataset")


def _txt_arrays(path: Path, text_column: str) -> Iterator[pa.Array]:
    lines = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                lines.append(line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8"))
            except UnicodeDecodeError as e:
                raise TokbinError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line;"
                                  " re-encode the file as UTF-8 (e.g. `iconv -t UTF-8`)") from None
            if len(lines) == 8192:
                yield _large_strings(lines)
                lines = []
    if lines:
        yield _large_strings(lines)


def slice_text_array(array: pa.Array, path: Path, text_column: str,
                     batch_bytes: int) -> Iterator[TextBatch]:
    if array.null_count:
        raise _nulls_error(path, text_column, array.null_count)
    offsets = _offsets_of(array)
    start = 0
    while start < len(array):
        # The first document whose end passes start + batch_bytes closes the batch.
        stop = int(np.searchsorted(offsets, offsets[start] + batch_bytes, side="left"))
        stop = min(max(stop, start + 1), len(array))
        yield TextBatch.from_arrow(array.slice(start, stop - start))
        start = stop


# --- work units: what a worker process or a Ray task reads by itself ------------------------

@dataclass(frozen=True)
class WorkUnit:
    """One worker's input: `row_groups` of a parquet file, or a whole file when None."""
    path: str  # absolute: workers do not share the driver's working directory
    row_groups: tuple[int, ...] | None = None

    def batches(self, text_column: str) -> Iterator[TextBatch]:
        path = Path(self.path)
        if self.row_groups is None:
            yield from iter_text_batches(path, text_column, BATCH_BYTES)
            return
        for record_batch in pq.ParquetFile(path).iter_batches(
                batch_size=8192, row_groups=list(self.row_groups), columns=[text_column]):
            yield from slice_text_array(record_batch.column(0), path, text_column, BATCH_BYTES)

    def __str__(self) -> str:
        if self.row_groups is None:
            return self.path
        return f"{self.path} (row groups {self.row_groups[0]}-{self.row_groups[-1]})"


def row_group_bytes(path: Path) -> list[int]:
    """The uncompressed size of each row group of a parquet file, from its footer."""
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]


def work_units(files: list[Path], unit_bytes: int) -> list[WorkUnit]:
    """The work units of a split's files in document order; parquet row groups are grouped
    until their uncompressed size reaches `unit_bytes`."""
    units = []
    for path in files:
        path = path.resolve()
        if path.suffix != ".parquet":
            units.append(WorkUnit(str(path)))
            continue
        group, size = [], 0
        for index, group_bytes in enumerate(row_group_bytes(path)):
            group.append(index)
            size += group_bytes
            if size >= unit_bytes:
                units.append(WorkUnit(str(path), tuple(group)))
                group, size = [], 0
        if group:
            units.append(WorkUnit(str(path), tuple(group)))
    return units


def _offsets_of(array: pa.StringArray | pa.LargeStringArray) -> np.ndarray:
    """The array's document offsets into its data buffer (a view, honouring a slice)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    return np.frombuffer(array.buffers()[1], width)[array.offset:array.offset + len(array) + 1]
