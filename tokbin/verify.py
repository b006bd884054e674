"""python -m tokbin verify: each bin listed in meta.json present, the size meta.json gives
(and llm.c's header: magic, version, count), every id below n_vocab, one end-of-text id per
document (eot append/prepend; none with eot none), the CRC-32 meta.json records; the split's
document index (its size and order, its CRC-32, and with eot append/prepend that every
document starts where its end-of-text id says); and the md5 that `dvc.lock` records for each
file when the folder is inside a DVC project.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokbin.crc import crc32_hex
from tokbin.dvclock import file_md5, find_dvc_lock, lock_outputs
from tokbin.errors import TokbinError
from tokbin.format import (DOCS_DTYPE, META_FILENAME, REPAIR, Meta, docs_crc_problem,
                           docs_problem, is_shard_file, meta_path, open_bin, read_chunks,
                           read_meta)

COPY_AGAIN = "copy the data again from where it came (no dvc.lock above it to repair it from)"


@dataclass
class BinStats:
    max_id: int
    max_at: int
    eot_count: int
    crc32: str
    misplaced: int = -1  # a stream position where the eot ids and the document index disagree


def scan_bin(path: Path, meta: Meta, docs: np.ndarray | None = None,
             offset: int = 0) -> BinStats:
    """The largest id (and where), the number of end-of-text ids and the CRC-32 (of the whole
    file, llm.c's header too), read in chunks. With `docs` (the split's document index) and eot
    append/prepend, also the first stream position where an end-of-text id is not where the
    index puts one, or the reverse; `offset` is the bin's first position in the split."""
    max_id, max_at, eot_count, start, misplaced = -1, -1, 0, 0, -1
    with open(path, "rb") as f:
        crc = zlib.crc32(f.read(meta.header_bytes))
    for chunk in read_chunks(path, meta.np_dtype, offset=meta.header_bytes):
        at = int(chunk.argmax())
        if int(chunk[at]) > max_id:
            max_id, max_at = int(chunk[at]), start + at
        eots = np.flatnonzero(chunk == meta.eot_token)
        eot_count += len(eots)
        crc = zlib.crc32(chunk, crc)
        if docs is not None and misplaced < 0:
            misplaced = misplaced_eot(eots + offset + start, docs, meta.eot, offset + start,
                                      offset + start + len(chunk))
        start += len(chunk)
    return BinStats(max_id, max_at, eot_count, crc32_hex(crc), misplaced)


def misplaced_eot(found: np.ndarray, docs: np.ndarray, eot: str, lo: int, hi: int) -> int:
    """The first stream position in [lo, hi) where an end-of-text id is and the document
    index puts none, or the reverse; -1 when they agree."""
    if eot == "prepend":  # each document's first token
        starts = docs[:-1]
        expected = starts[np.searchsorted(starts, lo):np.searchsorted(starts, hi)]
    else:  # its last: found before subtracting, so a chunk never copies the whole index
        ends = docs[1:]
        expected = ends[np.searchsorted(ends, lo + 1):np.searchsorted(ends, hi + 1)] - 1
    if len(expected) == len(found) and np.array_equal(expected, found):
        return -1
    return int(np.setxor1d(expected, found)[0])


def recorded_md5s(lock: Path) -> dict[Path, str]:
    """md5 of every file output dvc.lock records, by resolved path (folders are left out)."""
    outputs = lock_outputs(lock.read_text(encoding="utf-8"), str(lock))
    return {(lock.parent / path).resolve(): out["md5"] for path, out in outputs.items()
            if not out["md5"].endswith(".dir")}


