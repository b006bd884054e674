"""The pipeline's contract: bins byte-identical to tiktoken's encode_ordinary per document,
the eot policy, the dtype rules, meta.json, order and parallelism, and DVC's behaviour."""
from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from conftest import run, set_params, write_parquet_dataset
from tokbin.binarize import binarize
from tokbin.crc import crc32_combine
from tokbin.errors import TokbinError
from tokbin.format import read_meta
from tokbin.reports import bucket_width, write_reports
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

DOCS = {
    "train": ["Once upon a time, there was a cat.", "", "Tom said: <|endoftext|> is text here.",
              "Ünïcödé “quotes” — 日本語の物語 🐈‍⬛👍🏽\tand tabs\r\nCRLF", "  lots   of   spaces  ",
              "1234567890 digits, don't we'll they've", "a" * 3000] + [f"Story {i}." for i in range(40)],
    "validation": ["The end.", "Another short story about a dog."],
}


def build(tmp_path: Path, docs=DOCS, encoding="gpt2", eot="append", dtype="auto", workers=2,
          splits=None):
    """Runs download -> tokenize -> binarize through the library, as the stages do."""
    dataset = write_parquet_dataset(tmp_path / "dataset", docs)
    splits = splits or list(docs)
    raw, tokens, out = tmp_path / "raw", tmp_path / "tokens", tmp_path / "out"
    raw.mkdir()
    materialize(str(dataset), "main", splits, "text", raw)
    tokenize_dataset(raw, tokens, splits, "text", encoding, eot, workers=workers)
    out.mkdir()
    return binarize(tokens, out, dtype), out


def expected_tokens(texts, encoding, eot):
    enc = tiktoken.get_encoding(encoding)
    ids = []
    for text in texts:
        doc = enc.encode_ordinary(text)
        ids += {"append": doc + [enc.eot_token], "prepend": [enc.eot_token] + doc,
                "none": doc}[eot]
    return ids


@pytest.mark.parametrize("eot", ["append", "prepend", "none"])
def test_gpt2_bins_equal_encode_ordinary_per_document_with_the_eot_policy(tmp_path, eot):
    meta, out = build(tmp_path, eot=eot)
    for split, texts in DOCS.items():
        data = np.fromfile(out / f"{split}.bin", dtype="<u2")
        assert data.tolist() == expected_tokens(texts, "gpt2", eot)
        assert meta.splits[split].tokens == len(data)


def test_cl100k_base_needs_and_gets_uint32(tmp_path):
    meta, out = build(tmp_path, encoding="cl100k_base")
    assert meta.dtype == "uint32" and meta.n_vocab == 100277
    data = np.fromfile(out / "train.bin", dtype="<u4")
    assert data.tolist() == expected_tokens(DOCS["train"], "cl100k_base", "append")


def test_literal_endoftext_in_text_is_ordinary_text_never_the_eot_id(tmp_path):
    meta, out = build(tmp_path, docs={"train": ["a <|endoftext|> b"]}, eot="none")
    data = np.fromfile(out / "train.bin", dtype="<u2")
    assert meta.eot_token not in data.tolist()
    assert len(data) > 3


def test_explicit_uint32_widens_and_a_too_small_dtype_is_an_error(tmp_path):
    meta, out = build(tmp_path, dtype="uint32")
    assert meta.dtype == "uint32"
    wide = np.fromfile(out / "train.bin", dtype="<u4")
    assert wide.tolist() == expected_tokens(DOCS["train"], "gpt2", "append")
    with pytest.raises(TokbinError, match="cannot hold a vocabulary of 100277"):
        build(tmp_path / "again", encoding="cl100k_base", dtype="uint16")


def test_a_kept_dtype_hard_links_the_tokens_file_instead_of_copying_it(tmp_path):
    meta, out = build(tmp_path)
    for split in DOCS:
        assert (out / f"{split}.bin").samefile(tmp_path / "tokens" / f"{split}.bin")
        assert meta.splits[split].bytes == (out / f"{split}.bin").stat().st_size


