"""The command line: check built data, repair it, look at what a model will see, set params.

    python -m tokbin verify [data/]            # exit 1 on any mismatch
    python -m tokbin repair                    # restore what verify finds damaged (tokbin.repair)
    python -m tokbin inspect data/train.bin    # meta, per-split stats, decoded sample windows
    python -m tokbin set download.dataset=./sample   # params.yaml edited in place (params_edit)

What `verify` checks is tokbin.verify's. A bare bin (no meta.json) takes --dtype, and
--encoding for its vocabulary (a bin with meta.json refuses both). `inspect` decodes with the
tokenizer meta.json records, whatever its kind, and only with the very file (its sha256) it
records (--tokenizer PATH: a copy of it elsewhere; refused for a tiktoken encoding).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tokbin.errors import TokbinError
from tokbin.format import (DTYPES, META_FILENAME, TIKTOKEN, Meta, Source, SplitInfo,
                           bare_llmc_header, meta_path, open_bin, read_meta)
from tokbin.verify import scan_bin, verify


def bare_meta(path: Path, dtype: str | None, encoding: str | None) -> Meta:
    """A meta.json's worth for a bare bin (no meta.json): what --dtype and --encoding say, or
    for llm.c's own file, its header and --encoding (--dtype, if given, must agree)."""
    from tokbin.vocab import get_encoding
    if (path.parent / META_FILENAME).is_file():
        raise TokbinError(f"{path.parent / META_FILENAME} gives {path}'s dtype; drop --dtype")
    if not path.is_file():
        raise TokbinError(f"--dtype is for a bare bin, and {path} is not a file")
    size, llmc = path.stat().st_size, bare_llmc_header(path)
    if llmc is not None and dtype not in (None, llmc[0]):
        raise TokbinError(f"{path} is an llm.c token file of {llmc[0]} ids (its header says "
                          f"so), not {dtype}; drop --dtype")
    dtype, encoding = llmc[0] if llmc else dtype, encoding or "gpt2"
    itemsize = DTYPES[dtype].itemsize
    if size % itemsize:
        raise TokbinError(f"{path} is {size} bytes, not a whole number of {dtype} tokens: it is "
                          f"truncated or not {dtype}")
    enc = get_encoding(encoding, setting="--encoding")
    info = SplitInfo(path.name, llmc[1] if llmc else size // itemsize, 0, size)
    return Meta(encoding, enc.n_vocab, enc.eot_token, "none", dtype,
                Source(str(path), None, None), {path.stem: info},
                bin_format="llmc" if llmc else "nanogpt")


def size_text(size: int) -> str:
    """A byte count as people read it: 31.4 kB, 1.5 MB, 0.95 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size} B"


# --- inspect ---------------------------------------------------------------------------------

def inspect(path: Path, windows: int, window_tokens: int, seed: int,
            meta: Meta | None = None, tokenizer: Path | None = None) -> int:
    """Prints `path`'s meta.json (or, for a bare bin, the `meta` made up for it), its splits'
    stats, and sample windows decoded with its tokenizer (`tokenizer`: the recorded file's
    copy, if it is not where meta.json says)."""
    from tokbin.vocab import recorded_vocabulary
    bare = meta is not None
    meta = meta or read_meta(path)
    if tokenizer is not None and meta.tokenizer.kind == TIKTOKEN:  # nothing it could apply to
        raise TokbinError(f"{path} decodes with tiktoken's {meta.encoding} (" + (
            "--encoding" if bare else "meta.json") + " says so), which has no tokenizer file: "
            "drop --tokenizer")
    folder = meta_path(path).parent
    if path == folder:
        shown = list(meta.splits)
    else:
        shown = [s for s, info in meta.splits.items() if info.file == path.name]
        if not shown:
            raise TokbinError(f"{path} is not one of the bins meta.json lists "
                              f"({', '.join(i.file for i in meta.splits.values())})")
    if bare:
        info = meta.splits[shown[0]]
        kind = "llm.c file" if meta.bin_format == "llmc" else "bin"
        print(f"== {path}: a bare {kind} (no meta.json) read as {meta.dtype} ids of "
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
            if not len(data):
                print(f"== {relative}: no tokens (every document empty?): nothing to train on")
                continue
            print(f"== {relative}: largest id {stats.max_id} (n_vocab {meta.n_vocab}), "
                  f"{stats.eot_count:,} end-of-text ids ({meta.eot_token})")
            if stats.max_id >= meta.n_vocab:  # the tokenizer cannot decode it: say why instead
                raise TokbinError(f"{relative} holds token id {stats.max_id} (at position "
                                  f"{stats.max_at:,}), not below n_vocab {meta.n_vocab}: " + (
                                      f"it is not {meta.dtype} ids of {meta.encoding}; pass its "
                                      "right --dtype (and --encoding)" if bare else
                                      "it is damaged; `python -m tokbin verify` checks it and "
                                      "`python -m tokbin repair` restores it"))
            length = min(window_tokens, len(data))
            starts = sorted(rng.integers(0, len(data) - length + 1, size=windows)) if length else []
            for start in starts:
                ids = np.asarray(data[start:start + length]).tolist()
                print(f"-- tokens {start:,}..{start + length:,} of {len(data):,}")
                print(vocabulary.decode(ids))
    return 0


# --- entry point -----------------------------------------------------------------------------

def _at_least(low: int):
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {low}")
        return int(text)
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokbin",
                                     description="Check, repair and look at tokbin data.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the bins against meta.json and dvc.lock")
    check.add_argument("data", nargs="?", default=Path("data"), type=Path,
                       help="a data folder holding meta.json (default: data), or a bin or shard "
                            "directory in one (only its split is checked)")
    fix = commands.add_parser("repair", help="restore every output that differs from dvc.lock")
    fix.add_argument("project", nargs="?", default=Path("."), type=Path,
                     help="a folder in the DVC project (default: the current one)")
    fix.add_argument("--force", action="store_true",
                     help="also replace a whole build that dvc.lock does not record and no "
                          "DVC cache holds (by default repair refuses: it may be the only copy)")
    look = commands.add_parser("inspect", help="print meta, stats and decoded sample windows")
    look.add_argument("path", type=Path, help="a bin (data/train.bin), a shard directory "
                                              "(data/train) or a data folder")
    look.add_argument("--windows", type=_at_least(0), default=3, help="sample windows per bin")
    look.add_argument("--tokens", type=_at_least(1), default=64, help="tokens per window")
    look.add_argument("--seed", type=_at_least(0), default=0, help="where the windows fall")
    look.add_argument("--tokenizer", type=Path, default=None,
                      help="the tokenizer file meta.json records, if it is not where it says")
    for command in (check, look):
        command.add_argument("--dtype", choices=list(DTYPES),
                             help="a bare bin's dtype (a bin without meta.json beside it)")
        command.add_argument("--encoding",
                             help="a bare bin's tiktoken encoding (default: gpt2)")
    edit = commands.add_parser("set", help="change params.yaml keys in place, comments kept")
    edit.add_argument("assignments", nargs="+", metavar="section.key=value")
    edit.add_argument("--params", type=Path, default=Path("params.yaml"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command == "repair":
            from tokbin.repair import repair
            return repair(args.project, args.force)
        if args.command == "set":
            from tokbin.params_edit import set_params
            changes, failing = set_params(args.params, args.assignments)
            for key, old, new in changes:
                print(f"{args.params}: {key}: {old} -> {new}")
            if failing:  # not this edit's doing: say it, as `dvc repro` would stop on it
                print(f"tokbin set: note: {args.params} still fails the check stage: {failing}",
                      file=sys.stderr)
            return 0
        given = args.data if args.command == "verify" else args.path
        if not given.exists():
            raise TokbinError(f"{given} does not exist; give a data folder holding meta.json "
                              "(default: data) or a bin or shard directory inside one")
        bare = not meta_path(given).is_file() and given.is_file()
        meta = (bare_meta(given, args.dtype, args.encoding)
                if args.dtype or (bare and bare_llmc_header(given)) else None)
        if meta is None and not meta_path(given).is_file():
            if given.is_file():
                raise TokbinError(f"{meta_path(given)} not found, so {given} is a bare bin: "
                                  "pass its --dtype (uint16 or uint32) and, unless it is gpt2, "
                                  "its --encoding")
            raise TokbinError(f"{meta_path(given)} not found: `dvc pull binarize` fetches the "
                              "data a teammate built, `dvc repro` builds it; where it was built "
                              "here, `python -m tokbin repair` restores it")
        if meta is None and args.encoding:  # meta.json's own would be used: say so, not ignore
            raise TokbinError(f"{meta_path(given)} gives {given}'s encoding; drop --encoding")
        if args.command == "verify":
            return verify(given, meta)
        return inspect(given, args.windows, args.tokens, args.seed, meta, args.tokenizer)
    except TokbinError as e:
        print(f"tokbin {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
