"""Bring your own tokenizer: a tokenizer.json, a tiktoken rank file or a SentencePiece model,
told apart by content, gives bins whose ids are exactly its own library's.

The reference ids come from tests/support/tokenizer_fixtures.reference_ids, which calls each
library directly: tiktoken's encode_ordinary, tokenizers with add_special_tokens=False and
special-token text as text, sentencepiece without BOS/EOS. Every document is encoded on its
own and the separator is the eot token's id, placed by tokenize.eot.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_parquet_dataset
from support.text_classes import LITERAL_SPECIALS, hostile_documents
from support.tokenizer_fixtures import LLAMA3_GOLDEN, reference_ids, stories
from tokbin.errors import TokbinError
from tokbin.format import FORMAT_VERSION, read_meta
from tokbin.tokenize import tokenize_dataset
from tokbin.tokenizer_spec import LLAMA3_PATTERN, resolve_tokenizer
from tokbin.vocab import load_vocabulary


def build(tmp_path: Path, texts: list[str], encoding, eot: str, workers: int = 2,
          engine: str = "reference") -> tuple[list[int], object]:
    """tokenize_dataset over a local dataset whose train split is `texts`: (train ids, meta)."""
    from tokbin.source import materialize
    dataset = write_parquet_dataset(tmp_path / "dataset", {"train": texts,
                                                           "validation": texts[:3]})
    materialize(str(dataset), "main", ["train", "validation"], "text", tmp_path / "raw")
    out = tmp_path / "tokens"
    meta = tokenize_dataset(tmp_path / "raw", out, ["train", "validation"], "text", encoding,
                            eot, engine=engine, workers=workers)
    return np.fromfile(out / "train.bin", meta.np_dtype).tolist(), meta


def placed(ids: list[list[int]], separator: int, eot: str) -> list[int]:
    """The bin a reference encoding makes under an eot policy."""
    return [i for doc in ids for i in ({"append": [*doc, separator], "prepend": [separator, *doc],
                                        "none": doc}[eot])]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return stories(120) + hostile_documents()


# name: (tokenizer file, kind, tokenize.* settings, eot policy, eot token expected, n_vocab)
KINDS = {
    "llama3 rank file, BOS prepended": ("llama3", "tiktoken_rank_file",
                                        dict(pattern="llama3", special_tokens="llama3",
                                             eot_token="<|begin_of_text|>"),
                                        "prepend", ("<|begin_of_text|>", 128000), 128256),
    "trained tokenizer.json": ("trained_json", "tokenizer_json", {}, "append",
                               ("<|endoftext|>", 0), None),
    "mistral sentencepiece": ("mistral", "sentencepiece", {}, "append", ("</s>", 2), 32000),
    "llama2.c-style sentencepiece, BOS prepended": ("trained_sp", "sentencepiece",
                                                    dict(eot_token="<s>"), "prepend",
                                                    ("<s>", 1), 512),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_bins_equal_the_reference_library_on_stories_and_hostile_text(name, tokenizer_files,
                                                                       texts, tmp_path):
    file_attr, kind, settings, eot, (eot_name, eot_id), n_vocab = KINDS[name]
    path = getattr(tokenizer_files, file_attr)
    spec = resolve_tokenizer(str(path), **settings)
    ids, meta = build(tmp_path, texts, spec, eot)
    want = reference_ids(kind, path, texts, tokenizer_files.llama3_pattern)
    assert ids == placed(want, eot_id, eot)
    assert (meta.tokenizer.kind, meta.tokenizer.eot_name, meta.eot_token) == (kind, eot_name,
                                                                             eot_id)
    assert meta.tokenizer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    if n_vocab is not None:
        assert meta.n_vocab == n_vocab
    assert meta.dtype == ("uint32" if meta.n_vocab > 65536 else "uint16")
    # A literal special token in a document is text: the only special id is each separator.
    special_ids = set(load_vocabulary(spec).specials.values())
    assert sum(i in special_ids for i in ids) == ids.count(eot_id) == len(texts)
    assert any(s in t for t in texts for s in LITERAL_SPECIALS)


def test_llama3s_rank_file_gives_llama_models_own_golden_ids(tokenizer_files):
    spec = resolve_tokenizer(str(tokenizer_files.llama3), pattern="llama3",
                             special_tokens="llama3")
    vocabulary = load_vocabulary(spec)
    assert vocabulary.reference_engine().encode_ordinary(LLAMA3_GOLDEN[0]) == LLAMA3_GOLDEN[1]
    assert LLAMA3_PATTERN == tokenizer_files.llama3_pattern  # the preset is llama-models' regex
    assert (vocabulary.n_vocab, vocabulary.eot_name, vocabulary.eot_id) == (
        128256, "<|end_of_text|>", 128001)  # its own end-of-text, when eot_token is null
    assert vocabulary.specials["<|eot_id|>"] == 128009


def test_the_hf_reference_ignores_the_files_template_and_truncation(tokenizer_files):
    """The trained tokenizer.json adds a BOS in its template and truncates to 8 tokens."""
    spec = resolve_tokenizer(str(tokenizer_files.trained_json))
    engine = load_vocabulary(spec).reference_engine()
    long_text = "Once upon a time there was a little girl named Lily who loved the park."
    ids = engine.encode_ordinary(long_text)
    assert len(ids) > 8 and ids[0] != load_vocabulary(spec).specials["<|begin_of_text|>"]
    # [REF] is a non-special added token: vocabulary, matched in text as tokenizers does.
    from tokenizers import Tokenizer
    ref_id = Tokenizer.from_file(str(tokenizer_files.trained_json)).token_to_id("[REF]")
    assert ref_id in engine.encode_ordinary("see [REF] here")


# --- kinds by content ----------------------------------------------------------------------

def test_each_kind_is_told_apart_by_content_not_by_name(tokenizer_files, tmp_path):
    misnamed = {"tokenizer.model": tokenizer_files.llama3, "tokenizer.json":
                tokenizer_files.mistral, "vocab.txt": tokenizer_files.trained_json}
    kinds = {}
    for name, source in misnamed.items():
        shutil.copy(source, tmp_path / name)
        kinds[name] = resolve_tokenizer(str(tmp_path / name), pattern="llama3" if
                                        source == tokenizer_files.llama3 else None).kind
    assert kinds == {"tokenizer.model": "tiktoken_rank_file", "tokenizer.json": "sentencepiece",
                     "vocab.txt": "tokenizer_json"}
    crlf = tmp_path / "crlf.tiktoken"  # a rank file with Windows line ends reads the same
    crlf.write_bytes(tokenizer_files.llama3.read_bytes().replace(b"\n", b"\r\n"))
    spec = resolve_tokenizer(str(crlf), pattern="llama3", special_tokens="llama3")
    engine = load_vocabulary(spec).reference_engine()
    assert engine.encode_ordinary(LLAMA3_GOLDEN[0]) == LLAMA3_GOLDEN[1]


@pytest.mark.parametrize("content, fragment", [
    (b"", "not a tokenizer file tokbin reads"),
    (b"just some text\nover two lines\n", "not a tokenizer file tokbin reads"),
    (bytes(range(256)) * 4, "not a tokenizer file tokbin reads"),
    (b'{"model_max_length": 2048, "eos_token": "</s>"}', "is JSON but not a tokenizer.json"),
    (b'{"model": {"type": "BPE"', "not valid JSON"),
    (json.dumps({"config": {"pattern": ".", "default_vocab_size": 5}, "vocab": []}).encode(),
     "Mistral tekken tokenizer"),
], ids=["empty", "text", "binary", "tokenizer_config.json", "cut JSON", "tekken"])
def test_a_file_that_is_no_tokenizer_tokbin_reads_is_refused(content, fragment, tmp_path):
    (tmp_path / "tok").write_bytes(content)
    with pytest.raises(TokbinError, match=fragment) as error:
        resolve_tokenizer(str(tmp_path / "tok"))
    assert "tokenize.encoding" in str(error.value)


def test_a_missing_file_and_a_file_outside_the_tracked_folder_are_refused(tokenizer_files,
                                                                         tmp_path):
    with pytest.raises(TokbinError, match="does not exist"):
        resolve_tokenizer(str(tmp_path / "nope.json"))
    tracked = tmp_path / "tokenizers"
    tracked.mkdir()
    with pytest.raises(TokbinError, match=r"not inside \S*tokenizers/.*\(cp \S+ \S*tokenizers/\)"):
        resolve_tokenizer(str(tokenizer_files.trained_json), tracked_folder=tracked)
    shutil.copy(tokenizer_files.trained_json, tracked / "tok.json")
    assert resolve_tokenizer(str(tracked / "tok.json"), tracked_folder=tracked).kind == \
        "tokenizer_json"


# --- what a kind needs beyond its file -----------------------------------------------------

def small_rank_file(path: Path, merges: list[bytes]) -> Path:
    tokens = [bytes([b]) for b in range(256)] + merges
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n"
                            for i, t in enumerate(tokens)))
    return path


def test_a_rank_file_needs_its_pattern_and_checks_its_special_tokens(tmp_path):
    ranks = small_rank_file(tmp_path / "r.tiktoken", [b"ab", b"abc"])
    with pytest.raises(TokbinError, match="tokenize.pattern is required.*llama3, gpt2"):
        resolve_tokenizer(str(ranks))
    with pytest.raises(TokbinError, match="special_tokens 'llama4' is not a preset"):
        resolve_tokenizer(str(ranks), pattern="llama3", special_tokens="llama4")
    with pytest.raises(TokbinError, match="gives <x> the id 257, a rank of"):
        load_vocabulary(resolve_tokenizer(str(ranks), pattern="llama3",
                                          special_tokens={"<x>": 257}))
    with pytest.raises(TokbinError, match="not a regex tiktoken can compile"):
        load_vocabulary(resolve_tokenizer(str(ranks), pattern="(unclosed",
                                          special_tokens={"<|endoftext|>": 300}))
    with pytest.raises(TokbinError, match=r"own end-of-text token.*found none; set tokenize"
                                          r".eot_token .*none \(a rank file's come from "
                                          r"tokenize.special_tokens"):
        load_vocabulary(resolve_tokenizer(str(ranks), pattern="gpt2"))
    vocabulary = load_vocabulary(resolve_tokenizer(str(ranks), pattern="gpt2",
                                                   special_tokens={"<|endoftext|>": 300}))
    assert (vocabulary.n_vocab, vocabulary.eot_id) == (301, 300)
    assert vocabulary.reference_engine().encode_ordinary("abc ab") == [257, 32, 256]


def test_a_damaged_rank_file_is_refused_before_tiktoken_sees_it(tmp_path):
    good = small_rank_file(tmp_path / "good", [b"ab"]).read_text().splitlines()
    cases = {"bad base64": (good[:5] + ["!!! 5"], "r:6 is not '<base64 token> <rank>'"),
             "rank twice": (good + [f"{base64.b64encode(b'xy').decode()} 3"],
                            "rank 3 is also the rank of line 4"),
             "token twice": (good + [good[0].split()[0] + " 999"], "is listed twice"),
             "rank beyond 32 bits": (good + [f"{base64.b64encode(b'xy').decode()} 99999999999"],
                                     "gives the rank 99999999999, outside 0 .. 4,294,967,295"),
             "negative rank": (good + [f"{base64.b64encode(b'xy').decode()} -1"],
                               "gives the rank -1, outside"),
             "bytes missing": (good[:200], "no token for byte 0xc8")}
    for name, (lines, fragment) in cases.items():
        (tmp_path / "r").write_text("\n".join(lines) + "\n")
        with pytest.raises(TokbinError, match=fragment):
            load_vocabulary(resolve_tokenizer(str(tmp_path / "r"), pattern="gpt2"))


@pytest.mark.parametrize("token_id, what", [(-1, "negative"), (5_000_000_000,
                                                                "beyond tiktoken's 32-bit ids")])
def test_a_special_token_id_tiktoken_cannot_hold_is_refused(tmp_path, token_id, what):
    path = small_rank_file(tmp_path / "r", [b"ab"])
    with pytest.raises(TokbinError, match=f"gives <\\|endoftext\\|> the id {token_id}, {what}"):
        load_vocabulary(resolve_tokenizer(str(path), pattern="gpt2",
                                          special_tokens={"<|endoftext|>": token_id}))


def test_a_rank_file_changed_in_place_is_read_anew_and_tiktokens_cache_is_untouched(
        tmp_path, monkeypatch):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    path = tmp_path / "r.tiktoken"
    specials = {"<|endoftext|>": 400}
    small_rank_file(path, [b"ab"])
    before = load_vocabulary(resolve_tokenizer(str(path), pattern="gpt2",
                                               special_tokens=specials))
    small_rank_file(path, [b"ab", b"abab"])
    after = load_vocabulary(resolve_tokenizer(str(path), pattern="gpt2",
                                              special_tokens=specials))
    engines = before.reference_engine(), after.reference_engine()
    assert [e.encode_ordinary("abab") for e in engines] == [[256, 256], [257]]
    assert list(cache.iterdir()) == []


def test_pattern_and_special_tokens_belong_to_rank_files_only(tokenizer_files):
    for path in (tokenizer_files.trained_json, tokenizer_files.mistral):
        for key in ("pattern", "special_tokens"):
            with pytest.raises(TokbinError, match=f"tokenize.{key} applies to tiktoken rank "
                                                  f"files only.*set tokenize.{key}: null"):
                resolve_tokenizer(str(path), **{key: "llama3"})
    with pytest.raises(TokbinError, match="gpt2 is a tiktoken encoding"):
        resolve_tokenizer("gpt2", pattern="llama3")


@pytest.mark.parametrize("file_attr, settings, listed", [
    ("llama3", dict(pattern="llama3", special_tokens="llama3"), "<|begin_of_text|> (128000)"),
    ("trained_json", {}, "<|endoftext|> (0), <|begin_of_text|> (1)"),
    ("mistral", {}, "<s> (1), </s> (2)"),
    (None, {}, "<|endoftext|> (50256)"),
])
def test_an_unknown_eot_token_lists_the_tokenizers_special_tokens(file_attr, settings, listed,
                                                                  tokenizer_files):
    encoding = str(getattr(tokenizer_files, file_attr)) if file_attr else "gpt2"
    spec = resolve_tokenizer(encoding, eot_token="<|im_end|>", **settings)
    with pytest.raises(TokbinError, match=r"tokenize.eot_token '<\|im_end\|>' is not a special "
                                          r"token of .*its special tokens: ") as error:
        load_vocabulary(spec)
    assert listed in str(error.value)


def test_a_tokenizer_json_with_two_end_of_text_tokens_asks_which(tokenizer_files, tmp_path):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(tokenizer_files.trained_json))
    tokenizer.add_special_tokens(["</s>"])
    tokenizer.save(str(tmp_path / "two.json"))
    with pytest.raises(TokbinError, match=r"found several: <\|endoftext\|>, </s>; set "
                                          "tokenize.eot_token"):
        load_vocabulary(resolve_tokenizer(str(tmp_path / "two.json")))
    assert load_vocabulary(resolve_tokenizer(str(tmp_path / "two.json"),
                                             eot_token="</s>")).eot_id == \
        tokenizer.token_to_id("</s>")


def test_bpe_dropout_is_refused_as_it_makes_random_ids(tokenizer_files, tmp_path):
    doc = json.loads(tokenizer_files.trained_json.read_text())
    doc["model"]["dropout"] = 0.1
    (tmp_path / "dropout.json").write_text(json.dumps(doc))
    with pytest.raises(TokbinError, match="dropout 0.1, so its ids are random"):
        load_vocabulary(resolve_tokenizer(str(tmp_path / "dropout.json")))


def test_engine_tiktoken_is_refused_for_kinds_tiktoken_does_not_run(tokenizer_files, tmp_path):
    with pytest.raises(TokbinError, match="engine is tiktoken.*sentencepiece encodes; set "
                                          "tokenize.engine: reference"):
        build(tmp_path, ["x"], str(tokenizer_files.mistral), "append", engine="tiktoken")
    assert not (tmp_path / "tokens").exists()


# --- dtype ---------------------------------------------------------------------------------

def test_a_vocabulary_beyond_uint16_gets_uint32_and_an_explicit_uint16_is_refused(
        tokenizer_files, tmp_path):
    from tokbin.binarize import binarize
    spec = resolve_tokenizer(str(tokenizer_files.llama3), pattern="llama3",
                             special_tokens="llama3")
    _, meta = build(tmp_path, stories(5), spec, "append")
    assert (meta.dtype, meta.n_vocab) == ("uint32", 128256)
    with pytest.raises(TokbinError, match="binarize.dtype uint16 cannot hold a vocabulary of "
                                          "128256 ids; set binarize.dtype to auto or uint32"):
        binarize(tmp_path / "tokens", tmp_path / "out", "uint16")
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    binarize(tmp_path / "tokens", tmp_path / "out", "auto")
    assert read_meta(tmp_path / "out").dtype == "uint32"


# --- params.yaml -----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, fragment", [
    ("special_tokens", {"<a>": 5, "<b>": 5}, "gives the id 5 to both <a> and <b>"),
    ("special_tokens", {"<a>": -1}, "gives <a> the id -1"),
    ("special_tokens", [1, 2], "must be a str or a mapping of str to an integer or null"),
    ("special_tokens", {"<a>": "5"}, "must be a str or a mapping of str to an integer or null"),
    ("pattern", 7, "tokenize.pattern must be a str or null"),
    ("eot_token", "", "tokenize.eot_token must be a str or null"),
    ("engine", "tokie", "valid values: fastokens, reference, tiktoken"),
])
def test_tokenizer_params_are_checked_strictly(key, value, fragment, tmp_path):
    import yaml
    from tokbin.params import load_params
    from conftest import ROOT
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tokenize"][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(TokbinError, match=fragment):
        load_params(tmp_path / "params.yaml")


# --- meta.json's tokenizer record ------------------------------------------------------------

V3_META = {"format": "tokbin", "version": 3, "encoding": "hf:acme/tok@v1", "n_vocab": 727,
           "eot_token": 0, "eot": "append", "dtype": "uint16",
           "source": {"dataset": "./sample", "revision": None, "sha": None, "config": None,
                      "data_files": None, "splits": None, "files": None},
           "splits": {"train": {"file": "train.bin", "tokens": 3, "documents": 1, "bytes": 6}},
           "holdout": None,
           "tokenizer": {"kind": "tokenizer_json", "file": "tokenizer.json", "sha256": "ab" * 32,
                         "hub": {"repo": "acme/tok", "revision": "v1", "sha": "1" * 40},
                         "pattern": None, "special_tokens": None, "eot_name": "<|endoftext|>"}}


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.pop("tokenizer"), "a version 3 meta.json has no tokenizer field"),
    (lambda m: m["tokenizer"].update(kind="tekken"), "tokenizer.kind 'tekken' is not one of"),
    (lambda m: m["tokenizer"]["hub"].pop("sha"), r"tokenizer.hub: unknown fields \[\], missing "
                                                 r"fields \['sha'\]"),
    (lambda m: m["tokenizer"].update(special_tokens={"<a>": "1"}), "field 'special_tokens' has "
                                                                  "the wrong type"),
    (lambda m: m.update(version=2), "a version 2 meta.json has a tokenizer field"),
])
def test_meta_json_records_the_tokenizer_strictly(change, fragment):
    from tokbin.format import HubFile, Meta
    meta = Meta.from_json(json.dumps(V3_META))
    assert meta.tokenizer.hub == HubFile("acme/tok", "v1", "1" * 40)
    # written back as the current version, which adds the bins' format
    assert json.loads(meta.to_json()) == {**V3_META, "version": FORMAT_VERSION,
                                          "bin_format": "nanogpt"}
    damaged = json.loads(json.dumps(V3_META))
    change(damaged)
    with pytest.raises(TokbinError, match=fragment):
        Meta.from_json(json.dumps(damaged))
