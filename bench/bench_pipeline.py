"""Benchmark: the seed notebook's pipeline, an llm.c-style prepare script and tokbin's
`dvc repro`, side by side in one run on the same deterministic TinyStories-shaped corpus.

    python -m bench.bench_pipeline --stories 300000 [--scale 1 4] [--cache-type hardlink]
                                   [--engine tiktoken fastokens]

For each scale it generates the corpus (tests/support/corpus.py, kept in --work for reuse),
measures the tokenizer ceiling (cores x one core's `encode_ordinary` tokens per CPU second on a
sample of the corpus), runs the seed (tests/support/seed_pipeline.py), the llm.c-style script
(bench/llmc_pipeline.py) and, for each --engine, `dvc repro` in a scratch copy of this working
tree (eot: none, download.dataset: the corpus, tokenize.engine: that engine), then a no-op
`dvc repro`, checks that the seed's bins and tokbin's are byte-identical, reruns binarize with
dtype uint32 (a copy instead of a link), runs binarize again in this process next to the disk's
own write speed, and prints a table. Every run is a subprocess whose process tree is polled
with psutil: peak RSS is the largest single process's, CPU s the tree's user+sys. The machine
is shared, so only ratios measured in the same run mean much. Results and method:
docs/performance.md.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import yaml

from tokbin.params import ENGINES

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation")
NOT_COPIED = {".venv", ".git", "data", "reports", "dvc_plots", ".pytest_cache", "__pycache__"}
CEILING_SAMPLE_DOCS = 60_000
POLL_SECONDS = 0.05


@dataclass
class Measured:
    """One subprocess run: wall time, its output lines stamped with seconds since start, the
    peak RSS of its largest process and the CPU seconds of its whole tree."""
    wall: float
    peak_rss: int
    cpu: float
    lines: list[tuple[float, str]] = field(default_factory=list)


def measure(cmd: list[str], cwd: Path, env: dict) -> Measured:
    lines: list[tuple[float, str]] = []
    peak: dict[int, int] = {}
    cpu: dict[int, float] = {}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)

    def read_output() -> None:
        for line in proc.stdout:  # universal newlines: tqdm's \r updates are lines too
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read_output)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                with p.oneshot():
                    rss, times = p.memory_info().rss, p.cpu_times()
            except psutil.Error:
                continue
            peak[p.pid] = max(peak.get(p.pid, 0), rss)
            cpu[p.pid] = times.user + times.system
        time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - started
    reader.join()
    if proc.returncode:
        tail = "\n".join(line for _, line in lines[-30:])
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{tail}")
    return Measured(wall, max(peak.values(), default=0), sum(cpu.values()), lines)


def bench_env(work: Path) -> dict:
    bin_dir = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(work / "hf-cache")}


def make_corpus(work: Path, stories: int) -> Path:
    corpus = work / f"corpus-{stories}"
    done = corpus / ".complete"
    if not done.exists():
        shutil.rmtree(corpus, ignore_errors=True)
        print(f"generating {stories:,} stories in {corpus} ...", flush=True)
        subprocess.run([sys.executable, "-m", "tests.support.corpus", "--stories", str(stories),
                        "--out", str(corpus)], cwd=ROOT, check=True)
        done.touch()
    return corpus


def corpus_files(corpus: Path, split: str) -> list[Path]:
    return sorted((corpus / "data").glob(f"{split}-*.parquet"))


def tokenizer_ceiling(corpus: Path, cores: int) -> dict:
    """One core's encode_ordinary rate (tokens per CPU second) on the corpus's first documents."""
    import pyarrow.parquet as pq
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    texts: list[str] = []
    for path in corpus_files(corpus, "train"):
        texts += pq.read_table(path, columns=["text"]).column(0).to_pylist()
        if len(texts) >= CEILING_SAMPLE_DOCS:
            break
    texts = texts[:CEILING_SAMPLE_DOCS]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"docs": len(texts), "tokens": tokens, "core_rate": tokens / cpu,
            "core_rate_wall": tokens / wall, "cores": cores, "rate": cores * tokens / cpu}


def run_reference(module: str, corpus: Path, out: Path, work: Path, cores: int) -> dict:
    """tests.support.seed_pipeline or bench.llmc_pipeline: stage times from its JSON line."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "hf-cache", ignore_errors=True)  # datasets' cache: a cold start
    m = measure([sys.executable, "-m", module, str(corpus), str(out), "--num-proc", str(cores)],
                ROOT, bench_env(work))
    stages = json.loads(next(line for _, line in reversed(m.lines) if line.startswith("{")))
    shutil.rmtree(work / "hf-cache", ignore_errors=True)
    return {"wall": m.wall, "cpu": m.cpu, "peak_rss": m.peak_rss, "stages": stages}


