"""Tokenizer engines: what turns a batch of documents into token ids.

Every engine encodes a TextBatch into the joined layout: each document's ids, encoded on its
own with tiktoken's `encode_ordinary` semantics (a literal <|endoftext|> is ordinary text),
followed by the end-of-text id (the ids of the documents joined by <|endoftext|>, and one
more at the end), plus each document's token count. `tiktoken` is the reference.

`fastokens` is the same tokenizer run by the fastokens library (a Rust BPE with a PCRE2
pre-tokenizer), loaded from a Hugging Face tokenizer.json that is derived at run time from
tiktoken's own vocabulary. It is exact by construction: only documents whose characters are
all in the class that differential tests proved identical (`fast_path_mask`) go to fastokens,
the rest go to tiktoken, and a sample of the fast path is re-encoded with tiktoken at run
time (`CROSS_CHECK_ONE_IN`); any disagreement stops the stage. See docs/fast_engine.md.
"""
from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

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

    def thread_copy(self) -> "TiktokenEngine":
        return TiktokenEngine(own_copy(self.encoding))

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_texts(batch.texts())

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.encoding.encode_to_numpy(text, disallowed_special=()) for text in texts]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        eot = np.array([self.encoding.eot_token], dtype=np.uint32)
        ids = np.concatenate([x for part in parts for x in (part, eot)]) if parts else _NO_IDS
        return ids.astype(np.uint32, copy=False), lengths


_NO_IDS = np.zeros(0, np.uint32)


def own_copy(encoding):
    """A tiktoken Encoding of its own for another thread (30 ms, 10 MB): threads sharing one
    contend for its regex caches, 20% more CPU for the same tokens."""
    import tiktoken
    return tiktoken.Encoding(encoding.name, pat_str=encoding._pat_str,
                             mergeable_ranks=encoding._mergeable_ranks,
                             special_tokens=encoding._special_tokens)


# --- the fast path's character class ------------------------------------------------------

def codepoint_is_unsafe(cp: int) -> bool:
    """True where a document holding chr(cp) must go to tiktoken.

    Unsafe: every non-ASCII whitespace, control, surrogate and private-use character, and
    every code point unassigned in this Python's Unicode database. Whitespace is where
    byte-level BPE engines drift from tiktoken's regex (tokie: " \u2002\x0b"); unassigned code
    points are letters or digits in some engine's newer Unicode tables and not in tiktoken's
    (tokie reads U+33108 as a letter), so they cannot be trusted. All of ASCII is safe,
    tab, vertical tab and form feed included: every regex engine reads the same ASCII
    whitespace, and fastokens matched tiktoken on every one of the differential run's
    documents holding them (docs/fast_engine.md; tokie did not, on tabs).
    """
    if cp < 0x80:
        return False
    if not (cp < 0x40000 or 0xE0000 <= cp < 0xE1000):  # planes 4 to 13, 15, 16: nothing to trust
        return True
    char = chr(cp)
    return (char.isspace() or unicodedata.category(char) in ("Cn", "Cc", "Cs", "Co")
            or cp in (0x180E, 0x200B, 0x2060, 0xFEFF))  # whitespace in some Unicode version


_char_is_unsafe = functools.lru_cache(maxsize=1 << 16)(lambda char: codepoint_is_unsafe(ord(char)))


@functools.cache
def unsafe_codepoints() -> np.ndarray:
    """`codepoint_is_unsafe` of every code point, as a table: for sweeps over all of them."""
    return np.fromiter(map(codepoint_is_unsafe, range(0x110000)), dtype=bool, count=0x110000)


def fast_path_mask(batch: TextBatch) -> np.ndarray:
    """True for each document whose every character is in the fast engine's proven class.

    The work is on the batch's bytes, not per document, and in numpy, which runs without the
    GIL while the other encoding threads hold it: the batch's few distinct non-ASCII
    characters are found with one vectorized pass (every byte of a multi-byte character is
    >= 0x80, so the bytes >= 0x80, kept in order, are those characters' UTF-8), and only
    documents holding an unsafe character are looked up (`documents_containing`).
    """
    if batch.data.isascii():
        return np.ones(len(batch), dtype=bool)
    data = np.frombuffer(batch.data, dtype=np.uint8)
    non_ascii = data[data >= 0x80].tobytes().decode("utf-8", "surrogatepass")
    distinct = np.unique(np.frombuffer(non_ascii.encode("utf-32-le", "surrogatepass"),
                                       dtype=np.uint32))
    unsafe = [chr(cp) for cp in distinct.tolist() if _char_is_unsafe(chr(cp))]
    if not unsafe:
        return np.ones(len(batch), dtype=bool)
    if len(unsafe) <= _FINDS_AT_MOST:
        return ~documents_containing(batch, *(c.encode("utf-8", "surrogatepass") for c in unsafe))
    # Many distinct unsafe characters (random or binary-like text): one pass per document
    # instead of a pass over the batch per character.
    unsafe_set = set(unsafe)
    text, offsets = batch.data, batch.offsets.tolist()
    return np.fromiter((unsafe_set.isdisjoint(text[a:b].decode("utf-8", "surrogatepass"))
                        for a, b in zip(offsets, offsets[1:])), dtype=bool, count=len(batch))


