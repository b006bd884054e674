"""A tokenizer loaded from its spec, whatever its kind: its vocabulary size, its end-of-text
token, its reference engine (tokbin.reference_engines) and its decoder.

`load_vocabulary(spec)` (once per process) reads the file, refuses bytes other than those the
spec was resolved from, loads them with the kind's library, and resolves tokenize.eot_token to
one special token: given, it must be one of the tokenizer's special tokens (tiktoken special
tokens, tokenizer.json special added tokens, SentencePiece control pieces); else the
tokenizer's own end-of-text token.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.format import (RANK_FILE, SENTENCEPIECE, TIKTOKEN, TOKENIZER_JSON, Meta,
                           TokenizerRecord)
from tokbin.rank_cache import CACHED_ENCODINGS, cached_encoding, write_cached_encoding
from tokbin.reference_engines import SentencePieceEngine, TiktokenEngine, TokenizersEngine
from tokbin.tokenizer_files import parse_ranks, read_file, sha256_of
from tokbin.tokenizer_spec import PATTERN_PRESETS, TokenizerSpec, special_token_pairs

# A tokenizer.json's or rank file's own end-of-text token, when exactly one of these is special.
END_OF_TEXT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
UTF8_BYTES = [*range(0x00, 0xC0), *range(0xC2, 0xF5)]  # every byte valid UTF-8 text can hold


class Vocabulary:
    """A loaded tokenizer. `specials` are its special tokens {text: id}."""

    def __init__(self, spec: TokenizerSpec, n_vocab: int, specials: dict[str, int],
                 own_eot: list[str], own_eot_source: str):
        self.spec, self.kind, self.n_vocab, self.specials = spec, spec.kind, n_vocab, specials
        self.eot_name, self.eot_id = _separator(spec, specials, own_eot, own_eot_source)

    def reference_engine(self):
        raise NotImplementedError

    def decode_piece(self, ids: list[int]) -> str:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`; each end-of-text id shown as its token's text."""
        pieces, start = [], 0
        for at in [i for i, token in enumerate(ids) if token == self.eot_id] + [len(ids)]:
            pieces.append(self.decode_piece(ids[start:at]))
            start = at + 1
        return self.eot_name.join(pieces)

    def record(self) -> TokenizerRecord:
        """What meta.json records of it."""
        spec = self.spec
        rank_file = self.kind == RANK_FILE
        return TokenizerRecord(self.kind, spec.file, spec.sha256, spec.hub,
                               self.pattern if rank_file else None,
                               dict(self.specials) if rank_file else None, self.eot_name)


class TiktokenVocabulary(Vocabulary):
    """A tiktoken encoding name, or a rank file with its pattern and special tokens."""

    def __init__(self, spec: TokenizerSpec, encoding, own_eot: list[str], source: str):
        self.encoding, self.pattern = encoding, encoding._pat_str
        super().__init__(spec, encoding.n_vocab, dict(encoding._special_tokens), own_eot, source)

    def reference_engine(self) -> TiktokenEngine:
        return TiktokenEngine(self.encoding, self.eot_id)

    def decode_piece(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)


