"""Reading documents back from a split's data files, as batches of UTF-8 bytes.

A dataset's files are all read by one reader, the one Hugging Face ``datasets`` picks for
them (`Reading.builder`), with its options from the dataset's config: parquet and Arrow
(tokbin.columnar), JSON (tokbin.jsonfiles), CSV (tokbin.csvfiles) and text (tokbin.textfiles),
the last three plain or compressed (tokbin.compression). Every reader streams: memory holds a
batch, not a file; a file is local or read where it is (tokbin.remote). A **work unit** is
what one worker process or Ray task reads by itself: some row groups of a parquet file, or a
whole file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokbin import columnar
from tokbin.compression import uncompressed_name
from tokbin.csvfiles import iter_csv
from tokbin.errors import TokbinError
from tokbin.jsonfiles import iter_json, json_documents
from tokbin.remote import DataFile, map_files
from tokbin.textfiles import iter_text

BATCH_BYTES = 1 << 20  # text per TextBatch: what one encoding step takes
# Documents per TextBatch at most: each costs memory besides its text (a string, its offset,
# its length, an end-of-text id), so a run of empty or very short ones must close a batch
# too. Documents of 16 characters on average reach BATCH_BYTES first.
BATCH_DOCUMENTS = 1 << 16
# The files each reader reads: a README config's globs may match others (a stray .md).
FILE_TYPES = {"parquet": (".parquet",), "arrow": (".arrow",),
              "json": (".jsonl", ".json", ".ndjson"), "csv": (".csv", ".tsv"), "text": (".txt",)}
COMPRESSIBLE = ("json", "csv", "text")


@dataclass(frozen=True)
class Reading:
    """How a dataset's files are read: the reader datasets picked for them, the column that
    holds the text and the reader's options (the config's, tokbin's `separator`...)."""
    builder: str
    text_column: str
    options: dict = field(default_factory=dict)


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

    def first_not_utf8(self) -> tuple[int, UnicodeDecodeError] | None:
        """The first document that is not valid UTF-8 (its index, its decoding error)."""
        for i in range(len(self)):
            try:
                self.document(i).decode("utf-8")
            except UnicodeDecodeError as e:
                return i, e
        return None

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


def check_file_type(name: str, builder: str) -> None:
    """Refuses a file the split's reader does not read (named in the user's terms)."""
    plain = uncompressed_name(name) if builder in COMPRESSIBLE else name
    if not plain.endswith(FILE_TYPES[builder]):
        supported = ", ".join(t for types in FILE_TYPES.values() for t in types)
        raise TokbinError(f"{name} is not a {builder} file ({'/'.join(FILE_TYPES[builder])}), "
                          f"but the dataset's other files are read as {builder}; tokbin reads "
                          f"{supported} (the text ones also .gz, .bz2, .xz or .zst); leave it "
                          "out with download.data_files")


def check_columns(file: DataFile, reading: Reading) -> None:
    """Fails early, before any worker starts, when a file lacks the text column (the text
    formats: in its first rows)."""
    column = reading.text_column
    if reading.builder == "parquet":
        columnar.check_parquet_columns(file, column, reading.options)
    elif reading.builder == "arrow":
        columnar.check_arrow_columns(file, column)
    elif reading.builder == "text":
        if column != "text":
            raise TokbinError(f"{file.name}: the documents of a .txt file are in the column "
                              "'text'; set download.text_column: text")
    else:
        next(_texts(file, reading), None)


def count_documents(file: DataFile, reading: Reading) -> int | None:
    """Rows in a parquet file from its footer (None for formats that would need a full read)."""
    if reading.builder != "parquet":
        return None
    with columnar.parquet_file(file) as parquet:
        return parquet.metadata.num_rows


def iter_text_batches(file: DataFile, reading: Reading, batch_bytes: int = BATCH_BYTES,
                      batch_documents: int = BATCH_DOCUMENTS) -> Iterator[TextBatch]:
    """Streams the documents of one data file as TextBatches of about `batch_bytes` of text
    and at most `batch_documents` documents."""
    if reading.builder in ("parquet", "arrow"):
        if reading.builder == "parquet":
            arrays = columnar.parquet_arrays(file, reading.text_column, reading.options)
        else:
            arrays = columnar.arrow_arrays(file, reading.text_column)
        for array in arrays:
            yield from slice_text_array(array, file.name, reading.text_column, batch_bytes,
                                        batch_documents)
        return
    texts, size = [], 0
    for chunk in _texts(file, reading):
        for text in chunk:
            texts.append(text)
            size += len(text)
            if size >= batch_bytes or len(texts) == batch_documents:
                yield TextBatch.from_texts(texts)
                texts, size = [], 0
    if texts:
        yield TextBatch.from_texts(texts)


