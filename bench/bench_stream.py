"""Benchmark: the tokenize stage reading its inputs from object storage (download.materialize:
false: a local moto S3 server) against reading the same files from local disk (materialize:
true), with 1 and 2 Ray workers and the local executor, in one run on one corpus.

    python -m bench.bench_stream --stories 200000 [--work /tmp/bench_stream]

The corpus (tests/support/corpus.py) is uploaded to s3://bench/corpus on a moto server
started as its own process on 127.0.0.1 (so it does not share this process's GIL). The
download stage's code then makes two data/raw folders from that bucket: one with the files
copied (disk), one with source.json alone (s3). Each configuration tokenizes both splits
with `tokenize_dataset` (the stage's code path); Ray runs on a local Ray instance of 1 or 2
CPUs, whose start-up (ray.init, then a tiny run that starts the workers and loads the
encoding) is timed apart. Every output is checked byte-identical (bins, doclens, meta.json)
to the disk run of executor local. moto serves S3 from Python on the same 2 shared cores, so
the s3 rows are a floor, not what a real S3 endpoint gives. Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_ray import SPLITS, same_output, tokenize
from tests.support.corpus import write_corpus
from tests.support.s3 import CREDENTIALS
from tokbin import ray_executor
from tokbin.source import materialize

def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server as its own process on a free 127.0.0.1 port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto_server did not start")


def upload(corpus: Path, url: str) -> None:
    import boto3
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for path in sorted(corpus.rglob("*.parquet")):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(corpus)}")


def download(url: str, raw: Path, copy: bool) -> Path:
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    materialize(url, "main", SPLITS, "text", raw, copy=copy)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=200_000)
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench_stream")
    args = parser.parse_args()
    ray_executor.keep_local_ray_on_loopback()
    import ray

    work = args.work
    corpus = work / f"corpus-{args.stories}"
    if not corpus.exists():
        write_corpus(corpus, args.stories)
    server, endpoint = start_moto()
    # Set before Ray starts: its workers read S3 with this environment, as a node would.
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        url = "s3://bench/corpus"
        upload(corpus, url)
        raws = {"disk": download(url, work / "raw-disk", copy=True),
                "s3": download(url, work / "raw-s3", copy=False)}
        size_mb = sum(p.stat().st_size for p in corpus.rglob("*.parquet")) / 1e6
        print(f"corpus: {args.stories:,} stories, {size_mb:.0f} MB parquet; machine: "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
              f"(shared); data/raw: disk {len(list(raws['disk'].rglob('*')))} entries, "
              f"s3 {[p.name for p in raws['s3'].iterdir()]}")
        runs = []  # (input, executor, workers, Ray start-up s, tokenize s, tokens, output)
        for where, raw in raws.items():
            out = work / f"out-{where}-local"
            runs.append((where, "local", 2, None, *tokenize(raw, out, "local", 2), out))
        for workers in (1, 2):
            started = time.perf_counter()
            ray.init(address="local", num_cpus=workers, include_dashboard=False,
                     object_store_memory=200 << 20, log_to_driver=False)
            try:
                tokenize(raws["disk"], work / "out-warm-up", "ray", workers)
                startup = time.perf_counter() - started
                for where, raw in raws.items():
                    out = work / f"out-{where}-ray-{workers}"
                    runs.append((where, "ray", workers, startup,
                                 *tokenize(raw, out, "ray", workers), out))
            finally:
                ray.shutdown()
    finally:
        server.terminate()
        server.wait()

    print("\n| input | executor | workers | Ray start-up s | tokenize s | M tokens/s "
          "| s3 vs disk | identical |")
    print("|---|---|---|---|---|---|---|---|")
    rates = {(w, e, n): tokens / seconds for w, e, n, _, seconds, tokens, _ in runs}
    for where, executor, workers, startup, seconds, tokens, out in runs:
        rate = tokens / seconds
        versus = f"{rate / rates[('disk', executor, workers)]:.2f}x" if where == "s3" else "-"
        identical = same_output(out, runs[0][6])
        print(f"| {where} | {executor} | {workers} | "
              f"{'-' if startup is None else f'{startup:.1f}'} | {seconds:.1f} | "
              f"{rate / 1e6:.2f} | {versus} | {'yes' if identical else 'NO'} |")


if __name__ == "__main__":
    main()
