"""The command line: check built data, and look at what a model will see.

    python -m tokbin verify [data/]            # exit 1 on any mismatch
    python -m tokbin inspect data/train.bin    # meta, per-split stats, decoded sample windows
        [--tokenizer PATH]                     # the tokenizer file, if not where meta.json says

`verify` checks each bin listed in meta.json: present, the size meta.json gives, every id below
n_vocab, one end-of-text id per document (eot append/prepend), and the md5 that `dvc.lock`
records for it when the folder is inside a DVC project. `inspect` decodes with the tokenizer
meta.json records, whatever its kind, and only with the very file (its sha256) it records.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokbin.dvclock import file_md5, find_dvc_lock, lock_outputs
from tokbin.errors import TokbinError
from tokbin.format import (META_FILENAME, TIKTOKEN, Meta, meta_path, open_bin, read_chunks,
                           read_meta)


@dataclass
class BinStats:
    max_id: int
    max_at: int
    eot_count: int


def scan_bin(path: Path, meta: Meta) -> BinStats:
    """The largest id (and where) and the number of end-of-text ids, read in chunks."""
    stats, start = BinStats(max_id=-1, max_at=-1, eot_count=0), 0
    for chunk in read_chunks(path, meta.np_dtype):
        at = int(chunk.argmax())
        if int(chunk[at]) > stats.max_id:
            stats.max_id, stats.max_at = int(chunk[at]), start + at
        stats.eot_count += int(np.count_nonzero(chunk == meta.eot_token))
        start += len(chunk)
    return stats


def recorded_md5s(lock: Path) -> dict[Path, str]:
    """md5 of every file output dvc.lock records, by resolved path (folders are left out)."""
    outputs = lock_outputs(lock.read_text(encoding="utf-8"), str(lock))
    return {(lock.parent / path).resolve(): out["md5"] for path, out in outputs.items()
            if not out["md5"].endswith(".dir")}


# --- verify ----------------------------------------------------------------------------------

def split_problems(folder: Path, meta: Meta, split: str) -> list[str]:
    """What is wrong with one split's bin (or shard bins) against meta.json; empty when nothing."""
    info = meta.splits[split]
    problems, eot_count = [], 0
    for relative, bin_info in info.bins():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative}: missing (meta.json lists it for split {split!r}); "
                            "rebuild with `dvc repro` or fetch it with `dvc pull`")
            continue
        try:
            open_bin(path, meta, split, bin_info)  # checks its size
        except TokbinError as e:
            problems.append(str(e))
            continue
        stats = scan_bin(path, meta)
        eot_count += stats.eot_count
        if stats.max_id >= meta.n_vocab:
            problems.append(f"{relative}: token id {stats.max_id} at position {stats.max_at} is "
                            f">= n_vocab {meta.n_vocab} of {meta.encoding}: the bin was not made "
                            "with this encoding or is damaged; rebuild with `dvc repro --force "
                            "binarize`")
    if not problems and meta.eot != "none" and eot_count != info.documents:
        problems.append(f"{info.file}: {eot_count} end-of-text ids but meta.json says "
                        f"{info.documents} documents (eot: {meta.eot}): the bin does not match "
                        "its meta.json; rebuild with `dvc repro`")
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
            in_project = os.path.relpath(path.resolve(), lock.parent)
            problems.append(f"{name}: md5 {actual} differs from {expected} recorded in {lock}: "
                            f"the file changed after `dvc repro`; restore it with "
                            f"`dvc checkout {in_project}` or rebuild with `dvc repro`")
    return problems, checked


def verify(data: Path) -> int:
    meta = read_meta(data)
    folder = meta_path(data).parent
    problems = []
    for split, info in meta.splits.items():
        found = split_problems(folder, meta, split)
        problems += found
        if not found:
            print(f"ok    {info.file}: {info.tokens:,} {meta.dtype} tokens, {info.documents:,} "
                  f"documents, every id < {meta.n_vocab}")
    lock = find_dvc_lock(folder.resolve())
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

