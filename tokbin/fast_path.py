"""What the fast engine may encode, and what it loads.

The **proven class** (`codepoint_is_unsafe`): the characters on which differential tests found
fastokens and tiktoken identical; `fast_path_mask` tells which documents of a batch hold only
those. The **tokenizer.json** fastokens loads is derived at run time from tiktoken's own
vocabulary (`tokenizer_json`) and kept in the user's cache. See docs/fast_engine.md.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tokbin.errors import TokbinError
from tokbin.fsio import atomic_path, user_cache_dir

if TYPE_CHECKING:
    from tokbin.readers import TextBatch

# --- the proven class -------------------------------------------------------------------

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


# --- the tokenizer.json fastokens loads --------------------------------------------------

def byte_to_unicode() -> dict[int, str]:
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
    digest = ranks_digest(encoding._mergeable_ranks)  # private in tiktoken, stable
    return (user_cache_dir() / "tokenizers"
            / f"{encoding.name}-v{TOKENIZER_JSON_VERSION}-{digest[:32]}.json")


def ranks_digest(ranks: dict[bytes, int]) -> str:
    """A hash of a BPE vocabulary: its tokens in rank order."""
    return hashlib.sha256(b"".join(len(token).to_bytes(2, "little") + token
                                   for token in sorted(ranks, key=ranks.get))).hexdigest()


def limit_fastokens_threads() -> None:
    # One encoding thread or process per core already fills the machine: fastokens must not
    # add threads of its own, neither its rayon pool (read when the pool starts, on first
    # encode) nor its BPE thread (read when a tokenizer is built; by default it runs BPE on a
    # second thread beside the pre-tokenizer, which costs CPU for the same work).
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["FASTOKENS_BPE_THREADS"] = "1"


def tokenizer_json(encoding) -> str:
    """`derive_tokenizer_json(encoding)`, kept on disk for every later run (`cached_text`)."""
    return cached_text(tokenizer_json_path(encoding), lambda: derive_tokenizer_json(encoding))


def cached_text(path: Path, derive) -> str:
    """The text at `path` in the user's cache, else `derive()`'s, written there for every later
    run (not kept in memory: a process loads it once, and the text is large).

    Deriving costs far more than reading the file back. The file is named by a hash of what it
    was derived from (and a version), so other input or a newer derivation never reads it; it
    is written atomically, so no reader sees half of it.
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    text = derive()
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
    to_unicode = byte_to_unicode()

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