def edit_params(repo: Path, changes: dict[str, dict]) -> None:
    """Sets params.yaml keys, given per section."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def scratch_project(repo: Path, corpus: Path, cache_type: str | None, engine: str) -> None:
    """A copy of this working tree with its own git repo, reading `corpus` with eot: none."""
    shutil.rmtree(repo, ignore_errors=True)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in NOT_COPIED}
        if Path(folder).name == ".dvc":
            skip |= {"cache", "tmp"}
        return skip

    shutil.copytree(ROOT, repo, ignore=ignore)
    edit_params(repo, {"download": {"dataset": str(corpus)},
                       "tokenize": {"eot": "none", "engine": engine}})
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(git + cmd, cwd=repo, check=True, capture_output=True)
    if cache_type:
        subprocess.run(["dvc", "config", "--local", "cache.type", cache_type], cwd=repo,
                       check=True, env=bench_env(repo.parent))


def stage_times(m: Measured) -> dict[str, float]:
    """Each stage's wall time, from DVC's "Running stage" line to the next (or to the end):
    the stage's command plus DVC's hashing and caching of its outputs."""
    starts = [(t, match.group(1)) for t, line in m.lines
              if (match := re.search(r"Running stage '([^']+)'", line))]
    ends = [t for t, _ in starts[1:]] + [m.wall]
    times = {"dvc startup": starts[0][0] if starts else m.wall}
    times.update({name: end - t for (t, name), end in zip(starts, ends)})
    return times


def run_tokbin(repo: Path, corpus: Path, work: Path, cache_type: str | None,
               engine: str) -> dict:
    scratch_project(repo, corpus, cache_type, engine)
    m = measure(["dvc", "repro"], repo, bench_env(work))
    noop = measure(["dvc", "repro"], repo, bench_env(work))
    if any("Running stage" in line for _, line in noop.lines):
        sys.exit("the second `dvc repro` reran a stage:\n" + "\n".join(l for _, l in noop.lines))
    meta = json.loads((repo / "data" / "meta.json").read_text())
    return {"wall": m.wall, "cpu": m.cpu, "peak_rss": m.peak_rss, "stages": stage_times(m),
            "noop_wall": noop.wall, "binarize": binarize_report(m),
            "tokens": sum(s["tokens"] for s in meta["splits"].values())}


def binarize_report(m: Measured) -> dict[str, float]:
    """What the binarize stage printed: MB/s of bins produced, MB copied, MB hard-linked."""
    line = next(line for _, line in m.lines if re.search(r"binarize: .* MB/s\)", line))
    copied, linked, rate = re.search(r"\(([\d.]+) MB copied, ([\d.]+) MB linked\) in .* "
                                     r"\((\d+) MB/s\)", line).groups()
    return {"mb_s": float(rate), "copied_mb": float(copied), "linked_mb": float(linked)}


def widened_binarize(repo: Path, work: Path) -> dict[str, float]:
    """The binarize stage inside `dvc repro` when it must copy: binarize.dtype uint32 (checked,
    widened, twice the bytes written). Only binarize reruns."""
    edit_params(repo, {"binarize": {"dtype": "uint32"}})
    m = measure(["dvc", "repro"], repo, bench_env(work))
    return {**binarize_report(m), "stage_wall": stage_times(m)["binarize"]}


def binarize_rates(repo: Path, work: Path) -> dict[str, float]:
    """MB/s of tokbin's binarize on the built tokens, run here: kept dtype (the default: ids
    checked, then hard-linked) and widened to uint32 (checked, converted, twice the bytes
    written: the copy)."""
    from tokbin.binarize import binarize
    rates = {}
    for dtype in ("uint16", "uint32"):
        out = work / f"binarize-{dtype}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        started = time.perf_counter()
        meta = binarize(repo / "data" / "tokens", out, dtype)
        rates[dtype] = sum(s.bytes for s in meta.splits.values()) / 1e6 / (
            time.perf_counter() - started)
        shutil.rmtree(out)
    rates["disk"] = disk_write_rate(work, sum(
        (repo / "data" / "tokens" / f"{split}.bin").stat().st_size for split in SPLITS))
    return rates


def disk_write_rate(work: Path, size: int) -> float:
    """MB/s of the least any binarize must do for `size` bytes on this disk: write them from
    memory in 8 MB blocks and fsync. Binarize near this rate runs at disk speed."""
    block = np.zeros(1 << 22, np.uint16)
    path = work / "disk-write-baseline"
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(0, size, block.nbytes):
            f.write(block)
        os.fsync(f.fileno())
    rate = size / 1e6 / (time.perf_counter() - started)
    path.unlink()
    return rate


def bins_identical(seed_out: Path, repo: Path) -> bool:
    return all(filecmp.cmp(seed_out / f"{split}.bin", repo / "data" / f"{split}.bin",
                           shallow=False) for split in SPLITS)


def fast_path_share(corpus: Path) -> float:
    """The share of the corpus's documents that the fastokens engine sends to fastokens."""
    from tokbin.fast_path import proven_class
    from tokbin.readers import DataFile, Reading, iter_text_batches
    masks = [proven_class("gpt2").mask(batch) for split in SPLITS
             for path in corpus_files(corpus, split)
             for batch in iter_text_batches(DataFile(str(path), str(path)),
                                            Reading("parquet", "text"), 1 << 20)]
    return float(np.concatenate(masks).mean())


