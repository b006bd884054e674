"""Tokenizer engines: what turns a batch of documents into token ids.

Every engine encodes a TextBatch into the joined layout: each document's ids, encoded on its
own with its reference library's semantics (a special token's text is ordinary text), followed
by the end-of-text id (the ids of the documents joined by the end-of-text token, and one more
at the end), plus each document's token count. The reference engines, one per kind of
tokenizer, are tokbin.reference_engines'; for gpt2, tiktoken.

`fastokens` is the same tokenizer run by the fastokens library (a Rust BPE with a PCRE2
pre-tokenizer), loaded from a Hugging Face tokenizer.json: derived at run time from tiktoken's
own vocabulary for gpt2, built from a rank file's ranks, or the user's own (tokbin.fast_tokenizers,
which also says which tokenizers it may run). It is exact by construction: only documents whose
characters are all in the proven class (the code points on which fastokens was measured to
behave as the reference does: tokbin.fast_path) go to fastokens, the rest go to the reference
engine, and a share of the fast path's tokens is re-encoded with the reference at run time
(tokbin.cross_check); any disagreement stops the stage. See docs/fast_engine.md and
docs/tokenizers.md.
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
                              proven_class)
from tokbin.fast_tokenizers import fast_refusal, fast_tokenizer_json
from tokbin.format import RANK_FILE, TIKTOKEN, token_ends
from tokbin.reference_engines import LIBRARY, NO_IDS

if TYPE_CHECKING:
    from tokbin.readers import TextBatch
    from tokbin.tokenizer_spec import TokenizerSpec
    from tokbin.vocab import Vocabulary


# Below this much text tiktoken's whole stage beats fastokens' start (its tokenizer's build,
# 0.3-0.5 s for gpt2): measured by bench/bench_startup.py (docs/performance.md).
FASTOKENS_FROM_BYTES = 4_000_000


@dataclass(frozen=True)
class _SpecialToken:  # what fastokens' add_tokens reads (the attributes of HF's AddedToken)
    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    special: bool = True


class FastokensEngine:
    """fastokens for the documents in the proven class, the reference for the rest, in order.

    The fast documents of a batch are encoded in one call, as one text: the documents joined
    by the separator (the eot token, e.g. <|endoftext|>), the only special token of the
    fastokens tokenizer. A special token splits the text before pre-tokenization, so each
    document is encoded on its own, exactly as alone; and the result is already the joined
    layout. The separator is found exactly where it was put: no document holds it (those that
    do are encoded one by one, as text), and no match can straddle a document's edge, as no
    prefix of the separator is also its suffix (a separator with such a border is never joined).
    One text instead of a string per document saves the per-document Python work.
    """
    name = "fastokens"

    def __init__(self, reference, separator: str, eot: int, tokenizer_json: str, proven):
        import fastokens  # noqa: F401  (fails here, before any work, if it is not installed)
        self.reference, self.separator, self.eot = reference, separator, eot
        self.fallback = "tiktoken" if reference.name == "tiktoken" else "reference"
        self.joinable = not any(separator[:n] == separator[-n:] for n in range(1, len(separator)))
        self.proven = proven  # tokbin.fast_path.ProvenClass
        if proven.table is not None and proven.table.pattern != reference.encoding._pat_str:
            raise TokbinError(f"tiktoken's {reference.encoding.name} split pattern is not the one "
                              "its code point table was measured with; set tokenize.engine: "
                              "tiktoken")
        self.check = CrossCheck(reference, proven.classes, self.fallback)
        self.tokenizer = self._load(tokenizer_json)

    @property
    def encoding(self):
        """The reference's tiktoken Encoding (gpt2 and rank files)."""
        return self.reference.encoding

    def thread_copy(self) -> "FastokensEngine":
        """Shares the tokenizer (fastokens keeps its per-thread state itself), and the
        reference when the proven class sends it no document (then it only cross-checks a
        small share of the tokens: nothing to contend for); otherwise a copy of it per
        thread. The copy's cross-check draws in its first batch."""
        copy = object.__new__(FastokensEngine)
        copy.__dict__.update(self.__dict__)
        if not self.proven.only_surrogates:
            copy.reference = self.reference.thread_copy()
        copy.check = self.check.fresh(copy.reference)
        return copy

    def _load(self, tokenizer_json: str):
        import fastokens
        limit_fastokens_threads()
        tokenizer = fastokens.Tokenizer.from_json_str(tokenizer_json)
        declared = {t["content"]: t["id"] for t in tokenizer.added_tokens() if t["special"]}
        if self.separator in declared:
            eot = declared[self.separator]
        else:
            [(_, eot)] = tokenizer.add_tokens([_SpecialToken(self.separator)])
        if eot != self.eot:
            raise TokbinError(f"fastokens gave {self.separator} the id {eot}, not the "
                              f"encoding's end-of-text id {self.eot}; set "
                              f"tokenize.engine: {self.fallback}")
        return tokenizer

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        fast = self.proven.mask(batch)
        separately = fast & (documents_containing(batch, self.separator.encode())
                             if self.joinable else True)
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
            return NO_IDS, np.zeros(0, np.int64)
        ids, _ = self.tokenizer.encode_batch_flat(texts)
        ids = np.frombuffer(ids, dtype=np.uint32)
        ends = np.flatnonzero(ids == self.eot)
        documents = len(batch) if members is None else int(np.count_nonzero(members))
        if len(ends) != documents:  # only separators give the id: routing keeps it out of text
            raise TokbinError(f"fastokens returned {len(ends)} end-of-text ids for {documents} "
                              f"documents; set tokenize.engine: {self.fallback}")
        return ids, np.diff(ends, prepend=-1) - 1

    def encode_separately(self, batch: TextBatch, members: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """fastokens on fast documents that hold the separator's text (encoded as text), one
        string per document: the slower way, for the few documents the joined one cannot take."""
        texts = batch.texts(members)
        if not texts:
            return NO_IDS, np.zeros(0, np.int64)
        ids, offsets = self.tokenizer.encode_batch_flat(texts, split_special_tokens=True)
        offsets = np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)
        ids = np.insert(np.frombuffer(ids, dtype=np.uint32), offsets[1:], self.eot)
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


