"""Tokenizer engines: what turns a batch of documents into token ids.

Every engine gives, for a list of texts, the flat uint32 ids of each text encoded on its own
with tiktoken's `encode_ordinary` semantics (a literal <|endoftext|> is ordinary text) and
each text's token count. `tiktoken` is the reference.

`fastokens` is the same tokenizer run by the fastokens library (a Rust BPE with a PCRE2
pre-tokenizer), loaded from a Hugging Face tokenizer.json that is derived at run time from
tiktoken's own vocabulary. It is exact by construction: only documents whose characters are
all in the class that differential tests proved identical (`fast_path_mask`) go to fastokens,
the rest go to tiktoken, and a sample of the fast path is re-encoded with tiktoken at run
time (`CROSS_CHECK_ONE_IN`); any disagreement stops the stage. See docs/fast_engine.md.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import multiprocessing
import os
import random
import sys
import unicodedata
import zlib

import numpy as np

from tokbin.errors import TokbinError
from tokbin.format import atomic_path, user_cache_dir
from tokbin.source import TextBatch

ENGINES = ("tiktoken", "fastokens")

# Encodings the fast engine was differentially tested on: both are gpt2's byte-level BPE
# (same ranks, same pre-tokenizer pattern). Others run on tiktoken (see make_engine).
FAST_ENCODINGS = ("gpt2", "r50k_base")

# One fast-path document in CROSS_CHECK_ONE_IN (at least one per batch) is re-encoded with
# tiktoken. tiktoken is ~20x slower per token than fastokens, so this costs ~6% of the fast
# path's CPU time (measured: bench/bench_engines.py, docs/fast_engine.md); ~0.4% of documents.
CROSS_CHECK_ONE_IN = 256


class TiktokenEngine:
    name = "tiktoken"

    def __init__(self, encoding):
        self.encoding = encoding

    def encode_batch(self, texts: list[str], utf8: TextBatch | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.encoding.encode_to_numpy(text, disallowed_special=()) for text in texts]
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        ids = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
        return ids, lengths


# --- the fast path's character class ------------------------------------------------------

# Whitespace is where byte-level BPE engines drift from tiktoken's regex (tokie: "\t'm",
# " \u2002\x0b"); only space, LF and CR, which every engine handles alike, are let through.
_UNSAFE_ASCII = "\t\x0b\x0c"


@functools.cache
def unsafe_codepoints() -> np.ndarray:
    """A bool per code point: True where a document holding it must go to tiktoken.

    Unsafe: tab, vertical tab, form feed, every non-ASCII whitespace, control, surrogate and
    private-use character, and every code point unassigned in this Python's Unicode database.
    Unassigned code points are letters or digits in some engine's newer Unicode tables and
    not in tiktoken's (tokie reads U+33108 as a letter), so they cannot be trusted.
    """
    unsafe = np.ones(0x110000, dtype=bool)  # planes 4 to 13, 15 and 16: nothing to trust
    unsafe[:0x80] = False
    unsafe[[ord(c) for c in _UNSAFE_ASCII]] = True
    for cp in [*range(0x80, 0x40000), *range(0xE0000, 0xE1000)]:
        char = chr(cp)
        unsafe[cp] = char.isspace() or unicodedata.category(char) in ("Cn", "Cc", "Cs", "Co")
    unsafe[[0x180E, 0x200B, 0x2060, 0xFEFF]] = True  # whitespace in some Unicode version
    return unsafe


_SAFE_ASCII_BYTES = bytes(b for b in range(0x80) if chr(b) not in _UNSAFE_ASCII)


def fast_path_mask(texts: list[str], utf8: TextBatch | None = None) -> np.ndarray:
    """True for each text whose every character is in the fast engine's proven class.

    `utf8`: the same texts as UTF-8, when the caller has them (a worker's batch). The work is
    on the batch's bytes, not per document: deleting the safe ASCII bytes leaves only the
    batch's few distinct other characters; only documents holding an unsafe one are looked
    up, each by one memchr-speed find (a byte sequence that is a whole character's UTF-8 can
    only match at a character boundary, so a find is exact).
    """
    if utf8 is None:
        utf8 = TextBatch.from_texts(texts)
    mask = np.ones(len(utf8), dtype=bool)
    others = utf8.data.translate(None, _SAFE_ASCII_BYTES).decode("utf-8", "surrogatepass")
    unsafe = unsafe_codepoints()
    ends = utf8.offsets[1:].tolist()
    for char in {c for c in set(others) if unsafe[ord(c)]}:
        needle = char.encode("utf-8", "surrogatepass")
        at = utf8.data.find(needle)
        while at >= 0:
            document = bisect.bisect_right(ends, at)
            mask[document] = False
            at = utf8.data.find(needle, ends[document])  # on from the next document
    return mask


# --- the fast engine ----------------------------------------------------------------------

def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def _split_into_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair whose merge made `token`: BPE on its bytes with the ranks below its own."""
    splits = [(token[:i], token[i:]) for i in range(1, len(token))
              if token[:i] in ranks and token[i:] in ranks]
    if len(splits) == 1:  # BPE's last two parts are tokens: the only such split is the merge
        return splits[0]
    rank = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise TokbinError(f"token {token!r} is not a merge of two tokens; this vocabulary "
                          "cannot be expressed as a tokenizer.json: use tokenize.engine: "
                          "tiktoken")
    return parts[0], parts[1]


# Part of the cached tokenizer.json's name: bump it when derive_tokenizer_json changes.
TOKENIZER_JSON_VERSION = 1


@functools.cache
def tokenizer_json(encoding) -> str:
    """`derive_tokenizer_json(encoding)`, kept on disk for every later run and worker.

    Deriving takes ~0.6 s of CPU, loading the file ~1 ms. The file is named by a hash of the
    vocabulary it was derived from (and TOKENIZER_JSON_VERSION), so another vocabulary or a
    newer derivation never reads it; it is written atomically, so no reader sees half of it.
    """
    ranks = encoding._mergeable_ranks  # private in tiktoken, stable across its releases
    digest = hashlib.sha256(b"".join(len(token).to_bytes(2, "little") + token
                                     for token in sorted(ranks, key=ranks.get))).hexdigest()
    path = (user_cache_dir() / "tokenizers"
            / f"{encoding.name}-v{TOKENIZER_JSON_VERSION}-{digest[:32]}.json")
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    text = derive_tokenizer_json(encoding)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except (OSError, TokbinError):  # a cache that cannot be written costs the derivation again
        pass
    return text


def derive_tokenizer_json(encoding) -> str:
    """A Hugging Face tokenizer.json for a gpt2-style tiktoken encoding, from its own ranks.

    No special tokens are declared, so a literal <|endoftext|> is text, as in encode_ordinary.
    """
    ranks = encoding._mergeable_ranks
    to_unicode = _byte_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    merges = [" ".join(map(spell, _split_into_merge(ranks, token)))
              for token, _ in sorted(ranks.items(), key=lambda item: item[1]) if len(token) > 1]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {spell(token): rank for token, rank in ranks.items()},
                  "merges": merges}}, ensure_ascii=False)


