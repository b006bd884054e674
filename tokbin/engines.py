"""Tokenizer engines: what turns a batch of documents into token ids.

Every engine gives, for a list of texts, the flat uint32 ids of each text encoded on its own
with tiktoken's `encode_ordinary` semantics (a literal <|endoftext|> is ordinary text) and
each text's token count. `tiktoken` is the reference.
"""
from __future__ import annotations

import numpy as np

from tokbin.errors import TokbinError

ENGINES = ("tiktoken",)


class TiktokenEngine:
    name = "tiktoken"

    def __init__(self, encoding):
        self.encoding = encoding

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.encoding.encode_to_numpy(text, disallowed_special=()) for text in texts]
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        ids = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
        return ids, lengths


def make_engine(name: str, encoding):
    if name == "tiktoken":
        return TiktokenEngine(encoding)
    raise TokbinError(f"unknown tokenize.engine {name!r}; valid engines: {', '.join(ENGINES)}")
