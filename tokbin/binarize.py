"""The final bins: the tokenized splits in the requested dtype, and their meta.json.

Every id is checked against n_vocab, read in chunks, and on that same read the file's CRC-32
against the one tokenize recorded: a tokens file changed in place since (through DVC's
hardlink cache, its cache object too) stops the stage, so its bytes never become a new data
version. A split whose dtype changes (or that is cut into shards) is then a sequential copy,
widened as the dtype asks. A split whose dtype is kept, the default, has the very bytes of its
tokens file, so after the check that file is hard-linked into place instead of copied: DVC's
hardlink cache keeps both outputs as one object anyway, so the copy would only cost time and
page cache. No stage or DVC command writes either file in place (every stage renames new files
in, DVC deletes and relinks); where the filesystem has no hard links the split is copied.
Either way the bin appears whole or not at all.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from tokbin.crc import crc32_combine, crc32_hex
from tokbin.errors import TokbinError
from tokbin.format import (DOCLENS_DTYPE, DTYPES, BinWriter, Meta, SplitInfo, check_ids,
                           choose_dtype, doclens_file, is_shard_file, open_bin, read_checked,
                           read_chunks, read_meta, shard_file, token_ends, write_meta)
from tokbin.fsio import atomic_path


def binarize(tokens_dir: Path, out_dir: Path, dtype: str, shard_tokens: int = 0) -> Meta:
    """shard_tokens 0: out_dir/<split>.bin; N > 0: out_dir/<split>/ shards of N tokens."""
    if shard_tokens < 0:  # params.yaml's value is checked before DVC deletes anything
        raise TokbinError(f"shard_tokens is {shard_tokens}: 0 (one bin per split) or more")
    tokens_meta = read_meta(tokens_dir)
    dtype = choose_dtype(dtype, tokens_meta.n_vocab)
    splits = {}
    for split, info in tokens_meta.splits.items():
        tokens = tokens_dir / info.file
        open_bin(tokens, tokens_meta, split)  # checks its size against meta
        # every id passes through here once: the bytes must be the ones tokenize wrote, or
        # a bin damaged in place (through a hard link) would be published as a new version
        chunks = read_checked(tokens, tokens_meta.np_dtype, info.crc32)
        if shard_tokens:
            documents = documents_per_shard(tokens_dir / doclens_file(split), tokens_meta.eot,
                                            shard_tokens, info.tokens)
            splits[split] = write_shards(chunks, out_dir / split, dtype, tokens_meta.n_vocab,
                                         shard_tokens, documents)
            continue
        crc32 = info.crc32
        with atomic_path(out_dir / info.file) as tmp:
            if dtype != tokens_meta.dtype or not link_checked(tokens, info, tmp, tokens_meta):
                with BinWriter(tmp, dtype, tokens_meta.n_vocab) as out:
                    for chunk in chunks:
                        out.write(chunk)
                crc32 = out.crc32
        splits[split] = dataclasses.replace(info, bytes=info.tokens * DTYPES[dtype].itemsize,
                                            crc32=crc32)
    meta = dataclasses.replace(tokens_meta, dtype=dtype, splits=splits)
    write_meta(out_dir, meta)
    return meta


def check_outputs(bins: list[Path], splits: list[str], shard_tokens: int) -> Path:
    """The folder of the outputs named on the command line, once they are exactly the layout
    binarize writes for `splits` (data/<split>.bin, or data/<split> shard directories):
    checked before any work, as DVC itself would only say after the run that an output does
    not exist."""
    folders = {path.parent for path in bins}
    if len(folders) != 1:
        raise TokbinError(f"the bins {', '.join(map(str, bins))} must share one folder (their "
                          "meta.json goes beside them); fix the binarize command in dvc.yaml")
    folder = folders.pop()
    layout = [folder / (split if shard_tokens else f"{split}.bin") for split in splits]
    if sorted(bins) == sorted(layout):
        return folder
    other = [folder / (f"{split}.bin" if shard_tokens else split) for split in splits]
    if sorted(bins) == sorted(other):
        raise TokbinError(f"binarize.shard_tokens is {shard_tokens}, so binarize writes "
                          f"{', '.join(map(str, layout))}, but dvc.yaml's binarize stage names "
                          f"{', '.join(map(str, bins))}; in dvc.yaml replace "
                          f"{', '.join(map(str, other))} with {', '.join(map(str, layout))} "
                          "(in its command and its outs; docs/scale_out.md)")
    raise TokbinError(f"the tokenized splits are {', '.join(splits)}, so binarize writes "
                      f"{', '.join(map(str, layout))}, but dvc.yaml's binarize stage names "
                      f"{', '.join(map(str, bins))}; make its command and outs name one output "
                      "per split of download.splits")


# what link() says where a filesystem or its permissions allow no hard link here
NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP,
                errno.EOPNOTSUPP, errno.ENOSYS}


def link_checked(tokens: Path, info: SplitInfo, dest: Path, meta: Meta) -> bool:
    """Checks every id of `tokens` and its CRC-32, then hard-links it at `dest`; False where no
    link can be made (the caller copies instead)."""
    for chunk in read_checked(tokens, meta.np_dtype, info.crc32):
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
                             out.tokens * DTYPES[dtype].itemsize, out.crc32)

        shards = [write_shard(index, (ids for _, ids in run)) for index, run
                  in itertools.groupby(_cut(chunks, shard_tokens), key=lambda piece: piece[0])]
        if not shards:  # an empty split still gets its folder, with one empty shard
            shards.append(write_shard(0, []))
    crc = 0  # the split's: of the shards concatenated, the single bin they were cut from
    for shard in shards:
        crc = crc32_combine(crc, int(shard.crc32, 16), shard.bytes)
    return SplitInfo(folder.name, sum(s.tokens for s in shards),
                     sum(s.documents for s in shards), sum(s.bytes for s in shards),
                     crc32_hex(crc), tuple(shards))


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
