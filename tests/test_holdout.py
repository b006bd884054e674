"""download.holdout: validation.bin drawn from the train split of a dataset that has none.

Every train document lands in exactly one of the two bins, in dataset order; which one is the
documented function of the seed and the document's bytes (tokbin/format/meta.py), so the bins are
the same bytes whatever the worker count, the executor (threads, worker processes; Ray in
tests/test_ray.py) or how the documents are cut into files; the share held out is the
fraction, within sampling error; and `dvc repro` builds both bins with dvc.yaml untouched.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken

from conftest import ROOT, make_project, run
from tokbin import executors
from tokbin.errors import TokbinError
from tokbin.format import Holdout, doclens_file, read_meta
from tokbin.params import load_params
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

ENC = tiktoken.get_encoding("gpt2")
DOCUMENTS = [f"Story {i}: the {['cat', 'dog', 'owl'][i % 3]} ran {i % 17} times."
             for i in range(3000)]
HOLDOUT = Holdout(fraction=0.1, seed=2357)


def held_out_by_the_documented_rule(text: str, holdout: Holdout) -> bool:
    digest = hashlib.blake2b(text.encode(), digest_size=8,
                             key=holdout.seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") < int(holdout.fraction * 2 ** 64)


def write_train_only(root: Path, documents: list[str], files: int = 2) -> Path:
    (root / "data").mkdir(parents=True)
    step = math.ceil(len(documents) / files)
    for i in range(files):
        pq.write_table(pa.table({"text": documents[i * step:(i + 1) * step]}),
                       root / "data" / f"train-{i:05d}-of-{files:05d}.parquet", row_group_size=200)
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    dataset = write_train_only(tmp_path_factory.mktemp("dataset"), DOCUMENTS)
    materialize(str(dataset), "main", ["train"], "text", raw)
    return raw


def tokenize(raw: Path, out: Path, holdout: Holdout = HOLDOUT, **kw) -> dict[str, bytes]:
    tokenize_dataset(raw, out, ["train"], "text", "gpt2", "append", holdout=holdout, **kw)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def documents_of(out: Path, split: str) -> list[list[int]]:
    ids = np.fromfile(out / f"{split}.bin", "<u2").tolist()
    ends = np.cumsum(np.fromfile(out / doclens_file(split), "<u4").astype(np.int64) + 1)
    return [ids[a:b - 1] for a, b in zip([0, *ends[:-1].tolist()], ends.tolist())]


def test_every_train_document_lands_in_exactly_one_bin_in_order(raw, tmp_path):
    tokenize(raw, tmp_path / "out", workers=2)
    encoded = [ENC.encode_ordinary(text) for text in DOCUMENTS]
    held = [held_out_by_the_documented_rule(text, HOLDOUT) for text in DOCUMENTS]
    assert documents_of(tmp_path / "out", "validation") == [e for e, h in zip(encoded, held) if h]
    assert documents_of(tmp_path / "out", "train") == [e for e, h in zip(encoded, held) if not h]
    meta = read_meta(tmp_path / "out")
    assert meta.holdout == HOLDOUT and list(meta.splits) == ["train", "validation"]
    assert meta.splits["train"].documents + meta.splits["validation"].documents == len(DOCUMENTS)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["holdout"] == {
        "fraction": 0.1, "seed": 2357}


def test_the_share_held_out_is_the_fraction_within_sampling_error(raw, tmp_path):
    for holdout in (HOLDOUT, Holdout(0.02, 1), Holdout(0.5, 99)):
        out = tmp_path / str(holdout.seed)
        tokenize(raw, out, holdout, workers=2)
        held, n, p = read_meta(out).splits["validation"].documents, len(DOCUMENTS), holdout.fraction
        assert abs(held - n * p) < 4 * math.sqrt(n * p * (1 - p)), (holdout, held)


def test_the_same_bytes_whatever_the_worker_count_or_executor(raw, tmp_path, monkeypatch):
    one_thread = tokenize(raw, tmp_path / "threads1", workers=1)
    assert tokenize(raw, tmp_path / "threads2", workers=2) == one_thread
    monkeypatch.setattr(executors, "PROCESSES_FROM_BYTES", 0)  # worker processes, a work
    monkeypatch.setattr(executors, "UNIT_BYTES", 1)            # unit per row group
    assert tokenize(raw, tmp_path / "processes", workers=2) == one_thread


def test_the_split_depends_on_the_document_not_its_file_or_position(tmp_path):
    shuffled = DOCUMENTS[1::2] + DOCUMENTS[::2] + DOCUMENTS[:50]  # 50 documents twice
    raw = tmp_path / "raw"
    raw.mkdir()
    materialize(str(write_train_only(tmp_path / "ds", shuffled, files=5)), "main", ["train"],
                "text", raw)
    tokenize(raw, tmp_path / "out", workers=2)
    expected = [ENC.encode_ordinary(t) for t in shuffled
                if held_out_by_the_documented_rule(t, HOLDOUT)]
    assert documents_of(tmp_path / "out", "validation") == expected
    twice = {tuple(ENC.encode_ordinary(t)) for t in DOCUMENTS[:50]}
    in_train = {tuple(d) for d in documents_of(tmp_path / "out", "train")}
    assert not twice & in_train & {tuple(d) for d in documents_of(tmp_path / "out", "validation")}


def test_a_holdout_that_draws_nothing_says_to_raise_the_fraction(raw, tmp_path):
    with pytest.raises(TokbinError, match=r"download.holdout \(fraction 1e-09\) drew none of "
                                          r"the 3,000 train documents.*raise download.holdout."
                                          "fraction"):
        tokenize(raw, tmp_path / "out", Holdout(1e-9, 0), workers=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("holdout, splits, message", [
    ({"fraction": 0.0005, "seed": 2357}, ["train", "validation"],
     "download.splits must not also read a 'validation' split: set download.splits: [train]"),
    ({"fraction": 1.5, "seed": 1}, ["train"], "download.holdout: fraction is 1.5: it must be "
                                              "between 0 and 1"),
    ({"fraction": 0.1}, ["train"], "missing key download.holdout.seed"),
    ({"fraction": 0.1, "seed": -1}, ["train"], "seed is -1: it must be an integer from 0"),
    (0.1, ["train"], "download.holdout must be a mapping {fraction: ..., seed: ...} or null"),
    ({"fraction": 0.1, "seed": 1}, ["test"], "draws validation.bin from the 'train' bin"),
])
def test_bad_holdout_params_name_the_key_and_the_fix(tmp_path, holdout, splits, message):
    import yaml
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"].update(holdout=holdout, splits=splits)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(TokbinError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")


def test_dvc_repro_builds_validation_bin_from_a_train_only_dataset_with_dvc_yaml_untouched(
        tmp_path):
    project = make_project(tmp_path / "p", download__dataset="./dataset",
                           download__splits=["train"], download__holdout={"fraction": 0.1,
                                                                           "seed": 2357})
    write_train_only(project / "dataset", DOCUMENTS[:600])
    run(["dvc", "repro"], project)
    meta = read_meta(project / "data")
    assert meta.holdout == HOLDOUT
    held = sum(held_out_by_the_documented_rule(t, HOLDOUT) for t in DOCUMENTS[:600])
    assert meta.splits["validation"].documents == held
    assert meta.splits["train"].documents == 600 - held
    for split in ("train", "validation"):
        assert (project / "data" / f"{split}.bin").stat().st_size == meta.splits[split].bytes
    assert run(["git", "status", "--porcelain", "dvc.yaml"], project).stdout == ""
