"""The fast engine is byte-identical to tiktoken: by routing, by evidence, and by a guard.

Every test compares against tiktoken's encode_ordinary, the reference. The large differential
run (over a million documents) is `python -m bench.bench_engines --differential`; this is its
CI-sized subset.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from support.engine_faults import shift_joined_ids
from support.text_classes import CLASSES, class_documents
from tokbin import codepoints, cross_check, engines, fast_path
from tokbin.cross_check import CHECK_PIECE_TOKENS, pretoken_cut
from tokbin.engines import FastokensEngine, effective_engine, make_engine
from tokbin.errors import TokbinError
from tokbin.fast_path import (conservative_class, derive_tokenizer_json, documents_containing,
                              proven_class, tokenizer_json)
from tokbin.readers import TextBatch
from tokbin.reference_engines import TiktokenEngine
from tokbin.tokenizer_spec import resolve_tokenizer
from tokbin.vocab import load_vocabulary

DOCS_PER_CLASS = 1000
# Strings on which tokie, the first fast engine tried, disagrees with tiktoken: non-ASCII
# whitespace and unassigned code points (on the fast path by the code point table; routed to
# tiktoken by the conservative rule), and tabs (ASCII: fast path).
KNOWN_HOSTILE = [" \u2002\x0b", "\xa0\xa0\x0c", "\U00033108蕳", "a\u3000\tb"]
GPT2 = proven_class("gpt2")  # tiktoken 0.14.0 and fastokens 0.3.5: the table applies
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
    mask = GPT2.mask(TextBatch.from_texts(docs))
    return [t for t, ok in zip(docs, mask) if ok and SEPARATOR not in t]


SEPARATOR = "<|endoftext|>"


def fastokens_asked(name: str):
    """The engine tokbin runs for tiktoken encoding `name` when fastokens is asked for."""
    vocabulary = load_vocabulary(resolve_tokenizer(name))
    return make_engine(effective_engine("fastokens", vocabulary), vocabulary)


@pytest.fixture(scope="module")
def fast():
    return fastokens_asked("gpt2")


@pytest.fixture(scope="module")
def conservative():
    """The proven class for engine versions no code point table was measured on: documents
    with non-ASCII whitespace, controls or unassigned code points go to tiktoken."""
    return conservative_class("gpt2")


@pytest.fixture
def conservative_engine(fast, conservative, monkeypatch):
    engine = fast.thread_copy()
    monkeypatch.setattr(engine, "proven", conservative)
    return engine


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
    head, text = cached.read_text(encoding="utf-8").split("\n", 1)
    assert cached.name.startswith("gpt2-v1-") and text == derived
    assert head == "sha256 " + hashlib.sha256(derived.encode()).hexdigest()
    real = fast_path.derive_tokenizer_json
    monkeypatch.setattr(fast_path, "derive_tokenizer_json", lambda encoding: pytest.fail("derived"))
    assert tokenizer_json(gpt2) == derived
    # a damaged copy (here truncated) is derived and written again, not handed to fastokens
    cached.write_bytes(cached.read_bytes()[:100_000])
    monkeypatch.setattr(fast_path, "derive_tokenizer_json", real)
    assert tokenizer_json(gpt2) == derived
    assert cached.read_text(encoding="utf-8") == f"{head}\n{text}"


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
    safe = np.flatnonzero(~GPT2.unsafe)[::37]
    contexts = ["{c}", "a{c}b", " {c}{c}", "{c}'s", "1{c}2", "\n{c} ", "  {c}x", "{c}\r\n"]
    texts = [ctx.format(c=chr(cp)) for cp in safe for ctx in contexts]
    assert GPT2.mask(TextBatch.from_texts(texts)).all()
    ids, lengths = fast.encode_joined(TextBatch.from_texts(texts))
    assert (ids.tolist(), lengths.tolist()) == reference(gpt2, texts)


def test_the_mask_matches_a_per_character_check(conservative):
    for name in CLASSES:
        texts = class_documents(name, 500, seed=3)
        expected = [not any(conservative.unsafe[ord(c)] for c in t) for t in texts]
        assert conservative.mask(TextBatch.from_texts(texts)).tolist() == expected, name
        assert GPT2.mask(TextBatch.from_texts(texts)).all()  # no surrogates in any class


def test_the_mask_marks_exactly_the_documents_holding_unsafe_characters(conservative):
    # Unsafe characters first, last, repeated and alone; safe multi-byte neighbours.
    texts = ["\u2002start", "end\u2002", "“ok” é", "\u2002 and \u2002 and \t", "\x85", "日本",
             "", "a\u3000", "👍🏽\ue000", "fine\t"]
    expected = [False, False, True, False, False, True, True, False, False, True]
    assert conservative.mask(TextBatch.from_texts(texts)).tolist() == expected


def test_the_mask_is_the_same_with_many_distinct_unsafe_characters_in_a_batch(conservative):
    # Beyond a few distinct unsafe characters the mask scans per document, not per character.
    unsafe = [chr(cp) for cp in np.flatnonzero(conservative.unsafe[:0x3000])[:40]]
    texts = [f"safe {i} “quoted”" if i % 3 else f"x{unsafe[i % 40]}y" for i in range(120)]
    expected = [bool(i % 3) for i in range(120)]
    assert conservative.mask(TextBatch.from_texts(texts)).tolist() == expected


HOSTILE_DOCUMENTS = ["plain story.", *KNOWN_HOSTILE, "“Hi,” said José. 日本語 👍🏽", "\u00a0", "",
                     "\ue000 private use", *TOKIE_TAB_CASES, "form\x0cfeed",
                     "".join(map(chr, range(128))), "\u200b\u202f\ufeff\x85\x9c \xa0x",
                     "\U0001faef \U000105c0 \U00031350 \U00010d40"]


def test_with_the_code_point_table_every_character_is_on_the_fast_path(fast, gpt2):
    # The table measured tiktoken 0.14.0 and fastokens 0.3.5 alike on every code point:
    # no-break and other Unicode spaces, format characters, C1 controls, private use, and
    # letters, digits and emoji newer than this Python's Unicode tables.
    assert GPT2.table is not None and GPT2.only_surrogates
    assert not GPT2.unsafe[:0xD800].any() and not GPT2.unsafe[0xE000:].any()
    assert GPT2.mask(TextBatch.from_texts(HOSTILE_DOCUMENTS)).all()
    assert_exact(fast, gpt2, HOSTILE_DOCUMENTS)


def test_only_surrogates_leave_the_fast_path_with_the_table():
    texts = ["a\ud800b", "한국어 \ud7a3", "\udfff", "ok"]
    assert GPT2.mask(TextBatch.from_texts(texts)).tolist() == [False, True, False, True]
    assert GPT2.mask(TextBatch.from_texts(texts[1::2])).all()  # 0xED leads Hangul too


def test_conservative_routing_sends_unicode_spaces_and_unassigned_code_points_away(
        conservative):
    assert conservative.mask(TextBatch.from_texts(HOSTILE_DOCUMENTS)).tolist() == [
        True, *[False] * len(KNOWN_HOSTILE), True, False, True, False,
        *[True] * (len(TOKIE_TAB_CASES) + 2), False, False]


def test_other_engine_versions_than_the_tables_route_conservatively(monkeypatch, capsys):
    monkeypatch.setattr(codepoints, "installed_versions",
                        lambda: {"tiktoken": "0.15.0", "fastokens": "0.3.5"})
    monkeypatch.setattr(engines, "installed_versions", codepoints.installed_versions)
    proven_class.cache_clear()
    try:
        vocabulary = load_vocabulary(resolve_tokenizer("gpt2"))
        assert engines.effective_engine("fastokens", vocabulary) == "fastokens"
        assert "measured on fastokens 0.3.5 and tiktoken 0.14.0" in capsys.readouterr().err
        assert proven_class("gpt2").table is None
        assert proven_class("gpt2").unsafe[0xA0]
    finally:
        proven_class.cache_clear()


def test_a_dataset_under_fastokens_from_bytes_is_encoded_by_tiktoken_and_says_so(
        tmp_path, monkeypatch, capsys):
    # tiktoken is through a small dataset before fastokens has built its tokenizer
    from conftest import write_parquet_dataset
    from tokbin import executors
    from tokbin.source import materialize
    from tokbin.tokenize import tokenize_dataset
    write_parquet_dataset(tmp_path / "dataset", {"train": class_documents("mixed", 400, seed=2)})
    materialize(str(tmp_path / "dataset"), "main", ["train"], "text", tmp_path / "raw")
    engines_run, real = [], executors.ThreadExecutor.__init__
    monkeypatch.setattr(executors.ThreadExecutor, "__init__", lambda self, settings, workers: (
        engines_run.append(settings.engine), real(self, settings, workers))[1])
    for out, from_bytes in (("small", engines.FASTOKENS_FROM_BYTES), ("fast", 0)):
        monkeypatch.setattr(engines, "FASTOKENS_FROM_BYTES", from_bytes)
        tokenize_dataset(tmp_path / "raw", tmp_path / out, ["train"], "text", "gpt2", "append",
                         engine="fastokens", workers=2)
        if out == "small":
            assert "MB of text: tiktoken is done with it before fastokens would have built its " \
                   "tokenizer" in capsys.readouterr().err
    assert engines_run == ["reference", "fastokens"] and "MB of text" not in capsys.readouterr().err
    assert ((tmp_path / "small" / "train.bin").read_bytes()
            == (tmp_path / "fast" / "train.bin").read_bytes())


@pytest.mark.parametrize("engine", ["fastokens", "reference"])
@pytest.mark.parametrize("bad, what", [(b"\xff", "invalid start byte"),
                                       ("\ud800".encode("utf-8", "surrogatepass"),
                                        "a lone surrogate")])
def test_text_that_is_not_utf8_names_the_document_and_where_in_it(engine, bad, what):
    from tokbin.encode import BatchEncoder, EncodeSettings
    encoder = BatchEncoder(EncodeSettings(resolve_tokenizer("gpt2"), "append", engine))
    data = b"A fine story." + "Ünïcödé ok ".encode() + bad + b" then more."
    batch = TextBatch(np.array([0, 13, len(data)]), data)
    with pytest.raises(TokbinError, match=f"not valid UTF-8: {what}.* at byte 15 of it, which "
                                          r"begins b'\\xc3\\x9cn"):
        encoder(batch)


def test_tabs_vertical_tabs_and_form_feeds_are_exact_on_the_fast_path(fast, gpt2):
    texts = [*TOKIE_TAB_CASES, *class_documents("ascii_tabs", 300, seed=13)]
    assert GPT2.mask(TextBatch.from_texts(texts)).all()
    assert_exact(fast, gpt2, texts)


def test_documents_containing_finds_whole_matches_inside_one_document():
    batch = TextBatch.from_texts(["<|endof", "text|>", "a<|endoftext|>", "", "<|endoftext|>b"])
    assert documents_containing(batch, SEPARATOR.encode()).tolist() == [
        False, False, True, False, True]


def test_routing_keeps_document_order_across_the_three_routes(conservative_engine, gpt2,
                                                              monkeypatch):
    fast = conservative_engine
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
    fast = fast.thread_copy()  # a fresh engine checks its first batch
    shift_joined_ids(fast, monkeypatch)
    with pytest.raises(TokbinError, match="disagrees with tiktoken.*tokenize.engine: tiktoken"):
        fast.encode_batch(TextBatch.from_texts(["A perfectly ordinary story."]))


class CountingReference:
    """gpt2's tiktoken engine, recording every text the cross-check encodes."""

    def __init__(self, encoding):
        self.encoding, self.checked, self.name = encoding, [], "tiktoken"

    def encode_ordinary(self, text):
        self.checked.append(text)
        return self.encoding.encode_ordinary(text)