def bench_scale(stories: int, work: Path, cores: int, cache_type: str | None,
                engines: list[str]) -> dict:
    corpus = make_corpus(work, stories)
    text_mb = sum(p.stat().st_size for p in (corpus / "data").glob("*.parquet")) / 1e6
    load_before = os.getloadavg()[0]
    print(f"\n== {stories:,} stories: tokenizer ceiling ...", flush=True)
    ceiling = tokenizer_ceiling(corpus, cores)
    print("== seed notebook pipeline ...", flush=True)
    seed = run_reference("tests.support.seed_pipeline", corpus, work / "seed-out", work, cores)
    print("== llm.c-style script ...", flush=True)
    llmc = run_reference("bench.llmc_pipeline", corpus, work / "llmc-out", work, cores)
    tokbin = {}
    for engine in engines:
        print(f"== tokbin dvc repro, tokenize.engine {engine} ...", flush=True)
        tokbin[engine] = run_tokbin(work / f"repo-{engine}", corpus, work, cache_type, engine)
    identical = all(bins_identical(work / "seed-out", work / f"repo-{engine}")
                    for engine in engines)
    binarize_here = binarize_rates(work / f"repo-{engines[0]}", work)
    print("== tokbin dvc repro, binarize.dtype uint32 (binarize copies) ...", flush=True)
    widened = widened_binarize(work / f"repo-{engines[0]}", work)
    return {"widened_binarize": widened, "stories": stories, "parquet_mb": text_mb, "tokens": tokbin[engines[0]]["tokens"],
            "ceiling": ceiling, "seed": seed, "llmc": llmc, "tokbin": tokbin,
            "binarize_here_mb_s": binarize_here, "fast_path_share": fast_path_share(corpus),
            "identical": identical, "loadavg": [load_before, os.getloadavg()[0]]}


def pipelines(r: dict) -> list[tuple[str, dict]]:
    """(name, run) of every pipeline in a bench_scale result, the seed's first."""
    return [("seed notebook", r["seed"]), ("llm.c-style", r["llmc"]),
            *((f"tokbin {engine}", run) for engine, run in r["tokbin"].items())]