class FastokensEngine:
    """fastokens for the documents in the proven class, tiktoken for the rest, in order."""
    name = "fastokens"

    def __init__(self, encoding):
        import fastokens  # noqa: F401  (fails here, before any work, if it is not installed)
        self.encoding = encoding
        self.reference = TiktokenEngine(encoding)
        self.tokenizer = None  # loaded on first use: only workers pay the ~0.25 s it takes

    def load(self):
        if self.tokenizer is None:
            import fastokens
            # One worker process per core already fills the machine: fastokens must not add
            # threads of its own, neither its rayon pool (read when the pool starts, on first
            # encode) nor its BPE thread (read when a tokenizer is built; by default it runs
            # BPE on a second thread beside the pre-tokenizer: 8% more CPU for the same work).
            os.environ["RAYON_NUM_THREADS"] = "1"
            os.environ["FASTOKENS_BPE_THREADS"] = "1"
            self.tokenizer = fastokens.Tokenizer.from_json_str(tokenizer_json(self.encoding))
        return self.tokenizer

    def encode_fast(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, np.uint32), np.zeros(0, np.int64)
        ids, offsets = self.load().encode_batch_flat(texts)
        ids = np.frombuffer(ids, dtype=np.uint32)
        return ids, np.diff(np.frombuffer(offsets, dtype=np.uint64).astype(np.int64))

    def encode_batch(self, texts: list[str], utf8: TextBatch | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """`utf8`: the same texts as UTF-8, when the caller has them (see fast_path_mask)."""
        fast = fast_path_mask(texts, utf8)
        if fast.all():
            ids, lengths = self.encode_fast(texts)
            self.cross_check(texts, ids, lengths)
            return ids, lengths
        return self.encode_routed(texts, fast)

    def encode_routed(self, texts: list[str], fast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fast_texts = [t for t, f in zip(texts, fast) if f]
        fast_ids, fast_lengths = self.encode_fast(fast_texts)
        self.cross_check(fast_texts, fast_ids, fast_lengths)
        slow_ids, slow_lengths = self.reference.encode_batch(
            [t for t, f in zip(texts, fast) if not f])
        lengths = np.empty(len(texts), dtype=np.int64)
        lengths[fast], lengths[~fast] = fast_lengths, slow_lengths
        # Document order: walk the runs of consecutive fast or slow documents.
        fast_ends, slow_ends = np.cumsum(fast_lengths), np.cumsum(slow_lengths)
        parts, done = [], {True: 0, False: 0}
        run_starts = np.flatnonzero(np.diff(fast, prepend=not fast[0]))
        for start, stop in zip(run_starts, [*run_starts[1:], len(texts)]):
            is_fast = bool(fast[start])
            source, ends = (fast_ids, fast_ends) if is_fast else (slow_ids, slow_ends)
            first, last = done[is_fast], done[is_fast] + (stop - start)
            parts.append(source[(ends[first - 1] if first else 0):(ends[last - 1])])
            done[is_fast] = last
        return np.concatenate(parts).astype(np.uint32, copy=False), lengths

    def cross_check(self, texts: list[str], ids: np.ndarray, lengths: np.ndarray) -> None:
        """Re-encodes a deterministic sample of `texts` with tiktoken; any difference stops."""
        if not texts:
            return
        # The sample depends only on the batch's content, so reruns check the same documents.
        rng = random.Random(zlib.crc32(texts[0].encode("utf-8", "surrogatepass")) + len(texts))
        sample = rng.sample(range(len(texts)), math.ceil(len(texts) / CROSS_CHECK_ONE_IN))
        ends = np.cumsum(lengths)
        for i in sample:
            got = ids[ends[i] - lengths[i]:ends[i]]
            want = self.encoding.encode_ordinary(texts[i])
            if got.tolist() != want:
                raise TokbinError(
                    f"the fastokens engine disagrees with tiktoken on a document ({len(want)} "
                    f"tokens, starting {texts[i][:60]!r}); its output is not trusted, nothing "
                    "was written. Set tokenize.engine: tiktoken in params.yaml and rerun, and "
                    "report the document so the fast path's character class can exclude it")


def make_engine(name: str, encoding):
    if name == "tiktoken":
        return TiktokenEngine(encoding)
    if name == "fastokens":
        if encoding.name not in FAST_ENCODINGS:
            _announce(f"tokenize.engine fastokens supports {', '.join(FAST_ENCODINGS)}; "
                      f"encoding {encoding.name} is tokenized with tiktoken (same tokens, "
                      "tiktoken's speed)")
            return TiktokenEngine(encoding)
        return FastokensEngine(encoding)
    raise TokbinError(f"unknown tokenize.engine {name!r}; valid engines: {', '.join(ENGINES)}")


def _announce(message: str) -> None:
    """Prints `message` once, from the main process (not again from each worker)."""
    if multiprocessing.parent_process() is None:
        print(f"tokenize: {message}", file=sys.stderr)