def counting(engine, gpt2, monkeypatch) -> CountingReference:
    recorder = CountingReference(gpt2)
    monkeypatch.setattr(engine.check, "reference", recorder)
    return recorder


def test_the_cross_check_takes_a_share_of_the_tokens_and_a_rerun_checks_the_same(
        fast, gpt2, monkeypatch):
    share = 32  # CHECK_SHARE's role, made large enough to count on a few batches
    monkeypatch.setattr(cross_check, "CHECK_SHARE", share)
    texts = class_documents("mixed", 3000, seed=1)
    batches = [TextBatch.from_texts(texts[k:k + 150]) for k in range(0, len(texts), 150)]
    runs = []
    for _ in range(2):  # two runs: engines of their own, the same batches
        engine = fast.thread_copy()
        recorder = counting(engine, gpt2, monkeypatch)
        total = sum(int(engine.encode_batch(batch)[1].sum()) for batch in batches)
        runs.append(recorder.checked)
    checked = sum(len(gpt2.encode_ordinary(t)) for t in runs[0])
    assert total / share / 2 < checked < 2 * total / share
    assert runs[1] == runs[0]


def test_batches_that_open_alike_still_share_the_check_by_their_tokens(fast, gpt2,
                                                                      monkeypatch):
    # Files that all begin with one long header (a licence, an HTML head), as many per batch:
    # batches alike in their first bytes and document count, under a share where each batch
    # is a draw with some probability. They must not draw all alike: all (far over the
    # share) or none (nothing of them checked).
    share = 1024
    monkeypatch.setattr(cross_check, "CHECK_SHARE", share)
    rng = np.random.default_rng(3)
    words = ["cat", "sat", "on", "the", "mat", "and", "ran", "far", "away", "home"]
    engine = fast.thread_copy()
    engine.encode_batch(TextBatch.from_texts(["the first batch is always checked"]))
    recorder = counting(engine, gpt2, monkeypatch)
    total = 0
    for h in range(6):
        header = f"Header {h}. " + "Permission is hereby granted, free of charge. " * 95
        for b in range(50):
            texts = [header + " ".join(rng.choice(words, rng.integers(20, 200)))
                     for _ in range(20)]
            total += int(engine.encode_batch(TextBatch.from_texts(texts))[1].sum())
    assert total / share > 20 * CHECK_PIECE_TOKENS  # many draws expected, each a piece
    checked = sum(len(gpt2.encode_ordinary(t)) for t in recorder.checked)
    assert total / share / 2 < checked < 2 * total / share