_FINDS_AT_MOST = 16


def documents_containing(batch: TextBatch, *needles: bytes) -> np.ndarray:
    """True for each document holding any of `needles`, found in numpy over the whole batch:
    where a needle's first byte is, then which of those places hold its next bytes.

    A find is exact for a needle that is whole characters' UTF-8: it can only match at a
    character boundary. A match across two documents is ruled out by its end.
    """
    data = np.frombuffer(batch.data, dtype=np.uint8)
    found = np.zeros(len(batch), dtype=bool)
    for needle in needles:
        at = np.flatnonzero(data[:max(len(data) - len(needle) + 1, 0)] == needle[0])
        for k in range(1, len(needle)):
            at = at[data[at + k] == needle[k]]
        document = np.searchsorted(batch.offsets, at, side="right") - 1
        found[document[at + len(needle) <= batch.offsets[document + 1]]] = True
    return found


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


def tokenizer_json_path(encoding) -> Path:
    """Where `tokenizer_json` keeps the tokenizer.json of `encoding`'s vocabulary."""
    ranks = encoding._mergeable_ranks  # private in tiktoken, stable across its releases
    digest = hashlib.sha256(b"".join(len(token).to_bytes(2, "little") + token
                                     for token in sorted(ranks, key=ranks.get))).hexdigest()
    return (user_cache_dir() / "tokenizers"
            / f"{encoding.name}-v{TOKENIZER_JSON_VERSION}-{digest[:32]}.json")


def _limit_fastokens_threads() -> None:
    # One encoding thread or process per core already fills the machine: fastokens must not
    # add threads of its own, neither its rayon pool (read when the pool starts, on first
    # encode) nor its BPE thread (read when a tokenizer is built; by default it runs BPE on a
    # second thread beside the pre-tokenizer: 8% more CPU for the same work).
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["FASTOKENS_BPE_THREADS"] = "1"


def tokenizer_json(encoding) -> str:
    """`derive_tokenizer_json(encoding)`, kept on disk for every later run (not in memory: a
    process loads it once, and the text is 13 MB of str).

    Deriving takes ~0.6 s of CPU, loading the file ~1 ms. The file is named by a hash of the
    vocabulary it was derived from (and TOKENIZER_JSON_VERSION), so another vocabulary or a
    newer derivation never reads it; it is written atomically, so no reader sees half of it.
    """
    path = tokenizer_json_path(encoding)
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


@dataclass(frozen=True)
class _SpecialToken:  # what fastokens' add_tokens reads (the attributes of HF's AddedToken)
    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    special: bool = True


