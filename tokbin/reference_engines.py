"""The reference engines: each kind of tokenizer run by its own library, whose ids are by
definition the right ones (tokbin.engines' fast engine is checked against them).

Every engine encodes a TextBatch into the joined layout: each document's ids, encoded on its
own, followed by the separator id (the eot token's), plus each document's token count. A
special token's text inside a document is ordinary text for every kind, so no data can inject
a control id:

- tiktoken (encoding names and rank files): `encode_ordinary`;
- tokenizers (tokenizer.json): ``add_special_tokens=False`` (no template BOS/EOS) and
  ``encode_special_tokens = True`` (a special added token's text is text; non-special added
  tokens are vocabulary and still match), truncation and padding off;
- sentencepiece: no BOS/EOS added; control pieces (``<s>``, ``</s>``) never match text, while
  user-defined pieces are vocabulary and match.

All three release the GIL while they encode, so threads run them in parallel (tokbin.executors).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from tokbin.format import RANK_FILE, SENTENCEPIECE, TIKTOKEN, TOKENIZER_JSON

if TYPE_CHECKING:
    from tokbin.readers import TextBatch

LIBRARY = {TIKTOKEN: "tiktoken", RANK_FILE: "tiktoken", TOKENIZER_JSON: "tokenizers",
           SENTENCEPIECE: "sentencepiece"}  # each kind's reference library
NO_IDS = np.zeros(0, np.uint32)


def joined_layout(parts: list, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """Each document's ids (a sequence per document) followed by `separator`, and the lengths."""
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    sep = np.array([separator], dtype=np.uint32)
    ids = np.concatenate([x for part in parts for x in (np.asarray(part, np.uint32), sep)]
                         ) if parts else NO_IDS
    return ids.astype(np.uint32, copy=False), lengths


class TiktokenEngine:
    name = "tiktoken"

    def __init__(self, encoding, separator: int):
        self.encoding, self.separator = encoding, separator

    def thread_copy(self) -> "TiktokenEngine":
        return TiktokenEngine(own_copy(self.encoding), self.separator)

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_texts(batch.texts())

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return joined_layout([self.encoding.encode_to_numpy(text, disallowed_special=())
                              for text in texts], self.separator)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)


def own_copy(encoding):
    """A tiktoken Encoding of its own for another thread: threads sharing one contend for its
    regex caches and spend more CPU for the same tokens (docs/performance.md)."""
    import tiktoken
    return tiktoken.Encoding(encoding.name, pat_str=encoding._pat_str,
                             mergeable_ranks=encoding._mergeable_ranks,
                             special_tokens=encoding._special_tokens)


class TokenizersEngine:
    """A Hugging Face tokenizer, loaded by tokbin.vocab with truncation and padding off and
    special-token text encoded as text."""
    name = "tokenizers"

    def __init__(self, tokenizer, separator: int):
        # One encoding thread per core already fills the machine: no rayon pool of its own.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.tokenizer, self.separator = tokenizer, separator

    def thread_copy(self) -> "TokenizersEngine":
        return self  # a Rust tokenizer encodes from many threads at once

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_texts(batch.texts())

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # encode_batch releases the GIL (encode holds it); each text is its own input.
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return joined_layout([e.ids for e in encodings], self.separator)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.tokenizer.encode_batch([text], add_special_tokens=False)[0].ids


class SentencePieceEngine:
    name = "sentencepiece"

    def __init__(self, model_proto: bytes, separator: int):
        import sentencepiece
        self.model_proto, self.separator = model_proto, separator
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    def thread_copy(self) -> "SentencePieceEngine":
        return SentencePieceEngine(self.model_proto, self.separator)

    def encode_batch(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_texts(batch.texts())

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # num_threads=1: its own pool would add threads to the executor's one per core.
        ids = self.processor.encode(texts, out_type=int, add_bos=False, add_eos=False,
                                    num_threads=1)
        return joined_layout(ids, self.separator)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.processor.encode(text, out_type=int, add_bos=False, add_eos=False)