def split_problems(folder: Path, meta: Meta, split: str, fix: str, bare: bool = False
                   ) -> list[str]:
    """What is wrong with one split's bin (or shard bins) against meta.json, each ending with
    `fix`; empty when nothing. `bare`: a bin without meta.json, whose eot policy is unknown."""
    info = meta.splits[split]
    problems, eot_count, unread, docs, offset, misplaced = [], 0, 0, None, 0, (-1, "")
    if info.docs is not None:
        problem = docs_problem(folder / info.docs, info)
        if problem:
            problems.append(f"{problem}; {fix}")
        else:
            problem = docs_crc_problem(folder / info.docs, info)
            problems += [f"{problem}; {fix}"] if problem else []
            if meta.eot != "none" and info.documents:  # where the bins disagree, said too
                docs = np.memmap(folder / info.docs, dtype=DOCS_DTYPE, mode="r")
    if info.shards is not None and (folder / info.file).is_dir():
        listed = {shard.file for shard in info.shards}
        for extra in sorted(p.name for p in (folder / info.file).iterdir()
                            if p.suffix == ".bin" and p.name not in listed):
            problems.append(f"{info.file}/{extra}: in the shard directory but not in meta.json "
                            f"(llm.c's and modded-nanogpt's {info.file}/*.bin globs read every "
                            f"bin there); delete it, or {fix}")
    for relative, bin_info in info.bins():
        path, offset = folder / relative, offset + bin_info.tokens
        if not path.is_file():
            problems.append(f"{relative}: missing (meta.json lists it for split {split!r}); "
                            f"{fix}")
            unread += 1
            continue
        try:
            open_bin(path, meta, split, bin_info)  # checks its size
        except TokbinError as e:
            problems.append(str(e).partition("; in its DVC project")[0] + f"; {fix}")
            unread += 1
            continue
        stats = scan_bin(path, meta, docs, offset - bin_info.tokens)
        eot_count += stats.eot_count
        if stats.misplaced >= 0 and misplaced[0] < 0:
            misplaced = (stats.misplaced, relative)
        if stats.max_id >= meta.n_vocab:
            problems.append(f"{relative}: token id {stats.max_id} at position {stats.max_at} is "
                            f">= n_vocab {meta.n_vocab} of {meta.encoding}: the bin was not made "
                            f"with this encoding or is damaged; {fix}")
        if bin_info.crc32 not in (None, stats.crc32):
            problems.append(f"{relative}: CRC-32 {stats.crc32} differs from the {bin_info.crc32} "
                            f"meta.json records: the file changed after it was written; {fix}")
    if not unread and meta.eot != "none" and eot_count != info.documents:
        problems.append(f"{info.file}: {eot_count} end-of-text ids but meta.json says "
                        f"{info.documents} documents (eot: {meta.eot}): the bin does not match "
                        f"its meta.json; {fix}")
    elif not unread and meta.eot == "none" and eot_count and not bare:
        # a document's special-token text is encoded as text: only eot places the id
        problems.append(f"{info.file}: {eot_count} end-of-text ids ({meta.eot_token}) but "
                        "meta.json says eot: none, which places none: the bin does not match "
                        f"its meta.json; {fix}")
    elif misplaced[0] >= 0:
        problems.append(f"{info.docs} and {misplaced[1]} disagree at token {misplaced[0]:,} of "
                        f"the split: the document index does not match the bins (eot: "
                        f"{meta.eot}); {fix}")
    return problems


def md5_problems(folder: Path, meta: Meta, splits: list[str], lock: Path, whole: bool
                 ) -> tuple[list[str], list[str]]:
    """(problems, files checked) of the splits' bins and document indexes and meta.json
    against dvc.lock's md5s. `whole`: every file matches meta.json, so a difference is another
    build (after a `git checkout` without `dvc checkout`), not damage."""
    recorded = recorded_md5s(lock)
    differ, checked = [], []
    bins = [relative for split in splits for relative, _ in meta.splits[split].bins()]
    docs = [meta.splits[s].docs for s in splits if meta.splits[s].docs is not None]
    for name in [*bins, *docs, META_FILENAME]:  # shards sit in a folder DVC hashes whole
        path = folder / name
        expected = recorded.get(path.resolve())
        if expected is None or not path.is_file():
            continue
        checked.append(name)
        actual = file_md5(path)
        if actual != expected:
            differ.append(f"{name}: md5 {actual} differs from {expected} recorded in {lock}")
    if differ and whole:
        return [f"{folder} holds a whole build (every file matches its meta.json), but not the "
                f"one {lock} records ({'; '.join(differ)}): after a `git checkout` of another "
                "version, `dvc checkout binarize` (or `dvc pull binarize`, where the DVC cache "
                "lacks it) brings the recorded one"], checked
    return [f"{d}: the file changed after `dvc repro`; {REPAIR}" for d in differ], checked


