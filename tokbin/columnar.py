"""Parquet and Arrow data files: the text column's arrays, in the order Hugging Face
``datasets`` reads them (parquet: row group by row group; Arrow IPC stream or file: record
batch by record batch). Only the text column is read, a batch at a time. Neither format is
decompressed as a whole (datasets does not either): their own compression is inside.
"""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tokbin.errors import TokbinError

ROWS_PER_BATCH = 8192


def check_string_column(schema: pa.Schema, name: str, column: str) -> None:
    if column not in schema.names:
        raise TokbinError(f"{name} has no column {column!r} (columns: "
                          f"{', '.join(schema.names)}); set download.text_column to one of them")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)):
        raise TokbinError(f"{name}: column {column!r} holds {kind}, not strings; set "
                          "download.text_column to the column that holds the text")


def parquet_file(path: str, name: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TokbinError(f"{name} is not a readable parquet file ({e}); download it again "
                          "(`dvc repro --force download`) or fix the file") from None


def parquet_arrays(path: str, name: str, column: str, options: dict,
                   row_groups: tuple[int, ...] | None = None) -> Iterator[pa.Array]:
    """The text column of a parquet file (of `row_groups` only, when given)."""
    check_parquet_columns(path, name, column, options)
    batches = parquet_file(path, name).iter_batches(
        batch_size=ROWS_PER_BATCH, columns=[column],
        row_groups=None if row_groups is None else list(row_groups))
    for batch in _read(batches, name):
        yield _plain(batch.column(0))


def check_parquet_columns(path: str, name: str, column: str, options: dict) -> None:
    """Fails early, before any worker starts, when the text column is not there as strings."""
    check_string_column(parquet_file(path, name).schema_arrow, name, column)
    chosen = options.get("columns")
    if chosen is not None and column not in chosen:
        raise TokbinError(f"{name}: the dataset config reads only the columns {chosen}, not "
                          f"{column!r}; set download.text_column to one of them")


def arrow_arrays(path: str, name: str, column: str) -> Iterator[pa.Array]:
    """The text column of an Arrow IPC stream or file."""
    with pa.OSFile(path) as f:
        reader, batches = _open_ipc(f, name)
        check_string_column(reader.schema, name, column)
        for batch in _read(batches, name):
            yield _plain(batch.column(column))


def check_arrow_columns(path: str, name: str, column: str) -> None:
    with pa.OSFile(path) as f:
        check_string_column(_open_ipc(f, name)[0].schema, name, column)


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
    """string_view arrays as large_string: the layout TextBatch reads."""
    return array.cast(pa.large_string()) if pa.types.is_string_view(array.type) else array
