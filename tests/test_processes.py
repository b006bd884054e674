"""The local executor's worker processes (large parquet datasets): the same bins as its
threads, and every failure stops with a clear error, leaves no output and no process behind.

The tests lower the size from which processes are used, and cut a work unit per row group, so
that a small dataset runs many units on two workers; and the size from which fastokens is used,
so that it runs in them as on a large dataset.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support.text_classes import CLASSES, class_documents
from tokbin import engines, executors
from tokbin.errors import TokbinError
from tokbin.format import read_meta
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

TEXTS = [t for name in CLASSES for t in class_documents(name, 60, seed=21)]


def write_dataset(root: Path, train: list, validation: list, jsonl=False) -> Path:
    """Train in parquet files of many small row groups (or in 4 JSON Lines files); validation
    in one file."""
    (root / "data").mkdir(parents=True)
    parts = 4 if jsonl else 2
    for split, texts, files in (("train", train, parts), ("validation", validation, 1)):
        for index in range(files):
            part = texts[len(texts) * index // files:len(texts) * (index + 1) // files]
            name = root / "data" / f"{split}-{index:05d}-of-{files:05d}"
            if jsonl:
                name.with_suffix(".jsonl").write_text(
                    "".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
            else:
                pq.write_table(pa.table({"text": pa.array(part, type=pa.string())}),
                               name.with_suffix(".parquet"), row_group_size=40)
    return root


def downloaded(tmp_path: Path, **kw) -> Path:
    raw = tmp_path / "raw"
    materialize(str(write_dataset(tmp_path / "dataset", **kw)), "main", ["train", "validation"],
                "text", raw)
    return raw


@pytest.fixture(autouse=True)
def fastokens_for_any_size(monkeypatch):
    monkeypatch.setattr(engines, "FASTOKENS_FROM_BYTES", 0)


def use_processes(monkeypatch) -> list[str]:
    """Worker processes for any dataset, a work unit per row group; returns the list of the splits
    they will have written."""
    monkeypatch.setattr(executors, "PROCESSES_FROM_BYTES", 0)
    monkeypatch.setattr(executors, "UNIT_BYTES", 1)
    written, real = [], executors.ProcessExecutor.tokenize_split

    def recording(self, job, *args):
        written.append(job.outputs[0].bin.stem)
        return real(self, job, *args)

    monkeypatch.setattr(executors.ProcessExecutor, "tokenize_split", recording)
    return written


@pytest.fixture
def splits_in_processes(monkeypatch) -> list[str]:
    return use_processes(monkeypatch)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("engine,eot", [("fastokens", "append"), ("fastokens", "prepend"),
                                        ("fastokens", "none"), ("tiktoken", "append")])
def test_worker_processes_write_the_same_bins_as_threads(tmp_path, monkeypatch, engine, eot):
    raw = downloaded(tmp_path, train=TEXTS, validation=TEXTS[:100])
    tokenize_dataset(raw, tmp_path / "threads", ["train", "validation"], "text", "gpt2", eot,
                     engine=engine, workers=2)
    written = use_processes(monkeypatch)
    tokenize_dataset(raw, tmp_path / "processes", ["train", "validation"], "text", "gpt2", eot,
                     engine=engine, workers=2)
    assert written == ["train", "validation"]
    assert outputs(tmp_path / "processes") == outputs(tmp_path / "threads")
    assert not list((tmp_path / "processes").glob(".*"))  # no spill folder left
    # meta.json's CRC-32, combined from the workers' (the main process never reads the ids)
    for info in read_meta(tmp_path / "processes").splits.values():
        data = (tmp_path / "processes" / info.file).read_bytes()
        assert info.crc32 == f"{zlib.crc32(data):08x}"


def test_a_json_lines_dataset_of_many_files_is_read_a_file_per_worker_with_the_same_bins(
        tmp_path, monkeypatch):
    raw = downloaded(tmp_path, train=TEXTS, validation=TEXTS[:100], jsonl=True)
    tokenize_dataset(raw, tmp_path / "threads", ["train", "validation"], "text", "gpt2",
                     "append", engine="fastokens", workers=2)
    written = use_processes(monkeypatch)
    tokenize_dataset(raw, tmp_path / "processes", ["train", "validation"], "text", "gpt2",
                     "append", engine="fastokens", workers=2)
    assert written == ["train", "validation"]
    assert outputs(tmp_path / "processes") == outputs(tmp_path / "threads")
    monkeypatch.setattr(executors, "PROCESSES_FROM_BYTES", 1 << 40)  # too small for them
    written.clear()
    tokenize_dataset(raw, tmp_path / "small", ["train"], "text", "gpt2", "append", workers=2)
    assert written == []


def test_small_datasets_and_one_worker_use_threads(tmp_path, monkeypatch):
    raw = downloaded(tmp_path, train=TEXTS, validation=TEXTS[:100])
    written = []
    monkeypatch.setattr(executors.ProcessExecutor, "tokenize_split",
                        lambda *a: written.append(a))
    tokenize_dataset(raw, tmp_path / "small", ["train", "validation"], "text", "gpt2", "append",
                     engine="fastokens", workers=2)  # far below PROCESSES_FROM_BYTES
    monkeypatch.setattr(executors, "PROCESSES_FROM_BYTES", 0)
    tokenize_dataset(raw, tmp_path / "one", ["train", "validation"], "text", "gpt2", "append",
                     engine="fastokens", workers=1)
    assert written == []


def test_bad_data_in_a_worker_is_its_own_clear_error_and_leaves_no_output(
        tmp_path, splits_in_processes):
    raw = downloaded(tmp_path, train=[*TEXTS[:300], None, *TEXTS[300:]], validation=TEXTS[:50])
    with pytest.raises(TokbinError, match="null value.*drop or fill those rows"):
        tokenize_dataset(raw, tmp_path / "out", ["train", "validation"], "text", "gpt2",
                         "append", engine="fastokens", workers=2)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_an_unknown_encoding_fails_from_the_workers_with_its_own_message(tmp_path,
                                                                        splits_in_processes):
    raw = downloaded(tmp_path, train=TEXTS, validation=TEXTS[:50])
    with pytest.raises(TokbinError, match="unknown tiktoken encoding 'gpt3'"):
        tokenize_dataset(raw, tmp_path / "out", ["train"], "text", "gpt3", "append",
                         engine="tiktoken", workers=2)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_under_the_workers_spill_files_is_a_clear_error_and_leaves_nothing(
        tmp_path, splits_in_processes, small_disk):
    raw = downloaded(tmp_path, train=TEXTS * 20, validation=TEXTS[:50])
    disk = small_disk(tmp_path / "small", 256 << 10)  # the bins need about 1.5 MB
    with pytest.raises(TokbinError, match="disk full while writing .*out: .*then rerun"):
        tokenize_dataset(raw, disk / "out", ["train", "validation"], "text", "gpt2", "append",
                         engine="fastokens", workers=2)
    assert list(disk.iterdir()) == []


def workers_of(process: psutil.Process) -> list[psutil.Process]:
    """The pool's workers: children of the fork server, itself a child of `process`."""
    return [p for child in process.children() for p in child.children()]