def test_without_a_cut_rule_documents_are_checked_whole_within_the_tokens_share(gpt2,
                                                                              monkeypatch):
    # Under a pattern other than gpt2's (no classes: no pre-token cuts known) a drawn document
    # is re-encoded whole, and what it costs over the share is taken from later calls.
    share = 64
    monkeypatch.setattr(cross_check, "CHECK_SHARE", share)
    recorder = CountingReference(gpt2)
    check = cross_check.CrossCheck(recorder, None, "reference")
    texts = [t for t in class_documents("mixed", 3000, seed=5) if SEPARATOR not in t]
    total, longest = 0, 0
    for k in range(0, len(texts), 100):
        batch = TextBatch.from_texts(texts[k:k + 100])
        ids, lengths = TiktokenEngine(gpt2, gpt2.eot_token).encode_batch(batch)
        check(batch, None, ids, lengths)
        total, longest = total + int(lengths.sum()), max(longest, int(lengths.max()))
    assert set(recorder.checked) <= set(texts)  # whole documents
    checked = sum(len(gpt2.encode_ordinary(t)) for t in recorder.checked)
    assert total / share / 2 < checked < total / share + longest


def test_a_fresh_engine_always_checks_its_first_batch(fast, gpt2, monkeypatch):
    copy = fast.thread_copy()  # a new thread's or worker's engine
    recorder = counting(copy, gpt2, monkeypatch)
    copy.encode_batch(TextBatch.from_texts(["one short story."]))
    assert recorder.checked == ["one short story."]


