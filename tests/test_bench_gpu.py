"""bench/bench_gpu.py runs end to end on the CPU (its smoke test: the GPU run is by hand), with
every variant's batches checked against the CPU loader's."""
from __future__ import annotations

import sys

from conftest import ROOT, run
from tokbin.binarize import binarize
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset


def test_the_gpu_benchmark_runs_on_cpu_and_checks_every_variant(tmp_path):
    materialize(str(ROOT / "sample"), "main", ["train", "validation"], "text", tmp_path / "raw")
    tokenize_dataset(tmp_path / "raw", tmp_path / "tokens", ["train", "validation"], "text",
                     "gpt2", "append", engine="fastokens", workers=1)
    (tmp_path / "data").mkdir()
    binarize(tmp_path / "tokens", tmp_path / "data", "auto")
    result = run([sys.executable, "-m", "bench.bench_gpu", "--data", str(tmp_path / "data"),
                  "--device", "cpu", "--steps", "1", "--batch-size", "2", "--block-size", "32",
                  "--layers", "1", "--width", "48"],
                 ROOT)
    assert "equal the CPU loader's for every variant" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line[:2] in ("0 ", "a ", "b ", "c ")]
    assert len(rows) == 4, result.stdout
