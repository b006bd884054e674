"""The fast engine is byte-identical to tiktoken: by routing, by evidence, and by a guard.

Every test compares against tiktoken's encode_ordinary, the reference. The large differential
run (over a million documents) is `python -m bench.bench_engines --differential`; this is its
CI-sized subset.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from support.engine_faults import shift_joined_ids
from support.text_classes import CLASSES, class_documents
from tokbin import fast_path
from tokbin.engines import CROSS_CHECK_ONE_IN, FastokensEngine, effective_engine, make_engine
from tokbin.errors import TokbinError
from tokbin.fast_path import (derive_tokenizer_json, documents_containing, fast_path_mask,
                              tokenizer_json, unsafe_codepoints)
from tokbin.readers import TextBatch
from tokbin.reference_engines import TiktokenEngine
from tokbin.tokenizer_spec import resolve_tokenizer
from tokbin.vocab import load_vocabulary

DOCS_PER_CLASS = 1000
# Strings on which tokie, the first fast engine tried, disagrees with tiktoken: non-ASCII
# whitespace and unassigned code points (routed to tiktoken), and tabs (ASCII: fast path).
KNOWN_HOSTILE = [" \u2002\x0b", "\xa0\xa0\x0c", "\U00033108蕳", "a\u3000\tb"]
TOKIE_TAB_CASES = ["\t'm", "x \t'll be", "a\tb\t\tc", "tab\tthen\n\t's", "\x0b\x0c\t 's"]


def reference(encoding, texts):
    """The joined layout, by tiktoken: each text's encode_ordinary ids, then end-of-text."""
    want = [encoding.encode_ordinary(t) for t in texts]
    return [i for w in want for i in [*w, encoding.eot_token]], [len(w) for w in want]


def assert_exact(engine, encoding, texts):
    ids, lengths = engine.encode_batch(TextBatch.from_texts(texts))
    want_ids, want_lengths = reference(encoding, texts)
    assert lengths.tolist() == want_lengths
    assert ids.tolist() == want_ids
    assert ids.dtype == np.uint32


def fast_texts(docs):
    """The documents the joined fast path takes: in the class, no literal <|endoftext|>."""
    mask = fast_path_mask(TextBatch.from_texts(docs))
    return [t for t, ok in zip(docs, mask) if ok and SEPARATOR not in t]


SEPARATOR = "<|endoftext|>"


def fastokens_asked(name: str):
    """The engine tokbin runs for tiktoken encoding `name` when fastokens is asked for."""
    vocabulary = load_vocabulary(resolve_tokenizer(name))
    return make_engine(effective_engine("fastokens", vocabulary), vocabulary)


@pytest.fixture(scope="module")
def fast():
    return fastokens_asked("gpt2")


def test_the_tokenizer_json_is_gpt2_derived_from_tiktoken_with_no_special_tokens(gpt2):
    spec = json.loads(tokenizer_json(gpt2))
    assert len(spec["model"]["vocab"]) == gpt2.n_vocab - 1 == 50256
    assert len(spec["model"]["merges"]) == 50000
    assert spec["model"]["merges"][0] == "Ġ t"  # gpt2's first merge: " " + "t"
    assert spec["added_tokens"] == []  # so a literal <|endoftext|> is text


def test_the_loaded_tokenizer_splits_on_the_separator_and_gives_it_the_eot_id(fast, gpt2):
    ids, _ = fast.tokenizer.encode_batch_flat([f"a{SEPARATOR}{SEPARATOR} b{SEPARATOR}"])
    assert np.frombuffer(ids, np.uint32).tolist() == [
        *gpt2.encode_ordinary("a"), gpt2.eot_token, gpt2.eot_token,
        *gpt2.encode_ordinary(" b"), gpt2.eot_token]


