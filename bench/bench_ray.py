"""Benchmark: tokenize.executor ray with 1 and 2 Ray workers against executor local, and Ray's
overhead per task, in one run on the same deterministic TinyStories-shaped corpus.

    python -m bench.bench_ray --stories 200000 [--work /tmp/bench_ray] [--tiny-tasks 200]

Each configuration tokenizes both splits with `tokenize_dataset` in this process (the
stage's code path); the Ray ones run against a local Ray instance started with 1 or 2 CPUs
(one worker process per CPU), whose start-up (ray.init, then a tiny run that starts the
workers and loads the encoding in them) is timed apart from the tokenization. Every
configuration's output is checked byte-identical to executor local's. The overhead per task
is the wall time per task of a split made of `--tiny-tasks` one-document parquet files (one
task each) on 2 workers: submit, schedule, read, encode, return and write. The machine is
shared, so only ratios measured in the same run mean much. Results and method:
docs/performance.md.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.corpus import write_corpus
from tokbin import ray_executor
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

SPLITS = ["train", "validation"]


def tokenize(raw: Path, out: Path, executor: str, workers: int) -> tuple[float, int]:
    """Seconds to tokenize both splits, and the tokens written."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    meta = tokenize_dataset(raw, out, SPLITS, "text", "gpt2", "append", workers=workers,
                            executor=executor)
    return time.perf_counter() - started, sum(s.tokens for s in meta.splits.values())


def same_output(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def tiny_task_raw(work: Path, tasks: int) -> Path:
    """A downloaded dataset whose train split is `tasks` one-document parquet files."""
    dataset = work / "tiny-dataset" / "data"
    dataset.mkdir(parents=True, exist_ok=True)
    for i in range(tasks):
        pq.write_table(pa.table({"text": [f"Story {i}: the cat sat."]}),
                       dataset / f"train-{i:05d}-of-{tasks:05d}.parquet")
    pq.write_table(pa.table({"text": ["The end."]}), dataset / "validation.parquet")
    raw = work / "tiny-raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    materialize(str(dataset.parent), "main", SPLITS, "text", raw)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_ray")
    parser.add_argument("--tiny-tasks", type=int, default=200)
    args = parser.parse_args()
    ray_executor.keep_local_ray_on_loopback()
    import ray

    work = args.work
    raw = work / f"raw-{args.stories}"
    if not raw.exists():
        write_corpus(work / f"corpus-{args.stories}", args.stories)
        tmp = work / "raw-partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        materialize(str(work / f"corpus-{args.stories}"), "main", SPLITS, "text", tmp)
        tmp.rename(raw)
    text_mb = sum(p.stat().st_size for p in raw.rglob("*.parquet")) / 1e6
    print(f"corpus: {args.stories:,} stories, {text_mb:.0f} MB parquet; machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)")

    runs = []  # (name, Ray start-up seconds, tokenize seconds, tokens, output folder)
    for workers in (1, 2):
        out = work / f"out-local-{workers}"
        runs.append((f"local, {workers} worker(s)", None, *tokenize(raw, out, "local", workers),
                     out))
    tiny = tiny_task_raw(work, args.tiny_tasks)
    for workers in (1, 2):
        started = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False,
                 object_store_memory=200 << 20, log_to_driver=False)
        tokenize(tiny, work / "out-tiny", "ray", workers)  # starts the workers, loads gpt2
        startup = time.perf_counter() - started
        try:
            out = work / f"out-ray-{workers}"
            runs.append((f"ray, {workers} worker(s)", startup, *tokenize(raw, out, "ray", workers),
                         out))
            if workers == 2:
                tiny_seconds, _ = tokenize(tiny, work / "out-tiny", "ray", workers)
        finally:
            ray.shutdown()

    print("\n| executor | Ray start-up s | tokenize s | M tokens/s | vs local 1 | identical |")
    print("|---|---|---|---|---|---|")
    base = runs[0][3] / runs[0][2]
    for name, startup, seconds, tokens, out in runs:
        rate = tokens / seconds
        identical = same_output(out, runs[0][4])
        print(f"| {name} | {'-' if startup is None else f'{startup:.1f}'} | {seconds:.1f} | "
              f"{rate / 1e6:.2f} | {rate / base:.2f}x | {'yes' if identical else 'NO'} |")
    tasks = args.tiny_tasks + 1  # + the validation file
    print(f"\noverhead per Ray task (2 workers, {tasks} one-document tasks): "
          f"{tiny_seconds / tasks * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
