"""The command line: check built data, repair it, look at what a model will see, set params.

    python -m tokbin verify [data/]            # exit 1 on any mismatch
    python -m tokbin repair                    # restore what verify finds damaged (tokbin.repair)
    python -m tokbin inspect data/train.bin    # meta, per-split stats, decoded sample windows
    python -m tokbin set download.dataset=./sample   # params.yaml edited in place (params_edit)

`verify` checks each bin listed in meta.json: present, the size meta.json gives, every id below
n_vocab, one end-of-text id per document (eot append/prepend), the CRC-32 meta.json records,
and the md5 that `dvc.lock` records for it when the folder is inside a DVC project. A bare bin
(no meta.json) takes --dtype, and --encoding for its vocabulary. `inspect` decodes with the
tokenizer meta.json records, whatever its kind, and only with the very file (its sha256) it
records (--tokenizer PATH: a copy of it elsewhere).
"""
from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokbin.crc import crc32_hex
from tokbin.dvclock import file_md5, find_dvc_lock, lock_outputs
from tokbin.errors import TokbinError
from tokbin.format import (DTYPES, META_FILENAME, REPAIR, Meta, Source, SplitInfo, meta_path,
                           open_bin, read_chunks, read_meta)

COPY_AGAIN = "copy the data again from where it came (no dvc.lock above it to repair it from)"


@dataclass
class BinStats:
    max_id: int
    max_at: int
    eot_count: int
    crc32: str


def scan_bin(path: Path, meta: Meta) -> BinStats:
    """The largest id (and where), the number of end-of-text ids and the CRC-32, read in
    chunks."""
    max_id, max_at, eot_count, crc, start = -1, -1, 0, 0, 0
    for chunk in read_chunks(path, meta.np_dtype):
        at = int(chunk.argmax())
        if int(chunk[at]) > max_id:
            max_id, max_at = int(chunk[at]), start + at
        eot_count += int(np.count_nonzero(chunk == meta.eot_token))
        crc = zlib.crc32(chunk, crc)
        start += len(chunk)
    return BinStats(max_id, max_at, eot_count, crc32_hex(crc))


