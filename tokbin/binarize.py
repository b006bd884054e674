"""The final bins: the tokenized splits in the requested dtype, plus meta.json and reports.

Every id is checked against n_vocab, read in chunks. A split whose dtype changes (or that is
cut into shards) is then a sequential copy, widened as the dtype asks. A split whose dtype is
kept, the default, has the very bytes of its tokens file, so after the check that file is
hard-linked into place instead of copied: DVC's hardlink cache keeps both outputs as one
object anyway, so the copy would only cost time and page cache. Neither file is ever written
in place (every stage renames new files in, DVC deletes and relinks), so sharing an inode is
safe; where the filesystem has no hard links the split is copied. Either way the bin appears
whole or not at all.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from tokbin.errors import TokbinError
from tokbin.format import (DOCLENS_DTYPE, DTYPES, BinWriter, Meta, SplitInfo, check_ids,
                           choose_dtype, doclens_file, is_shard_file, open_bin, read_chunks,
                           read_meta, shard_file, token_ends, write_meta)
from tokbin.fsio import atomic_path, write_text_atomic

HISTOGRAM_BUCKETS = 50


def binarize(tokens_dir: Path, out_dir: Path, dtype: str, shard_tokens: int = 0) -> Meta:
    """shard_tokens 0: out_dir/<split>.bin; N > 0: out_dir/<split>/ shards of N tokens."""
    if shard_tokens < 0:
        raise TokbinError(f"binarize.shard_tokens is {shard_tokens}; set it to 0 (one bin per "
                          "split) or to the most tokens per shard (e.g. 100000000)")
    tokens_meta = read_meta(tokens_dir)
    dtype = choose_dtype(dtype, tokens_meta.n_vocab)
    splits = {}
    for split, info in tokens_meta.splits.items():
        tokens = tokens_dir / info.file
        open_bin(tokens, tokens_meta, split)  # checks its size against meta
        chunks = read_chunks(tokens, tokens_meta.np_dtype)
        if shard_tokens:
            documents = documents_per_shard(tokens_dir / doclens_file(split), tokens_meta.eot,
                                            shard_tokens, info.tokens)
            splits[split] = write_shards(chunks, out_dir / split, dtype, tokens_meta.n_vocab,
                                         shard_tokens, documents)
            continue
        with atomic_path(out_dir / info.file) as tmp:
            if dtype != tokens_meta.dtype or not link_checked(tokens, tmp, tokens_meta):
                with BinWriter(tmp, dtype, tokens_meta.n_vocab) as out:
                    for chunk in chunks:
                        out.write(chunk)
        splits[split] = dataclasses.replace(info, bytes=info.tokens * DTYPES[dtype].itemsize)
    meta = dataclasses.replace(tokens_meta, dtype=dtype, splits=splits)
    write_meta(out_dir, meta)
    return meta


# what link() says where a filesystem or its permissions allow no hard link here
NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP,
                errno.EOPNOTSUPP, errno.ENOSYS}


def link_checked(tokens: Path, dest: Path, meta: Meta) -> bool:
    """Checks every id of `tokens`, then hard-links it at `dest`; False where no link can be
    made (the caller copies instead)."""
    for chunk in read_chunks(tokens, meta.np_dtype):
        check_ids(chunk, meta.n_vocab)
    try:
        os.link(tokens, dest)
    except OSError as e:
        if e.errno in NO_HARD_LINK:
            return False
        raise
    return True


def write_shards(chunks: Iterator[np.ndarray], folder: Path, dtype: str, n_vocab: int,
                 shard_tokens: int, documents: list[int]) -> SplitInfo:
    """Cuts a split's ids into `folder`/000000.bin, ... of `shard_tokens` each (the last may
    be shorter; an empty split gets one empty shard); `folder` appears whole or not at all."""
    if folder.is_dir() and any(not is_shard_file(p.name) for p in folder.iterdir()):
        raise TokbinError(f"{folder} exists and is not a shard directory, so a split named "
                          f"{folder.name!r} would overwrite it; rename the split")
    with atomic_path(folder) as tmp:
        tmp.mkdir()

        def write_shard(index: int, pieces: Iterable[np.ndarray]) -> SplitInfo:
            with BinWriter(tmp / shard_file(index), dtype, n_vocab) as out:
                for ids in pieces:
                    out.write(ids)
            return SplitInfo(shard_file(index), out.tokens, documents[index],
                             out.tokens * DTYPES[dtype].itemsize)

        shards = [write_shard(index, (ids for _, ids in run)) for index, run
                  in itertools.groupby(_cut(chunks, shard_tokens), key=lambda piece: piece[0])]
        if not shards:  # an empty split still gets its folder, with one empty shard
            shards.append(write_shard(0, []))
    return SplitInfo(folder.name, sum(s.tokens for s in shards),
                     sum(s.documents for s in shards), sum(s.bytes for s in shards), tuple(shards))


def _cut(chunks: Iterator[np.ndarray], shard_tokens: int) -> Iterator[tuple[int, np.ndarray]]:
    """(shard index, ids) pieces of `chunks`, cut where each shard of `shard_tokens` ends."""
    position = 0
    for chunk in chunks:
        while chunk.size:
            index, offset = divmod(position, shard_tokens)
            piece = chunk[:shard_tokens - offset]
            yield index, piece
            position += piece.size
            chunk = chunk[piece.size:]


def documents_per_shard(doclens: Path, eot: str, shard_tokens: int, tokens: int) -> list[int]:
    """How many documents start in each shard, from the documents' lengths (a document that
    starts at the very end of the split, an empty one with eot none, counts in the last)."""
    shards = max(1, -(-tokens // shard_tokens))
    counts = np.zeros(shards, np.int64)
    start = 0  # the first token of the next document
    for lengths in read_chunks(doclens, DOCLENS_DTYPE):
        ends = start + token_ends(lengths, eot != "none")
        starts = ends - lengths - (eot != "none")
        counts += np.bincount(np.minimum(starts // shard_tokens, shards - 1), minlength=shards)
        start = int(ends[-1]) if len(ends) else start
    return counts.tolist()


def write_reports(meta: Meta, tokens_dir: Path, metrics_path: Path, plots_dir: Path) -> None:
    """metrics.json (per split: tokens, documents, bytes) and a document-length histogram per
    split (plots_dir/<split>.csv: bucket start in tokens, document count)."""
    metrics = {split: {"tokens": s.tokens, "documents": s.documents, "bytes": s.bytes}
               for split, s in meta.splits.items()}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    for split in meta.splits:
        doclens = tokens_dir / doclens_file(split)
        longest = max(int(c.max()) for c in read_chunks(doclens, DOCLENS_DTYPE))
        width = _bucket_width(longest)
        counts = sum(np.bincount(c // width, minlength=HISTOGRAM_BUCKETS)
                     for c in read_chunks(doclens, DOCLENS_DTYPE))
        rows = "".join(f"{i * width},{n}\n" for i, n in enumerate(counts.tolist()))
        write_text_atomic(plots_dir / f"{split}.csv", "tokens,documents\n" + rows)


def _bucket_width(longest: int) -> int:
    """The smallest width in 1, 2, 5, 10, 20, 50, ... that fits `longest` in the buckets."""
    width = 1
    for step in itertools.cycle((2, 2.5, 2)):
        if longest // width < HISTOGRAM_BUCKETS:
            return width
        width = int(width * step)
