"""A user's own tokenizer through the pipeline: DVC reruns tokenize when the tokenizer file
changes and nothing when it does not; an hf: model id resolves to a commit through the (fake)
Hub; every bad setting stops the stage with a clear error and no output; worker processes give
the threads' bins; inspect decodes with the very tokenizer meta.json records.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import FAKE_HUB, make_project, run, set_params, stage_command, write_parquet_dataset
from support.tokenizer_fixtures import reference_ids, stories, train_tokenizer_json
from test_bad_input import assert_fails_clearly, stage
from tokbin import cli, executors
from tokbin.format import HubFile, read_meta
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset
from tokbin.tokenizer_spec import resolve_tokenizer

DOCS = {"train": stories(40) + ["Hi <|endoftext|> there <|begin_of_text|>", "\t\r\n\u3000 x"],
        "validation": stories(3)}


def appended(ids: list[list[int]], eot: int) -> list[int]:
    return [i for doc in ids for i in (*doc, eot)]


def repro(repo) -> str:
    return run(["dvc", "repro"], repo).stdout


def test_a_changed_tokenizer_file_reruns_tokenize_and_an_unchanged_one_reruns_nothing(
        tmp_path, tokenizer_files):
    repo = make_project(tmp_path / "p", download__dataset="./dataset",
                        tokenize__encoding="tokenizers/tok.json")
    write_parquet_dataset(repo / "dataset", DOCS)
    tokenizer = repo / "tokenizers" / "tok.json"
    shutil.copy(tokenizer_files.trained_json, tokenizer)
    assert "Running stage 'tokenize'" in repro(repo)
    first = (repo / "data/train.bin").read_bytes()
    again = repro(repo)
    assert "Running stage" not in again and "Stage 'tokenize' didn't change" in again
    assert "up to date" in run(["dvc", "status"], repo).stdout
    tokenizer.write_text(train_tokenizer_json(stories(200), vocab_size=500), encoding="utf-8")
    changed = repro(repo)
    assert "Running stage 'tokenize'" in changed and "Running stage 'download'" not in changed
    meta = read_meta(repo / "data")
    assert meta.tokenizer.sha256 == hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    assert meta.tokenizer.file == "tokenizers/tok.json"
    ids = np.fromfile(repo / "data/train.bin", "<u2").tolist()
    assert ids == appended(reference_ids("tokenizer_json", tokenizer, DOCS["train"]),
                           meta.eot_token)
    assert (repo / "data/train.bin").read_bytes() != first
    # A bad tokenizer setting stops the check stage, before DVC deletes any output.
    shutil.copy(tokenizer_files.llama3, repo / "tokenizers/tokenizer.model")
    set_params(repo, tokenize__encoding="tokenizers/tokenizer.model")  # no tokenize.pattern
    built = (repo / "data/train.bin").read_bytes()
    failed = run(["dvc", "repro"], repo, check=False)
    assert failed.returncode != 0 and "tokenize.pattern is required" in failed.stderr
    assert "Running stage 'tokenize'" not in failed.stdout
    assert (repo / "data/train.bin").read_bytes() == built


def test_an_hf_model_id_is_fetched_at_the_commit_its_revision_names(tmp_path, tokenizer_files):
    text = tokenizer_files.trained_json.read_bytes()
    config = json.dumps({"eos_token": {"content": "<|begin_of_text|>"}}).encode()
    v1 = FAKE_HUB.add_commit("acme/tok", {"tokenizer.json": text,
                                          "tokenizer_config.json": config},
                             branch="v1", repo_type="model")
    FAKE_HUB.add_commit("acme/tok", {"README.md": b"moved on"}, repo_type="model")  # main
    repo = make_project(tmp_path / "p", download__dataset="./dataset",
                        tokenize__encoding="hf:acme/tok@v1")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(stage_command(repo, "download"), repo)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home")}  # the session's cache stays clean

    def tokenize():
        return subprocess.run(stage_command(repo, "tokenize"), cwd=repo, env=env,
                              capture_output=True, text=True)

    assert tokenize().returncode == 0
    meta = read_meta(repo / "data/tokens")
    assert (meta.tokenizer.kind, meta.tokenizer.file, meta.tokenizer.hub) == (
        "tokenizer_json", "tokenizer.json", HubFile("acme/tok", "v1", v1))
    assert meta.tokenizer.eot_name == "<|begin_of_text|>"  # tokenizer_config's eos_token
    assert meta.tokenizer.sha256 == hashlib.sha256(text).hexdigest()
    ids = np.fromfile(repo / "data/tokens/train.bin", "<u2").tolist()
    assert ids == appended(reference_ids("tokenizer_json", tokenizer_files.trained_json,
                                         DOCS["train"]), meta.eot_token)
    assert "GET /api/models/acme/tok/revision/v1" in FAKE_HUB.requests
    assert f"GET /acme/tok/resolve/{v1}/tokenizer.json" in FAKE_HUB.requests
    shutil.rmtree(repo / "data/tokens")
    for encoding, fragment in [
            ("hf:acme/missing", "model 'acme/missing' not found on the Hub"),
            ("hf:acme/tok@nope", "revision 'nope' not found in Hub model acme/tok; set "
                                 "tokenize.encoding (hf:<model id>@<revision>)"),
            ("hf:acme/tok", "Hub model acme/tok has no tokenizer.json at main"),
            ("hf:", "is not hf:<model id>[@<revision>]")]:
        set_params(repo, tokenize__encoding=encoding)
        assert_fails_clearly(tokenize(), repo, "tokenize", fragment)


def test_every_bad_tokenizer_setting_stops_tokenize_with_a_clear_error_and_no_output(
        tmp_path, tokenizer_files):
    repo = make_project(tmp_path / "p", download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(stage_command(repo, "download"), repo)
    shutil.copy(tokenizer_files.llama3, repo / "tokenizers/tokenizer.model")
    (repo / "tokenizers/notes.bin").write_bytes(bytes(range(256)))
    cases = [
        (dict(tokenize__encoding="tokenizers/missing.json"), "does not exist"),
        (dict(tokenize__encoding="tokenizers/notes.bin"), "not a tokenizer file tokbin reads"),
        (dict(tokenize__encoding=str(tokenizer_files.trained_json)), "is not inside tokenizers/"),
        (dict(tokenize__encoding="tokenizers/tokenizer.model"), "tokenize.pattern is required"),
        (dict(tokenize__pattern="llama3", tokenize__special_tokens="llama3",
              tokenize__eot_token="<|im_end|>"),
         "tokenize.eot_token '<|im_end|>' is not a special token of tokenizers/tokenizer.model;"
         " its special tokens: <|begin_of_text|> (128000), <|end_of_text|> (128001)"),
    ]
    for params, fragment in cases:
        set_params(repo, **params)
        assert_fails_clearly(stage(repo, "tokenize"), repo, "tokenize", fragment)


@pytest.mark.parametrize("file_attr, settings", [
    ("llama3", dict(pattern="llama3", special_tokens="llama3")),
    ("trained_json", {}), ("mistral", {})])
def test_worker_processes_write_the_threads_bins_for_every_kind(file_attr, settings,
                                                                tokenizer_files, tmp_path,
                                                                monkeypatch):
    raw = tmp_path / "raw"
    materialize(str(write_parquet_dataset(tmp_path / "dataset", DOCS)), "main",
                ["train", "validation"], "text", raw)
    spec = resolve_tokenizer(str(getattr(tokenizer_files, file_attr)), **settings)
    tokenize_dataset(raw, tmp_path / "threads", ["train"], "text", spec, "prepend",
                     engine="reference", workers=2)
    monkeypatch.setattr(executors, "PROCESSES_FROM_BYTES", 0)
    monkeypatch.setattr(executors, "UNIT_BYTES", 1)
    started = []
    real = executors.ProcessExecutor.__init__
    monkeypatch.setattr(executors.ProcessExecutor, "__init__",
                        lambda self, *a: started.append(a) or real(self, *a))
    tokenize_dataset(raw, tmp_path / "processes", ["train"], "text", spec, "prepend",
                     engine="reference", workers=2)
    assert started
    for name in ("train.bin", "train.doclens", "meta.json"):
        assert (tmp_path / "processes" / name).read_bytes() == \
            (tmp_path / "threads" / name).read_bytes()


def test_verify_inspect_and_the_loader_read_a_llama3_build(tmp_path, tokenizer_files, capsys):
    from tokbin.binarize import binarize
    local = tmp_path / "tokenizers" / "llama3.model"
    local.parent.mkdir()
    shutil.copy(tokenizer_files.llama3, local)
    raw = tmp_path / "raw"
    texts = ["Once upon a time.", "It's “quoted” — café\tdone"]
    materialize(str(write_parquet_dataset(tmp_path / "dataset", {"train": texts})), "main",
                ["train"], "text", raw)
    spec = resolve_tokenizer(str(local), pattern="llama3", special_tokens="llama3",
                             eot_token="<|begin_of_text|>")
    tokenize_dataset(raw, tmp_path / "tokens", ["train"], "text", spec, "prepend", workers=1)
    (tmp_path / "data").mkdir()
    binarize(tmp_path / "tokens", tmp_path / "data", "auto")
    assert cli.main(["verify", str(tmp_path / "data")]) == 0
    from tokbin.loader import BinLoader
    with BinLoader(tmp_path / "data/train.bin", batch_size=2, block_size=4) as loader:
        x, y = loader.next_batch()  # uint32 ids, widened as any bin's
    bins = np.fromfile(tmp_path / "data/train.bin", "<u4")
    assert x.max().item() < 128256 and x[0].tolist() in [bins[i:i + 4].tolist()
                                                         for i in range(len(bins) - 4)]
    tokens = read_meta(tmp_path / "data").splits["train"].tokens
    args = ["inspect", str(tmp_path / "data"), "--windows", "1", "--tokens", str(tokens)]
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "".join(f"<|begin_of_text|>{t}" for t in texts) in capsys.readouterr().out
    # Decoding uses only the very file meta.json records: a changed one is refused.
    local.write_bytes(local.read_bytes()[:-100])
    assert cli.main(args) == 1
    assert "decoding needs the tokenizer meta.json records" in capsys.readouterr().err
    assert cli.main([*args, "--tokenizer", str(tokenizer_files.llama3)]) == 0
    import torch
    # llm.c's uint32 variant of the same build: its header, then the same ids, read alike.
    (tmp_path / "llmc").mkdir()
    binarize(tmp_path / "tokens", tmp_path / "llmc", "auto", bin_format="llmc")
    header = np.fromfile(tmp_path / "llmc/train.bin", "<i4", count=3)
    assert header.tolist() == [20240801, 7, len(bins)]
    assert np.array_equal(np.fromfile(tmp_path / "llmc/train.bin", "<u4", offset=1024), bins)
    assert cli.main(["verify", str(tmp_path / "llmc")]) == 0
    with BinLoader(tmp_path / "llmc/train.bin", batch_size=2, block_size=4) as loader:
        assert torch.equal(loader.next_batch()[0], x)  # same seed, same ids


def test_an_eot_token_whose_text_encodes_to_its_id_is_refused_by_the_check(
        tmp_path, tokenizer_files, monkeypatch):
    # a special token given a word's id: every document holding the word would end there
    import tokenizers
    from tokbin.errors import TokbinError
    from tokbin.preflight import check_pipeline
    text = tokenizer_files.trained_json.read_text(encoding="utf-8")
    doc, plain = json.loads(text), tokenizers.Tokenizer.from_str(text)
    vocab = doc["model"]["vocab"]
    word = next(w for w in ("Once", "The", "One") if w in vocab
                and plain.encode(w, add_special_tokens=False).ids == [vocab[w]])
    doc["added_tokens"].append({"id": vocab[word], "content": word, "single_word": False,
                                "lstrip": False, "rstrip": False, "normalized": False,
                                "special": True})
    repo = make_project(tmp_path / "p", download__dataset="./dataset",
                        tokenize__encoding="tokenizers/shared.json", tokenize__eot_token=word)
    write_parquet_dataset(repo / "dataset", DOCS)
    (repo / "tokenizers" / "shared.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.chdir(repo)
    with pytest.raises(TokbinError, match=f"tokenize.eot_token '{word}' has the id "
                                          f"{vocab[word]}, which the text '{word}' encodes to"):
        check_pipeline(tokenizers=repo / "tokenizers")