class FastokensEngine:
    """fastokens for the documents in the proven class, tiktoken for the rest, in order.

    The fast documents of a batch are encoded in one call, as one text: the documents joined
    by <|endoftext|>, declared a special token of the fastokens tokenizer. A special token
    splits the text before pre-tokenization, so each document is encoded on its own, exactly
    as alone; and the result is already the joined layout. The separator is found exactly
    where it was put: no document holds it (those that do are encoded one by one, as text),
    and no match can straddle a document's edge, as no prefix of "<|endoftext|>" is also its
    suffix. One text instead of a string per document: a third less CPU per token (0.52 vs
    0.84 CPU-s per 45 M tokens for fastokens and making its input, on the benchmark corpus).
    """
    name = "fastokens"

    def __init__(self, encoding):
        import fastokens  # noqa: F401  (fails here, before any work, if it is not installed)
        self.encoding = encoding
        self.reference = TiktokenEngine(encoding)
        self.separator = "<|endoftext|>"
        self.tokenizer = self._load()

    def thread_copy(self) -> "FastokensEngine":
        """Shares the tokenizer (fastokens keeps its per-thread state itself)."""
        copy = object.__new__(FastokensEngine)
        copy.__dict__.update(self.__dict__)
        copy.reference = self.reference.thread_copy()
        copy.encoding = copy.reference.encoding
        return copy

    def _load(self):
        import fastokens
        _limit_fastokens_threads()
        tokenizer = fastokens.Tokenizer.from_json_str(tokenizer_json(self.encoding))
        [(_, eot)] = tokenizer.add_tokens([_SpecialToken(self.separator)])
        if eot != self.encoding.eot_token:
            raise TokbinError(f"fastokens gave {self.separator} the id {eot}, not the "
                              f"encoding's end-of-text id {self.encoding.eot_token}; set "
                              "tokenize.engine: tiktoken")
        return tokenizer

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        fast = fast_path_mask(batch)
        separately = fast & documents_containing(batch, self.separator.encode())
        joined = fast & ~separately
        if joined.all():
            return self.encode_checked(self.encode_joined, batch, joined)
        results = [self.encode_checked(self.encode_joined, batch, joined),
                   self.encode_checked(self.encode_separately, batch, separately),
                   self.reference.encode_texts(batch.texts(~fast))]
        return interleave(np.select([joined, separately], [0, 1], 2), results)

    def encode_checked(self, encode, batch: TextBatch, members: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths = encode(batch, members)
        self.cross_check(batch, members, ids, lengths)
        return ids, lengths

    def encode_joined(self, batch: TextBatch, members: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """fastokens on the documents of `batch` (those where `members` is True, when given),
        none holding the separator's text."""
        texts = batch.joined(self.separator, members)
        if not texts:
            return _NO_IDS, np.zeros(0, np.int64)
        ids, _ = self.tokenizer.encode_batch_flat(texts)
        ids = np.frombuffer(ids, dtype=np.uint32)
        ends = np.flatnonzero(ids == self.encoding.eot_token)
        documents = len(batch) if members is None else int(np.count_nonzero(members))
        if len(ends) != documents:  # only separators give the id: routing keeps it out of text
            raise TokbinError(f"fastokens returned {len(ends)} end-of-text ids for {documents} "
                              "documents; set tokenize.engine: tiktoken")
        return ids, np.diff(ends, prepend=-1) - 1

    def encode_separately(self, batch: TextBatch, members: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """fastokens on fast documents that hold the separator's text (encoded as text), one
        string per document: the slower way, for the few documents the joined one cannot take."""
        texts = batch.texts(members)
        if not texts:
            return _NO_IDS, np.zeros(0, np.int64)
        ids, offsets = self.tokenizer.encode_batch_flat(texts, split_special_tokens=True)
        offsets = np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)
        ids = np.insert(np.frombuffer(ids, dtype=np.uint32), offsets[1:],
                        self.encoding.eot_token)
        return ids, np.diff(offsets)

    def cross_check(self, batch: TextBatch, members: np.ndarray | None, ids: np.ndarray,
                    lengths: np.ndarray) -> None:
        """Re-encodes with tiktoken a deterministic sample of the documents of `batch` (those
        where `members` is True, when given) that were encoded into `ids` and `lengths`; any
        difference stops."""
        chosen = np.arange(len(batch)) if members is None else np.flatnonzero(members)
        if not len(chosen):
            return
        # The sample depends only on the documents' content, so reruns check the same ones.
        rng = random.Random(zlib.crc32(batch.document(chosen[0])) + len(chosen))
        sample = rng.sample(range(len(chosen)), math.ceil(len(chosen) / CROSS_CHECK_ONE_IN))
        ends = np.cumsum(lengths + 1) - 1
        for i in sample:
            text = batch.document(chosen[i]).decode("utf-8")
            got = ids[ends[i] - lengths[i]:ends[i]]
            want = self.encoding.encode_ordinary(text)
            if got.tolist() != want:
                raise TokbinError(
                    f"the fastokens engine disagrees with tiktoken on a document ({len(want)} "
                    f"tokens, starting {text[:60]!r}); its output is not trusted, nothing "
                    "was written. Set tokenize.engine: tiktoken in params.yaml and rerun, and "
                    "report the document so the fast path's character class can exclude it")


def interleave(route: np.ndarray, results: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Puts back in document order the joined-layout results (ids, lengths) of routes: the
    documents where `route` is r were encoded, in order, into results[r]."""
    lengths = np.empty(len(route), dtype=np.int64)
    ends = []
    for r, (_, route_lengths) in enumerate(results):
        lengths[route == r] = route_lengths
        ends.append(np.cumsum(route_lengths + 1))
    parts, done = [], [0] * len(results)
    run_starts = np.flatnonzero(np.diff(route, prepend=-1))
    for start, stop in zip(run_starts.tolist(), [*run_starts[1:].tolist(), len(route)]):
        r = int(route[start])
        first, last = done[r], done[r] + (stop - start)
        parts.append(results[r][0][(ends[r][first - 1] if first else 0):ends[r][last - 1]])
        done[r] = last
    return np.concatenate(parts), lengths


def effective_engine(name: str, encoding_name: str) -> str:
    """The engine that encodes `encoding_name` when `name` is asked for: fastokens falls back
    to tiktoken for encodings it was not tested on, and says so (once, from the process that
    asks, before any worker starts)."""
    if name not in ENGINES:
        raise TokbinError(f"unknown tokenize.engine {name!r}; valid engines: "
                          f"{', '.join(ENGINES)}")
    if name == "fastokens" and encoding_name not in FAST_ENCODINGS:
        _announce(f"tokenize.engine fastokens supports {', '.join(FAST_ENCODINGS)}; "
                  f"encoding {encoding_name} is tokenized with tiktoken (same tokens, "
                  "tiktoken's speed)")
        return "tiktoken"
    return name


def make_engine(name: str, encoding):
    if effective_engine(name, encoding.name) == "fastokens":
        return FastokensEngine(encoding)
    return TiktokenEngine(encoding)


def _announce(message: str) -> None:
    """Prints `message` once, from the main process (not again from each Ray worker)."""
    if multiprocessing.parent_process() is None:
        print(f"tokenize: {message}", file=sys.stderr)
