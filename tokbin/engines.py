"""Tokenizer engines: what turns a batch of documents into token ids.

Every engine encodes a TextBatch into the joined layout: each document's ids, encoded on its
own with tiktoken's `encode_ordinary` semantics (a literal <|endoftext|> is ordinary text),
followed by the end-of-text id (the ids of the documents joined by <|endoftext|>, and one
more at the end), plus each document's token count. `tiktoken` is the reference.

`fastokens` is the same tokenizer run by the fastokens library (a Rust BPE), loaded from a
Hugging Face tokenizer.json that is derived at run time from tiktoken's own vocabulary. It is
exact by construction: only documents whose characters are all in the proven class (the code
points on which both engines were measured to behave alike: tokbin.fast_path) go to
fastokens, the rest go to tiktoken, and a share of the fast path's tokens is re-encoded with
tiktoken at run time (tokbin.cross_check); any disagreement stops the stage. See
docs/fast_engine.md.
"""
from __future__ import annotations

import multiprocessing
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tokbin.codepoints import codepoint_table, installed_versions
from tokbin.cross_check import CrossCheck
from tokbin.errors import TokbinError
from tokbin.fast_path import (TABLE_OF_ENCODING, documents_containing, limit_fastokens_threads,
                              proven_class, tokenizer_json)
from tokbin.format import token_ends

if TYPE_CHECKING:
    from tokbin.readers import TextBatch

# Encodings with a code point table (gpt2's byte-level BPE). Others run on tiktoken.
FAST_ENCODINGS = tuple(TABLE_OF_ENCODING)


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
    """A tiktoken Encoding of its own for another thread: threads sharing one contend for its
    regex caches and spend more CPU for the same tokens (docs/performance.md)."""
    import tiktoken
    return tiktoken.Encoding(encoding.name, pat_str=encoding._pat_str,
                             mergeable_ranks=encoding._mergeable_ranks,
                             special_tokens=encoding._special_tokens)


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
    suffix. One text instead of a string per document saves the per-document Python work.
    """
    name = "fastokens"

    def __init__(self, encoding):
        import fastokens  # noqa: F401  (fails here, before any work, if it is not installed)
        self.encoding = encoding
        self.reference = TiktokenEngine(encoding)
        self.separator = "<|endoftext|>"
        self.proven = proven_class(encoding.name)
        if self.proven.table is not None and self.proven.table.pattern != encoding._pat_str:
            raise TokbinError(f"tiktoken's {encoding.name} split pattern is not the one its code "
                              "point table was measured with; set tokenize.engine: tiktoken")
        self.check = CrossCheck(encoding, self.proven.classes)
        self.tokenizer = self._load()

    def thread_copy(self) -> "FastokensEngine":
        """Shares the tokenizer (fastokens keeps its per-thread state itself), and tiktoken's
        Encoding when the proven class sends it no document (then it only cross-checks a
        small share of the tokens: nothing to contend for); otherwise a copy of it per
        thread, as TiktokenEngine's. The copy's cross-check draws in its first batch."""
        copy = object.__new__(FastokensEngine)
        copy.__dict__.update(self.__dict__)
        if not self.proven.only_surrogates:
            copy.reference = self.reference.thread_copy()
            copy.encoding = copy.reference.encoding
        copy.check = self.check.fresh(copy.encoding)
        return copy

    def _load(self):
        import fastokens
        limit_fastokens_threads()
        tokenizer = fastokens.Tokenizer.from_json_str(tokenizer_json(self.encoding))
        [(_, eot)] = tokenizer.add_tokens([_SpecialToken(self.separator)])
        if eot != self.encoding.eot_token:
            raise TokbinError(f"fastokens gave {self.separator} the id {eot}, not the "
                              f"encoding's end-of-text id {self.encoding.eot_token}; set "
                              "tokenize.engine: tiktoken")
        return tokenizer

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        fast = self.proven.mask(batch)
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
        self.check(batch, members, ids, lengths)
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


def interleave(route: np.ndarray, results: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Puts back in document order the joined-layout results (ids, lengths) of routes: the
    documents where `route` is r were encoded, in order, into results[r]."""
    lengths = np.empty(len(route), dtype=np.int64)
    ends = []
    for r, (_, route_lengths) in enumerate(results):
        lengths[route == r] = route_lengths
        ends.append(token_ends(route_lengths))
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
    if name == "fastokens" and encoding_name not in FAST_ENCODINGS:
        _announce(f"tokenize.engine fastokens supports {', '.join(FAST_ENCODINGS)}; "
                  f"encoding {encoding_name} is tokenized with tiktoken (same tokens, "
                  "tiktoken's speed)")
        return "tiktoken"
    if name == "fastokens":
        table = codepoint_table(TABLE_OF_ENCODING[encoding_name])
        if not table.measured_on_installed_engines():
            _announce(f"the code point table of {encoding_name} was measured on "
                      f"{_versions(table.versions)}, and this is {_versions(installed_versions())}"
                      ": documents holding non-ASCII whitespace, controls or code points "
                      "unassigned in this Python go to tiktoken (same tokens, slower); "
                      "`python -m bench.codepoint_table --verify` measures these versions")
    return name


def _versions(versions: dict[str, str]) -> str:
    return " and ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def make_engine(name: str, encoding):
    if effective_engine(name, encoding.name) == "fastokens":
        return FastokensEngine(encoding)
    return TiktokenEngine(encoding)


def _announce(message: str) -> None:
    """Prints `message` once, from the main process (not again from each Ray worker)."""
    if multiprocessing.parent_process() is None:
        print(f"tokenize: {message}", file=sys.stderr)