def test_binarizing_again_over_its_own_links_keeps_the_bins_and_leaves_no_temporaries(tmp_path):
    meta, out = build(tmp_path)
    before = {split: (out / f"{split}.bin").read_bytes() for split in DOCS}
    assert binarize(tmp_path / "tokens", out, "auto") == meta
    assert {split: (out / f"{split}.bin").read_bytes() for split in DOCS} == before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "train.docs",
                                                     "validation.bin", "validation.docs"]


def test_where_no_hard_link_can_be_made_the_bin_is_copied(tmp_path, monkeypatch):
    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cross_device)
    meta, out = build(tmp_path)
    assert not (out / "train.bin").samefile(tmp_path / "tokens" / "train.bin")
    assert np.fromfile(out / "train.bin", "<u2").tolist() == expected_tokens(
        DOCS["train"], "gpt2", "append")


@pytest.mark.parametrize("dtype", ["auto", "uint32"])
def test_an_id_beyond_the_vocabulary_in_the_tokens_stops_binarize_with_no_bin(tmp_path, dtype):
    build(tmp_path)
    tokens = tmp_path / "tokens" / "train.bin"
    ids = np.fromfile(tokens, "<u2")
    ids[5] = 60000
    tokens.unlink()  # it may be read-only, as DVC leaves its outputs
    ids.tofile(tokens)
    out = tmp_path / "again"
    out.mkdir()
    with pytest.raises(TokbinError, match="token id 60000 is >= n_vocab 50257.*dvc repro --force"):
        binarize(tmp_path / "tokens", out, dtype)
    assert list(out.iterdir()) == []


def test_order_is_the_dataset_order_whatever_the_worker_count(tmp_path):
    many = {"train": [f"Document number {i}: " + "word " * (i % 97) for i in range(3000)]}
    _, one = build(tmp_path / "one", docs=many, workers=1)
    _, three = build(tmp_path / "three", docs=many, workers=3)
    assert (one / "train.bin").read_bytes() == (three / "train.bin").read_bytes()
    assert np.fromfile(one / "train.bin", "<u2").tolist() == expected_tokens(
        many["train"], "gpt2", "append")


def test_empty_documents_count_and_get_their_eot(tmp_path):
    meta, out = build(tmp_path, docs={"train": ["", "x", ""]})
    assert meta.splits["train"].documents == 3
    assert np.fromfile(out / "train.bin", "<u2").tolist() == [50256, 87, 50256, 50256]


def test_meta_json_describes_the_bins(tmp_path):
    meta, out = build(tmp_path)
    raw = json.loads((out / "meta.json").read_text())
    assert raw["format"] == "tokbin" and raw["version"] == 5 and raw["bin_format"] == "nanogpt"
    assert (raw["encoding"], raw["n_vocab"], raw["eot_token"], raw["eot"], raw["dtype"]) == (
        "gpt2", 50257, 50256, "append", "uint16")
    assert raw["tokenizer"] == {"kind": "tiktoken", "file": None, "sha256": None, "hub": None,
                                "pattern": None, "special_tokens": None,
                                "eot_name": "<|endoftext|>"}
    assert raw["source"] == {
        "dataset": str(tmp_path / "dataset"), "revision": None, "sha": None, "config": "default",
        "data_files": None, "splits": {"train": "train", "validation": "validation"},
        "files": {split: [f"data/{split}-00000-of-00001.parquet"] for split in DOCS}}
    assert raw["holdout"] is None
    for split, texts in DOCS.items():
        info = raw["splits"][split]
        assert info["documents"] == len(texts)
        assert info["bytes"] == (out / f"{split}.bin").stat().st_size == info["tokens"] * 2
        assert info["crc32"] == f"{zlib.crc32((out / f'{split}.bin').read_bytes()):08x}"
    assert read_meta(out) == meta