def test_a_killed_worker_stops_the_split_with_a_clear_error_and_no_output(tmp_path,
                                                                         splits_in_processes):
    raw = downloaded(tmp_path, train=TEXTS * 20, validation=TEXTS[:50])
    failure = []

    def run():
        try:
            tokenize_dataset(raw, tmp_path / "out", ["train", "validation"], "text", "gpt2",
                             "append", engine="fastokens", workers=2)
        except TokbinError as e:
            failure.append(str(e))

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 30
    while not workers_of(psutil.Process()) and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = workers_of(psutil.Process())[0]
    victim.send_signal(signal.SIGKILL)
    runner.join(60)
    assert not runner.is_alive()
    assert failure and "worker process died" in failure[0] and "rerun" in failure[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


KILLED_MAIN = """
import sys
from pathlib import Path
from tokbin import executors, tokenize
executors.PROCESSES_FROM_BYTES, executors.UNIT_BYTES = 0, 1
tokenize.tokenize_dataset(Path(sys.argv[1]), Path(sys.argv[2]), ["train"], "text", "gpt2",
                          "append", engine="fastokens", workers=2)
"""


def test_workers_die_with_a_killed_main_process(tmp_path):
    raw = downloaded(tmp_path, train=TEXTS * 40, validation=TEXTS[:50])
    main = subprocess.Popen([sys.executable, "-c", KILLED_MAIN, str(raw), str(tmp_path / "out")],
                            cwd=Path(__file__).parents[1])
    process = psutil.Process(main.pid)
    deadline = time.monotonic() + 30
    while len(workers_of(process)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = workers_of(process)
    assert len(workers) == 2, "the workers did not start"
    main.send_signal(signal.SIGKILL)
    main.wait()
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive
    assert not (tmp_path / "out").exists()


def test_a_spill_file_of_another_size_than_its_worker_reported_is_refused(tmp_path):
    from tokbin.format import BinWriter
    spill = tmp_path / "0.ids"
    spill.write_bytes(b"\x01\x00" * 5)
    with BinWriter(tmp_path / "out.bin", "uint16", 50257) as bins:
        bins.append_file(spill, 5, zlib.crc32(spill.read_bytes()))
        with pytest.raises(TokbinError, match="holds 10 bytes, not the 12 of 6 ids"):
            bins.append_file(spill, 6, 0)
    assert (tmp_path / "out.bin").read_bytes() == b"\x01\x00" * 5