def print_table(r: dict) -> None:
    tokens, ceiling, seed_wall = r["tokens"], r["ceiling"]["rate"], r["seed"]["wall"]
    c = r["ceiling"]
    print(f"\n{r['stories']:,} stories ({r['parquet_mb']:.0f} MB parquet), {tokens / 1e6:.1f} M "
          f"gpt2 tokens; tokenizer ceiling {c['cores']} cores x {c['core_rate'] / 1e6:.2f} M "
          f"tokens/CPU-s = {ceiling / 1e6:.2f} M tokens/s; load average {r['loadavg'][0]:.1f} "
          f"before, {r['loadavg'][1]:.1f} after")
    header = (f"{'pipeline':<20}{'stage':<13}{'wall s':>8}{'CPU s':>8}{'M tok/s':>9}"
              f"{'peak RSS MB':>13}{'vs seed':>9}{'of ceiling':>12}{'CPU eff':>9}")
    print(header)
    print("-" * len(header))
    for name, run in pipelines(r):
        for stage, wall in run["stages"].items():
            print(f"{name:<20}{stage:<13}{wall:>8.2f}")
            name = ""
        print(f"{name:<20}{'total':<13}{run['wall']:>8.2f}{run['cpu']:>8.1f}"
              f"{tokens / run['wall'] / 1e6:>9.2f}{run['peak_rss'] / 1e6:>13.0f}"
              f"{seed_wall / run['wall']:>8.1f}x{tokens / run['wall'] / ceiling:>12.0%}"
              f"{tokens / run['cpu'] / c['core_rate']:>9.0%}")
    for engine, t in r["tokbin"].items():
        print(f"{'tokbin no-op repro':<20}{engine:<13}{t['noop_wall']:>8.2f}")
    print("tokbin <engine>: `dvc repro` with that tokenize.engine. of ceiling: M tok/s / the "
          "ceiling; CPU eff: tokens per CPU second of the whole process tree / one core's "
          "encode_ordinary rate (what contention cannot hide)")
    print(f"documents on fastokens' fast path: {r['fast_path_share']:.2%} (the rest: tiktoken)")
    here = r["binarize_here_mb_s"]
    for engine, t in r["tokbin"].items():
        b = t["binarize"]
        print(f"tokbin {engine} vs llm.c-style: {r['llmc']['wall'] / t['wall']:.2f}x faster; "
              f"binarize {b['mb_s']:.0f} MB/s of bins in the stage ({b['copied_mb']:.0f} MB "
              f"copied, {b['linked_mb']:.0f} MB hard-linked after checking every id)")
    w = r["widened_binarize"]
    print(f"binarize in `dvc repro` with binarize.dtype uint32 (a checked, widening copy): "
          f"{w['mb_s']:.0f} MB/s ({w['copied_mb']:.0f} MB copied), stage {w['stage_wall']:.2f} s")
    print(f"binarize again here: {here['uint16']:.0f} MB/s kept dtype (linked), "
          f"{here['uint32']:.0f} MB/s widening to uint32 (copied); this disk's own write speed "
          f"(same bytes from memory, fsync): {here['disk']:.0f} MB/s")
    print(f"seed train.bin/validation.bin == tokbin's (eot none):"
          f" {'yes' if r['identical'] else 'NO'}")


def print_scaling(results: list[dict], base: int) -> None:
    print("\nscaling (wall s per M tokens; peak RSS MB of the largest process)")
    names = [name.replace("tokbin ", "").replace(" notebook", "").replace("-style", "")
             for name, _ in pipelines(results[0])]
    header = (f"{'scale':<7}{'stories':>10}{'M tokens':>10}" + "".join(
        f"{n + ' s':>12}{'s/Mtok':>8}{'RSS MB':>8}" for n in names)
              + "".join(f"{n + ' vs seed':>16}" for n in names[2:]))
    print(header)
    print("-" * len(header))
    for r in results:
        mtok = r["tokens"] / 1e6
        runs = [run for _, run in pipelines(r)]
        cells = "".join(f"{run['wall']:>12.1f}{run['wall'] / mtok:>8.3f}"
                        f"{run['peak_rss'] / 1e6:>8.0f}" for run in runs)
        print(f"{r['stories'] / base:<6.0f}x{r['stories']:>10,}{mtok:>10.1f}{cells}"
              + "".join(f"{r['seed']['wall'] / run['wall']:>15.1f}x" for run in runs[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=300_000, help="train stories at 1x")
    parser.add_argument("--scale", type=int, nargs="+", default=[1], help="corpus multiples")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tokbin-bench"),
                        help="scratch folder: corpora, outputs, the project copy")
    parser.add_argument("--cache-type", default=None,
                        help="DVC cache.type for the scratch copy (default: the project's)")
    parser.add_argument("--engine", nargs="+", default=["tiktoken", "fastokens"],
                        choices=ENGINES,
                        help="tokenize.engine of each tokbin run (default: both)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    print(f"python {sys.version.split()[0]}, {cores} cores, {os.uname().machine}, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; DVC cache.type "
          f"{args.cache_type or 'as configured'}")
    results = []
    for scale in args.scale:
        results.append(bench_scale(args.stories * scale, args.work, cores, args.cache_type,
                                   args.engine))
        print_table(results[-1])
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    if len(results) > 1:
        for r in results:
            print_table(r)
        print_scaling(results, args.stories)
    if not all(r["identical"] for r in results):
        sys.exit("seed and tokbin bins differ")


if __name__ == "__main__":
    main()
