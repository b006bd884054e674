"""Every short string over class representatives, through tiktoken and fastokens.

    python -m bench.split_sweep [--random 2000000] [--mutant]

The code point table (bench/codepoint_table.py) shows that both engines put every code point
in the same class of gpt2's pattern. What is left to show is that their split logic treats the
classes alike in every context the pattern distinguishes: runs of each class, a space or
another whitespace before a run, `\\s+(?!\\S)` before a non-space (a multi-byte whitespace
last in a run, or alone), `\\s++$`, contractions, and characters of each UTF-8 length. The
alphabet is every whitespace character (all 25), and letters, numbers and others of each
UTF-8 length (letters and numbers unassigned in Python 3.11's Unicode tables but assigned in
the engines'; marks, format characters, controls, private use, emoji newer than Unicode 14).
Strings: all of length <= 3 over the whole alphabet, all of length 4 over a smaller one, all of
length 5 over a smaller one still, and random strings of length 4 to 24. Each is compared
(1) with gpt2's real vocabulary and (2) with a boundary vocabulary (the 256 bytes plus a token
for every pair (last byte of a character, first byte of a character) of the alphabet), in
which two adjacent characters of one pre-token always show as a merged pair. `--mutant` runs
tiktoken with ASCII-only `\\s`, to show the sweep finds differences. Exit status 1 on any.
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import time

from bench.codepoint_table import MUTANTS, SEPARATOR, EnginePair, tiktoken_pattern

WHITESPACE = ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\x85", "\xa0", "\u1680",
              *map(chr, range(0x2000, 0x200B)), "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
LETTERS = ["a", "s", "t", "l", "e", "D", "é", "ж", "日", "ㄱ", "𐐀", "\U000105C0", "\U00031350"]
NUMBERS = ["1", "0", "٣", "१", "Ⅻ", "𝟏", "\U00010D40"]
OTHERS = ["!", "'", ".", "<", "\x00", "\x1f", "\x80", "¡", "\u0301", "\u00ad", "—", "\u200b",
          "\u200d", "\u2060", "\ufeff", "\ue000", "\U0001F600", "\U0001FAEF", "\U000E0041",
          "\U0010FFFD", "\U00040000"]
ALPHABET = WHITESPACE + LETTERS + NUMBERS + OTHERS
SMALL = [" ", "\t", "\n", "\r", "\x85", "\xa0", "\u2009", "\u3000", "\u202f", "a", "s", "é",
         "日", "𐐀", "1", "٣", "𝟏", "!", "'", "—", "\U0001F600", "\u200b"]
TINY = [" ", "\n", "\xa0", "\u3000", "a", "é", "1", "!", "'"]
CHUNK = 1 << 15


def strings(random_count: int, seed: int = 0) -> list[str]:
    out = ["".join(p) for n in (1, 2, 3) for p in itertools.product(ALPHABET, repeat=n)]
    out += ["".join(p) for p in itertools.product(SMALL, repeat=4)]
    out += ["".join(p) for p in itertools.product(TINY, repeat=5)]
    rng = random.Random(seed)
    weights = [4 if c in WHITESPACE else 1 for c in ALPHABET]
    out += ["".join(rng.choices(ALPHABET, weights, k=rng.randint(4, 24)))
            for _ in range(random_count)]
    return out


def boundary_ranks() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    lasts = sorted({c.encode()[-1] for c in ALPHABET})
    firsts = sorted({c.encode()[0] for c in ALPHABET})
    for x in lasts:
        for y in firsts:
            ranks.setdefault(bytes([x, y]), len(ranks))
    return ranks


def differing(texts: list[str], vocabulary: str, pattern: str | None = None) -> list[str]:
    pair = EnginePair(None if vocabulary == "gpt2" else boundary_ranks(), pattern)
    bad = []
    for start in range(0, len(texts), CHUNK):
        part = texts[start:start + CHUNK]
        a, b = pair.encode(SEPARATOR.join(part) + SEPARATOR)
        bad += [t for t, d in zip(part, pair.differing(a, b, len(part))) if d]
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", type=int, default=2_000_000)
    parser.add_argument("--mutant", action="store_true",
                        help="tiktoken with ASCII-only \\s: shows the sweep finds differences")
    args = parser.parse_args()
    pattern = (tiktoken_pattern().replace(*MUTANTS["\\s -> ASCII whitespace"])
               if args.mutant else None)
    texts = [t for t in strings(args.random) if SEPARATOR not in t]
    print(f"{len(texts):,} strings over {len(ALPHABET)} characters", flush=True)
    failures = 0
    for vocabulary in ("gpt2", "boundary"):
        started = time.perf_counter()
        bad = differing(texts, vocabulary, pattern)
        failures += len(bad)
        print(f"{vocabulary} vocabulary: {len(bad):,} strings differ "
              f"({time.perf_counter() - started:.0f} s)", *map(ascii, bad[:10]), sep="\n  ",
              flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
