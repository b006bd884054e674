"""Benchmark: the tokenize stage's tokens/s on the same documents stored as parquet, .jsonl,
.jsonl.gz, .jsonl.zst and .csv, in one run.

    python -m bench.bench_formats --stories 300000 [--files 3] [--repeat 2] [--work DIR]

It writes the stories of tests/support/corpus.py (train: --stories, in --files files per
format; validation: 1%) once per format, downloads each with the download stage's code, then
runs `python -m stages.tokenize data/raw data/tokens` (the command dvc.yaml runs, with the
project's params: engine fastokens, all cores) --repeat times per format, formats interleaved,
and keeps each format's fastest run. Every format's bins must be byte-identical to parquet's.
Target (issue 15): every format at least half the parquet path's tokens/s. The machine is
shared, so only the ratios measured in one run mean much.
"""
from __future__ import annotations

import argparse
import csv
import filecmp
import gzip
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tests.support.corpus import story
from tokbin.executors import default_workers
from tokbin.format import read_meta
from tokbin.source import materialize

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ["parquet", "jsonl", "jsonl.gz", "jsonl.zst", "csv"]
SPLITS = ["train", "validation"]


def write_split(folder: Path, split: str, texts: list[str], files: int, fmt: str) -> None:
    for i in range(files):
        part = texts[len(texts) * i // files:len(texts) * (i + 1) // files]
        path = folder / "data" / f"{split}-{i:05d}-of-{files:05d}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pq.write_table(pa.table({"text": part}), path, row_group_size=10_000)
            continue
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["text"])
            writer.writerows([t] for t in part)
            data = buffer.getvalue().encode()
        else:
            data = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                           for t in part).encode()
        if fmt.endswith(".gz"):
            data = gzip.compress(data, compresslevel=6)
        elif fmt.endswith(".zst"):
            sink = pa.BufferOutputStream()
            with pa.CompressedOutputStream(sink, "zstd") as out:
                out.write(data)
            data = sink.getvalue().to_pybytes()
        path.write_bytes(data)


def prepare(work: Path, stories: int, files: int) -> dict[str, Path]:
    """A downloaded project folder (params.yaml + data/raw) per format."""
    rng = random.Random(0)
    texts = {"train": [story(rng) for _ in range(stories)]}
    texts["validation"] = [story(rng) for _ in range(max(100, stories // 100))]
    projects = {}
    for fmt in FORMATS:
        project = work / fmt.replace(".", "-")
        shutil.rmtree(project, ignore_errors=True)
        for split in SPLITS:
            write_split(project / "dataset", split, texts[split], files if split == "train" else 1,
                        fmt)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["download"]["dataset"] = "./dataset"
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        raw = project / "data" / "raw"
        raw.mkdir(parents=True)
        materialize(str(project / "dataset"), "main", SPLITS, "text", raw)
        projects[fmt] = project
    return projects


def tokenize_stage(project: Path) -> tuple[float, int]:
    """Wall seconds of the tokenize stage as dvc.yaml runs it, and the tokens it wrote."""
    shutil.rmtree(project / "data" / "tokens", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.tokenize", "data/raw", "data/tokens"],
                   cwd=project, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return seconds, sum(s.tokens for s in read_meta(project / "data" / "tokens").splits.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=300_000)
    parser.add_argument("--files", type=int, default=3, help="train files per format")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_formats")
    args = parser.parse_args()
    projects = prepare(args.work, args.stories, args.files)
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.repeat):
        for fmt in FORMATS:
            seconds, tokens = tokenize_stage(projects[fmt])
            if fmt not in best or seconds < best[fmt][0]:
                best[fmt] = (seconds, tokens)
    reference = projects["parquet"] / "data" / "tokens"
    for fmt, project in projects.items():
        for name in ("train.bin", "validation.bin"):
            if not filecmp.cmp(reference / name, project / "data" / "tokens" / name, shallow=False):
                raise SystemExit(f"{fmt}: {name} differs from parquet's")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"\n{args.stories:,} stories, {args.files} train files per format; {cpu}, "
          f"{default_workers()} cores, Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}; best of {args.repeat}; bins identical across formats")
    print(f"| format | data files (MB) | tokenize stage (s) | M tokens/s | vs parquet |")
    print("|---|---:|---:|---:|---:|")
    base = best["parquet"][1] / best["parquet"][0]
    for fmt in FORMATS:
        seconds, tokens = best[fmt]
        size = sum(p.stat().st_size for p in (projects[fmt] / "data" / "raw").rglob(f"*.{fmt}"))
        rate = tokens / seconds
        print(f"| {fmt} | {size / 1e6:.0f} | {seconds:.1f} | {rate / 1e6:.2f} | "
              f"{rate / base:.2f} |")


if __name__ == "__main__":
    main()
