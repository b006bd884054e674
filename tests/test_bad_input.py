"""Bad input never produces a bin: each case is a stage that exits non-zero with one clear
line naming the problem and the fix, and leaves no final output behind.

Stages run as `dvc repro` runs them (`python -m stages.<name>` in a project made by
make_project), with the inputs each stage needs built by the stages before it.
"""
from __future__ import annotations

import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import make_project, run, write_parquet_dataset, stage_command
from tokbin.errors import TokbinError
from tokbin.format import DTYPES, Meta, Source, SplitInfo, write_meta
from tokbin.loader import BinLoader

DOCS = {"train": ["Once upon a time.", "The end."], "validation": ["A short story."]}
STAGE_OUTPUTS = {"download": ["data/raw"], "tokenize": ["data/tokens"],
                 "binarize": ["data/train.bin", "data/validation.bin", "data/train.docs",
                              "data/validation.docs", "data/meta.json"]}


def project(tmp_path: Path, **params) -> Path:
    """A project reading the local dataset ./dataset (params as make_project takes them)."""
    return make_project(tmp_path / "project", **{"download__dataset": "./dataset", **params})


def stage(repo: Path, name: str) -> subprocess.CompletedProcess:
    return run(stage_command(repo, name), repo, check=False)


def assert_fails_clearly(result: subprocess.CompletedProcess, repo: Path, name: str,
                         *fragments: str) -> str:
    """Exit 1, one `<stage>: error: ...` line holding every fragment, and no output left."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error = next(line for line in result.stderr.splitlines() if f"{name}: error:" in line)
    for fragment in fragments:
        assert fragment in error, error
    for output in STAGE_OUTPUTS[name]:
        assert not (repo / output).exists(), f"{output} left behind"
    assert not list(repo.glob("data/.*.tmp-*")), "temporaries left behind"
    return error


# --- the text column -------------------------------------------------------------------------

def test_a_missing_text_column_names_the_columns_that_exist(tmp_path):
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", DOCS, column="story")
    assert_fails_clearly(stage(repo, "download"), repo, "download", "no column 'text'",
                         "columns: story", "set download.text_column")


def test_nulls_in_the_text_column_are_refused(tmp_path):
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", {"train": ["fine", None, "also fine"],
                                             "validation": ["ok"]})
    run(stage_command(repo, "download"), repo)
    assert_fails_clearly(stage(repo, "tokenize"), repo, "tokenize", "'text'", "1 null",
                         "drop or fill those rows")


def test_a_text_column_of_numbers_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    repo = project(tmp_path)
    (repo / "dataset" / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": [1, 2], "label": ["a", "b"]}),
                       repo / "dataset" / "data" / f"{split}-00000-of-00001.parquet")
    assert_fails_clearly(stage(repo, "download"), repo, "download", "holds int64, not strings",
                         "set download.text_column")


def test_a_non_string_value_in_a_jsonl_dataset_is_refused(tmp_path):
    repo = project(tmp_path)
    (repo / "dataset").mkdir()
    (repo / "dataset" / "train.jsonl").write_text('{"text": "a story"}\n{"text": 42}\n')
    (repo / "dataset" / "validation.jsonl").write_text('{"text": "a story"}\n')
    assert_fails_clearly(stage(repo, "download"), repo, "download", "./dataset/train.jsonl:2:",
                         "holds a int", "not text", "must be a string")


# --- splits ----------------------------------------------------------------------------------

def test_a_missing_split_lists_the_splits_found_and_offers_a_holdout(tmp_path):
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", {"train": DOCS["train"]})
    assert_fails_clearly(stage(repo, "download"), repo, "download", "download.splits",
                         "./dataset (config 'default') has no split 'validation'",
                         "its splits are train", "download.splits: [train] and "
                         "download.holdout: {fraction: 0.0005, seed: 2357}")


def test_an_empty_split_is_refused(tmp_path):
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", {"train": DOCS["train"], "validation": []})
    run(stage_command(repo, "download"), repo)
    assert_fails_clearly(stage(repo, "tokenize"), repo, "tokenize", "split 'validation' is empty",
                         "remove it from download.splits")


# --- where the dataset comes from ------------------------------------------------------------

def test_a_local_dataset_path_that_does_not_exist_is_refused(tmp_path):
    repo = project(tmp_path, download__dataset="./no-such-folder")
    assert_fails_clearly(stage(repo, "download"), repo, "download", "'no-such-folder'",
                         "is not a directory", "Hub dataset id")


class NotFoundHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a repository that does not exist."""

    def do_GET(self):
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def not_found_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFoundHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield
    server.shutdown()


