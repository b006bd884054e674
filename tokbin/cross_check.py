"""The fast engine's run-time cross-check: a share of its tokens re-encoded with the reference.

About one token in CHECK_SHARE of what fastokens encodes is checked, whatever the documents'
sizes: the cost is bounded by tokens, not by documents. Under gpt2's pattern (tiktoken the
reference), draws are of about CHECK_PIECE_TOKENS: a document of at most that many tokens is
checked whole, a longer one on a **piece** cut where the pattern always ends a pre-token
(`pretoken_cut`), so tiktoken's ids for the piece are its ids for the whole document there.
Under another pattern no cut is known, so drawn documents are checked whole, and what a long
one costs over the share is taken from the engine's later calls. Any difference stops the
stage. See docs/fast_engine.md.
"""
from __future__ import annotations

import random
import re
import zlib
from typing import TYPE_CHECKING

import numpy as np

from tokbin.codepoints import ASCII_SPACE, DIFFERS, LETTER, NUMBER, OTHER, SPACE
from tokbin.errors import TokbinError

if TYPE_CHECKING:
    from tokbin.readers import TextBatch

# The share's cost (docs/performance.md): tiktoken is far slower per token than fastokens,
# the more so on short pieces between fastokens' batches, and each draw has a fixed cost
# besides (decoding, finding cuts, finding the piece): so long pieces, and few.
CHECK_SHARE = 8192
CHECK_PIECE_TOKENS = 256
CHECK_SLACK_TOKENS = 64  # a piece's window: CHECK_PIECE_TOKENS and this many more to a cut
CUT_SEARCH_BYTES = 4096  # a cut within this many bytes of the place drawn, or no check there
NEAR_BYTES = 1 << 15  # a piece is looked for this far around its estimated place first
SEED_BYTES, SEED_SIZES = 4096, 4096  # what draw_seed reads of a batch