def test_the_tokenizer_json_is_derived_once_and_then_read_from_the_user_cache(gpt2, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    derived = tokenizer_json(gpt2)
    [cached] = (tmp_path / "tokbin" / "tokenizers").iterdir()
    assert cached.name.startswith("gpt2-v1-") and cached.read_text(encoding="utf-8") == derived
    monkeypatch.setattr(fast_path, "derive_tokenizer_json", lambda encoding: pytest.fail("derived"))
    assert tokenizer_json(gpt2) == derived


def test_an_unwritable_cache_only_costs_the_derivation(gpt2, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert tokenizer_json(gpt2) == derive_tokenizer_json(gpt2)


@pytest.mark.parametrize("name", list(CLASSES))
def test_the_engine_equals_tiktoken_on_every_character_class(fast, gpt2, name):
    assert_exact(fast, gpt2, class_documents(name, DOCS_PER_CLASS, seed=7))


@pytest.mark.parametrize("name", list(CLASSES))
def test_fastokens_alone_equals_tiktoken_on_the_documents_it_is_given(fast, gpt2, name):
    docs = class_documents(name, DOCS_PER_CLASS, seed=11)
    joined = fast_texts(docs)
    ids, lengths = fast.encode_joined(TextBatch.from_texts(joined))
    assert (ids.tolist(), lengths.tolist()) == reference(gpt2, joined)
    separately = [t for t in docs if SEPARATOR in t and t not in joined]
    ids, lengths = fast.encode_separately(TextBatch.from_texts(separately))
    assert (ids.tolist(), lengths.tolist()) == reference(gpt2, separately)


def test_every_safe_character_in_hostile_contexts_sampled(fast, gpt2):
    safe = np.flatnonzero(~unsafe_codepoints())[::37]
    contexts = ["{c}", "a{c}b", " {c}{c}", "{c}'s", "1{c}2", "\n{c} ", "  {c}x", "{c}\r\n"]
    texts = [ctx.format(c=chr(cp)) for cp in safe for ctx in contexts]
    assert fast_path_mask(TextBatch.from_texts(texts)).all()
    ids, lengths = fast.encode_joined(TextBatch.from_texts(texts))
    assert (ids.tolist(), lengths.tolist()) == reference(gpt2, texts)


def test_the_mask_matches_a_per_character_check(gpt2):
    unsafe = unsafe_codepoints()
    for name in CLASSES:
        texts = class_documents(name, 500, seed=3)
        expected = [not any(unsafe[ord(c)] for c in t) for t in texts]
        assert fast_path_mask(TextBatch.from_texts(texts)).tolist() == expected, name


def test_the_mask_marks_exactly_the_documents_holding_unsafe_characters():
    # Unsafe characters first, last, repeated and alone; safe multi-byte neighbours.
    texts = ["\u2002start", "end\u2002", "“ok” é", "\u2002 and \u2002 and \t", "\x85", "日本",
             "", "a\u3000", "👍🏽\ue000", "fine\t"]
    expected = [False, False, True, False, False, True, True, False, False, True]
    assert fast_path_mask(TextBatch.from_texts(texts)).tolist() == expected


def test_the_mask_is_the_same_with_many_distinct_unsafe_characters_in_a_batch():
    # Beyond a few distinct unsafe characters the mask scans per document, not per character.
    unsafe = [chr(cp) for cp in np.flatnonzero(unsafe_codepoints()[:0x3000])[:40]]
    texts = [f"safe {i} “quoted”" if i % 3 else f"x{unsafe[i % 40]}y" for i in range(120)]
    expected = [bool(i % 3) for i in range(120)]
    assert fast_path_mask(TextBatch.from_texts(texts)).tolist() == expected


def test_unicode_spaces_and_unassigned_code_points_leave_the_fast_path_and_ascii_stays():
    texts = ["plain story.", *KNOWN_HOSTILE, "“Hi,” said José. 日本語 👍🏽", "\u00a0", "",
             "\ue000 private use", *TOKIE_TAB_CASES, "form\x0cfeed", "".join(map(chr, range(128)))]
    assert fast_path_mask(TextBatch.from_texts(texts)).tolist() == [
        True, *[False] * len(KNOWN_HOSTILE), True, False, True, False,
        *[True] * (len(TOKIE_TAB_CASES) + 2)]


def test_tabs_vertical_tabs_and_form_feeds_are_exact_on_the_fast_path(fast, gpt2):
    texts = [*TOKIE_TAB_CASES, *class_documents("ascii_tabs", 300, seed=13)]
    assert fast_path_mask(TextBatch.from_texts(texts)).all()
    assert_exact(fast, gpt2, texts)


def test_documents_containing_finds_whole_matches_inside_one_document():
    batch = TextBatch.from_texts(["<|endof", "text|>", "a<|endoftext|>", "", "<|endoftext|>b"])
    assert documents_containing(batch, SEPARATOR.encode()).tolist() == [
        False, False, True, False, True]


def test_routing_keeps_document_order_across_the_three_routes(fast, gpt2, monkeypatch):
    plain = class_documents("ascii_plain", 50, seed=5)
    hostile = KNOWN_HOSTILE * 4
    literal = [f"a story{SEPARATOR}", f"{SEPARATOR}“quoted”", SEPARATOR]
    odd = [*hostile, *literal]
    texts = [t for pair in zip(plain, odd) for t in pair] + plain[len(odd):]
    sent = {"tiktoken": [], "separately": []}
    to_tiktoken, separately = fast.reference.encode_texts, fast.encode_separately
    monkeypatch.setattr(fast.reference, "encode_texts", lambda texts: sent["tiktoken"].extend(
        texts) or to_tiktoken(texts))
    monkeypatch.setattr(fast, "encode_separately", lambda batch, members: sent["separately"]
                        .extend(batch.texts(members)) or separately(batch, members))
    assert_exact(fast, gpt2, texts)
    assert sent == {"tiktoken": hostile, "separately": literal}


def test_batches_of_each_route_alone_mixed_and_empty_are_exact(fast, gpt2):
    for texts in [KNOWN_HOSTILE, ["one"], ["", "", "x"], [], ["\t"], ["a", "\t", "b"],
                  [SEPARATOR], ["", SEPARATOR, ""], [f"\t{SEPARATOR}", "x", f"{SEPARATOR} y"],
                  ["<|endof", "text|>"], ["x<|", "|>", "<|endoftext|", ">"]]:
        assert_exact(fast, gpt2, texts)


def test_a_missing_end_of_text_id_stops_the_fast_path(fast, monkeypatch):
    real = fast.tokenizer

    class DroppingTokenizer:
        def encode_batch_flat(self, texts):
            ids = np.frombuffer(real.encode_batch_flat(texts)[0], np.uint32)
            return ids[:-1].tobytes(), b""

    monkeypatch.setattr(fast, "tokenizer", DroppingTokenizer())
    with pytest.raises(TokbinError, match="end-of-text ids for 2 documents.*engine: tiktoken"):
        fast.encode_batch(TextBatch.from_texts(["one", "two"]))


def test_the_cross_check_stops_on_a_mismatch(fast, monkeypatch):
    shift_joined_ids(fast, monkeypatch)
    with pytest.raises(TokbinError, match="disagrees with tiktoken.*tokenize.engine: tiktoken"):
        fast.encode_batch(TextBatch.from_texts(["A perfectly ordinary story."]))


def test_the_cross_check_samples_one_document_in_n_at_least_one_per_batch(fast, gpt2,
                                                                        monkeypatch):
    checked = []

    def counting(text):
        checked.append(text)
        return gpt2.encode_ordinary(text)

    monkeypatch.setattr(fast.reference, "encode_ordinary", counting)
    texts = class_documents("ascii_plain", 3 * CROSS_CHECK_ONE_IN, seed=1)
    fast.encode_batch(TextBatch.from_texts(texts))
    assert len(checked) == 3
    fast.encode_batch(TextBatch.from_texts(texts))  # the same batch: the same sample
    assert checked[3:] == checked[:3]
    fast.encode_batch(TextBatch.from_texts(texts[:1]))
    assert len(checked) == 7


def test_a_thread_copy_shares_the_tokenizer_and_owns_its_tiktoken_encoding(fast, gpt2):
    copy = fast.thread_copy()
    assert copy.tokenizer is fast.tokenizer
    assert copy.encoding is not fast.encoding and copy.reference.encoding is copy.encoding
    assert copy.encoding._mergeable_ranks == gpt2._mergeable_ranks
    assert_exact(copy, gpt2, class_documents("mixed", 200, seed=4))


def test_r50k_base_is_fast_and_other_encodings_fall_back_to_tiktoken(capsys):
    r50k = fastokens_asked("r50k_base")
    assert isinstance(r50k, FastokensEngine)
    assert_exact(r50k, r50k.encoding, class_documents("mixed", 300, seed=2))
    assert isinstance(fastokens_asked("cl100k_base"), TiktokenEngine)
    assert "encoding cl100k_base is tokenized with tiktoken" in capsys.readouterr().err


def test_the_tokenize_stage_writes_the_same_tokens_with_either_engine(tmp_path):
    from conftest import write_parquet_dataset
    from tokbin.source import materialize
    from tokbin.tokenize import tokenize_dataset
    texts = [t for name in CLASSES for t in class_documents(name, 40, seed=9)]
    dataset = write_parquet_dataset(tmp_path / "ds", {"train": texts, "validation": texts[:50]})
    raw = tmp_path / "raw"
    materialize(str(dataset), "main", ["train", "validation"], "text", raw)
    outputs = {}
    for engine in ("tiktoken", "fastokens"):
        out = tmp_path / engine
        tokenize_dataset(raw, out, ["train", "validation"], "text", "gpt2", "append",
                         engine=engine, workers=2)
        outputs[engine] = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".json"}
    assert outputs["fastokens"] == outputs["tiktoken"]
    assert len(outputs["tiktoken"]) == 4  # two bins, two doclens