def test_a_hub_dataset_id_that_does_not_exist_is_refused(tmp_path, not_found_hub):
    repo = project(tmp_path, download__dataset="nobody/no-such-dataset")
    assert_fails_clearly(stage(repo, "download"), repo, "download",
                         "'nobody/no-such-dataset' not found on the Hub", "check download.dataset")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_unreachable_hub_is_reported_with_the_offline_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = project(tmp_path, download__dataset="roneneldan/TinyStories")
    assert_fails_clearly(stage(repo, "download"), repo, "download", "is unreachable",
                         "use a local directory instead", "download.dataset=./sample")


def test_invalid_utf8_in_a_local_text_file_names_the_line(tmp_path):
    repo = project(tmp_path)
    (repo / "dataset").mkdir()
    (repo / "dataset" / "train.txt").write_bytes(b"a good line\nbad \xff\xfe line\n")
    (repo / "dataset" / "validation.txt").write_bytes(b"fine\n")
    run(stage_command(repo, "download"), repo)
    assert_fails_clearly(stage(repo, "tokenize"), repo, "tokenize", "train.txt:2",
                         "invalid UTF-8", "re-encode the file as UTF-8")


# --- tokenizer and dtype ---------------------------------------------------------------------

def test_an_unknown_tiktoken_encoding_lists_the_known_ones(tmp_path):
    repo = project(tmp_path, tokenize__encoding="gpt5")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(stage_command(repo, "download"), repo)
    assert_fails_clearly(stage(repo, "tokenize"), repo, "tokenize", "unknown tiktoken encoding "
                         "'gpt5'", "cl100k_base", "set tokenize.encoding")


def test_an_explicit_dtype_too_small_for_the_vocabulary_is_refused(tmp_path):
    repo = project(tmp_path, tokenize__encoding="cl100k_base", binarize__dtype="uint16")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(stage_command(repo, "download"), repo)
    run(stage_command(repo, "tokenize"), repo)
    assert_fails_clearly(stage(repo, "binarize"), repo, "binarize",
                         "uint16 cannot hold a vocabulary of 100277", "auto or uint32")


@pytest.mark.parametrize("split", ["train", "validation"])
def test_tokenized_data_changed_since_leaves_no_split_written(tmp_path, split):
    # validation's damage is found once train's bin and index are written: they go too
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", DOCS)
    run(stage_command(repo, "download"), repo)
    run(stage_command(repo, "tokenize"), repo)
    with open(repo / "data" / "tokens" / f"{split}.doclens", "ab") as f:
        f.write(np.uint32(3).tobytes())  # one more document than the bin holds
    assert_fails_clearly(stage(repo, "binarize"), repo, "binarize",
                         f"data/tokens/{split}.doclens is not the file its stage wrote",
                         "python -m tokbin repair")


# --- params.yaml -----------------------------------------------------------------------------

