"""Copies out of a split's token stream (tokbin.tokens): rows of T + 1 consecutive tokens,
and the segments of packed rows (tokbin.doc_sampling) as x and y, without a per-token index.
"""
from __future__ import annotations

import numpy as np

from tokbin.doc_sampling import ranges
from tokbin.tokens import ShardedTokens, row_items, rows_view


def take(tokens: "np.ndarray | ShardedTokens", positions: np.ndarray) -> np.ndarray:
    """tokens[positions] (int64 positions in the split's stream), for a bin or shards."""
    if isinstance(tokens, ShardedTokens):
        return tokens.take(positions)
    return np.take(tokens, positions)


CELL_TOKENS = 256  # a segment is copied this many tokens at a time (see gather_segments)
ROWS_AT_ONCE = 512  # rows (or cells) gathered per step: MappedPages checks between steps


def _rows_are_written_in_order() -> bool:
    """Whether `view[index] = rows` on overlapping items of a view writes the items in index
    order, so that a later one overwrites an earlier one (NumPy does; checked, not assumed,
    on the very views gather_segments writes through)."""
    ids = np.zeros(6, np.int16)
    rows = np.repeat(np.arange(1, 4, dtype=np.int16), 4).reshape(3, 4)
    row_items(ids, 4)[np.arange(3)] = row_items(rows.reshape(-1), 4)[::4]
    return ids.tolist() == [1, 2, 3, 3, 3, 3]


ORDERED_ROW_WRITES = _rows_are_written_in_order()


def gather_rows(rows, starts: np.ndarray, touched) -> np.ndarray:
    """rows[starts] (a `rows_view`), ROWS_AT_ONCE rows at a time, each step `touched`."""
    parts = []
    for a in range(0, len(starts), ROWS_AT_ONCE):
        parts.append(rows[starts[a:a + ROWS_AT_ONCE]])
        touched(len(parts[-1]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def gather_segments(tokens: "np.ndarray | ShardedTokens", src: np.ndarray, out: np.ndarray,
                    length: np.ndarray, total: int, touched) -> np.ndarray:
    """x and y, [2, total] in the tokens' dtype, of segments that tile [0, total) in
    increasing `out`: x[out + i] = tokens[src + i] and y[out + i] = tokens[src + i + 1] for
    i < length (src + length < len(tokens)).

    x is copied in cells of CELL_TOKENS consecutive tokens: a cell is an item of a row view
    (tokbin.tokens.row_items), gathered like a token batch's rows, and written to an
    overlapping view of x in increasing `out`, so that what the last cell of a segment copies
    past its end is overwritten by the segments after it. Whole-row copies beat a per-token
    index (np.take) here by a wide margin. y is x shifted by one, but for each segment's last
    target, read apart (it is next to the cell just read). `touched(cells)` follows every step
    (tokbin.tokens.MappedPages)."""
    width = CELL_TOKENS
    ids = np.empty((2, total + width), tokens.dtype)
    x, y = ids[0], ids[1, :total]
    last = len(tokens) - width  # the last row of rows_view(tokens, width - 1)
    if not ORDERED_ROW_WRITES or last < 0:  # token by token (a NumPy that writes rows out of
        index = np.repeat(src - out, length) + np.arange(total)  # order, or a tiny split)
        x[:total], y[:] = take(tokens, index), take(tokens, index + 1)
        return ids[:, :total]
    if len(length) and int(length.max()) <= width:  # one cell per segment
        cell_src, cell_out = src, out
    else:
        cells = -(-length // width)
        of, within = ranges(np.zeros_like(cells), cells)
        within *= width
        cell_src, cell_out = src[of] + within, out[of] + within
    view, rows = row_items(x, width), rows_view(tokens, width - 1)
    for a in range(0, len(cell_src), ROWS_AT_ONCE):
        starts, at = cell_src[a:a + ROWS_AT_ONCE], cell_out[a:a + ROWS_AT_ONCE]
        windows = rows.items(np.minimum(starts, last))
        near_end = np.flatnonzero(starts > last)  # a cell that would read past the split
        if len(near_end):
            reach = starts[near_end, None] + np.arange(width)
            windows.view(tokens.dtype).reshape(-1, width)[near_end] = take(
                tokens, np.minimum(reach, len(tokens) - 1))
        view[at] = windows
        touched(len(starts))
    y[:-1] = x[1:total]
    y[out + length - 1] = take(tokens, src + length)
    return ids[:, :total]
