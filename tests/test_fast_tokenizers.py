"""The fast engine on users' tokenizers: where tokbin's evidence says fastokens is exact (a rank
file split by Llama 3's or o200k's regex, a byte-level BPE tokenizer.json in a swept layout)
it runs with the gpt2 guard (the proven class routes, a sample is cross-checked against the
reference) and its bins are the reference library's; everywhere else the reference runs and
tokbin says why. The full sweep is `python -m bench.bench_engines --differential`.
"""
from __future__ import annotations

import numpy as np
import pytest

from support.engine_faults import shift_joined_ids
from support.text_classes import hostile_documents
from support.tokenizer_fixtures import reference_ids, stories, train_tokenizer_json
from tokbin.engines import FastokensEngine, effective_engine, make_engine
from tokbin.errors import TokbinError
from tokbin.fast_path import unsafe_codepoints
from tokbin.readers import TextBatch
from tokbin.tokenizer_spec import resolve_tokenizer
from tokbin.vocab import expand_pattern, load_vocabulary

CONTEXTS = ["{c}", "a{c}b", " {c}{c}", "{c}'s", "1{c}2", "\n{c} ", "  {c}x", "{c}\r\n"]


def engine_for(path, **settings):
    vocabulary = load_vocabulary(resolve_tokenizer(str(path), **settings))
    return make_engine(effective_engine("fastokens", vocabulary), vocabulary), vocabulary


def joined(want: list[list[int]], eot: int) -> list[int]:
    return [i for doc in want for i in (*doc, eot)]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict:
    """A tokenizer.json per layout, trained here (no non-special added token)."""
    folder, texts = tmp_path_factory.mktemp("layouts"), stories(150)
    paths = {}
    for layout in ("bytelevel", "nfc", "digits", "split_llama3"):
        paths[layout] = folder / f"{layout}.json"
        paths[layout].write_text(train_tokenizer_json(texts, 600, layout, False), "utf-8")
    return paths


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return stories(200) + hostile_documents(per_class=20, seed=3)


@pytest.fixture(scope="module")
def llama3_fast(tokenizer_files):
    """The engine for Llama 3's rank file (fastokens loads its 280,147 merges once)."""
    return engine_for(tokenizer_files.llama3, pattern="llama3", special_tokens="llama3",
                      eot_token="<|begin_of_text|>")


def test_llama3s_rank_file_runs_on_fastokens_with_tiktokens_ids(tokenizer_files, texts,
                                                                llama3_fast):
    engine, vocabulary = llama3_fast
    assert isinstance(engine, FastokensEngine) and engine.reference.name == "tiktoken"
    ids, lengths = engine.encode_batch(TextBatch.from_texts(texts))
    want = reference_ids("tiktoken_rank_file", tokenizer_files.llama3, texts,
                         tokenizer_files.llama3_pattern)
    assert ids.tolist() == joined(want, 128000) and lengths.tolist() == list(map(len, want))
    assert engine.proven.mask(TextBatch.from_texts(texts)).mean() > 0.5  # most of it went fast


@pytest.mark.parametrize("layout", ["bytelevel", "nfc", "digits", "split_llama3"])
def test_a_byte_level_tokenizer_json_runs_on_fastokens_with_tokenizers_ids(layout, layouts,
                                                                           texts):
    engine, vocabulary = engine_for(layouts[layout])
    assert isinstance(engine, FastokensEngine) and engine.reference.name == "tokenizers"
    ids, _ = engine.encode_batch(TextBatch.from_texts(texts))
    assert ids.tolist() == joined(reference_ids("tokenizer_json", layouts[layout], texts),
                                  vocabulary.eot_id)


def test_fastokens_alone_equals_the_reference_on_every_sampled_safe_character(
        tokenizer_files, layouts, llama3_fast):
    safe = np.flatnonzero(~unsafe_codepoints())[::37]
    sweep = [ctx.format(c=chr(cp)) for cp in safe for ctx in CONTEXTS]
    for path, (engine, vocabulary), kind in [
            (tokenizer_files.llama3, llama3_fast, "tiktoken_rank_file"),
            (layouts["split_llama3"], engine_for(layouts["split_llama3"]), "tokenizer_json")]:
        ids, _ = engine.encode_joined(TextBatch.from_texts(sweep))
        want = reference_ids(kind, path, sweep, tokenizer_files.llama3_pattern)
        assert ids.tolist() == joined(want, vocabulary.eot_id), path.name


