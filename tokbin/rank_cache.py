"""tokbin's cache of tiktoken's gpt2 ranks: the Encoding tiktoken builds, loaded in a fraction
of the time (tiktoken parses gpt2's two data-gym files on every load; every small build pays
it).

`~/.cache/tokbin/encodings/<name>-tiktoken-<version>-v<CACHE_VERSION>.bin`, written
atomically from tiktoken's own load the first time: a 4-byte length, a JSON header (pattern,
special tokens, n_vocab, token count, the vocabulary's digest, the SHA-256 of the rest), then
every token's end offset (uint32, rank order) and the tokens' bytes. A file that does not
check is ignored (tiktoken loads the encoding, and rewrites it).
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from tokbin.errors import TokbinError
from tokbin.fsio import atomic_path, user_cache_dir

CACHED_ENCODINGS = ("gpt2", "r50k_base")  # the fast engine's: their load is the start-up
CACHE_VERSION = 1  # part of the file's name: bump it when the layout changes

_loaded: dict[Path, object] = {}  # per process: each file is read once
_lock = threading.Lock()


def cache_path(name: str) -> Path:
    import tiktoken
    return (user_cache_dir() / "encodings"
            / f"{name}-tiktoken-{tiktoken.__version__}-v{CACHE_VERSION}.bin")


def vocabulary_digest(encoding) -> str:
    """The SHA-256 of `encoding`'s tokens in rank order (kept in the cache's header)."""
    digest = getattr(encoding, "tokbin_digest", None)
    if digest:
        return digest
    return ranks_digest(encoding._mergeable_ranks)  # private in tiktoken, stable


def ranks_digest(ranks: dict[bytes, int]) -> str:
    """A hash of a BPE vocabulary: its tokens in rank order."""
    return hashlib.sha256(b"".join(len(token).to_bytes(2, "little") + token
                                   for token in sorted(ranks, key=ranks.get))).hexdigest()


def cached_encoding(name: str):
    """The encoding `name` from the cache, or None if it has no good copy."""
    path = cache_path(name)
    with _lock:
        if path not in _loaded:
            encoding = _read(path, name)
            if encoding is None:
                return None
            _loaded[path] = encoding
        return _loaded[path]


def _read(path: Path, name: str):
    import tiktoken
    try:
        blob = path.read_bytes()
        size = int.from_bytes(blob[:4], "little")
        header = json.loads(blob[4:4 + size])
        body = memoryview(blob)[4 + size:]
        count = header["tokens"]
        if hashlib.sha256(body).hexdigest() != header["body_sha256"] or header["name"] != name:
            return None
        ends = np.frombuffer(body, np.uint32, count).tolist()
        data = bytes(body[4 * count:])
        if len(data) != (ends[-1] if ends else 0):
            return None
        ranks = dict(zip(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)),
                         range(count)))
        encoding = tiktoken.Encoding(name, pat_str=header["pat_str"], mergeable_ranks=ranks,
                                     special_tokens=header["special_tokens"],
                                     explicit_n_vocab=header["n_vocab"])
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None  # ValueError: json's and numpy's for a truncated or garbled file
    encoding.tokbin_digest = header["digest"]  # what vocabulary_digest would compute
    return encoding


def write_cached_encoding(encoding) -> None:
    """Keeps `encoding` (as tiktoken loaded it) in the cache; a cache that cannot be written
    only costs tiktoken's load next time."""
    ranks = encoding._mergeable_ranks
    tokens = sorted(ranks, key=ranks.get)
    if [ranks[token] for token in tokens] != list(range(len(tokens))):
        return  # ranks with gaps: not this layout
    body = (np.cumsum([len(token) for token in tokens]).astype(np.uint32).tobytes()
            + b"".join(tokens))
    header = json.dumps({"name": encoding.name, "pat_str": encoding._pat_str,
                         "special_tokens": encoding._special_tokens,
                         "n_vocab": encoding.n_vocab, "tokens": len(tokens),
                         "digest": vocabulary_digest(encoding),
                         "body_sha256": hashlib.sha256(body).hexdigest()}).encode()
    path = cache_path(encoding.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(len(header).to_bytes(4, "little") + header + body)
    except (OSError, TokbinError):
        pass
