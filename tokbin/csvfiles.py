"""``.csv`` and ``.tsv`` data files, read as Hugging Face ``datasets``' csv builder reads them:
``pandas.read_csv`` in chunks, with the very arguments datasets passes (recorded by the
download stage: separator, quoting, header, NA markers...), so quoted values may hold
separators and line breaks, and blank lines are skipped.

The text column is read as text: where datasets would guess numbers (``007`` -> 7), tokbin
keeps the characters of the file. A cell that pandas reads as missing (empty, or an NA marker
such as ``NA``, ``null``, ``N/A``: load_dataset gives None there) is an error naming the file
and row, as is a missing column.
"""
from __future__ import annotations

import io
import json
import re
from typing import Iterator

from tokbin.compression import open_data, read_errors
from tokbin.errors import TokbinError
from tokbin.remote import DataFile


def iter_csv(file: DataFile, column: str, options: dict) -> Iterator[list[str]]:
    """The documents (values of `column`) of one CSV file, a chunk of rows at a time."""
    import pandas as pd  # here: only a csv dataset pays for importing pandas
    name, row = file.name, 0
    with read_errors(file, options.get("encoding")), open_data(file) as f:
        try:
            for frame in pd.read_csv(f, iterator=True, dtype={column: str}, **options):
                if column not in frame.columns:
                    raise _no_column(name, column, list(map(str, frame.columns)))
                values = frame[column].tolist()
                missing = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
                if missing is not None:
                    raise TokbinError(f"{name}: row {row + missing + 1}: {column!r} is empty or "
                                      "an NA marker (NA, null, N/A, ...), which load_dataset "
                                      "reads as missing; fill or remove that row")
                row += len(values)
                yield values
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise _not_csv(file, options, str(e)) from None


def _no_column(name: str, column: str, columns: list[str]) -> TokbinError:
    """The text column is missing; a lone header holding a common delimiter is one read with
    the wrong one, and the fix is the config's `sep`."""
    delimiter = next((d for d in ";\t|" if len(columns) == 1 and d in columns[0]), None)
    if delimiter is not None:
        quoted = json.dumps(delimiter)  # YAML's double-quoted form: "\t" is a tab there
        return TokbinError(f"{name}: no column {column!r}: its header {columns[0]!r} looks "
                           f"{quoted}-separated; set `sep: {quoted}` in the config of the "
                           "dataset's README.md (its `configs:`)")
    return TokbinError(f"{name}: no column {column!r} (columns: {', '.join(columns)}); set "
                       "download.text_column to the column that holds the text")


def _not_csv(file: DataFile, options: dict, message: str) -> TokbinError:
    """pandas' parse error on one line, at the file line where that record starts (pandas
    counts lines from 1 and rows from 0, neither counting line breaks inside quoted values)."""
    what = " ".join(message.removeprefix("Error tokenizing data. C error: ").split())
    line = re.search(r"in line (\d+)", what)
    row = re.search(r"at row (\d+)", what)
    record = int(line.group(1)) if line else int(row.group(1)) + 1 if row else None
    where = _file_line(file, options, record) if record else None
    return TokbinError(f"{file.name}{f':{where}' if where else ''}: not valid CSV ({what}); "
                       "fix the file")


def _file_line(file: DataFile, options: dict, record: int) -> int | None:
    """The file line where pandas' `record`-th line starts, found by Python's csv module with
    the same separator and quoting (read again: only on this error); None where it cannot."""
    import csv
    sep = options.get("sep", options.get("delimiter")) or ","
    if len(sep) != 1:  # a regex separator: pandas' python engine, not csv's
        return None
    dialect = {"delimiter": sep, "quotechar": options.get("quotechar") or '"',
               "escapechar": options.get("escapechar"),
               "doublequote": options.get("doublequote", True)}
    try:
        with open_data(file) as raw, io.TextIOWrapper(
                raw, encoding=options.get("encoding") or "utf-8", newline="") as f:
            reader = csv.reader(f, **dialect)
            for _ in range(record - 1):
                next(reader)
            return reader.line_num + 1
    except (csv.Error, StopIteration, UnicodeDecodeError, TypeError, ValueError):
        return None
