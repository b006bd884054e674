"""Encoding a batch of documents: the tokenizer, the engine, the eot policy, and which output
each document goes to.

Every document is encoded on its own with its tokenizer's reference semantics (a special
token's text, such as a literal <|endoftext|>, is text); the engines return a batch in the
joined layout (each document followed by the end-of-text id) and `place_eot` turns that into
the eot policy's (with `prepend` and a BOS as the eot token, each document starts with it).
With a holdout, each document's ids go to the held-out output or the kept one by `held_out`, a
function of the seed and the document's bytes (tokbin.format defines it), decided here, in
whichever worker encodes the batch: one pass writes both bins. What runs the encoding
(threads, worker processes, Ray tasks) is tokbin.executors' and tokbin.ray_executor's
concern; each worker builds its encoder once (`batch_encoder`).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tokbin.engines import effective_engine, make_engine
from tokbin.errors import NotUTF8Error, TokbinError
from tokbin.format import DOCLENS_DTYPE, Holdout, TokenizerRecord, choose_dtype, token_ends
from tokbin.readers import TextBatch, WorkUnit
from tokbin.tokenizer_spec import TokenizerSpec
from tokbin.vocab import load_vocabulary


@dataclass(frozen=True)
class EncodeSettings:
    """What decides a split's ids: the same settings give the same bytes on every executor."""
    tokenizer: TokenizerSpec
    eot: str       # append | prepend | none
    engine: str    # the engine that runs (effective_engine's answer, not only the request)


@dataclass(frozen=True)
class EncodingInfo:
    name: str
    n_vocab: int
    eot_token: int
    dtype: str  # the compact dtype that holds every id of this encoding
    tokenizer: TokenizerRecord


def encoding_info(tokenizer: TokenizerSpec) -> EncodingInfo:
    vocabulary = load_vocabulary(tokenizer)
    return EncodingInfo(tokenizer.encoding, vocabulary.n_vocab, vocabulary.eot_id,
                        choose_dtype("auto", vocabulary.n_vocab), vocabulary.record())


def settings_for(tokenizer: TokenizerSpec, eot: str, engine: str,
                 text_bytes: int | None = None) -> EncodeSettings:
    """The settings a run uses, checked once, in the process that asks, before any worker
    starts: the tokenizer loads (every bad setting fails here), and the engine suits it and
    the dataset's `text_bytes` (and it says when fastokens falls back to the reference)."""
    return EncodeSettings(tokenizer, eot, effective_engine(engine, load_vocabulary(tokenizer),
                                                           text_bytes))


def place_eot(ids: np.ndarray, lengths: np.ndarray, eot: str) -> np.ndarray:
    """The batch's ids per the eot policy, from the engines' joined layout (every document
    followed by the end-of-text id, which is already eot: append)."""
    if eot == "prepend":  # d1 E d2 E .. dn E -> E d1 E d2 .. E dn: a rotation by one
        return np.roll(ids, 1)
    if eot == "none":
        return np.delete(ids, token_ends(lengths) - 1)
    return ids


class BatchEncoder:
    """What encodes each batch: the engine and the eot policy; returns the batch's ids (eot
    placed, in the encoding's compact dtype) and its documents' lengths."""

    def __init__(self, settings: EncodeSettings):
        self.info = encoding_info(settings.tokenizer)
        self.engine = make_engine(settings.engine, load_vocabulary(settings.tokenizer))
        self.eot = settings.eot

    def __call__(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        try:
            ids, lengths = self.engine.encode_batch(batch)
        except UnicodeDecodeError:
            raise not_utf8(batch) from None
        separators = int(np.count_nonzero(ids == self.info.eot_token))
        if separators != len(lengths):  # the bins' documents must be found by this id alone
            raise TokbinError(f"the tokenizer encoded document text into the end-of-text id "
                              f"{self.info.eot_token} ({self.info.tokenizer.eot_name}) "
                              f"{separators - len(lengths)} time(s) in a batch; set "
                              "tokenize.eot_token to a special token text cannot produce")
        ids = place_eot(ids, lengths, self.eot)
        return ids.astype(self.info.dtype), lengths.astype(DOCLENS_DTYPE)

    def routed(self, batch: TextBatch, holdout: Holdout | None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, lengths) per output: all documents; or, with a holdout, the kept ones and
        the held-out ones, each in batch order."""
        ids, lengths = self(batch)
        if holdout is None:
            return [(ids, lengths)]
        members = held_out(batch, holdout)
        tokens_held = np.repeat(members, lengths.astype(np.int64) + (self.eot != "none"))
        return [(ids[~tokens_held], lengths[~members]), (ids[tokens_held], lengths[members])]

    def thread_copy(self) -> "BatchEncoder":
        copy = object.__new__(BatchEncoder)
        copy.info, copy.eot, copy.engine = self.info, self.eot, self.engine.thread_copy()
        return copy


@functools.lru_cache(maxsize=1)
def batch_encoder(settings: EncodeSettings) -> BatchEncoder:
    """This process's encoder: built once per process (a Ray worker, which Ray reuses across
    runs, builds a new one for a run with other settings)."""
    return BatchEncoder(settings)


def not_utf8(batch: TextBatch) -> TokbinError:
    """What is not valid UTF-8 in a batch an engine could not decode: its first such document
    and where in it (found again document by document: the engines' offsets are their own)."""
    found = batch.first_not_utf8()
    if found is None:
        return TokbinError("a batch is not valid UTF-8; re-encode the dataset as UTF-8")
    e = found[1]
    surrogate = e.object[e.start:e.start + 2]  # ED A0..BF: U+D800..U+DFFF's UTF-8
    what = ("a lone surrogate (half a UTF-16 pair, e.g. a JSON \\ud800 escape)"
            if surrogate[:1] == b"\xed" and surrogate[1:] >= b"\xa0" else e.reason)
    return NotUTF8Error(f"a document is not valid UTF-8: {what} at byte {e.start} of it, "
                        f"which begins {e.object[:40]!r}; fix or drop it in the dataset")


def held_out(batch: TextBatch, holdout: Holdout) -> np.ndarray:
    """True for each document of the batch that the holdout draws (tokbin.format's rule)."""
    data, bounds = memoryview(batch.data), batch.offsets.tolist()
    key, threshold = holdout.key, holdout.threshold
    return np.fromiter((int.from_bytes(hashlib.blake2b(data[a:b], digest_size=8, key=key)
                                       .digest(), "little") < threshold
                        for a, b in zip(bounds, bounds[1:])), dtype=bool, count=len(batch))


def encode_work_unit(unit: WorkUnit, settings: EncodeSettings, holdout: Holdout | None,
                     write_ids: Sequence[Callable[[np.ndarray], object]]) -> list[np.ndarray]:
    """Reads and encodes one work unit batch by batch, handing each batch's ids for output k
    to `write_ids[k]` (one output; two with a holdout: kept, held out); returns the lengths
    of each output's documents. What a worker process and a Ray task run."""
    encoder = batch_encoder(settings)
    lengths = [[np.zeros(0, DOCLENS_DTYPE)] for _ in write_ids]
    for batch in unit.batches():
        for k, (ids, batch_lengths) in enumerate(encoder.routed(batch, holdout)):
            write_ids[k](ids)
            lengths[k].append(batch_lengths)
    return [np.concatenate(parts) for parts in lengths]