def test_a_long_document_is_checked_on_pieces_of_itself(fast, gpt2, monkeypatch):
    long = "".join(t for t in class_documents("mixed", 800, seed=8) if SEPARATOR not in t)
    assert len(gpt2.encode_ordinary(long)) > 20 * CHECK_PIECE_TOKENS
    pieces = []
    for seed in range(6):  # first calls: one draw each, at the start or anywhere
        copy = fast.thread_copy()
        recorder = counting(copy, gpt2, monkeypatch)
        copy.encode_batch(TextBatch.from_texts([f"{seed}", long]))
        pieces += recorder.checked
    long_pieces = [piece for piece in pieces if len(piece) > 2]
    assert long_pieces and all(piece in long and len(piece) < len(long) / 4
                               for piece in long_pieces)


def test_the_cross_check_stops_on_a_mismatch_inside_a_long_document(fast, gpt2, monkeypatch):
    fast = fast.thread_copy()  # a fresh engine checks its first batch
    encode_joined = fast.encode_joined
    long = " ".join(class_documents("ascii_plain", 400, seed=2))

    def one_wrong_token_in_each_128(batch, members):
        ids, lengths = encode_joined(batch, members)
        wrong = (np.arange(len(ids)) % 128 == 5) & (ids != gpt2.eot_token)
        return np.where(wrong, (ids + 1) % gpt2.eot_token, ids), lengths

    monkeypatch.setattr(fast, "encode_joined", one_wrong_token_in_each_128)
    with pytest.raises(TokbinError, match="disagrees with tiktoken.*at bytes"):
        fast.encode_batch(TextBatch.from_texts([long]))


