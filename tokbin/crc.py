"""CRC-32 (zlib's) of a file written in pieces by different processes.

A bin's CRC-32 is recorded in meta.json as it is written. Worker processes write their pieces to
spill files that the main process appends without reading, so each worker hashes its own piece
and the main process combines the pieces' CRCs in order (`crc32_combine`, zlib's algorithm:
CRC(a + b) from CRC(a), CRC(b) and len(b)), in microseconds, whatever their size. CRC-32 rather
than md5: it runs at several GB/s and catches any accidental change (it is no defence against
someone who also edits meta.json).
"""
from __future__ import annotations

import zlib
from pathlib import Path

_POLY = 0xEDB88320  # the CRC-32 polynomial, bit-reversed, as zlib uses it


def _multiply(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (both bit-reversed, x^0 in the top bit)."""
    product, bit = 0, 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> list[int]:
    """x^(2^k) modulo the polynomial, for k < 64."""
    table, power = [], 1 << 30  # x^1
    for _ in range(64):
        table.append(power)
        power = _multiply(power, power)
    return table


_X_TO_2_TO_THE = _powers()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of a + b, given crc1 = crc32(a), crc2 = crc32(b) and len2 = len(b) in bytes."""
    shift, k, n = 1 << 31, 3, len2  # x^(8 * len2): appending len2 bytes after a
    while n:
        if n & 1:
            shift = _multiply(_X_TO_2_TO_THE[k], shift)
        n >>= 1
        k += 1
    return _multiply(shift, crc1) ^ crc2


def crc32_hex(crc: int) -> str:
    """How meta.json writes a CRC-32: 8 lowercase hex digits."""
    return f"{crc:08x}"


def file_crc32(path: Path, chunk_bytes: int = 8 << 20) -> str:
    """A whole file's CRC-32, as meta.json writes it."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            crc = zlib.crc32(chunk, crc)
    return crc32_hex(crc)
