"""What the fast engine may encode, and what it loads.

The **proven class** (`proven_class`): the code points on which fastokens was measured to
behave as the reference does. For gpt2's byte-level BPE (tiktoken's gpt2 and r50k_base) it is
read from a code point table measured on both engines (tokbin.codepoints); for every other
tokenizer the fast engine runs, and for engine versions no table was measured on, it is the
conservative rule (`conservative_unsafe`). `ProvenClass.mask` tells which documents of a batch
hold only those. The **tokenizer.json** fastokens loads for gpt2 is derived at run time from
tiktoken's own vocabulary (`tokenizer_json`) and kept in the user's cache. See
docs/fast_engine.md.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tokbin.codepoints import CODEPOINTS, SURROGATES, CodepointTable, codepoint_table
from tokbin.errors import TokbinError
from tokbin.fsio import atomic_path, user_cache_dir
from tokbin.rank_cache import vocabulary_digest

if TYPE_CHECKING:
    from tokbin.readers import TextBatch

# --- the proven class -------------------------------------------------------------------

# The tiktoken encodings with a code point table, and its name (both are gpt2's byte-level
# BPE: same ranks, same pattern). The table compares fastokens with tiktoken on that pattern
# only: it says nothing of other patterns, nor of the tokenizers library's regex.
TABLE_OF_ENCODING = {"gpt2": "gpt2", "r50k_base": "gpt2"}


@functools.cache
def proven_class(encoding_name: str | None) -> "ProvenClass":
    """The proven class of a TABLE_OF_ENCODING encoding: where its table says the engines
    differ (and the surrogates) is unsafe, if the installed engines are the ones the table
    was measured on; otherwise (and for None: a tokenizer with no table) `conservative_class`."""
    if encoding_name in TABLE_OF_ENCODING:
        table = codepoint_table(TABLE_OF_ENCODING[encoding_name])
        if table.measured_on_installed_engines():
            return ProvenClass(lambda cp: bool(table.unsafe[cp]), table.classes, table)
    return conservative_class(encoding_name)


def conservative_class(encoding_name: str | None) -> "ProvenClass":
    """The proven class by `conservative_unsafe`, with ASCII's classes under gpt2's pattern
    for a TABLE_OF_ENCODING encoding (every engine reads ASCII alike), else no classes."""
    if encoding_name not in TABLE_OF_ENCODING:
        return ProvenClass(conservative_unsafe, None, None)
    ascii_classes = np.zeros(CODEPOINTS, np.uint8)
    ascii_classes[:0x80] = codepoint_table(TABLE_OF_ENCODING[encoding_name]).classes[:0x80]
    return ProvenClass(conservative_unsafe, ascii_classes, None)


def conservative_unsafe(cp: int) -> bool:
    """The rule where no table applies: every non-ASCII whitespace, control, surrogate and
    private-use character, and every code point unassigned in this Python's Unicode database,
    is unsafe (where byte-level BPE engines were seen to drift from their reference: tokie on
    " \u2002\x0b", and on U+33108, a letter in newer Unicode tables; PCRE2's \\s on U+180E)."""
    if cp < 0x80:
        return False
    if not (cp < 0x40000 or 0xE0000 <= cp < 0xE1000):  # planes 4 to 13, 15, 16: nothing to trust
        return True
    char = chr(cp)
    return (char.isspace() or unicodedata.category(char) in ("Cn", "Cc", "Cs", "Co")
            or cp in (0x180E, 0x200B, 0x2060, 0xFEFF))  # whitespace in some Unicode version


@functools.cache
def unsafe_codepoints() -> np.ndarray:
    """`conservative_unsafe` of every code point, as a table: for sweeps over all of them."""
    return np.fromiter(map(conservative_unsafe, range(CODEPOINTS)), bool, CODEPOINTS)


class ProvenClass:
    """The code points the fast engine may take (`is_unsafe(cp)` is False for them), and the
    class tiktoken puts each in under gpt2's pattern (`classes`, tokbin.codepoints' codes;
    DIFFERS where not known: the cross-check cuts pieces only between characters of known
    classes), or None for another pattern. `table` is the code point table it comes from, or
    None under the conservative rule."""

    def __init__(self, is_unsafe, classes: np.ndarray | None, table: CodepointTable | None):
        self.is_unsafe, self.classes, self.table = is_unsafe, classes, table
        self._char_is_unsafe = functools.lru_cache(maxsize=1 << 16)(
            lambda char: is_unsafe(ord(char)))
        unsafe = table.unsafe if table is not None else None
        self.lead_bytes = _lead_bytes(unsafe) if unsafe is not None else b""
        # Whether nothing UTF-8 text can hold is unsafe: then the fast engine gives its
        # reference no document, and its threads need no reference of their own.
        self.only_surrogates = unsafe is not None and not (
            unsafe[:SURROGATES[0]].any() or unsafe[SURROGATES[1] + 1:].any())

    @property
    def unsafe(self) -> np.ndarray:
        """`is_unsafe` of every code point, as an array: for sweeps over all of them."""
        return self.table.unsafe if self.table is not None else unsafe_codepoints()

    def mask(self, batch: TextBatch) -> np.ndarray:
        """True for each document whose every character is in the class.

        The work is on the batch's bytes, not per document, and in numpy, which runs without
        the GIL while the other encoding threads hold it: a batch holding none of the bytes
        that lead an unsafe character's UTF-8 is all in the class (a memchr per byte);
        otherwise its few distinct non-ASCII characters are found with one vectorized pass
        (every byte of a multi-byte character is >= 0x80, so the bytes >= 0x80, kept in order,
        are those characters' UTF-8), and only documents holding an unsafe character are
        looked up (`documents_containing`).
        """
        data = batch.data
        if data.isascii() or (self.lead_bytes
                              and not any(bytes([b]) in data for b in self.lead_bytes)):
            return np.ones(len(batch), dtype=bool)
        if self.only_surrogates and _SURROGATE_UTF8.search(data) is None:
            return np.ones(len(batch), dtype=bool)  # 0xED also leads U+D000-U+D7FF (Hangul)
        array = np.frombuffer(data, dtype=np.uint8)
        non_ascii = array[array >= 0x80].tobytes().decode("utf-8", "surrogatepass")
        distinct = np.unique(np.frombuffer(non_ascii.encode("utf-32-le", "surrogatepass"),
                                           dtype=np.uint32))
        unsafe = [chr(cp) for cp in distinct.tolist() if self._char_is_unsafe(chr(cp))]
        if not unsafe:
            return np.ones(len(batch), dtype=bool)
        if len(unsafe) <= _FINDS_AT_MOST:
            return ~documents_containing(batch, *(c.encode("utf-8", "surrogatepass")
                                                  for c in unsafe))
        # Many distinct unsafe characters (random or binary-like text): one pass per document
        # instead of a pass over the batch per character.
        unsafe_set = set(unsafe)
        offsets = batch.offsets.tolist()
        return np.fromiter((unsafe_set.isdisjoint(data[a:b].decode("utf-8", "surrogatepass"))
                            for a, b in zip(offsets, offsets[1:])), dtype=bool,
                           count=len(batch))


_FINDS_AT_MOST = 16
_SURROGATE_UTF8 = re.compile(rb"\xed[\xa0-\xbf]")  # U+D800-U+DFFF as surrogatepass writes them


def _lead_bytes(unsafe: np.ndarray) -> bytes:
    """The first UTF-8 bytes (surrogates as Python's surrogatepass writes them) of the unsafe
    code points when at most 4 bytes lead them all and ASCII is safe; else empty (no
    prefilter)."""
    cps = np.flatnonzero(unsafe)
    if (cps < 0x80).any():
        return b""
    lead = np.select([cps < 0x800, cps < 0x10000], [0xC0 | (cps >> 6), 0xE0 | (cps >> 12)],
                     0xF0 | (cps >> 18))
    leads = np.unique(lead).astype(np.uint8).tobytes()
    return leads if len(leads) <= 4 else b""


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


_BYTE_LEVEL_TABLE = {b: c for b, c in byte_to_unicode().items() if chr(b) != c}


def spell(token: bytes) -> str:
    """A token's bytes as a byte-level tokenizer.json writes them (the ByteLevel alphabet)."""
    return token.decode("latin-1").translate(_BYTE_LEVEL_TABLE)


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
    return (user_cache_dir() / "tokenizers" / f"{encoding.name}-v{TOKENIZER_JSON_VERSION}-"
                                              f"{vocabulary_digest(encoding)[:32]}.json")


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
    is written atomically, so no reader sees half of it; and it is `sha256 <hex>` then the
    text, so a file damaged since (truncated, changed) is derived and written again.
    """
    try:
        head, _, body = path.read_bytes().partition(b"\n")
        if head == b"sha256 " + hashlib.sha256(body).hexdigest().encode():
            return body.decode("utf-8")
    except OSError:
        pass
    text = derive()
    body = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    except (OSError, TokbinError):  # a cache that cannot be written costs the derivation again
        pass
    return text


def derive_tokenizer_json(encoding) -> str:
    """A Hugging Face tokenizer.json for a gpt2-style tiktoken encoding, from its own ranks.

    No special tokens are declared, so a literal <|endoftext|> is text, as in encode_ordinary.
    """
    return ranks_tokenizer_json(encoding._mergeable_ranks)


def ranks_tokenizer_json(ranks: dict[bytes, int]) -> str:
    """A tokenizer.json with gpt2's ByteLevel pre-tokenizer for byte-level BPE `ranks`."""
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