def bare_meta(path: Path, dtype: str, encoding: str) -> Meta:
    """A meta.json's worth for a bare bin (no meta.json): what --dtype and --encoding say."""
    from tokbin.vocab import get_encoding
    if (path.parent / META_FILENAME).is_file():
        raise TokbinError(f"{path.parent / META_FILENAME} gives {path}'s dtype; drop --dtype")
    if not path.is_file():
        raise TokbinError(f"--dtype is for a bare bin, and {path} is not a file")
    size, itemsize = path.stat().st_size, DTYPES[dtype].itemsize
    if size % itemsize:
        raise TokbinError(f"{path} is {size} bytes, not a whole number of {dtype} tokens: it is "
                          f"truncated or not {dtype}")
    enc = get_encoding(encoding)
    info = SplitInfo(path.name, size // itemsize, 0, size)
    return Meta(encoding, enc.n_vocab, enc.eot_token, "none", dtype,
                Source(str(path), None, None), {path.stem: info})


def size_text(size: int) -> str:
    """A byte count as people read it: 31.4 kB, 1.5 MB, 0.95 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size} B"


def recorded_md5s(lock: Path) -> dict[Path, str]:
    """md5 of every file output dvc.lock records, by resolved path (folders are left out)."""
    outputs = lock_outputs(lock.read_text(encoding="utf-8"), str(lock))
    return {(lock.parent / path).resolve(): out["md5"] for path, out in outputs.items()
            if not out["md5"].endswith(".dir")}


# --- verify ----------------------------------------------------------------------------------

def split_problems(folder: Path, meta: Meta, split: str, fix: str) -> list[str]:
    """What is wrong with one split's bin (or shard bins) against meta.json, each ending with
    `fix`; empty when nothing."""
    info = meta.splits[split]
    problems, eot_count, unread = [], 0, 0
    for relative, bin_info in info.bins():
        path = folder / relative
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
        stats = scan_bin(path, meta)
        eot_count += stats.eot_count
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
    return problems


def md5_problems(folder: Path, meta: Meta, lock: Path) -> tuple[list[str], list[str]]:
    """(problems, files checked) of the bins and meta.json against dvc.lock's md5s."""
    recorded = recorded_md5s(lock)
    problems, checked = [], []
    bins = [relative for info in meta.splits.values() for relative, _ in info.bins()]
    for name in [*bins, META_FILENAME]:  # shard bins sit in a folder DVC hashes as a whole
        path = folder / name
        expected = recorded.get(path.resolve())
        if expected is None or not path.is_file():
            continue
        checked.append(name)
        actual = file_md5(path)
        if actual != expected:
            problems.append(f"{name}: md5 {actual} differs from {expected} recorded in {lock}: "
                            f"the file changed after `dvc repro`; {REPAIR}")
    return problems, checked


def verify(data: Path, meta: Meta | None = None) -> int:
    """Checks the bins of `data` (a data folder, or a bare bin with its `meta` made up)."""
    bare = meta is not None
    meta = meta or read_meta(data)
    folder = meta_path(data).parent
    lock = find_dvc_lock(folder.resolve())
    problems = []
    for split, info in meta.splits.items():
        found = split_problems(folder, meta, split, REPAIR if lock else COPY_AGAIN)
        problems += found
        if not found:
            documents = "" if bare else f", {info.documents:,} documents"
            print(f"ok    {info.file}: {info.tokens:,} {meta.dtype} tokens{documents}, every id "
                  f"< {meta.n_vocab} ({meta.encoding})")
    if lock is None:
        print("note  no dvc.lock above this folder: md5s not checked")
    else:
        found, checked = md5_problems(folder, meta, lock)
        problems += found
        if checked and not found:
            print(f"ok    md5 of {', '.join(checked)} match {lock}")
        elif not checked:
            print(f"note  {lock} records none of these files: md5s not checked")
    for problem in problems:
        print(f"FAIL  {problem}")
    print(f"verify: {len(problems)} problem(s) in {folder}" if problems else
          f"verify: {folder} is good")
    return 1 if problems else 0


# --- inspect ---------------------------------------------------------------------------------

def inspect(path: Path, windows: int, window_tokens: int, seed: int,
            meta: Meta | None = None, tokenizer: Path | None = None) -> int:
    """Prints `path`'s meta.json (or, for a bare bin, the `meta` made up for it), its splits'
    stats, and sample windows decoded with its tokenizer (`tokenizer`: the recorded file's
    copy, if it is not where meta.json says)."""
    from tokbin.vocab import recorded_vocabulary
    bare = meta is not None
    meta = meta or read_meta(path)
    folder = meta_path(path).parent
    if path.is_dir():
        shown = list(meta.splits)
    else:
        shown = [s for s, info in meta.splits.items() if info.file == path.name]
        if not shown:
            raise TokbinError(f"{path} is not one of the bins meta.json lists "
                              f"({', '.join(i.file for i in meta.splits.values())})")
    if bare:
        info = meta.splits[shown[0]]
        print(f"== {path}: a bare bin (no meta.json) read as {meta.dtype} ids of "
              f"{meta.encoding}: {info.tokens:,} tokens, {size_text(info.bytes)}")
    else:
        print(f"== {meta_path(path)}")
        print(meta.to_json(), end="")
        print("== splits")
    for split, info in ({} if bare else meta.splits).items():
        print(f"{split:>12}: {info.tokens:>14,} tokens {info.documents:>12,} documents "
              f"{info.tokens / max(info.documents, 1):>10.1f} tokens/document "
              f"{size_text(info.bytes):>10}  ({info.file})")
    vocabulary = recorded_vocabulary(meta, folder, tokenizer)
    rng = np.random.default_rng(seed)
    for split in shown:
        for relative, info in meta.splits[split].bins():
            data = open_bin(folder / relative, meta, split, info)
            stats = scan_bin(folder / relative, meta)
            print(f"== {relative}: largest id {stats.max_id} (n_vocab {meta.n_vocab}), "
                  f"{stats.eot_count:,} end-of-text ids ({meta.eot_token})")
            length = min(window_tokens, len(data))
            starts = sorted(rng.integers(0, len(data) - length + 1, size=windows)) if length else []
            for start in starts:
                ids = np.asarray(data[start:start + length]).tolist()
                print(f"-- tokens {start:,}..{start + length:,} of {len(data):,}")
                print(vocabulary.decode(ids))
    return 0


# --- entry point -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokbin",
                                     description="Check, repair and look at tokbin data.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the bins against meta.json and dvc.lock")
    check.add_argument("data", nargs="?", default=Path("data"), type=Path,
                       help="a data folder holding meta.json (default: data), or a bin")
    fix = commands.add_parser("repair", help="restore every output that differs from dvc.lock")
    fix.add_argument("project", nargs="?", default=Path("."), type=Path,
                     help="a folder in the DVC project (default: the current one)")
    look = commands.add_parser("inspect", help="print meta, stats and decoded sample windows")
    look.add_argument("path", type=Path, help="a bin (data/train.bin) or a data folder")
    look.add_argument("--windows", type=int, default=3, help="sample windows per bin")
    look.add_argument("--tokens", type=int, default=64, help="tokens per window")
    look.add_argument("--seed", type=int, default=0, help="where the windows fall")
    look.add_argument("--tokenizer", type=Path, default=None,
                      help="the tokenizer file meta.json records, if it is not where it says")
    for command in (check, look):
        command.add_argument("--dtype", choices=list(DTYPES),
                             help="a bare bin's dtype (a bin without meta.json beside it)")
        command.add_argument("--encoding", default="gpt2",
                             help="a bare bin's tiktoken encoding (default: gpt2)")
    edit = commands.add_parser("set", help="change params.yaml keys in place, comments kept")
    edit.add_argument("assignments", nargs="+", metavar="section.key=value")
    edit.add_argument("--params", type=Path, default=Path("params.yaml"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command == "repair":
            from tokbin.repair import repair
            return repair(args.project)
        if args.command == "set":
            from tokbin.params_edit import set_params
            for key, old, new in set_params(args.params, args.assignments):
                print(f"{args.params}: {key}: {old} -> {new}")
            return 0
        given = args.data if args.command == "verify" else args.path
        if not given.exists():
            raise TokbinError(f"{given} does not exist; give a data folder holding meta.json "
                              "(default: data) or a bin inside one")
        meta = bare_meta(given, args.dtype, args.encoding) if args.dtype else None
        if meta is None and not meta_path(given).is_file():
            if given.is_file():
                raise TokbinError(f"{meta_path(given)} not found, so {given} is a bare bin: "
                                  "pass its --dtype (uint16 or uint32) and, unless it is gpt2, "
                                  "its --encoding")
            raise TokbinError(f"{meta_path(given)} not found: build the data with `dvc repro`, "
                              "or, where it was built, `python -m tokbin repair` restores it")
        if args.command == "verify":
            return verify(given, meta)
        return inspect(given, args.windows, args.tokens, args.seed, meta, args.tokenizer)
    except TokbinError as e:
        print(f"tokbin {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