def test_the_crc32s_of_pieces_combine_into_the_crc32_of_the_whole():
    rng = np.random.default_rng(0)
    for sizes in [(0, 0), (0, 5), (5, 0), (1, 1), (1000, 12345), (3 << 20, 1 << 20)]:
        first, second = (rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes)
        assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(
            first + second)


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_jsonl_and_txt_datasets_read_like_parquet(tmp_path, kind):
    texts = ["first story", "second “story”", "third"]
    root = tmp_path / "ds"
    (root / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        (root / "data" / f"{split}-00000.{kind}").write_text(
            "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
            if kind == "jsonl" else "\n".join(texts) + "\n")
    raw, tokens = tmp_path / "raw", tmp_path / "tokens"
    raw.mkdir()
    materialize(str(root), "main", ["train", "validation"], "text", raw)
    meta = tokenize_dataset(raw, tokens, ["train", "validation"], "text", "gpt2", "none",
                            workers=1)
    for split in ("train", "validation"):
        assert np.fromfile(tokens / f"{split}.bin", "<u2").tolist() == expected_tokens(
            texts, "gpt2", "none")
        assert meta.splits[split].documents == 3


def test_eot_none_equals_the_seed_notebooks_bins(tmp_path):
    from support.seed_pipeline import seed_prepare
    docs = {"train": [f"Once upon a time {i}, “a” cat\tsat." * (1 + i % 5) for i in range(300)],
            "validation": [f"The end {i}." for i in range(30)]}
    _, out = build(tmp_path, docs=docs, eot="none")
    seed_out = tmp_path / "seed"
    seed_out.mkdir()
    seed_prepare(tmp_path / "dataset", seed_out, num_proc=1)
    for split in docs:
        assert (out / f"{split}.bin").read_bytes() == (seed_out / f"{split}.bin").read_bytes()


def test_the_reports_share_one_bucket_width_and_each_chart_ends_where_its_data_does(tmp_path):
    meta, out = build(tmp_path)
    write_reports(meta, tmp_path / "tokens", tmp_path / "r" / "metrics.json",
                  tmp_path / "r" / "doc_lengths", tmp_path / "r" / "plots")
    enc = tiktoken.get_encoding("gpt2")
    for split, texts in DOCS.items():
        rows = (tmp_path / "r" / "doc_lengths" / f"{split}.csv").read_text().splitlines()
        starts = [int(row.split(",")[0]) for row in rows[1:]]
        counts = [int(row.split(",")[1]) for row in rows[1:]]
        longest = max(len(enc.encode_ordinary(t)) for t in texts)
        width = bucket_width(max(len(enc.encode_ordinary(t)) for ts in DOCS.values() for t in ts))
        assert starts == list(range(0, starts[-1] + 1, width))  # one width for every split
        assert starts[-1] <= longest < starts[-1] + width and counts[-1] > 0  # no empty tail
        assert sum(counts) == len(texts)
        chart = (tmp_path / "r" / "plots" / f"{split}.svg").read_text()
        assert f"<title>{split}: document length distribution ({len(texts):,} documents, " \
               f"longest {longest:,} tokens)</title>" in chart
        assert f"(buckets of {width:,})" in chart


# --- dvc repro, end to end -------------------------------------------------------------------

def dvc_repro(repo: Path) -> str:
    result = run(["dvc", "repro"], repo)
    return result.stdout + result.stderr


def test_dvc_repro_builds_the_sample_then_does_nothing_then_reruns_only_what_eot_affects(
        sample_project):
    first = dvc_repro(sample_project)
    assert all(f"Running stage '{s}'" in first for s in ("download", "tokenize", "binarize"))
    meta = read_meta(sample_project / "data")
    assert meta.source.dataset == "./sample" and meta.eot == "append"
    bins = {s: (sample_project / "data" / f"{s}.bin").read_bytes() for s in meta.splits}
    metrics = json.loads((sample_project / "reports" / "metrics.json").read_text())
    assert metrics["train"]["documents"] == meta.splits["train"].documents == 5000
    assert (sample_project / "reports" / "doc_lengths" / "train.csv").read_text().startswith(
        "tokens,documents\n")

    second = dvc_repro(sample_project)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in run(["dvc", "status"], sample_project).stdout

    set_params(sample_project, tokenize__eot="none")
    third = dvc_repro(sample_project)
    assert "Running stage 'download'" not in third
    assert "Running stage 'tokenize'" in third and "Running stage 'binarize'" in third
    assert len((sample_project / "data" / "train.bin").read_bytes()) == (
        len(bins["train"]) - 2 * meta.splits["train"].documents)


def test_dvc_metrics_show_prints_token_and_document_counts(sample_project):
    dvc_repro(sample_project)
    shown = run(["dvc", "metrics", "show"], sample_project).stdout
    for column in ("train.tokens", "train.documents", "validation.tokens",
                   "validation.documents"):
        assert column in shown
