"""The final bins: the tokenized splits in the requested dtype, plus meta.json and reports.

At heart a sequential copy: each split is streamed in chunks of `CHUNK_TOKENS`, widened or
kept as the dtype asks, every id checked against n_vocab, and renamed into place when whole.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np

from tokbin.format import (DTYPES, BinWriter, Meta, atomic_path, choose_dtype, open_bin, read_meta,
                           write_meta)
from tokbin.tokenize import DOCLENS_DTYPE

CHUNK_TOKENS = 1 << 24
HISTOGRAM_BUCKETS = 50


def binarize(tokens_dir: Path, out_dir: Path, dtype: str) -> Meta:
    tokens_meta = read_meta(tokens_dir)
    dtype = choose_dtype(dtype, tokens_meta.n_vocab)
    splits = {}
    for split, info in tokens_meta.splits.items():
        source = open_bin(tokens_dir / info.file, tokens_meta, split)
        with atomic_path(out_dir / info.file) as tmp, BinWriter(tmp, dtype,
                                                                 tokens_meta.n_vocab) as out:
            for start in range(0, info.tokens, CHUNK_TOKENS):
                out.write(np.asarray(source[start:start + CHUNK_TOKENS]))
        splits[split] = dataclasses.replace(info, bytes=info.tokens * DTYPES[dtype].itemsize)
    meta = dataclasses.replace(tokens_meta, dtype=dtype, splits=splits)
    write_meta(out_dir, meta)
    return meta


def write_reports(meta: Meta, tokens_dir: Path, metrics_path: Path, plots_dir: Path) -> None:
    """metrics.json (per split: tokens, documents, bytes) and a document-length histogram per
    split (plots_dir/<split>.csv: bucket start in tokens, document count)."""
    metrics = {split: {"tokens": s.tokens, "documents": s.documents, "bytes": s.bytes}
               for split, s in meta.splits.items()}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    for split in meta.splits:
        lengths = np.memmap(tokens_dir / f"{split}.doclens", dtype=DOCLENS_DTYPE, mode="r")
        chunks = [lengths[i:i + CHUNK_TOKENS] for i in range(0, len(lengths), CHUNK_TOKENS)]
        width = _bucket_width(max(int(c.max()) for c in chunks))
        counts = sum(np.bincount(c // width, minlength=HISTOGRAM_BUCKETS) for c in chunks)
        rows = "".join(f"{i * width},{n}\n" for i, n in enumerate(counts.tolist()))
        with atomic_path(plots_dir / f"{split}.csv") as tmp:
            tmp.write_text("tokens,documents\n" + rows)


def _bucket_width(longest: int) -> int:
    """The smallest width in 1, 2, 5, 10, 20, 50, ... that fits `longest` in the buckets."""
    width = 1
    for step in itertools.cycle((2, 2.5, 2)):
        if longest // width < HISTOGRAM_BUCKETS:
            return width
        width = int(width * step)
