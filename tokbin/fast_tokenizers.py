"""What the fast engine loads for each kind of tokenizer, and which tokenizers it may run.

fastokens gives its reference library's ids only where tokbin's differential runs proved it
(`python -m bench.bench_engines --differential`; docs/tokenizers.md): on the characters of the
proven class (tokbin.fast_path: gpt2's measured code point table for gpt2 and r50k_base, the
conservative rule for the others), with these tokenizers:

- gpt2 and r50k_base (tiktoken names): fast_path's tokenizer.json, derived from tiktoken;
- a tiktoken rank file split by Llama 3's or o200k_base's (Llama 4's) regex, which fastokens
  scans with its own hand-written code: a tokenizer.json built here from the ranks (every split
  of a token into two tokens is a merge, ordered by the token's rank, as transformers'
  TikTokenConverter builds them: Llama 3 has tokens no single merge makes);
- a byte-level BPE tokenizer.json in a layout the runs swept: GPT-2's ByteLevel pre-tokenizer,
  alone, after NFC (GPT-NeoX) or after single digits (SmolLM), or Llama 3's Split + ByteLevel;
  with no added tokens but special ones (those match before any rule the runs covered).

Everything else runs on its reference library, and `fast_refusal` says why. Its regex is the
reason: fastokens runs any other pattern with PCRE2, whose \\s matches U+180E, which Unicode,
tiktoken and tokenizers do not count as whitespace.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tokbin.fast_path import cached_text, spell, tokenizer_json
from tokbin.format import RANK_FILE, SENTENCEPIECE, TIKTOKEN, TOKENIZER_JSON
from tokbin.fsio import user_cache_dir
from tokbin.rank_cache import ranks_digest
from tokbin.tokenizer_spec import LLAMA3_PATTERN, O200K_PATTERN

if TYPE_CHECKING:
    from tokbin.vocab import Vocabulary

# tiktoken encodings the fast engine was differentially tested on (gpt2's byte-level BPE).
FAST_ENCODINGS = ("gpt2", "r50k_base")
# presets whose regex fastokens scans natively (not with PCRE2)
PROVEN_PATTERNS = {"llama3": LLAMA3_PATTERN, "o200k_base": O200K_PATTERN}
RANKS_JSON_VERSION = 1  # part of a built model's cached name: bump when _ranks_model changes

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}


def fast_refusal(vocabulary: Vocabulary) -> str | None:
    """None when the fast engine may run `vocabulary`'s tokenizer; else why it may not."""
    kind = vocabulary.kind
    if kind == TIKTOKEN:
        return (None if vocabulary.spec.encoding in FAST_ENCODINGS else
                f"of the tiktoken encodings it runs {', '.join(FAST_ENCODINGS)} only")
    if kind == RANK_FILE:
        return None if _proven_pattern(vocabulary.pattern) else (
            "its split regex (tokenize.pattern) is not one it runs exactly; those are the "
            f"presets {', '.join(PROVEN_PATTERNS)}")
    if kind == TOKENIZER_JSON:
        return _layout_refusal(json.loads(vocabulary.data))
    if kind == SENTENCEPIECE:
        return "fastokens reads no SentencePiece model"
    return f"it does not know the kind {kind}"


def fast_tokenizer_json(vocabulary: Vocabulary) -> str:
    """The tokenizer.json fastokens loads for `vocabulary` (one `fast_refusal` accepts): with
    the separator as its only special token, or none (the engine then adds it)."""
    if vocabulary.kind == TIKTOKEN:
        return tokenizer_json(vocabulary.encoding)
    separator = {"id": vocabulary.eot_id, "content": vocabulary.eot_name, "single_word": False,
                 "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    if vocabulary.kind == RANK_FILE:
        ranks = vocabulary.encoding._mergeable_ranks  # private in tiktoken, stable
        path = (user_cache_dir() / "tokenizers"
                / f"ranks-v{RANKS_JSON_VERSION}-{ranks_digest(ranks)[:32]}.model.json")
        model = cached_text(path, lambda: json.dumps(_ranks_model(ranks), ensure_ascii=False))
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": vocabulary.pattern}, "behavior": "Isolated",
             "invert": False}, {**_BYTE_LEVEL, "use_regex": False}]}
        head = {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": [separator], "normalizer": None, "pre_tokenizer": pre,
                "post_processor": None, "decoder": None}
        return json.dumps(head, ensure_ascii=False)[:-1] + ', "model": ' + model + "}"
    doc = json.loads(vocabulary.data)  # the bytes the vocabulary checked, not read again
    # Only the separator stays special (keeping its id): every other special token's text is
    # text, as the reference encodes it; decoding and templates are no concern of encoding.
    doc.update(added_tokens=[separator], truncation=None, padding=None, post_processor=None,
               decoder=None)
    return json.dumps(doc, ensure_ascii=False)


def _proven_pattern(pattern: str) -> bool:
    return pattern in PROVEN_PATTERNS.values()


def _ranks_model(ranks: dict[bytes, int]) -> dict:
    """A BPE model giving tiktoken's ids for these ranks: every split (a, b) of a token into
    two tokens, ordered by the rank of a + b, then the length of a."""
    merges = sorted((rank, i, token) for token, rank in ranks.items()
                    for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks)
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": True, "vocab": {spell(token): rank for token, rank in ranks.items()},
            "merges": [f"{spell(token[:i])} {spell(token[i:])}" for _, i, token in merges]}


def _layout_refusal(doc: dict) -> str | None:
    """Why a tokenizer.json's layout is not one the differential runs swept, or None."""
    model = doc.get("model") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')}, not BPE"
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or \
            model.get("end_of_word_suffix"):
        return "its BPE model is not byte-level (byte_fallback or subword affixes)"
    normalizer = doc.get("normalizer")
    if normalizer is not None and normalizer != {"type": "NFC"}:
        return f"its normalizer {_component(normalizer)} is not one the runs swept (NFC)"
    if _pre_tokenizer_layout(doc.get("pre_tokenizer")) is None:
        return (f"its pre_tokenizer {_component(doc.get('pre_tokenizer'))} is not one the runs "
                "swept (GPT-2's ByteLevel, alone or after single Digits; Llama 3's Split + "
                "ByteLevel)")
    plain = [t["content"] for t in doc.get("added_tokens") or [] if not t.get("special")]
    if plain:
        return f"it has non-special added tokens ({', '.join(plain[:3])}...)"
    return None


def _pre_tokenizer_layout(pre) -> str | None:
    """The swept layout `pre` is, or None."""
    steps = pre["pretokenizers"] if isinstance(pre, dict) and pre.get("type") == "Sequence" \
        else [pre]
    if steps == [{**_BYTE_LEVEL, "use_regex": True}]:
        return "ByteLevel"
    if steps == [{"type": "Digits", "individual_digits": True}, {**_BYTE_LEVEL,
                                                                 "use_regex": True}]:
        return "Digits + ByteLevel"
    if len(steps) == 2 and steps[1] == {**_BYTE_LEVEL, "use_regex": False}:
        split = steps[0]
        if (split.get("type") == "Split" and split.get("behavior") == "Isolated"
                and split.get("invert") is False
                and _proven_pattern((split.get("pattern") or {}).get("Regex"))):
            return "Split + ByteLevel"
    return None


def _component(component) -> str:
    if not isinstance(component, dict):
        return str(component)
    if component.get("type") == "Sequence":
        inner = component.get("normalizers") or component.get("pretokenizers") or []
        return "Sequence[" + ", ".join(_component(c) for c in inner) + "]"
    return str(component.get("type"))
