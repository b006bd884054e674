"""``.txt`` data files, read as Hugging Face ``datasets``' text builder reads them, or by
tokbin's own ``separator``.

The file is decoded (UTF-8 unless the dataset's config says otherwise; a BOM is kept, as there)
with universal newlines: ``\\r\\n`` and a lone ``\\r`` become ``\\n`` before anything is split,
and only ``\\n`` splits (never ``str.splitlines``, which also splits on ``\\x0c``, ``\\u2028``...).

- ``sample_by: line``: each line is a document, its ``\\n`` removed (kept with the config's
  ``keep_linebreaks``); empty lines are documents; an empty file has none.
- ``paragraph``: the text split on ``\\n\\n``, empty pieces dropped, except that the last piece
  is kept whole, trailing newline included (datasets' own rule).
- ``document``: the whole file is one document (an empty file: one empty document).
- ``separator`` (e.g. ``<|endoftext|>``, as in TinyStories' own ``.txt`` files): a line that is
  exactly the separator ends a document; the document is the text since the previous one,
  without the line break before the separator. An empty document (two separator lines in a
  row, or one at the start) is no document.

Text is read in chunks that end at a line end, so memory holds a chunk, not the file
(``document`` mode excepted: its document is the file), and a paragraph or separated document
that spans chunks (in parts until it ends); each chunk is searched for document ends once,
so the time is linear in the text however long a document is.
"""
from __future__ import annotations

import io
import re
from typing import Callable, Iterator

from tokbin.compression import open_data, read_errors
from tokbin.errors import TokbinError
from tokbin.remote import DataFile

CHUNK_CHARS = 4 << 20


def iter_text(file: DataFile, options: dict) -> Iterator[list[str]]:
    """The documents of one .txt file, a chunk's worth at a time."""
    separator = options.get("separator")
    sample_by = options.get("sample_by") or "line"
    encoding = options.get("encoding") or "utf-8"
    with read_errors(file, encoding), open_data(file) as raw, \
            io.TextIOWrapper(raw, encoding=encoding,
                             errors=options.get("encoding_errors") or "strict") as f:
        if separator is not None:
            yield from _separated(_chunks(f), separator)
        elif sample_by == "line":
            yield from _lines(_chunks(f), bool(options.get("keep_linebreaks")))
        elif sample_by == "paragraph":
            yield from _paragraphs(_chunks(f))
        elif sample_by == "document":
            yield [f.read()]
        else:
            raise TokbinError(f"sample_by must be line, paragraph or document, not "
                              f"{sample_by!r}")


def _chunks(f: io.TextIOWrapper) -> Iterator[str]:
    """The file's text in chunks that each end at a line end (or the end of the file)."""
    while True:
        chunk = f.read(CHUNK_CHARS)
        if not chunk:
            return
        yield chunk + f.readline()


def _lines(chunks: Iterator[str], keep_linebreaks: bool) -> Iterator[list[str]]:
    for chunk in chunks:
        lines = chunk.split("\n")
        last = lines.pop()  # "" after a final "\n"; else the file's last line, unterminated
        if keep_linebreaks:
            lines = [line + "\n" for line in lines]
        if last:
            lines.append(last)
        yield lines


def _paragraphs(chunks: Iterator[str]) -> Iterator[list[str]]:
    # A "\n\n" may begin at the last character before a chunk (chunks end at line ends).
    for pieces in _pieces(chunks, lambda text: text.split("\n\n"), reach=1):
        yield [piece for piece in pieces if piece]


def _separated(chunks: Iterator[str], separator: str) -> Iterator[list[str]]:
    # A separator line: one that holds exactly the separator. Chunks end at line ends, so a
    # line never straddles two chunks; the last line is given a line end (which changes no
    # document), so that the end of a chunk is never taken for the end of the file.
    line = re.compile("^" + re.escape(separator) + "\n", re.MULTILINE)
    terminated = (chunk if chunk.endswith("\n") else chunk + "\n" for chunk in chunks)
    for pieces in _pieces(terminated, line.split):
        yield [doc for piece in pieces if (doc := piece.removesuffix("\n"))]


def _pieces(chunks: Iterator[str], split: Callable[[str], list[str]],
            reach: int = 0) -> Iterator[list[str]]:
    """The pieces `split` cuts the whole text into: each chunk's finished ones as it is read,
    and last, the text after the last cut. Each chunk is searched once, with only the `reach`
    characters before it where a cut may begin, and a piece spanning chunks is joined once:
    the work is linear in the text however long a piece is."""
    pending: list[str] = []  # the unfinished piece, in parts, none of them empty
    for chunk in chunks:
        head = ""  # the last `reach` characters before the chunk
        while pending and len(head) < reach:
            head = pending.pop() + head
        if len(head) > reach:
            pending.append(head[:-reach])
            head = head[-reach:]
        *finished, last = split(head + chunk)
        if finished:
            finished[0] = "".join([*pending, finished[0]])
            pending = []
        if last:
            pending.append(last)
        yield finished
    last, pending = "".join(pending), []  # not held besides: the piece may be a whole file
    yield [last]
