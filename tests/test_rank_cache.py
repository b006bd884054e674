"""tokbin's cache of gpt2's ranks gives tiktoken's own encoding, or is not used at all."""
from __future__ import annotations

import pytest
import tiktoken

from tokbin import rank_cache
from tokbin.fast_path import tokenizer_json_path
from tokbin.vocab import get_encoding

TEXT = "“Hi,” said José. 日本語 👍🏽\t<|endoftext|>  x\u00a0y"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty user cache, and no encoding read from it yet in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(rank_cache, "_loaded", {})
    return tmp_path / "tokbin" / "encodings"


def read_again(monkeypatch, name):
    monkeypatch.setattr(rank_cache, "_loaded", {})
    return rank_cache.cached_encoding(name)


def test_the_first_load_writes_the_cache_and_later_loads_are_tiktokens_encoding(cache,
                                                                               monkeypatch):
    first = get_encoding("gpt2")  # tiktoken's load, which writes the cache
    [cached] = cache.iterdir()
    assert cached.name == f"gpt2-tiktoken-{tiktoken.__version__}-v{rank_cache.CACHE_VERSION}.bin"
    again = read_again(monkeypatch, "gpt2")
    assert get_encoding("gpt2") is again  # read once per process
    reference = tiktoken.get_encoding("gpt2")
    for encoding in (first, again):
        assert encoding.name == "gpt2" and encoding._pat_str == reference._pat_str
        assert encoding._mergeable_ranks == reference._mergeable_ranks
        assert encoding._special_tokens == reference._special_tokens
        assert (encoding.n_vocab, encoding.eot_token) == (reference.n_vocab, reference.eot_token)
        assert encoding.encode_ordinary(TEXT) == reference.encode_ordinary(TEXT)
    assert tokenizer_json_path(again) == tokenizer_json_path(reference)  # its kept digest


@pytest.mark.parametrize("damage", ["truncated", "a flipped byte", "another encoding's"])
def test_a_damaged_cache_is_not_used_and_tiktoken_rewrites_it(cache, monkeypatch, damage):
    get_encoding("r50k_base")
    [cached] = cache.iterdir()
    blob = cached.read_bytes()
    if damage == "truncated":
        cached.write_bytes(blob[:-10])
    elif damage == "a flipped byte":
        cached.write_bytes(blob[:-1000] + bytes([blob[-1000] ^ 1]) + blob[-999:])
    else:
        get_encoding("gpt2")
        cached.write_bytes(rank_cache.cache_path("gpt2").read_bytes())
    assert read_again(monkeypatch, "r50k_base") is None
    monkeypatch.setattr(rank_cache, "_loaded", {})
    assert get_encoding("r50k_base")._mergeable_ranks == tiktoken.get_encoding(
        "r50k_base")._mergeable_ranks
    assert read_again(monkeypatch, "r50k_base") is not None  # written again


def test_an_unwritable_cache_only_costs_tiktokens_load(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    monkeypatch.setattr(rank_cache, "_loaded", {})
    assert get_encoding("gpt2").encode_ordinary(TEXT) == tiktoken.get_encoding(
        "gpt2").encode_ordinary(TEXT)


def test_other_encodings_are_tiktokens_own(cache):
    assert get_encoding("cl100k_base") is tiktoken.get_encoding("cl100k_base")
    assert not cache.exists()