def verify(data: Path, meta: Meta | None = None) -> int:
    """Checks the bins of `data` (a data folder, or a bare bin with its `meta` made up)."""
    bare = meta is not None
    meta = meta or read_meta(data)
    folder = meta_path(data).parent
    listed = [folder / info.file for info in meta.splits.values()]
    indexes = [folder / info.docs for info in meta.splits.values() if info.docs]
    if not bare and Path(data).resolve() not in [folder.resolve(), meta_path(data).resolve(),
                                                 *(p.resolve() for p in listed + indexes)]:
        raise TokbinError(f"{data} is not one of the bins {meta_path(data)} lists "
                          f"({', '.join(path.name for path in listed)}): not part of the build "
                          f"it describes (a leftover of an earlier one?); verify {folder}, and "
                          f"delete {data} if nothing reads it")
    lock = find_dvc_lock(folder.resolve())
    problems = []
    given = Path(data).resolve()  # a bin (or its index) checks its split: a pinned copy has one
    splits = [split for split, info in meta.splits.items() if given in [
        (folder / name).resolve() for name in (info.file, info.docs) if name]] or list(meta.splits)
    for split in splits:
        info = meta.splits[split]
        found = split_problems(folder, meta, split, REPAIR if lock else COPY_AGAIN, bare)
        problems += found
        if not found:
            documents = "" if bare else f", {info.documents:,} documents"
            extra = (", llm.c headers" if meta.bin_format == "llmc" else "") + (
                f", document index {info.docs}" if info.docs else "")
            print(f"ok    {info.file}: {info.tokens:,} {meta.dtype} tokens{documents}, every id "
                  f"< {meta.n_vocab} ({meta.encoding}){extra}")
        if not found and not info.tokens:  # whole, yet no BinLoader or trainer can read it
            print(f"note  {info.file}: no tokens ({info.documents:,} documents, all empty): "
                  "nothing to train or validate on")
        unchecked = [relative for relative, b in info.bins() if b.crc32 is None] + (
            [info.docs] if info.docs is not None and info.docs_crc32 is None else [])
        if unchecked and not bare:  # an older tokbin's meta.json, or one made by hand
            print(f"note  meta.json records no CRC-32 of {', '.join(unchecked)}: their bytes are "
                  "not checked against one (`dvc repro` with this tokbin records them)")
    if lock is None:
        print("note  no dvc.lock above this folder: md5s not checked")
    else:
        found, checked = md5_problems(folder, meta, splits, lock, not problems)
        problems += found
        if checked and not found:
            print(f"ok    md5 of {', '.join(checked)} match {lock}")
        elif not checked:
            print(f"note  {lock} records none of these files: md5s not checked")
    if not bare and len(splits) == len(meta.splits):
        for name in leftovers(folder, meta):
            print(f"note  {name}: not part of this build ({META_FILENAME} does not list it), a "
                  "leftover of another data version? An untargeted `dvc checkout` removes it, "
                  "or delete it (where data/.gitignore does not list it, `git add -A` would "
                  "put it in git)")
    checked = folder if len(splits) == len(meta.splits) else data
    for problem in problems:
        print(f"FAIL  {problem}")
    print(f"verify: {len(problems)} problem(s) in {checked}" if problems else
          f"verify: {checked} is good")
    return 1 if problems else 0


def leftovers(folder: Path, meta: Meta) -> list[str]:
    """Bins, document indexes and shard directories in the folder that meta.json does not
    list: the other layout's, after switching versions with a targeted `dvc checkout`."""
    listed = {name for info in meta.splits.values() for name in (info.file, info.docs) if name}
    return sorted(path.name + "/" * path.is_dir() for path in folder.iterdir()
                  if not path.name.startswith(".") and path.name not in listed
                  and (path.suffix in (".bin", ".docs") and path.is_file()
                       or path.is_dir() and any(is_shard_file(p.name) for p in path.iterdir())))
