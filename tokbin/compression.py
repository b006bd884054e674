"""Compressed text data files, opened as Hugging Face `datasets` opens them: by the file name's
extension (``.gz``, ``.bz2``, ``.xz``, ``.zst``), else by the magic number at its start (so a
gzip file named ``train.txt`` is read decompressed, as load_dataset reads it). Every stream is
decompressed as it is read, so memory does not grow with the file; all members of a gzip file
and all frames of a zstd one are read. A truncated or corrupt stream is a TokbinError naming
the file.
"""
from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import lzma
import zlib
from typing import IO, Iterator

from tokbin.errors import TokbinError
from tokbin.remote import DataFile, open_binary

EXTENSIONS = {"gz": "gzip", "gzip": "gzip", "bz2": "bz2", "xz": "xz", "zst": "zstd",
              "zstd": "zstd", "lz4": "lz4", "zip": "zip"}
MAGIC = [(b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
         (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x04\x22\x4d\x18", "lz4"), (b"PK\x03\x04", "zip"),
         (b"PK\x05\x06", "zip"), (b"Rar!", "rar"), (b"7z\xbc\xaf\x27\x1c", "7z")]
SUPPORTED = ("gzip", "bz2", "xz", "zstd")


def extension(name: str) -> str:
    """datasets' idea of a file's extension: its last dot-suffix, cut at '?', '-' and '_'."""
    ext = name.rsplit("/", 1)[-1].split(".")[-1]
    for symbol in "?-_":
        ext = ext.split(symbol)[0]
    return ext


def uncompressed_name(name: str) -> str:
    """`name` without a compression suffix: what says which reader's file it is."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext in EXTENSIONS else name


def compression_of(path: str, f: IO[bytes]) -> str | None:
    """The compression of data file `path`, open as `f` (left at its start)."""
    kind = EXTENSIONS.get(extension(path))
    if kind:
        return kind
    head = f.read(8)
    f.seek(0)
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


@contextlib.contextmanager
def open_data(file: DataFile) -> Iterator[IO[bytes]]:
    """The bytes of a data file, decompressed as read."""
    with open_binary(file) as raw:
        kind = compression_of(file.path, raw)
        if kind is None:
            yield raw
            return
        if kind not in SUPPORTED:
            raise TokbinError(f"{file.name} is a {kind} file, which tokbin does not read "
                              f"(compressions read: {', '.join(SUPPORTED)}); recompress it or "
                              "leave it out of download.data_files")
        if kind == "zstd":
            import pyarrow as pa  # pyarrow's codec needs no extra package, reads every frame
            with pa.CompressedInputStream(raw, "zstd") as f:
                yield f
            return
        if kind == "gzip":
            decompressed = gzip.GzipFile(fileobj=raw, mode="rb")
        else:
            decompressed = (bz2.BZ2File if kind == "bz2" else lzma.LZMAFile)(raw, "rb")
        with decompressed as f:
            yield f


@contextlib.contextmanager
def read_errors(file: DataFile, encoding: str | None = None) -> Iterator[None]:
    """Decompression and decoding failures while reading data `file` (as text in `encoding`,
    UTF-8 when None), as TokbinErrors."""
    name = file.name
    try:
        yield
    except (EOFError, zlib.error, lzma.LZMAError) as e:
        raise corrupt(name, e) from None
    except OSError as e:
        if e.errno is not None:  # a real I/O error, not a decoder's complaint
            raise
        raise corrupt(name, e) from None
    except UnicodeDecodeError as e:
        if codecs.lookup(encoding or "utf-8").name not in ("utf-8", "utf-8-sig"):
            raise TokbinError(f"{name}: not valid {encoding} ({e.reason}); fix the file or the "
                              "dataset config's encoding") from None
        raise _invalid_line(file) from None


def _invalid_line(file: DataFile) -> TokbinError:
    """Where the file's first invalid UTF-8 is, by line (read again: only on this error; a
    line end is never inside a UTF-8 character)."""
    name = file.name
    with read_errors(file), open_data(file) as f:
        for lineno, line in enumerate(_byte_lines(f), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return TokbinError(f"{name}:{lineno}: invalid UTF-8 at byte {e.start} of the "
                                   "line; re-encode the file as UTF-8 (e.g. `iconv -t UTF-8`)")
    return TokbinError(f"{name}: invalid UTF-8; re-encode the file as UTF-8")


def _byte_lines(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream, read in blocks (pyarrow's zstd stream has no readline)."""
    parts = []  # of the line under way: joined once, so a long line costs no copies per block
    while block := f.read(1 << 20):
        *lines, last = block.split(b"\n")
        if lines:
            lines[0] = b"".join([*parts, lines[0]])
            parts = []
            yield from lines
        parts.append(last)
    if tail := b"".join(parts):
        yield tail


def corrupt(name: str, e: Exception) -> TokbinError:
    return TokbinError(f"{name}: truncated or corrupt compressed file ({type(e).__name__}: {e});"
                       " download it again (`dvc repro --force download`) or fix the file")