def locate_not_utf8(files: list[DataFile], reading: Reading) -> str | None:
    """Where the first document of `files` that is not valid UTF-8 is: "name:line" (JSON) or
    "name: row N" (counting from 1); read again, only once an engine failed on one."""
    for file in dict.fromkeys(files):
        if reading.builder == "json":
            for line, text in json_documents(file, reading.text_column, reading.options):
                if TextBatch.from_texts([text]).first_not_utf8():
                    return f"{file.name}:{line}"
            continue
        row = 0
        for batch in iter_text_batches(file, reading):
            found = batch.first_not_utf8()
            if found:
                return f"{file.name}: row {row + found[0] + 1}"
            row += len(batch)
    return None


def _texts(file: DataFile, reading: Reading) -> Iterator[list[str]]:
    """The documents of a JSON, CSV or text file, a list at a time."""
    if reading.builder == "json":
        return iter_json(file, reading.text_column, reading.options)
    if reading.builder == "csv":
        return iter_csv(file, reading.text_column, reading.options)
    return iter_text(file, reading.options)


def slice_text_array(array: pa.Array, name: str, text_column: str, batch_bytes: int,
                     batch_documents: int = BATCH_DOCUMENTS) -> Iterator[TextBatch]:
    if array.null_count:
        raise TokbinError(f"{name}: column {text_column!r} has {array.null_count} null "
                          "value(s); drop or fill those rows in the dataset")
    offsets = _offsets_of(array)
    start = 0
    while start < len(array):
        # The first document whose end passes start + batch_bytes closes the batch, or the
        # batch_documents-th.
        stop = int(np.searchsorted(offsets, offsets[start] + batch_bytes, side="left"))
        stop = min(max(stop, start + 1), start + batch_documents, len(array))
        yield TextBatch.from_arrow(array.slice(start, stop - start))
        start = stop


# --- work units: what a worker process or a Ray task reads by itself ------------------------

@dataclass(frozen=True)
class WorkUnit:
    """One worker's input: `row_groups` of a parquet file, or a whole file when None."""
    file: DataFile
    reading: Reading
    row_groups: tuple[int, ...] | None = None

    def batches(self) -> Iterator[TextBatch]:
        if self.row_groups is None:
            yield from iter_text_batches(self.file, self.reading)
            return
        for array in columnar.parquet_arrays(self.file, self.reading.text_column,
                                             self.reading.options, self.row_groups):
            yield from slice_text_array(array, self.file.name, self.reading.text_column,
                                        BATCH_BYTES)

    def __str__(self) -> str:
        if self.row_groups is None:
            return self.file.name
        return f"{self.file.name} (row groups {self.row_groups[0]}-{self.row_groups[-1]})"


def row_group_bytes(file: DataFile) -> list[int]:
    """The uncompressed size of each row group of a parquet file, from its footer."""
    with columnar.parquet_file(file) as parquet:
        metadata = parquet.metadata
    return [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]


def work_units(files: list[DataFile], reading: Reading, unit_bytes: int) -> list[WorkUnit]:
    """The work units of a split's files in document order; parquet row groups are grouped
    until their uncompressed size reaches `unit_bytes`; any other file is one unit."""
    if reading.builder != "parquet":
        return [WorkUnit(file, reading) for file in files]
    units = []
    unique = list(dict.fromkeys(files))
    footers = dict(zip(unique, map_files(row_group_bytes, unique)))
    for file in files:
        group, size = [], 0
        for index, group_bytes in enumerate(footers[file]):
            group.append(index)
            size += group_bytes
            if size >= unit_bytes:
                units.append(WorkUnit(file, reading, tuple(group)))
                group, size = [], 0
        if group:
            units.append(WorkUnit(file, reading, tuple(group)))
    return units


def _offsets_of(array: pa.StringArray | pa.LargeStringArray) -> np.ndarray:
    """The array's document offsets into its data buffer (a view, honouring a slice)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    return np.frombuffer(array.buffers()[1], width)[array.offset:array.offset + len(array) + 1]