def test_a_separator_with_a_border_is_never_joined(layouts):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(layouts["bytelevel"]))
    tokenizer.add_special_tokens(["<|x|><|x|"])  # "<|x|" is both its prefix and its suffix
    path = layouts["bytelevel"].with_name("bordered.json")
    tokenizer.save(str(path))
    engine, vocabulary = engine_for(path, eot_token="<|x|><|x|")
    assert not engine.joinable
    texts = ["a <|x|", "><|x| b", "<|x|><|x|", "plain"]
    ids, _ = engine.encode_batch(TextBatch.from_texts(texts))
    assert ids.tolist() == joined(reference_ids("tokenizer_json", path, texts), vocabulary.eot_id)


@pytest.mark.parametrize("make, reason", [
    (lambda files, tmp: (files.mistral, {}), "fastokens reads no SentencePiece model"),
    (lambda files, tmp: (files.trained_json, {}), "non-special added tokens ([REF]"),
    (lambda files, tmp: (files.llama3, dict(pattern="cl100k_base", special_tokens="llama3")),
     "its split regex (tokenize.pattern) is not one it runs exactly"),
    (lambda files, tmp: (_trained(tmp, "split_other"), {}), "its pre_tokenizer Sequence[Split, "
                                                            "ByteLevel] is not one the runs swept"),
    (lambda files, tmp: (_trained(tmp, "metaspace"), {}), "pre_tokenizer Metaspace"),
], ids=["sentencepiece", "plain added token", "other regex", "other split", "metaspace"])
def test_what_fastokens_is_not_proven_on_runs_on_the_reference_and_says_why(
        make, reason, tokenizer_files, tmp_path, capsys):
    path, settings = make(tokenizer_files, tmp_path)
    vocabulary = load_vocabulary(resolve_tokenizer(str(path), **settings))
    assert effective_engine("fastokens", vocabulary) == "reference"
    err = capsys.readouterr().err
    assert reason in err and "is tokenized with" in err


def test_the_regexes_fastokens_runs_natively_are_the_presets_own():
    # kept as text so that a rank file's check loads no other vocabulary (o200k_base's)
    import tiktoken
    from tokbin.fast_tokenizers import PROVEN_PATTERNS
    assert PROVEN_PATTERNS == {"llama3": expand_pattern("llama3"),
                               "o200k_base": tiktoken.get_encoding("o200k_base")._pat_str}


def _trained(tmp_path, layout):
    path = tmp_path / f"{layout}.json"
    path.write_text(train_tokenizer_json(stories(100), 400, layout, False), "utf-8")
    return path


def test_the_cross_check_stops_a_mismatch_on_a_users_tokenizer(layouts, monkeypatch):
    engine, _ = engine_for(layouts["digits"])
    shift_joined_ids(engine, monkeypatch)
    with pytest.raises(TokbinError, match="disagrees with tokenizers.*tokenize.engine: reference"):
        engine.encode_batch(TextBatch.from_texts(["A perfectly ordinary story."]))


def test_a_rank_files_built_model_is_kept_in_the_user_cache(tmp_path, monkeypatch):
    import base64
    from tokbin import fast_tokenizers
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "r.tiktoken"
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"abc"]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    spec = dict(pattern="llama3", special_tokens={"<|endoftext|>": 258})
    engine, _ = engine_for(path, **spec)
    [cached] = (tmp_path / "cache/tokbin/tokenizers").iterdir()
    assert cached.name.startswith("ranks-v1-")
    monkeypatch.setattr(fast_tokenizers, "_ranks_model", lambda ranks: pytest.fail("rebuilt"))
    again, _ = engine_for(path, **spec)
    assert again.encode_batch(TextBatch.from_texts(["abc ab"]))[0].tolist() == [257, 32, 256, 258]