class TokenizersVocabulary(Vocabulary):
    def __init__(self, spec: TokenizerSpec, data: bytes, tokenizer):
        self.data, self.tokenizer = data, tokenizer  # the file's checked bytes, and it loaded
        specials = {token.content: i for i, token in tokenizer.get_added_tokens_decoder().items()
                    if token.special}
        n_vocab = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        own, source = ([spec.config_eos], f"its tokenizer_config.json's eos_token "
                                          f"{spec.config_eos} as a special added token") \
            if spec.config_eos else (END_OF_TEXT_NAMES, "a special added token named "
                                     + " or ".join(END_OF_TEXT_NAMES))
        super().__init__(spec, n_vocab, specials, list(own), source)

    def reference_engine(self) -> TokenizersEngine:
        return TokenizersEngine(self.tokenizer, self.eot_id)

    def decode_piece(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class SentencePieceVocabulary(Vocabulary):
    def __init__(self, spec: TokenizerSpec, model_proto: bytes, processor):
        self.model_proto, self.processor = model_proto, processor
        size = processor.get_piece_size()
        specials = {processor.id_to_piece(i): i for i in range(size) if processor.is_control(i)}
        eos = processor.eos_id()
        own = [processor.id_to_piece(eos)] if eos >= 0 else []
        super().__init__(spec, size, specials, own, "its eos piece")

    def reference_engine(self) -> SentencePieceEngine:
        return SentencePieceEngine(self.model_proto, self.eot_id)

    def decode_piece(self, ids: list[int]) -> str:
        return self.processor.decode(ids)


@functools.lru_cache(maxsize=2)
def load_vocabulary(spec: TokenizerSpec) -> Vocabulary:
    if spec.kind == TIKTOKEN:
        return TiktokenVocabulary(spec, get_encoding(spec.encoding), ["<|endoftext|>"],
                                  "its <|endoftext|>")
    data = read_checked(spec)
    if spec.kind == RANK_FILE:
        return TiktokenVocabulary(spec, _rank_file_encoding(spec, data),
                                  ["<|endoftext|>", "<|end_of_text|>"],
                                  "<|endoftext|> or <|end_of_text|> in tokenize.special_tokens")
    if spec.kind == TOKENIZER_JSON:
        return TokenizersVocabulary(spec, data, _load_tokenizer_json(spec, data))
    if spec.kind == SENTENCEPIECE:
        return SentencePieceVocabulary(spec, data, _load_sentencepiece(spec, data))
    raise TokbinError(f"unknown tokenizer kind {spec.kind!r}")


def recorded_vocabulary(meta: Meta, folder: Path, given: Path | None = None) -> Vocabulary:
    """The tokenizer `meta` (a meta.json in `folder`) records, loaded: a tiktoken encoding by
    name; a file from `given`, else where it was (under the DVC project holding `folder`, or
    here), else from the Hub's cache at the recorded commit. Only a file of the recorded sha256
    is used."""
    from tokbin.dvclock import find_dvc_lock
    record = meta.tokenizer
    if record.kind == TIKTOKEN:
        return load_vocabulary(TokenizerSpec(meta.encoding, TIKTOKEN, eot_token=record.eot_name))
    lock = find_dvc_lock(folder.resolve())
    candidates = [given] if given else [root / record.file for root in
                                        ([lock.parent] if lock else []) + [Path.cwd()]]
    if given is None and record.hub is not None and not any(p.is_file() for p in candidates):
        from tokbin.hub import fetch_model_file
        candidates.append(fetch_model_file(record.hub.repo, record.hub.sha, record.file))
    for candidate in candidates:
        if candidate.is_file() and sha256_of(read_file(candidate, "--tokenizer")) == record.sha256:
            specials = record.special_tokens
            return load_vocabulary(TokenizerSpec(
                meta.encoding, record.kind, record.file, str(candidate.resolve()), record.sha256,
                record.hub, record.pattern,
                special_token_pairs(specials) if specials else None,
                record.eot_name))
    raise TokbinError(f"decoding needs the tokenizer meta.json records, {record.file} with sha256 "
                      f"{record.sha256[:16]}...; {', '.join(map(str, candidates))} is missing or "
                      "another file; pass --tokenizer PATH to a copy of that file")


def get_encoding(name: str, setting: str = "tokenize.encoding"):
    """tiktoken's encoding `name` (given by `setting`, which an unknown name's message
    names); gpt2's ranks from tokbin's cache of them when it has a good copy
    (tokbin.rank_cache: several times faster than tiktoken's own load)."""
    import tiktoken
    if name in CACHED_ENCODINGS:
        cached = cached_encoding(name)
        if cached is not None:
            return cached
    if name not in tiktoken.list_encoding_names():  # without loading any vocabulary
        raise TokbinError(f"unknown tiktoken encoding {name!r}; set {setting} to one of "
                          f"{', '.join(tiktoken.list_encoding_names())}")
    try:
        encoding = tiktoken.get_encoding(name)
    except OSError as e:  # requests' connection errors are OSErrors
        raise TokbinError(f"tiktoken could not fetch the {name!r} vocabulary ({type(e).__name__});"
                          " connect to the internet once, or set TIKTOKEN_CACHE_DIR to a folder "
                          "holding tiktoken's cached files") from None
    if name in CACHED_ENCODINGS:
        write_cached_encoding(encoding)
    return encoding


def read_checked(spec: TokenizerSpec) -> bytes:
    data = read_file(Path(spec.path), "tokenize.encoding")
    if sha256_of(data) != spec.sha256:
        raise TokbinError(f"{spec.file} is not the file tokenize started with (its sha256 is now "
                          f"{sha256_of(data)[:16]}..., was {spec.sha256[:16]}...); it changed "
                          "during the run: rerun")
    return data


def expand_pattern(pattern: str) -> str:
    """A preset's regex (a tiktoken encoding name gives that encoding's), else `pattern`."""
    import tiktoken
    if pattern in PATTERN_PRESETS:
        return PATTERN_PRESETS[pattern]
    if pattern in tiktoken.list_encoding_names():
        return get_encoding(pattern)._pat_str  # private in tiktoken, stable across its releases
    return pattern


def expand_special_tokens(given: str | tuple[tuple[str, int], ...] | None,
                          n_ranks: int) -> dict[str, int]:
    """A rank file's special tokens {text: id}: a preset's (numbered from `n_ranks` as
    llama-models numbers them) or those given."""
    if given == "llama3":  # llama-models 0.0.x; 0.2+ renames 128011.. (ids 128000/1 stay)
        names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                 "<|python_tag|>"]
        names += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(names))]
        return {name: n_ranks + i for i, name in enumerate(names)}
    return dict(given or ())


