"""The final bins: the tokenized splits in the requested dtype and format (nanoGPT's
headerless bins or llm.c's), each split's document index, and their meta.json.

Every id is checked against n_vocab, read in chunks, and on that same read the file's CRC-32
against the one tokenize recorded: a tokens file changed in place since (through DVC's
hardlink cache, its cache object too) stops the stage, so its bytes never become a new data
version. A split whose dtype changes (or that is cut into shards) is then a sequential copy,
widened as the dtype asks. A split whose dtype is kept, the default, has the very bytes of its
tokens file, so after the check that file is hard-linked into place instead of copied: DVC's
hardlink cache keeps both outputs as one object anyway, so the copy would only cost time and
page cache. No stage or DVC command writes either file in place (every stage renames new files
in, DVC deletes and relinks); where the filesystem has no hard links the split is copied.
Either way the bin appears whole or not at all, and no split's outputs appear unless every
split's were written. An llmc bin (a header, then the ids) is always a copy.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import shlex
import shutil
import sys
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import yaml

from tokbin.crc import crc32_combine, crc32_hex
from tokbin.errors import TokbinError
from tokbin.format import (DOCLENS_DTYPE, DOCS_DTYPE, DTYPES, META_FILENAME, BinWriter, Meta,
                           SplitInfo, bin_header, check_ids, choose_dtype, docs_file,
                           doclens_file, document_offsets, is_shard_file, llmc_max_tokens,
                           open_bin, read_checked, read_meta, shard_file, write_meta)
from tokbin.fsio import atomic_path


def binarize(tokens_dir: Path, out_dir: Path, dtype: str, shard_tokens: int = 0,
             bin_format: str = "nanogpt") -> Meta:
    """shard_tokens 0: out_dir/<split>.bin; N > 0: out_dir/<split>/ shards of at most N
    tokens; bin_format "nanogpt" (headerless) or "llmc" (llm.c's header first). Each split's
    document index goes to out_dir/<split>.docs."""
    if shard_tokens < 0:  # params.yaml's value is checked before DVC deletes anything
        raise TokbinError(f"shard_tokens is {shard_tokens}: 0 (one bin per split) or more")
    tokens_meta = read_meta(tokens_dir)
    dtype = choose_dtype(dtype, tokens_meta.n_vocab)
    if bin_format == "llmc":
        check_llmc_sizes(tokens_meta, dtype, shard_tokens, out_dir)
    splits = {}
    # Every output is written beside its place and renamed into it once all are written: a
    # split that fails leaves none of the others behind.
    with ExitStack() as outputs:
        for split, info in tokens_meta.splits.items():
            tokens = tokens_dir / info.file
            open_bin(tokens, tokens_meta, split)  # checks its size against meta
            # every id passes through here once: the bytes must be the ones tokenize wrote,
            # or a bin damaged in place (through a hard link) would be published as new
            chunks = read_checked(tokens, tokens_meta.np_dtype, info.crc32)
            doclens = tokens_dir / doclens_file(split)
            if shard_tokens:
                ends = shard_ends(info.tokens, shard_tokens, equal=bin_format == "llmc")
                documents = documents_per_shard(doclens, tokens_meta.eot, ends,
                                                info.doclens_crc32)
                check_shard_folder(out_dir / split)
                written = dataclasses.replace(write_shards(
                    chunks, outputs.enter_context(atomic_path(out_dir / split)), dtype,
                    tokens_meta.n_vocab, ends, documents, bin_format), file=split)
            else:
                written = write_bin(tokens, chunks, outputs.enter_context(atomic_path(
                    out_dir / info.file)), tokens_meta, info, dtype, bin_format)
            docs_crc32 = write_docs(doclens, tokens_meta.eot, outputs.enter_context(atomic_path(
                out_dir / docs_file(split))), info.tokens, info.doclens_crc32)
            splits[split] = dataclasses.replace(written, docs=docs_file(split),
                                                docs_crc32=docs_crc32, doclens_crc32=None)
    meta = dataclasses.replace(tokens_meta, dtype=dtype, splits=splits, bin_format=bin_format)
    write_meta(out_dir, meta)
    remove_other_layout(out_dir, list(splits), shard_tokens)
    return meta


def remove_other_layout(out_dir: Path, splits: list[str], shard_tokens: int) -> None:
    """Removes what the other layout (a single bin, or a shard directory, per split) left in
    `out_dir`: DVC deletes no output dvc.yaml stopped listing, and llm.c's `data/train/*.bin`
    glob, or a reader of data/train.bin, would take that earlier build's tokens for this one's.
    A folder holding anything but shard files is not binarize's, and stays."""
    for split in splits:
        other = out_dir / (f"{split}.bin" if shard_tokens else split)
        shards = not shard_tokens and other.is_dir() and all(
            is_shard_file(p.name) and p.is_file() for p in other.iterdir())
        if not (shards or shard_tokens and other.is_file()):
            continue
        try:
            if other.is_symlink() or not shards:  # a link: only the link goes, not its target
                other.unlink()
            else:
                shutil.rmtree(other)
        except OSError as e:
            raise TokbinError(f"{other} is left from an earlier binarize.shard_tokens and could "
                              f"not be removed ({e}); remove it yourself, then rerun") from None
        print(f"binarize: removed {other}: the {'single bin' if shard_tokens else 'shards'} of "
              f"an earlier binarize.shard_tokens, no output of this layout (its data version "
              "keeps it: git checkout + dvc pull)", file=sys.stderr)


def check_llmc_sizes(tokens_meta: Meta, dtype: str, shard_tokens: int, out_dir: Path) -> None:
    """Before any work: every llm.c file must hold at most `llmc_max_tokens` ids."""
    check_llmc_shard_tokens(dtype, shard_tokens)
    limit = llmc_max_tokens(dtype)
    too_big = {split: info.tokens for split, info in tokens_meta.splits.items()
               if info.tokens > limit}
    if not shard_tokens and too_big:
        listed = ", ".join(f"{split} has {n:,}" for split, n in too_big.items())
        bins = ", ".join(str(out_dir / info.file) for info in tokens_meta.splits.values())
        folders = ", ".join(str(out_dir / split) for split in tokens_meta.splits)
        raise TokbinError(f"binarize.format is llmc and an llm.c file holds at most {limit:,} "
                          f"{dtype} ids, but {listed}: set binarize.shard_tokens to at most "
                          f"{limit} (llm.c's shards have 100000000) and in dvc.yaml replace "
                          f"{bins} with {folders} (in the binarize stage's command and its outs; "
                          "docs/llmc.md)")


def check_llmc_shard_tokens(dtype: str, shard_tokens: int) -> None:
    """binarize.shard_tokens fits one llm.c file of `dtype` ids (known without the data, so
    the check stage finds it too)."""
    limit = llmc_max_tokens(dtype)
    if shard_tokens > limit:
        raise TokbinError(f"binarize.shard_tokens is {shard_tokens:,}, but an llm.c file holds at "
                          f"most {limit:,} {dtype} ids (llm.c's int32 count and int file "
                          "offsets); set binarize.shard_tokens to at most that (llm.c's own "
                          "shards have 100000000)")


def write_bin(tokens: Path, chunks: Iterator[np.ndarray], dest: Path, tokens_meta: Meta,
              info: SplitInfo, dtype: str, bin_format: str) -> SplitInfo:
    """One split's single bin, written to the new file `dest`: a hard link of `tokens` where
    the bytes are the same, else a checked copy."""
    header = bin_header(bin_format, dtype, info.tokens)
    crc32 = info.crc32
    if header or dtype != tokens_meta.dtype or not link_checked(tokens, info, dest, tokens_meta):
        with BinWriter(dest, dtype, tokens_meta.n_vocab, header) as out:
            for chunk in chunks:
                out.write(chunk)
        crc32 = out.crc32
    return dataclasses.replace(info, bytes=info.tokens * DTYPES[dtype].itemsize + len(header),
                               crc32=crc32)


def write_docs(doclens: Path, eot: str, dest: Path, tokens: int, crc32: str | None) -> str:
    """The split's document index, from its documents' lengths (the doclens file, of CRC-32
    `crc32`), written to the new file `dest`; returns the index's CRC-32."""
    with open(dest, "wb") as out:
        end, crc = 0, 0
        for offsets in document_offsets(read_checked(doclens, DOCLENS_DTYPE, crc32),
                                        eot != "none"):
            data = offsets.astype(DOCS_DTYPE, copy=False).tobytes()
            out.write(data)
            crc = zlib.crc32(data, crc)
            end = int(offsets[-1]) if len(offsets) else end
        if end != tokens:
            raise TokbinError(f"{doclens} adds up to {end} tokens, not the split's {tokens}: the "
                              "tokenized data is damaged; rebuild with `dvc repro --force "
                              "tokenize`")
    return crc32_hex(crc)


def binarize_stage(dvc_yaml: Path) -> tuple[list[Path], list[Path]]:
    """The bins the binarize stage's command names (`python -m stages.binarize TOKENS_DIR
    BIN... [--option ...]`), and its outs."""
    try:
        stage = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]["binarize"]
        words = shlex.split(stage["cmd"])
        outs = [Path(next(iter(out)) if isinstance(out, dict) else out)
                for out in stage.get("outs", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise TokbinError(f"{dvc_yaml} has no binarize stage command ({type(e).__name__}: {e}); "
                          "restore it from git (`git checkout dvc.yaml`)") from None
    positional = list(itertools.takewhile(lambda word: not word.startswith("-"), words[3:]))
    return [Path(word) for word in positional[1:]], outs


def check_outputs(bins: list[Path], splits: list[str], shard_tokens: int,
                  outs: list[Path] | None = None) -> Path:
    """The folder of the outputs named on the command line, once they are exactly the layout
    binarize writes for `splits` (data/<split>.bin, or data/<split> shard directories) and,
    given the stage's `outs`, every file it writes there is one of them: checked before any
    work, as DVC itself would only say after the run that an output does not exist, and never
    that one it does not version was written."""
    folder = _checked_layout(bins, splits, shard_tokens)
    unlisted = [str(path) for path in [*bins, *(folder / docs_file(s) for s in splits),
                                       folder / META_FILENAME] if outs is not None
                and path not in outs]
    if unlisted:
        raise TokbinError(f"binarize writes {', '.join(unlisted)}, but dvc.yaml's binarize stage "
                          "does not list them in its outs, so DVC would not version them (nor "
                          "`dvc pull binarize` fetch them); add them to its outs")
    return folder


def _checked_layout(bins: list[Path], splits: list[str], shard_tokens: int) -> Path:
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


def shard_ends(tokens: int, shard_tokens: int, equal: bool) -> list[int]:
    """Where each shard of a split of `tokens` ids ends: every `shard_tokens` (the last shard
    the rest) or, `equal`, ceil(tokens / shard_tokens) shards of near-equal size, so that no
    last shard is too small for llm.c's loaders (each needs its processes' B*T + 1 ids)."""
    count = max(1, -(-tokens // shard_tokens))
    if equal:
        return [tokens * (i + 1) // count for i in range(count)]
    return [min(tokens, shard_tokens * (i + 1)) for i in range(count)]


def check_shard_folder(folder: Path) -> None:
    """Refuses to replace a folder that is not a shard directory with one."""
    if folder.is_dir() and any(not is_shard_file(p.name) for p in folder.iterdir()):
        raise TokbinError(f"{folder} exists and is not a shard directory, so a split named "
                          f"{folder.name!r} would overwrite it; rename the split")


def write_shards(chunks: Iterator[np.ndarray], folder: Path, dtype: str, n_vocab: int,
                 ends: list[int], documents: list[int], bin_format: str = "nanogpt") -> SplitInfo:
    """Cuts a split's ids into the new folder `folder`/000000.bin, ... ending at `ends` (an
    empty split gets one empty shard)."""
    folder.mkdir()

    def write_shard(index: int, pieces: Iterable[np.ndarray]) -> SplitInfo:
        count = ends[index] - (ends[index - 1] if index else 0)
        header = bin_header(bin_format, dtype, count)
        with BinWriter(folder / shard_file(index), dtype, n_vocab, header) as out:
            for ids in pieces:
                out.write(ids)
        if out.tokens != count:
            raise TokbinError(f"shard {shard_file(index)} got {out.tokens} ids, not {count}: "
                              "the tokenized data changed while binarize read it; rerun")
        return SplitInfo(shard_file(index), count, documents[index],
                         count * DTYPES[dtype].itemsize + len(header), out.crc32)

    shards = [write_shard(index, (ids for _, ids in run)) for index, run
              in itertools.groupby(_cut(chunks, ends), key=lambda piece: piece[0])]
    if not shards:  # an empty split still gets its folder, with one empty shard
        shards.append(write_shard(0, []))
    crc = 0  # the split's: of the shards concatenated, the single bin they were cut from
    for shard in shards:
        crc = crc32_combine(crc, int(shard.crc32, 16), shard.bytes)
    return SplitInfo(folder.name, sum(s.tokens for s in shards),
                     sum(s.documents for s in shards), sum(s.bytes for s in shards),
                     crc32_hex(crc), tuple(shards))


def _cut(chunks: Iterator[np.ndarray], ends: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(shard index, ids) pieces of `chunks`, cut where each shard ends."""
    position, index = 0, 0
    for chunk in chunks:
        while chunk.size:
            while position == ends[index]:
                index += 1
            piece = chunk[:ends[index] - position]
            yield index, piece
            position += piece.size
            chunk = chunk[piece.size:]


def documents_per_shard(doclens: Path, eot: str, ends: list[int],
                        crc32: str | None) -> list[int]:
    """How many documents start in each shard: the document index's entries but its last (the
    split's end) are their starts; one at the very end of the split (an empty document with
    eot none) counts in the last shard. `crc32`: the doclens file's."""
    counts = np.zeros(len(ends), np.int64)
    bounds = np.array(ends[:-1], np.int64)
    last = 0
    for offsets in document_offsets(read_checked(doclens, DOCLENS_DTYPE, crc32),
                                    eot != "none"):
        counts += np.bincount(np.searchsorted(bounds, offsets, "right"), minlength=len(ends))
        last = int(offsets[-1]) if len(offsets) else last
    counts[np.searchsorted(bounds, last, "right")] -= 1  # the split's end starts no document
    return counts.tolist()
