"""Parquet and Arrow data files: the text column's arrays, in the order Hugging Face
``datasets`` reads them (parquet: row group by row group; Arrow IPC stream or file: record
batch by record batch). Only the text column is read, a batch at a time. Neither format is
decompressed as a whole (datasets does not either): their own compression is inside. A
local file is opened by pyarrow itself; a streamed one through tokbin.remote.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tokbin.errors import TokbinError
from tokbin.remote import DataFile, arrow_source

ROWS_PER_BATCH = 8192


def check_string_column(schema: pa.Schema, name: str, column: str) -> None:
    if column not in schema.names:
        raise TokbinError(f"{name} has no column {column!r} (columns: "
                          f"{', '.join(schema.names)}); set download.text_column to one of them")
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):  # a categorical column: its values are the texts
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)):
        raise TokbinError(f"{name}: column {column!r} holds {kind}, not strings; set "
                          "download.text_column to the column that holds the text")


@contextmanager
def parquet_file(file: DataFile) -> Iterator[pq.ParquetFile]:
    with arrow_source(file) as source:
        try:
            # A streamed file: each row group's column chunks fetched in one coalesced read.
            parquet = pq.ParquetFile(source, pre_buffer=not isinstance(source, str))
        except (pa.ArrowException, OSError) as e:
            raise TokbinError(f"{file.name} is not a readable parquet file ({e}); download it "
                              "again (`dvc repro --force download`) or fix the file") from None
        with parquet:
            yield parquet


def parquet_arrays(file: DataFile, column: str, options: dict,
                   row_groups: tuple[int, ...] | None = None) -> Iterator[pa.Array]:
    """The text column of a parquet file (of `row_groups` only, when given)."""
    with parquet_file(file) as parquet:
        _check_parquet_schema(parquet, file.name, column, options)
        batches = parquet.iter_batches(
            batch_size=ROWS_PER_BATCH, columns=[column],
            row_groups=None if row_groups is None else list(row_groups))
        for batch in _read(batches, file.name):
            yield _plain(batch.column(0))


def check_parquet_columns(file: DataFile, column: str, options: dict) -> None:
    """Fails early, before any worker starts, when the text column is not there as strings."""
    with parquet_file(file) as parquet:
        _check_parquet_schema(parquet, file.name, column, options)


def _check_parquet_schema(parquet: pq.ParquetFile, name: str, column: str,
                          options: dict) -> None:
    check_string_column(parquet.schema_arrow, name, column)
    chosen = options.get("columns")
    if chosen is not None and column not in chosen:
        raise TokbinError(f"{name}: the dataset config reads only the columns {chosen}, not "
                          f"{column!r}; set download.text_column to one of them")


def arrow_arrays(file: DataFile, column: str) -> Iterator[pa.Array]:
    """The text column of an Arrow IPC stream or file."""
    with _ipc_input(file) as f:
        reader, batches = _open_ipc(f, file.name)
        check_string_column(reader.schema, file.name, column)
        for batch in _read(batches, file.name):
            yield _plain(batch.column(column))


def check_arrow_columns(file: DataFile, column: str) -> None:
    with _ipc_input(file) as f:
        check_string_column(_open_ipc(f, file.name)[0].schema, file.name, column)


@contextmanager
def _ipc_input(file: DataFile):
    with arrow_source(file) as source:
        if not isinstance(source, str):
            yield source
            return
        with pa.OSFile(source) as f:
            yield f


def _open_ipc(f, name: str):
    try:
        reader = pa.ipc.open_stream(f)
        return reader, iter(reader)
    except (OSError, pa.ArrowInvalid):
        f.seek(0)
    try:
        reader = pa.ipc.open_file(f)
    except (OSError, pa.ArrowInvalid) as e:
        raise TokbinError(f"{name} is not an Arrow IPC stream or file ({e}); download it "
                          "again (`dvc repro --force download`) or fix the file") from None
    return reader, (reader.get_batch(i) for i in range(reader.num_record_batches))


def _read(batches, name: str):
    """`batches`, with a damaged file reported as one."""
    try:
        yield from batches
    except (pa.ArrowInvalid, OSError) as e:
        raise TokbinError(f"{name} is damaged ({e}); download it again "
                          "(`dvc repro --force download`) or fix the file") from None


def _plain(array: pa.Array) -> pa.Array:
    """Dictionary-encoded and string_view arrays as plain strings: the layout TextBatch
    reads."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array.cast(pa.large_string()) if pa.types.is_string_view(array.type) else array
