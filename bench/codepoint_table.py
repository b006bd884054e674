"""Which code points fastokens and tiktoken treat alike under gpt2's split pattern: measured.

    python -m bench.codepoint_table --write    # sweep both engines, write tokbin's table
    python -m bench.codepoint_table --verify   # sweep again; exit 1 if the table is not what
                                               # the installed engines do
    python -m bench.codepoint_table --mutants  # what the sweeps find when tiktoken runs a
                                               # mutated pattern: they see differences

gpt2's pattern (tiktoken's `'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|
\\s++$|\\s+(?!\\S)|\\s`) sees a character only through its class: letter, number, whitespace
or other; the contractions and the optional leading space are ASCII. Two engines that put a
character in the same class, and whose split logic is the same, split any text holding it the
same way. Which class an engine puts a character in is read off the engine's output, not off
a Unicode database:

1. **Classes.** Each code point c (all 1,112,064 but the surrogates, which UTF-8 cannot hold)
   is encoded in the probes "x" + c and c + "x", for x in "a", "1", "!", "\\t" (a letter,
   number, other and whitespace), and " " + c. A probe is one pre-token exactly when c is in
   x's class. The probes run on a *probe vocabulary* loaded into each engine with gpt2's
   pattern and pre-tokenizer: the 256 bytes plus one token for each context byte x before or
   after any byte. A non-ASCII character's bytes are all >= 0x80, so nothing else merges, and
   a probe's ids hold the pair (x, first byte of c) or (last byte of c, x) exactly when the
   engine put both in one pre-token (gpt2's real ids cannot show this: a merge across the
   boundary may not exist). The two engines' probe ids are also compared whole.
2. **Real ids.** Every code point in CONTEXTS, with gpt2's real vocabulary, must give the
   same ids from both engines.

Probes are built as UTF-32 in numpy and joined by <|endoftext|> (a special token in both):
one engine call per 128 k probes. The table's format: tokbin/codepoints.py. The fast engine
routes documents holding a `differs` or `-` code point to tiktoken.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tokbin.codepoints import (CODEPOINTS, SURROGATES, codepoint_table, format_table,
                               installed_versions, read_rows, table_path)

SEPARATOR = "<|endoftext|>"
CLASS_CONTEXTS = {"L": "a", "N": "1", "O": "!", "S": "\t"}
PROBES = ([("left", k, x) for k, x in CLASS_CONTEXTS.items()]
          + [("right", k, x) for k, x in CLASS_CONTEXTS.items()] + [("left", "space", " ")])
# The probes that join c to its context, per class ("Sp", U+0020, also joins as a prefix).
SIGNATURES = {k: tuple(kind in (k, "space") for _, kind, _ in PROBES) for k in CLASS_CONTEXTS}
SIGNATURES["Sp"] = tuple(kind in ("S", "space") or side == "right" for side, kind, _ in PROBES)
# Real-vocabulary contexts: the pattern's alternatives around c ({c} is the code point).
CONTEXTS = ["{c}", "a{c}b", " {c}{c}", "{c}'s", "1{c}2", "\n{c} ", "  {c}x", "{c}\r\n",
            "{c}{c}{c}", "'{c}", "!{c}!", " {c}", "{c}  a", "\t{c}\t", "é{c}é", "{c}\u3000"]
CHUNK = 1 << 17


def tiktoken_pattern(name: str = "gpt2") -> str:
    """The pattern tiktoken's encoding runs (for gpt2: the original's faster equivalent, with
    possessive runs, `\\s++$` and a single `\\s` last)."""
    import tiktoken
    return tiktoken.get_encoding(name)._pat_str


def codepoints() -> np.ndarray:
    cps = np.arange(CODEPOINTS, dtype=np.uint32)
    return cps[(cps < SURROGATES[0]) | (cps > SURROGATES[1])]


def texts_of(template: str, cps: np.ndarray) -> str:
    """`template` with each {c} replaced by each of `cps`, joined by SEPARATOR (and ending
    with it): built in numpy as UTF-32, for a million probes in a fraction of a second."""
    parts = template.split("{c}")
    columns = []
    for i, part in enumerate(parts):
        columns += [np.full(len(cps), ord(ch), np.uint32) for ch in part]
        if i < len(parts) - 1:
            columns.append(cps.astype(np.uint32))
    columns += [np.full(len(cps), ord(ch), np.uint32) for ch in SEPARATOR]
    return np.stack(columns, axis=1).tobytes().decode("utf-32-le")


def utf8_first_last(cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cps = cps.astype(np.int64)
    first = np.select([cps < 0x80, cps < 0x800, cps < 0x10000],
                      [cps, 0xC0 | (cps >> 6), 0xE0 | (cps >> 12)], 0xF0 | (cps >> 18))
    last = np.where(cps < 0x80, cps, 0x80 | (cps & 0x3F))
    return first, last


# --- the engines -------------------------------------------------------------------------

def probe_ranks() -> dict[bytes, int]:
    """The probe vocabulary: every byte, then (x, b) and (b, x) for each context byte x."""
    ranks = {bytes([b]): b for b in range(256)}
    for x in sorted({ord(c) for _, _, c in PROBES}):
        for b in range(256):
            for pair in (bytes([x, b]), bytes([b, x])):
                ranks.setdefault(pair, len(ranks))
    return ranks


class EnginePair:
    """tiktoken and fastokens on one vocabulary (gpt2's when `ranks` is None), each with
    SEPARATOR as a special token of id `eot`: every probe of a joined text is encoded on its
    own. `pattern` replaces tiktoken's, to show that the sweeps see a difference."""

    def __init__(self, ranks: dict[bytes, int] | None = None, pattern: str | None = None):
        import fastokens
        import tiktoken
        from tokbin.engines import _SpecialToken
        from tokbin.fast_path import limit_fastokens_threads, ranks_tokenizer_json, tokenizer_json
        limit_fastokens_threads()
        if ranks is None:  # gpt2, as tokbin loads it
            gpt2 = tiktoken.get_encoding("gpt2")
            ranks, spec, self.eot = gpt2._mergeable_ranks, tokenizer_json(gpt2), gpt2.eot_token
        else:
            spec, self.eot = ranks_tokenizer_json(ranks), len(ranks)
        self.tiktoken = tiktoken.Encoding("probe", pat_str=pattern or tiktoken_pattern(),
                                          mergeable_ranks=ranks,
                                          special_tokens={SEPARATOR: self.eot})
        self.fastokens = fastokens.Tokenizer.from_json_str(spec)
        [(_, eot)] = self.fastokens.add_tokens([_SpecialToken(SEPARATOR)])
        if eot != self.eot:
            raise RuntimeError(f"fastokens gave the separator id {eot}, not {self.eot}")

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        a = self.tiktoken.encode_to_numpy(text, allowed_special="all").astype(np.uint32)
        b = np.frombuffer(self.fastokens.encode_batch_flat([text])[0], np.uint32)
        return a, b

    def probe_of_each_id(self, ids: np.ndarray, probes: int) -> np.ndarray:
        is_end = ids == self.eot
        if int(is_end.sum()) != probes:
            raise RuntimeError(f"{int(is_end.sum())} separators for {probes} probes")
        return np.cumsum(is_end) - is_end

    def differing(self, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
        """Which of `n` joined probes got different ids from the two engines."""
        if np.array_equal(a, b):
            return np.zeros(n, bool)
        split = [np.split(ids, np.flatnonzero(ids == self.eot) + 1)[:-1] for ids in (a, b)]
        return np.array([not np.array_equal(u, v) for u, v in zip(*split)])


# --- the sweeps --------------------------------------------------------------------------

def sweep_classes(cps: np.ndarray, progress=None, pattern: str | None = None
                  ) -> dict[str, np.ndarray]:
    """Per engine, the class signature of each code point (a row of PROBES flags); and which
    code points' probe ids differ between the engines."""
    ranks = probe_ranks()
    pair = EnginePair(ranks, pattern)
    first, last = utf8_first_last(cps)
    out = {"tiktoken": np.zeros((len(cps), len(PROBES)), bool),
           "fastokens": np.zeros((len(cps), len(PROBES)), bool),
           "ids_differ": np.zeros(len(cps), bool)}
    for p, (side, _, x) in enumerate(PROBES):
        pair_rank = np.array([ranks[bytes([ord(x), b]) if side == "left" else bytes([b, ord(x)])]
                              for b in range(256)], np.uint32)
        expected = pair_rank[first if side == "left" else last]
        for start in range(0, len(cps), CHUNK):
            part = slice(start, start + CHUNK)
            n = len(cps[part])
            a, b = pair.encode(texts_of(x + "{c}" if side == "left" else "{c}" + x, cps[part]))
            for name, ids in (("tiktoken", a), ("fastokens", b)):
                probe = pair.probe_of_each_id(ids, n)
                joined = np.zeros(n, bool)
                joined[probe[ids == expected[part][probe]]] = True
                out[name][part, p] = joined
            out["ids_differ"][part] |= pair.differing(a, b, n)
        if progress:
            progress(f"class probe {p + 1}/{len(PROBES)}")
    return out


def sweep_contexts(cps: np.ndarray, progress=None, pattern: str | None = None,
                   contexts: list[str] = CONTEXTS) -> np.ndarray:
    """Which code points get different real gpt2 ids from the two engines in any context."""
    pair = EnginePair(None, pattern)
    differ = np.zeros(len(cps), bool)
    for k, template in enumerate(contexts):
        for start in range(0, len(cps), CHUNK):
            part = slice(start, start + CHUNK)
            a, b = pair.encode(texts_of(template, cps[part]))
            differ[part] |= pair.differing(a, b, len(cps[part]))
        if progress:
            progress(f"context {k + 1}/{len(contexts)} {template!r}")
    return differ


def class_names(signatures: np.ndarray) -> np.ndarray:
    names = np.full(len(signatures), "?", dtype="<U16")
    for name, signature in SIGNATURES.items():
        names[(signatures == np.array(signature)).all(axis=1)] = name
    for i in np.flatnonzero(names == "?"):  # no class: keep the signature to look at
        names[i] = "?" + "".join("01"[int(v)] for v in signatures[i])
    return names


def measure(cps: np.ndarray, progress=None, contexts: list[str] = CONTEXTS,
            pattern: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `cps`: tiktoken's class, fastokens' class, and whether they differ (the
    classes, or any probe's or context's ids)."""
    classes = sweep_classes(cps, progress, pattern)
    tiktoken_classes = class_names(classes["tiktoken"])
    fastokens_classes = class_names(classes["fastokens"])
    differs = (classes["ids_differ"] | sweep_contexts(cps, progress, pattern, contexts)
               | (tiktoken_classes != fastokens_classes))
    return tiktoken_classes, fastokens_classes, differs


def table_rows(cps, tiktoken_classes, fastokens_classes, differs) -> list[tuple]:
    """The measurements of every non-surrogate code point as the table's runs."""
    full_t = np.full(CODEPOINTS, "-", dtype="<U16")
    full_f = np.full(CODEPOINTS, "-", dtype="<U16")
    verdict = np.full(CODEPOINTS, "same", dtype="<U8")
    full_t[cps], full_f[cps] = tiktoken_classes, fastokens_classes
    verdict[cps] = np.where(differs, "differs", "same")
    keys = np.char.add(np.char.add(np.char.add(full_t, "/"), full_f), np.char.add("/", verdict))
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:] - 1, CODEPOINTS - 1]
    return [(int(a), int(b), full_t[a], full_f[a], verdict[a]) for a, b in zip(starts, ends)]


def expected(rows: list[tuple], cps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a table's `rows` say `measure` gives for `cps`."""
    firsts = np.array([row[0] for row in rows])
    pick = [rows[i] for i in (np.searchsorted(firsts, cps, side="right") - 1).tolist()]
    return (np.array([row[2] for row in pick]), np.array([row[3] for row in pick]),
            np.array([row[4] == "differs" for row in pick]))


def representative_codepoints(rows: list[tuple], every: int = 61) -> np.ndarray:
    """The first and last code point of every run of a table, every whitespace the table
    names, and every `every`-th code point: where a change of either engine's Unicode tables
    would show first."""
    cps = {cp for first, last, *_ in rows for cp in (first, last)}
    cps |= {cp for first, last, t, f, _ in rows if "S" in (t, f) for cp in range(first, last + 1)}
    cps |= set(range(0, CODEPOINTS, every))
    cps = np.array(sorted(cps), np.uint32)
    return cps[(cps < SURROGATES[0]) | (cps > SURROGATES[1])]


# tiktoken's pattern with one class changed: what each should show as differences.
MUTANTS = {"\\s -> ASCII whitespace": (r"\s", r"[\t\n\x0b\x0c\r ]"),
           "\\p{N} -> \\p{Nd}": (r"\p{N}", r"\p{Nd}"),
           "\\p{L} without U+1E030-U+1E06D": (r"\p{L}", r"[\p{L}&&[^\x{1E030}-\x{1E06D}]]")}


def mutants() -> None:
    """Each mutant through the class sweep and three real-vocabulary contexts."""
    cps = codepoints()
    for name, (old, new) in MUTANTS.items():
        pattern = tiktoken_pattern().replace(old, new)
        classes = sweep_classes(cps, pattern=pattern)
        class_differs = class_names(classes["tiktoken"]) != class_names(classes["fastokens"])
        found = cps[class_differs | classes["ids_differ"]]
        real = sweep_contexts(cps, pattern=pattern, contexts=["a{c}b", "  {c}x", "1{c}2"])
        print(f"{name}: the class sweep finds {len(found):,} code points "
              f"({int(class_differs.sum()):,} by class, {int(classes['ids_differ'].sum()):,} by "
              f"probe ids; {' '.join(f'{c:X}' for c in found[:6])} ...); real gpt2 ids in 3 "
              f"contexts find {int(real.sum()):,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--verify", action="store_true")
    group.add_argument("--mutants", action="store_true")
    parser.add_argument("--table", default="gpt2", help="the table's name (tokbin/codepoints.py)")
    args = parser.parse_args()
    if args.mutants:
        return mutants()
    started = time.perf_counter()

    def progress(what):
        print(f"  {time.perf_counter() - started:5.0f} s  {what}", file=sys.stderr, flush=True)

    cps = codepoints()
    rows = table_rows(cps, *measure(cps, progress))
    differ = [r for r in rows if r[4] == "differs"]
    print(f"{len(rows)} runs; {len(differ)} differ" + "".join(
        f"\n  {a:06X}-{b:06X} tiktoken {t} fastokens {f}" for a, b, t, f, _ in differ[:40]),
        file=sys.stderr)
    path = table_path(args.table)
    if args.write:
        path.write_text(format_table(rows, tiktoken_pattern(), installed_versions()),
                        encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
        return
    table = codepoint_table(args.table)
    if read_rows(path.read_text(encoding="utf-8")) != rows \
            or table.pattern != tiktoken_pattern():
        print(f"{path} no longer describes the installed engines: regenerate it with --write "
              "and review the change", file=sys.stderr)
        sys.exit(1)
    if not table.measured_on_installed_engines():
        print(f"the installed engines ({installed_versions()}) behave as {path} says, which "
              f"was measured on {table.versions}: regenerate it with --write to record them",
              file=sys.stderr)
        sys.exit(1)
    print(f"OK: the installed engines behave as {path} says", file=sys.stderr)


if __name__ == "__main__":
    main()