def effective_engine(name: str, vocabulary: Vocabulary, text_bytes: int | None = None) -> str:
    """The engine that encodes with `vocabulary` when `name` is asked for: "fastokens", or
    "reference" (its kind's library; tiktoken names it for the kinds tiktoken runs).
    fastokens falls back to the reference for tokenizers it is not proven on, and, where the
    reference is tiktoken, for datasets of under FASTOKENS_FROM_BYTES of text (`text_bytes`),
    and says so (once, from the process that asks, before any worker starts)."""
    spec = vocabulary.spec
    library = LIBRARY[spec.kind]
    check_engine(name, spec)
    if name != "fastokens":
        return "reference"
    refusal = fast_refusal(vocabulary)
    if refusal is not None:
        _announce(f"tokenize.engine fastokens does not run {spec.encoding} ({refusal}); "
                  f"encoding {spec.encoding} is tokenized with {library} (same tokens, "
                  f"{library}'s speed)")
        return "reference"
    if library == "tiktoken" and text_bytes is not None and text_bytes < FASTOKENS_FROM_BYTES:
        _announce(f"{text_bytes / 1e6:.1f} MB of text: tiktoken is done with it before "
                  "fastokens would have built its tokenizer, so tiktoken encodes it (same "
                  f"tokens); fastokens runs from {FASTOKENS_FROM_BYTES / 1e6:.0f} MB")
        return "reference"
    if spec.kind == TIKTOKEN and spec.encoding in TABLE_OF_ENCODING:
        if proven_class(spec.encoding).table is None:
            table = codepoint_table(TABLE_OF_ENCODING[spec.encoding])
            _announce(f"the code point table of {spec.encoding} was measured on "
                      f"{_versions(table.versions)}, and this is "
                      f"{_versions(installed_versions())}: documents holding "
                      "non-ASCII whitespace, controls or code points unassigned in this Python "
                      "go to tiktoken (same tokens, slower); `python -m bench.codepoint_table "
                      "--verify` measures these versions")
    return "fastokens"


def _versions(versions: dict[str, str]) -> str:
    return " and ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def check_engine(name: str, spec: TokenizerSpec) -> None:
    """Refuses tokenize.engine tiktoken for a kind of tokenizer tiktoken does not run."""
    if name == "tiktoken" and spec.kind not in (TIKTOKEN, RANK_FILE):
        library = LIBRARY[spec.kind]
        raise TokbinError(f"tokenize.engine is tiktoken, but {spec.encoding} is a {spec.kind}, "
                          f"which {library} encodes; set tokenize.engine: reference ({library}) "
                          "or fastokens")


def make_engine(name: str, vocabulary: Vocabulary):
    """The engine `name` (effective_engine's answer) for a loaded tokenizer."""
    reference = vocabulary.reference_engine()
    if name == "fastokens":
        proven = proven_class(vocabulary.spec.encoding if vocabulary.kind == TIKTOKEN else None)
        return FastokensEngine(reference, vocabulary.eot_name, vocabulary.eot_id,
                               fast_tokenizer_json(vocabulary), proven)
    return reference


def _announce(message: str) -> None:
    """Prints `message` once, from the main process (not again from each Ray worker)."""
    if multiprocessing.parent_process() is None:
        print(f"tokenize: {message}", file=sys.stderr)