def write_raw_params(repo: Path, edit) -> None:
    import yaml
    data = yaml.safe_load((repo / "params.yaml").read_text())
    edit(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("edit, fragments", [
    (lambda p: p["tokenize"].update(eots="append"),
     ["unknown key tokenize.eots", "valid keys: encoding, eot, engine"]),
    (lambda p: p["download"].update(splits="train"),
     ["download.splits must be a non-empty list of str", "'train'"]),
    (lambda p: p["tokenize"].update(eot="after"),
     ["tokenize.eot is 'after'", "valid values: append, prepend, none"]),
    (lambda p: p["binarize"].update(format="llm.c"),
     ["binarize.format is 'llm.c'", "valid values: nanogpt, llmc"]),
], ids=["unknown key", "wrong type", "invalid eot", "invalid format"])
def test_bad_params_yaml_names_the_key_and_what_is_valid(tmp_path, edit, fragments):
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", DOCS)
    write_raw_params(repo, edit)
    assert_fails_clearly(stage(repo, "download"), repo, "download", *fragments)


def test_dvc_repro_stops_at_the_failing_stage_with_a_non_zero_exit_and_no_bins(tmp_path):
    repo = project(tmp_path)  # nulls: what only the stage reading the rows can find
    write_parquet_dataset(repo / "dataset", {**DOCS, "train": [*DOCS["train"], None]})
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "tokenize: error:" in result.stderr and "null value" in result.stderr
    assert not (repo / "data" / "tokens").exists() and not (repo / "data" / "train.bin").exists()


def test_dvc_repro_finds_a_local_dataset_that_is_not_there_before_any_stage_runs(tmp_path):
    repo = project(tmp_path, download__dataset="./datset")  # a typo
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "check: error: download.dataset './datset'" in result.stderr
    assert "is not a directory" in result.stderr and "No stage ran" in result.stderr


# --- a very large document -------------------------------------------------------------------

LARGE_DOCUMENT_BYTES = 16_000_000
# Generous: the stage (one process, one encoding thread) peaks near 0.35 GB on this document
# (about 0.15 GB of it imports and vocabularies); holding the document fifty times over would
# not fit. The memory per document is bounded by BATCH_BYTES only for documents smaller than it.
PEAK_RSS_LIMIT = 1 << 30


def peak_rss_of_tree(proc: psutil.Popen) -> int:
    """Samples the summed RSS of `proc` and its descendants until it exits."""
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:  # a process exited between listing and reading
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    return peak


def test_a_single_document_of_tens_of_megabytes_is_tokenized_with_bounded_memory(tmp_path):
    from support.corpus import story
    rng, parts, size = random.Random(0), [], 0
    while size < LARGE_DOCUMENT_BYTES:
        parts.append(story(rng))
        size += len(parts[-1]) + 1
    repo = project(tmp_path)
    write_parquet_dataset(repo / "dataset", {"train": [" ".join(parts), "small"],
                                             "validation": ["v"]})
    run(stage_command(repo, "download"), repo)
    log = tmp_path / "tokenize.log"
    with open(log, "w") as out:
        proc = psutil.Popen(stage_command(repo, "tokenize"), cwd=repo,
                            env={**os.environ, "TOKBIN_WORKERS": "1"}, stdout=out, stderr=out)
        peak = peak_rss_of_tree(proc)
    assert proc.returncode == 0, log.read_text()
    meta = json.loads((repo / "data" / "tokens" / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] == 2
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"


# --- the loader: what tests/test_loader.py leaves out ----------------------------------------

def write_small_build(folder: Path, ids: list[int], dtype: str = "uint16") -> Path:
    """A bin of `ids` (one document) and the meta.json that describes it."""
    folder.mkdir(parents=True, exist_ok=True)
    np.array(ids, dtype=DTYPES[dtype]).tofile(folder / "train.bin")
    size = len(ids) * DTYPES[dtype].itemsize
    write_meta(folder, Meta("gpt2", 50257, 50256, "append", dtype, Source("./x", None, None),
                            {"train": SplitInfo("train.bin", len(ids), 1, size)}))
    return folder / "train.bin"


def test_the_loader_refuses_a_bin_truncated_after_its_meta_json_was_written(tmp_path):
    path = write_small_build(tmp_path, list(range(100)) + [50256])
    path.write_bytes(path.read_bytes()[:-3])  # a copy cut short, not even whole tokens
    with pytest.raises(TokbinError, match="199 bytes but meta.json says 202.*truncated"):
        BinLoader(path, 2, 8)


def test_the_loader_refuses_a_meta_json_from_another_build(tmp_path):
    path = write_small_build(tmp_path, list(range(100)) + [50256])
    write_small_build(tmp_path / "rebuilt", list(range(100)) + [50256], dtype="uint32")
    (tmp_path / "rebuilt" / "meta.json").replace(tmp_path / "meta.json")  # meta says uint32
    with pytest.raises(TokbinError, match="202 bytes but meta.json says 404"):
        BinLoader(path, 2, 8)