def _rank_file_encoding(spec: TokenizerSpec, data: bytes):
    """A tiktoken Encoding of the rank file, checked first (tiktoken panics on a rank given
    twice and accepts a special token that takes a rank's id)."""
    import tiktoken
    ranks = parse_ranks(data, Path(spec.file), "tokenize.encoding")
    missing = [b for b in UTF8_BYTES if bytes([b]) not in ranks]
    if missing:
        raise TokbinError(f"{spec.file} has no token for byte 0x{missing[0]:02x} (and "
                          f"{len(missing) - 1} more bytes): tiktoken cannot encode text holding "
                          "it; this is not a byte-level BPE rank file")
    specials = expand_special_tokens(spec.special_tokens, len(ranks))
    taken = set(ranks.values())
    for name, token_id in specials.items():
        if token_id in taken or not 0 <= token_id < 1 << 32:  # tiktoken's ids are 32-bit
            what = ("a rank of " + spec.file if token_id in taken else "negative" if token_id < 0
                    else "beyond tiktoken's 32-bit ids")
            raise TokbinError(f"tokenize.special_tokens gives {name} the id {token_id}, {what}; "
                              f"special ids come after the ranks (from {max(taken) + 1})")
    if len(set(specials.values())) != len(specials):
        raise TokbinError("tokenize.special_tokens gives two tokens the same id")
    try:
        return tiktoken.Encoding(f"tokbin-{spec.sha256[:16]}", pat_str=expand_pattern(spec.pattern),
                                 mergeable_ranks=ranks, special_tokens=specials)
    except ValueError as e:
        raise TokbinError(f"tokenize.pattern is not a regex tiktoken can compile ({e}); give "
                          "the model's split regex, or a preset name") from None


def _load_tokenizer_json(spec: TokenizerSpec, data: bytes):
    import tokenizers
    dropout = json.loads(data)["model"].get("dropout")
    if dropout:
        raise TokbinError(f"{spec.file}: its BPE model has dropout {dropout}, so its ids are "
                          "random; tokbin needs the same ids on every run: set \"dropout\": "
                          "null in the file's model")
    try:
        tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises plain Exceptions
        raise TokbinError(f"{spec.file}: the tokenizers library cannot load it ({e}); is it a "
                          f"tokenizer.json for tokenizers {tokenizers.__version__}?") from None
    tokenizer.no_truncation()  # a truncation setting would silently cut documents
    tokenizer.no_padding()
    tokenizer.encode_special_tokens = True
    return tokenizer


def _load_sentencepiece(spec: TokenizerSpec, data: bytes):
    import sentencepiece
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=data)
    except Exception as e:  # RuntimeError or OSError, by version
        raise TokbinError(f"{spec.file}: sentencepiece cannot load it ({e}); is the model "
                          "file complete?") from None


def _separator(spec: TokenizerSpec, specials: dict[str, int], own: list[str],
               own_source: str) -> tuple[str, int]:
    """(text, id) of the end-of-text token: tokenize.eot_token, else the tokenizer's own."""
    if spec.eot_token is not None:
        if spec.eot_token in specials:
            return spec.eot_token, specials[spec.eot_token]
        raise TokbinError(f"tokenize.eot_token {spec.eot_token!r} is not a special token of "
                          f"{spec.encoding}; its special tokens: {_listing(spec, specials)}")
    found = [name for name in own if name in specials]
    if len(found) == 1:
        return found[0], specials[found[0]]
    seen = f"several: {', '.join(found)}" if found else "none"
    raise TokbinError(f"tokenize.eot_token is null, so it is {spec.encoding}'s own end-of-text "
                      f"token, {own_source}: found {seen}; set tokenize.eot_token to one of its "
                      f"special tokens: {_listing(spec, specials)}")


def _listing(spec: TokenizerSpec, specials: dict[str, int], most: int = 24) -> str:
    if not specials:
        return "none" + (" (a rank file's come from tokenize.special_tokens: set it)"
                         if spec.kind == RANK_FILE else "")
    names = sorted(specials, key=specials.get)
    more = f" ... and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(f"{name} ({specials[name]})" for name in names[:most]) + more
