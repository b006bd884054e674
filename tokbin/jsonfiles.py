"""``.jsonl``, ``.json`` and ``.ndjson`` data files, read as Hugging Face ``datasets``' json
builder reads them, but streamed: memory holds one chunk of text and the row being parsed,
never the file.

- A file whose first character (after a UTF-8 BOM, and whitespace) is ``[`` is an array of
  rows: objects, or strings (then each is a document of the column ``text``).
- With the config's ``field``, the file is one object and the rows are the array under that key.
- Otherwise the file is a sequence of objects separated by whitespace: JSON Lines (blank lines
  skipped), and objects spread over several lines too, as pyarrow's reader takes them.

A row's text column must hold a string: a missing key, null, a number or a list is an error
naming the file and line. (datasets would read a column whose every value looks like a date
as timestamps; tokbin keeps their text.)
"""
from __future__ import annotations

import io
import json
import re
from typing import Any, Iterator

from tokbin.compression import open_data, read_errors
from tokbin.errors import TokbinError
from tokbin.remote import DataFile

CHUNK_CHARS = 1 << 20
ROWS_PER_LIST = 4096
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def iter_json(file: DataFile, column: str, options: dict) -> Iterator[list[str]]:
    """The documents (values of `column`) of one JSON file, a list of rows at a time."""
    documents = []
    for _, document in json_documents(file, column, options):
        documents.append(document)
        if len(documents) == ROWS_PER_LIST:
            yield documents
            documents = []
    if documents:
        yield documents


def json_documents(file: DataFile, column: str, options: dict) -> Iterator[tuple[int, str]]:
    """(the line it starts on, the document) for each row of one JSON file."""
    name = file.name
    encoding = options.get("encoding") or "utf-8"
    with read_errors(file, encoding), open_data(file) as raw, \
            io.TextIOWrapper(raw, encoding=encoding,
                             errors=options.get("encoding_errors") or "strict",
                             newline="\n") as f:
        text = _Text(f, name)
        field = options.get("field")
        array = field is None and text.peek() == "["
        if field is not None:
            rows = _field_rows(text, field)
        else:
            rows = _array_rows(text) if array else _value_rows(text)
        for line, row in rows:
            yield line, _document(row, column, f"{name}:{line}", strings=array)


def _document(row: Any, column: str, where: str, strings: bool) -> str:
    if strings and isinstance(row, str):  # an array of strings: its one column is "text"
        if column != "text":
            raise TokbinError(f"{where}: the file is an array of strings, whose column is "
                              "'text'; set download.text_column: text")
        return row
    if not isinstance(row, dict):
        raise TokbinError(f"{where}: a row must be a JSON object, got {type(row).__name__} "
                          f"({json.dumps(row)[:40]}); fix the file (JSON Lines: one object per "
                          "line)")
    if column not in row:
        hint = ("; if the rows are in an array under one key, name it in the dataset config's "
                "`field`" if len(row) == 1 and isinstance(next(iter(row.values())), list) else "")
        raise TokbinError(f"{where}: no {column!r} field (fields: {sorted(row)}); set "
                          f"download.text_column to the field that holds the text{hint}")
    value = row[column]
    if not isinstance(value, str):
        raise TokbinError(f"{where}: {column!r} holds a {type(value).__name__} "
                          f"({json.dumps(value)[:40]}), not text; every document must be a "
                          "string")
    return value


class _Text:
    """The file's text in a buffer that ends at a line end (or the end of the file) unless a
    line is longer than CHUNK_CHARS, parsed one JSON value at a time. A JSON string holds no
    raw line break, so a value cut by a buffer ending at a line end fails to parse only at
    the end: there, more text is read; a buffer cut inside a line (a one-line JSON array)
    reads more on any failure, so memory holds a few chunks, not the line. A cut value is
    read on with at least as much text as it has so far: each try parses it from its start,
    so its buffer doubles, and a long value costs a few parses of it, not one per chunk."""

    def __init__(self, f: io.TextIOWrapper, name: str):
        self.f, self.name = f, name
        self.buffer, self.pos, self.eof = "", 0, False
        self._counted = (0, 1)  # (a position in the buffer, its line): counting goes on from it
        self.decoder = json.JSONDecoder()
        self._fill()
        self.buffer = self.buffer.removeprefix("\ufeff")  # a BOM: datasets strips it

    def _fill(self, chars: int = 0) -> bool:
        """Reads more text (at least `chars`, or CHUNK_CHARS); False at the end of the file."""
        chunk = self.f.read(max(chars, CHUNK_CHARS))
        if chunk:
            chunk += self.f.readline(CHUNK_CHARS)
        self._counted = (0, self.line_at(self.pos))
        self.buffer, self.pos = self.buffer[self.pos:] + chunk, 0
        self.eof = not chunk
        return bool(chunk)

    def line_at(self, pos: int) -> int:
        start, line = self._counted
        if pos < start:
            start, line = 0, line - self.buffer.count("\n", 0, start)
        line += self.buffer.count("\n", start, pos)
        self._counted = (pos, line)
        return line

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer) or not self._fill():
                return self.buffer[self.pos:self.pos + 1]

    def expect(self, chars: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            raise self.error(f"expected {' or '.join(map(repr, chars))}, found "
                             f"{char or 'the end of the file'!r}")
        self.pos += 1
        return char

    def value(self) -> tuple[int, Any]:
        """(the line it starts on, the next JSON value)."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buffer.rstrip()) or not self.buffer.endswith("\n")
                if cut and self._fill(len(self.buffer) - self.pos):
                    continue  # cut by the buffer's end
                end = len(self.buffer.rstrip())
                if e.pos >= end:  # the value runs to the end of the file: name its last line
                    raise self.error(f"not valid JSON ({e.msg} at the end of the file)",
                                     end) from None
                raise self.error(f"not valid JSON ({e.msg})", e.pos) from None
            if end == len(self.buffer) and not self.eof and self._fill(end - self.pos):
                continue  # a number may go on in the next chunk
            line = self.line_at(self.pos)
            self.pos = end
            return line, value

    def error(self, what: str, pos: int | None = None) -> TokbinError:
        return TokbinError(f"{self.name}:{self.line_at(self.pos if pos is None else pos)}: "
                           f"{what}; fix the file")


def _value_rows(text: _Text) -> Iterator[tuple[int, Any]]:
    while text.peek():
        yield text.value()


def _array_rows(text: _Text) -> Iterator[tuple[int, Any]]:
    text.expect("[")
    yield from _items(text)
    _end(text)


def _items(text: _Text) -> Iterator[tuple[int, Any]]:
    """The items of an array whose "[" was just read."""
    if text.peek() == "]":
        text.pos += 1
        return
    while True:
        yield text.value()
        if text.expect(",]") == "]":
            return


def _field_rows(text: _Text, field: str) -> Iterator[tuple[int, Any]]:
    text.expect("{")
    found = False
    while text.peek() != "}":
        _, key = text.value()
        text.expect(":")
        if key == field and not found:
            if text.peek() != "[":
                raise text.error(f"the config's field {field!r} must hold an array of rows")
            text.pos += 1
            yield from _items(text)
            found = True
        else:
            text.value()
        if text.expect(",}") == "}":
            break
    else:
        text.pos += 1
    if not found:
        raise TokbinError(f"{text.name}: no top-level key {field!r} (the dataset config's "
                          "`field`); fix the config or the file")
    _end(text)


def _end(text: _Text) -> None:
    if text.peek():
        raise text.error("more text after the top-level value")
