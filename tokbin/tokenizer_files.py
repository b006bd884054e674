"""Tokenizer files: told apart by their content, never by their name, and read exactly.

Three kinds of file are read (Llama 3's tiktoken rank file is called ``tokenizer.model``, as
SentencePiece models are, so a name proves nothing):

- a Hugging Face **tokenizer.json**: a JSON object whose ``model`` has a ``type``;
- a **tiktoken rank file**: one ``<base64 token> <rank>`` per line, parsed here, not by
  ``tiktoken.load.load_tiktoken_bpe`` (it caches a local file by its path's name and keeps
  returning the old ranks after the file changes);
- a **SentencePiece model**: a serialized ModelProto, whose first field is its pieces.

Mistral's tekken JSON is recognized and refused with what to use instead.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.format import RANK_FILE, SENTENCEPIECE, TOKENIZER_JSON

HEAD_BYTES = 1 << 16  # what is read to tell the kinds apart
_RANK_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2} [0-9]+")
_WHAT_IS_READ = ("a Hugging Face tokenizer.json, a tiktoken rank file ('<base64 token> <rank>' "
                 "per line) or a SentencePiece model")


def read_file(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TokbinError(f"{where}: {path} does not exist; fix the path, or put the tokenizer "
                          "file there") from None
    except IsADirectoryError:
        raise TokbinError(f"{where}: {path} is a folder; name the tokenizer file inside it "
                          "(tokenizer.json, tokenizer.model, ...)") from None
    except OSError as e:
        raise TokbinError(f"{where}: cannot read {path} ({e.strerror})") from None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff_kind(data: bytes, path: Path, where: str) -> str:
    """The kind of the tokenizer file holding `data`; a TokbinError when it is none of them."""
    head = data[:HEAD_BYTES]
    if head.lstrip()[:1] == b"{":
        return _json_kind(data, path, where)
    first = next((line for line in head.splitlines() if line), b"")  # \n or \r\n, as tiktoken
    if _RANK_LINE.fullmatch(first):  # a damaged line further on is parse_ranks' to report
        return RANK_FILE
    if _looks_like_model_proto(head):
        return SENTENCEPIECE
    raise TokbinError(f"{where}: {path} is not a tokenizer file tokbin reads: not "
                      f"{_WHAT_IS_READ}; point {where} at one of those")


def _json_kind(data: bytes, path: Path, where: str) -> str:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise TokbinError(f"{where}: {path} starts like JSON but is not valid JSON ({e}); is "
                          "the download complete?") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if isinstance(model, dict) and isinstance(model.get("type"), str):
        return TOKENIZER_JSON
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict) and "vocab" in doc:
        raise TokbinError(f"{where}: {path} is a Mistral tekken tokenizer, which tokbin does not "
                          "read (its ids are offset by its special tokens and its vocabulary is "
                          "cut to a configured size); use the model's Hugging Face "
                          "tokenizer.json instead (tokenize.encoding: hf:<model id>, or a local "
                          "copy)")
    raise TokbinError(f"{where}: {path} is JSON but not a tokenizer.json (it has no "
                      "model.type; tokenizer_config.json and vocab.json are not the tokenizer "
                      "itself); point it at the repo's tokenizer.json")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _looks_like_model_proto(head: bytes) -> bool:
    """A ModelProto starts with field 1 (pieces, length-delimited: 0x0A), a varint length and a
    piece message whose own field 1 (its text, 0x0A) comes first, then its score (0x15) or type
    (0x18). The first two pieces are checked; sentencepiece itself has the last word."""
    try:
        i = 0
        for _ in range(2):
            if head[i] != 0x0A:
                return False
            size, i = _varint(head, i + 1)
            piece, i = head[i:i + size], i + size
            if len(piece) != size or piece[:1] != b"\x0a":
                return False
            text_size, j = _varint(piece, 1)
            piece[j:j + text_size].decode("utf-8")
            rest = piece[j + text_size:]
            if rest and rest[0] not in (0x15, 0x18):
                return False
        return True
    except (IndexError, UnicodeDecodeError):
        return False


def parse_ranks(data: bytes, path: Path, where: str) -> dict[bytes, int]:
    """A tiktoken rank file's tokens and ranks, checked: every line '<base64> <rank>', no token
    or rank twice, no empty token (tiktoken panics on a rank given twice: checked first)."""
    ranks: dict[bytes, int] = {}
    seen: dict[int, int] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank_text = line.split(b" ")
            token_bytes = base64.b64decode(token, validate=True)
            rank = int(rank_text)
        except (ValueError, binascii.Error):
            raise TokbinError(f"{where}: {path}:{number} is not '<base64 token> <rank>' "
                              f"({line[:60]!r}); the rank file is damaged") from None
        if not 0 <= rank < 1 << 32:  # tiktoken's ranks are 32-bit
            raise TokbinError(f"{where}: {path}:{number} gives the rank {rank}, outside 0 .. "
                              "4,294,967,295; the rank file is damaged")
        if not token_bytes:
            raise TokbinError(f"{where}: {path}:{number} gives rank {rank} to an empty token; "
                              "no text encodes to it, so this is not a usable rank file")
        if token_bytes in ranks:
            raise TokbinError(f"{where}: {path}:{number}: token {token_bytes!r} is listed twice")
        if rank in seen:
            raise TokbinError(f"{where}: {path}:{number}: rank {rank} is also the rank of line "
                              f"{seen[rank]}; every token needs its own rank")
        ranks[token_bytes] = rank
        seen[rank] = number
    if not ranks:
        raise TokbinError(f"{where}: {path} holds no ranks")
    return ranks