def draw_seed(batch: TextBatch, members: np.ndarray | None) -> int:
    """A hash of the batch where it is cheap to read: where its (first member) document starts,
    its last bytes, and its documents' sizes (at most SEED_SIZES of them, evenly spread). So a
    rerun draws alike, and batches that only open alike (files that share a long header) do
    not: one hash for all of them would draw in all or in none."""
    first = 0 if members is None else int(np.argmax(members))
    start = int(batch.offsets[first])
    sizes = np.diff(batch.offsets[::max(1, len(batch) // SEED_SIZES)])
    crc = zlib.crc32(batch.data[start:start + SEED_BYTES])
    crc = zlib.crc32(batch.data[-SEED_BYTES:], crc)
    return zlib.crc32(sizes.tobytes(), crc)


class CrossCheck:
    """Checks one engine's fastokens ids against `reference` (a tokbin.reference_engines
    engine); `classes` are tiktoken's class of each code point under gpt2's pattern
    (tokbin.fast_path.ProvenClass.classes), for finding cuts, or None for another pattern."""

    def __init__(self, reference, classes: np.ndarray | None, fallback: str,
                 token_bytes: np.ndarray | None = None):
        self.reference, self.classes, self.fallback = reference, classes, fallback
        self.checked = False  # whether this engine has drawn yet: its first call always does
        self.credit = 0.0  # whole-document checks: the budget left (or overdrawn) so far
        # Each token's length in bytes, for cutting pieces: built once, shared by every copy.
        if token_bytes is None and classes is not None:
            token_bytes = token_byte_lengths(reference.encoding)
        self._token_bytes = token_bytes

    def fresh(self, reference) -> "CrossCheck":
        """The same check for another thread's engine (with `reference`, that thread's), which
        draws in its first call too."""
        return CrossCheck(reference, self.classes, self.fallback, self._token_bytes)

    def __call__(self, batch: TextBatch, members: np.ndarray | None, ids: np.ndarray,
                 lengths: np.ndarray) -> None:
        """Re-encodes with tiktoken about 1/CHECK_SHARE of the tokens fastokens made, `ids`
        and `lengths` in the joined layout, for the documents of `batch` (those where
        `members` is True, when given); any difference stops.

        Each draw is, at even odds, a document chosen uniformly (short documents are checked
        as often whatever else the batch holds) or the document holding a token chosen
        uniformly (text in proportion to its size): over a run, any kind of document that is
        a share f of the documents or of the tokens is in each draw with odds of at least f/2.
        What is left of the budget under one draw is a draw with that probability, so the
        cost follows the tokens however small the calls. The draws depend only on the batch's
        content (`draw_seed`), so a rerun checks the same text. Nothing is done per token of
        the batch.
        """
        documents = len(batch) if members is None else int(np.count_nonzero(members))
        if not documents:
            return
        total = len(ids) - documents  # tokens: each document's ids end with end-of-text
        budget, spent, force = total / CHECK_SHARE, 0, not self.checked
        self.checked = True
        if self.classes is None:  # whole documents: the budget carries over between calls
            budget, self.credit = budget + self.credit, 0.0
        chosen = token_ends = starts = None  # found on the first draw: most calls have none
        rng = None
        while spent < budget or force:
            if rng is None:
                rng = random.Random(draw_seed(batch, members) + documents)
            left = budget - spent
            if self.classes is not None and not force and left < CHECK_PIECE_TOKENS \
                    and rng.random() * CHECK_PIECE_TOKENS >= left:
                break  # under gpt2's pattern a remainder is a draw with that probability
            force = False
            if chosen is None:
                chosen = np.arange(len(batch)) if members is None else np.flatnonzero(members)
                token_ends = np.cumsum(lengths)
                starts = token_ends - lengths + np.arange(len(lengths))  # documents' first ids
            if rng.random() < 0.5 or not total:
                i, at = rng.randrange(documents), 0
            else:
                token = rng.randrange(total)
                i = int(np.searchsorted(token_ends, token, side="right"))
                at = token - int(token_ends[i] - lengths[i])
            got = ids[starts[i]:starts[i] + lengths[i]]
            lo, hi = int(batch.offsets[chosen[i]]), int(batch.offsets[chosen[i] + 1])
            if len(got) <= CHECK_PIECE_TOKENS or self.classes is None:
                spent += max(len(got), CHECK_PIECE_TOKENS // 2)  # its call costs that much
                self.compare(batch.data[lo:hi], got, hi - lo, 0)
            else:
                spent += CHECK_PIECE_TOKENS
                self.check_piece(batch.data, (lo, hi), got,
                                 max(0, min(at, len(got) - CHECK_PIECE_TOKENS)))
        if self.classes is None:
            self.credit = budget - spent

    def compare(self, text: bytes, got: np.ndarray, size: int, start: int) -> None:
        """Stops unless the reference encodes `text` (at byte `start` of a document of `size`
        bytes) to `got`."""
        if got.tolist() != list(self.reference.encode_ordinary(text.decode("utf-8"))):
            self.disagree(text, size, start)

    def check_piece(self, data: bytes, span: tuple[int, int], got: np.ndarray, at: int) -> None:
        """Checks fastokens' ids `got` of the long document data[span[0]:span[1]] on about
        CHECK_PIECE_TOKENS of them from token `at`, with no pass over the whole document.

        The piece is the text its ids spell (tiktoken decodes them), from the first cut (the
        document's start for `at` 0) to the first cut CHECK_PIECE_TOKENS tokens on. A cut
        inside one of fastokens' tokens, ids that tiktoken encodes otherwise, or a spelled
        text that is not the document's (at its start: its first bytes; elsewhere: found in
        it, first near where its share of the tokens puts it) all stop. A window with no cut
        (a very long run of one class) is not checked.
        """
        lo, hi = span
        window = got[at:at + CHECK_PIECE_TOKENS + CHECK_SLACK_TOKENS]
        spelled = self.reference.encoding.decode_bytes(window.tolist())
        ends = np.cumsum(self._token_bytes[window])  # where each token's bytes end
        start = 0 if at == 0 else pretoken_cut(spelled, _second_character(spelled),
                                               self.classes)
        if start is None or start == len(spelled):
            return
        stop = pretoken_cut(spelled, max(int(ends[min(CHECK_PIECE_TOKENS, len(window)) - 1]),
                                         start + 1), self.classes)
        if stop is None or (stop == len(spelled) and at + len(window) < len(got)):
            return  # no cut before the window's end
        first = int(np.searchsorted(ends, start))  # the token ending at `start`, if one does
        last = int(np.searchsorted(ends, stop))  # the token ending at `stop`, if one does
        piece = spelled[start:stop]
        if at == 0:
            where = lo if data.startswith(piece, lo) else -1
        else:
            where = _find_near(data, piece, lo + at * (hi - lo) // len(got), lo, hi)
        if (start and ends[first] != start) or ends[last] != stop or where < 0:
            self.disagree(piece, hi - lo, max(where - lo, 0), "; its ids do not spell the "
                     "document's text at pre-token boundaries")
        self.compare(piece, window[first + 1 if start else 0:last + 1], hi - lo, where - lo)

    def disagree(self, text: bytes, size: int, start: int, why: str = "") -> None:
        piece = text.decode("utf-8", "replace")
        raise TokbinError(
            f"the fastokens engine disagrees with {self.reference.name} on a document ({size} "
            f"bytes, at bytes {start}-{start + len(text)}: {piece[:60]!r}{why}); its output "
            f"is not trusted, nothing was written. Set tokenize.engine: {self.fallback} in "
            "params.yaml and rerun, and report the document so the fast path's proven class "
            "can exclude it")


def token_byte_lengths(encoding) -> np.ndarray:
    """The length in bytes of each of a tiktoken encoding's tokens, by id."""
    ranks = encoding._mergeable_ranks  # private in tiktoken, stable
    lengths = np.zeros(encoding.n_vocab, np.int64)
    lengths[np.fromiter(ranks.values(), np.int64, len(ranks))] = np.fromiter(
        map(len, ranks), np.int64, len(ranks))
    return lengths


def _second_character(data: bytes) -> int:
    """Where the second whole character of `data` starts (the first may be a token's tail)."""
    i = 0
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    i += 1
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    return i


def _find_near(data: bytes, piece: bytes, estimate: int, lo: int, hi: int) -> int:
    """Where `piece` is in data[lo:hi], looked for near `estimate` first; -1 if nowhere."""
    found = data.find(piece, max(lo, estimate - NEAR_BYTES),
                      min(hi, estimate + NEAR_BYTES + len(piece)))
    return found if found >= 0 else data.find(piece, lo, hi)


def pretoken_cut(data: bytes, at: int, classes: np.ndarray) -> int | None:
    """The first position p >= `at` in the UTF-8 text `data` where gpt2's pattern always ends
    a pre-token, whatever follows (0 and len(data) always are), within CUT_SEARCH_BYTES.

    Cut at p, both sides encode to the ids of the whole: the pattern has no look-behind, so
    what is matched from p on depends only on the text from p on; and the pre-token holding
    the character before p ends at p when, in tiktoken's `classes`, that character is not
    whitespace and the one at p is (no letter, number or other run, nor a contraction, holds
    whitespace), or a letter or number is followed by a character of another class among
    letter, number and other (no run holds two of them; contractions end with a letter, so an
    apostrophe before a letter is never a cut). A piece that ends at a cut ends in a
    non-whitespace character, so `\\s++$` and `\\s+(?!\\S)` match in it as in the document.
    """
    n = len(data)
    if at <= 0:
        return 0
    while at < n and 0x80 <= data[at] < 0xC0:  # to the next character's start
        at += 1
    if at >= n:
        return n
    before = at - 1  # the character before `at` starts the window
    while before > 0 and 0x80 <= data[before] < 0xC0:
        before -= 1
    reach = 64  # most cuts are a few bytes on: look that far first, then further
    while True:
        found = _first_cut(data[before:at + reach], classes)
        if found is not None:
            return before + found
        if at + reach >= n:
            return n
        if reach >= CUT_SEARCH_BYTES:
            return None
        reach *= 8


# The cuts between two ASCII characters, as a bytes regex: most text has one within a few
# bytes, found without decoding. (Bytes >= 0x80 match none of these classes.)
_ASCII_OTHER = rb"\x00-\x08\x0e-\x1f!-/:-@\[-`{-\x7f"
_ASCII_CUT = re.compile(
    rb"(?<=[\x00-\x08\x0e-\x1f!-\x7f])[\t-\r ]"  # whitespace after a non-whitespace
    rb"|(?<=[A-Za-z])[0-9" + _ASCII_OTHER + rb"]"  # a letter, then a number or other
    rb"|(?<=[0-9])[A-Za-z" + _ASCII_OTHER + rb"]")  # a number, then a letter or other


def _first_cut(window: bytes, classes: np.ndarray) -> int | None:
    """The offset in `window` (after its first character) of its first cut, or None."""
    ascii_cut = _ASCII_CUT.search(window, 1)
    if ascii_cut and window[:ascii_cut.start()].isascii():
        return ascii_cut.start()  # no non-ASCII character before it could cut sooner
    text = window.decode("utf-8", "ignore")  # a cut last character is dropped
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    kind = classes[cps]
    prev, cur = kind[:-1], kind[1:]
    white_prev = (prev == SPACE) | (prev == ASCII_SPACE)
    white_cur = (cur == SPACE) | (cur == ASCII_SPACE)
    word_prev = (prev == LETTER) | (prev == NUMBER)
    run_cur = (cur == LETTER) | (cur == NUMBER) | (cur == OTHER)
    hits = np.flatnonzero(((prev != DIFFERS) & ~white_prev & white_cur)
                          | (word_prev & run_cur & (cur != prev)))
    if not len(hits):
        return None
    k = int(hits[0]) + 1  # the cut is before character k of `text`
    utf8 = 1 + (cps[:k] >= 0x80) + (cps[:k] >= 0x800) + (cps[:k] >= 0x10000)
    return int(utf8.sum())