def test_ids_that_spell_other_text_stop_the_cross_check(fast, gpt2, monkeypatch):
    # fastokens' ids for a long document are tiktoken's for another text (every 100th
    # character changed): each piece re-encodes to its ids, but is not the document's text.
    fast = fast.thread_copy()  # a fresh engine checks its first batch
    long = " ".join(class_documents("ascii_plain", 400, seed=3))
    other = gpt2.encode_ordinary("".join("#" if i % 100 == 50 else c for i, c in enumerate(long)))
    monkeypatch.setattr(fast, "encode_joined", lambda batch, members: (
        np.array([*other, gpt2.eot_token], np.uint32), np.array([len(other)])))
    with pytest.raises(TokbinError, match="disagrees with tiktoken.*do not spell the document"):
        fast.encode_batch(TextBatch.from_texts([long]))


@pytest.mark.parametrize("proven", ["table", "conservative"])
def test_pre_token_cuts_keep_tiktokens_ids(gpt2, conservative, proven):
    import random
    classes = (GPT2 if proven == "table" else conservative).classes
    rng = random.Random(0)
    cuts = 0
    for name in CLASSES:
        for text in class_documents(name, 60, seed=21):
            data = text.encode()
            for _ in range(3):
                at = pretoken_cut(data, rng.randrange(len(data) + 1), classes)
                if at is not None and 0 < at < len(data):
                    cuts += 1
                    left, right = data[:at].decode(), data[at:].decode()
                    assert (gpt2.encode_ordinary(left) + gpt2.encode_ordinary(right)
                            == gpt2.encode_ordinary(text)), (name, left[-20:], right[:20])
    assert cuts > 1000


def test_a_thread_copy_shares_the_tokenizer_and_tiktoken_while_nothing_is_routed(fast, gpt2):
    copy = fast.thread_copy()
    assert copy.tokenizer is fast.tokenizer
    assert copy.encoding is fast.encoding  # tiktoken only cross-checks: no contention to avoid
    assert_exact(copy, gpt2, class_documents("mixed", 200, seed=4))


def test_a_thread_copy_owns_its_tiktoken_encoding_when_documents_are_routed(
        conservative_engine, gpt2):
    copy = conservative_engine.thread_copy()
    assert copy.tokenizer is conservative_engine.tokenizer
    assert copy.encoding is not conservative_engine.encoding
    assert copy.reference.encoding is copy.encoding and copy.check.reference is copy.reference
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
