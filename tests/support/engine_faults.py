"""Faults planted in a fast engine, to show its guards stop them."""
from __future__ import annotations

import numpy as np


def shift_joined_ids(engine, monkeypatch) -> None:
    """The engine's joined fast path returns every id but the separator's one too high."""
    encode_joined = engine.encode_joined

    def off_by_one(batch, members):
        ids, lengths = encode_joined(batch, members)
        return np.where(ids == engine.eot, ids, ids + 1), lengths

    monkeypatch.setattr(engine, "encode_joined", off_by_one)