def recorded_tokenizer(meta: Meta, folder: Path, given: Path | None = None):
    """The tokenizer meta.json records, loaded: a tiktoken encoding by name; a file from
    `given`, else where meta.json says it was (under the DVC project holding `folder`, or
    here), else from the Hub at the recorded commit. Its sha256 must be the recorded one."""
    from tokbin.tokenizer_files import read_file, sha256_of
    from tokbin.tokenizer_spec import TokenizerSpec
    from tokbin.vocab import load_vocabulary
    record = meta.tokenizer
    if record.kind == TIKTOKEN:
        return load_vocabulary(TokenizerSpec(meta.encoding, TIKTOKEN, eot_token=record.eot_name))
    lock = find_dvc_lock(folder.resolve())
    candidates = [given] if given else [root / record.file for root in
                                        ([lock.parent] if lock else []) + [Path.cwd()]]
    if given is None and record.hub is not None and not any(p.is_file() for p in candidates):
        from tokbin.hub import fetch_model_file
        candidates.append(fetch_model_file(record.hub.repo, record.hub.sha, record.file))
    for candidate in candidates:
        if candidate.is_file() and sha256_of(read_file(candidate, "--tokenizer")) == record.sha256:
            specials = record.special_tokens
            return load_vocabulary(TokenizerSpec(
                meta.encoding, record.kind, record.file, str(candidate.resolve()), record.sha256,
                record.hub, record.pattern,
                tuple(sorted(specials.items(), key=lambda item: item[1])) if specials else None,
                record.eot_name))
    looked = ", ".join(str(p) for p in candidates)
    raise TokbinError(f"decoding needs the tokenizer meta.json records, {record.file} with sha256 "
                      f"{record.sha256[:16]}...; {looked} is missing or another file; pass "
                      "--tokenizer PATH to a copy of that file")


def inspect(path: Path, windows: int, window_tokens: int, seed: int,
            tokenizer: Path | None = None) -> int:
    meta = read_meta(path)
    folder = meta_path(path).parent
    if path.is_dir():
        shown = list(meta.splits)
    else:
        shown = [s for s, info in meta.splits.items() if info.file == path.name]
        if not shown:
            raise TokbinError(f"{path} is not one of the bins meta.json lists "
                              f"({', '.join(i.file for i in meta.splits.values())})")
    print(f"== {meta_path(path)}")
    print(meta.to_json(), end="")
    print("== splits")
    for split, info in meta.splits.items():
        print(f"{split:>12}: {info.tokens:>14,} tokens {info.documents:>12,} documents "
              f"{info.tokens / max(info.documents, 1):>10.1f} tokens/document "
              f"{info.bytes / 1e6:>10.1f} MB  ({info.file})")
    vocabulary = recorded_tokenizer(meta, folder, tokenizer)
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
                                     description="Check and look at tokbin data.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the bins against meta.json and dvc.lock")
    check.add_argument("data", nargs="?", default=Path("data"), type=Path,
                       help="a data folder holding meta.json (default: data)")
    look = commands.add_parser("inspect", help="print meta, stats and decoded sample windows")
    look.add_argument("path", type=Path, help="a bin (data/train.bin) or a data folder")
    look.add_argument("--windows", type=int, default=3, help="sample windows per bin")
    look.add_argument("--tokens", type=int, default=64, help="tokens per window")
    look.add_argument("--seed", type=int, default=0, help="where the windows fall")
    look.add_argument("--tokenizer", type=Path, default=None,
                      help="the tokenizer file meta.json records, if it is not where it says")
    args = parser.parse_args(argv)
    given = args.data if args.command == "verify" else args.path
    try:
        if not given.exists():
            raise TokbinError(f"{given} does not exist; give a data folder holding meta.json "
                              "(default: data) or a bin inside one")
        if args.command == "verify":
            return verify(args.data)
        return inspect(args.path, args.windows, args.tokens, args.seed, args.tokenizer)
    except TokbinError as e:
        print(f"tokbin {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
