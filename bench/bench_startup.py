"""A small build's tokenize stage, where start-up is most of the time.

    python -m bench.bench_startup [--stories 3000] [--runs 7] [--tree OTHER_CHECKOUT ...]

Writes a TinyStories-shaped corpus of --stories stories (tests.support.corpus), materializes it
with the download stage's code, then runs the tokenize stage (tokenize_dataset in a fresh
process, as `dvc repro` runs it) with each engine, from this checkout and from each --tree (an
older checkout, to compare: each run imports tokbin from its own tree), alternated, --runs
times. The engines: fastokens as tokbin runs it (under FASTOKENS_FROM_BYTES of text, which
tokbin.engines sets where the two stages meet, tiktoken), fastokens at any size (`fastokens
forced`, what that size is chosen from) and tiktoken. Prints medians of the process's wall and CPU seconds (interpreter start and imports
included) and of the stage call's own seconds. The user caches (tokenizer.json, gpt2's ranks)
are warm, as on every build but a machine's first. Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bench_engines import STAGE_RUN, machine
from bench.bench_pipeline import measure

ENGINES = ("fastokens", "fastokens forced", "tiktoken")
FORCED = "import tokbin.engines\ntokbin.engines.FASTOKENS_FROM_BYTES = 0\n"


def stage_run(tree: Path, raw: Path, out: Path, engine: str) -> dict:
    forced = engine == "fastokens forced" and (tree / "tokbin" / "engines.py").read_text(
        ).count("FASTOKENS_FROM_BYTES")  # an older tree has no such size: it is forced anyway
    code = (FORCED if forced else "") + STAGE_RUN
    run = measure([sys.executable, "-c", code, str(raw), str(out), engine.split()[0], "2"],
                  tree, {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(tree)})
    return {"call_s": json.loads(run.lines[-1][1])["seconds"], "process_s": run.wall,
            "cpu_s": run.cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tree", type=Path, nargs="*", default=[], help="other checkouts")
    args = parser.parse_args()
    from tests.support.corpus import write_corpus
    from tokbin.source import materialize
    trees = [Path.cwd(), *[t.resolve() for t in args.tree]]
    runs: dict[tuple[str, str], list[dict]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        tmp = Path(tmp)
        write_corpus(tmp / "corpus", args.stories)
        materialize(str(tmp / "corpus"), "main", ["train", "validation"], "text", tmp / "raw")
        mb = sum(p.stat().st_size for p in (tmp / "raw").rglob("*.parquet")) / 2**20
        for _ in range(args.runs):
            for engine in ENGINES:
                for tree in trees:
                    out = tmp / "out"
                    runs.setdefault((str(tree), engine), []).append(
                        stage_run(tree, tmp / "raw", out, engine))
                    import shutil
                    shutil.rmtree(out, ignore_errors=True)
    print(f"\nsmall build's tokenize stage: {args.stories:,} stories ({mb:.1f} MB parquet), "
          f"{machine()}, medians of {args.runs}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print("| tree | engine | process wall s | process CPU s | stage call s |")
    print("|---|---|---:|---:|---:|")
    for (tree, engine), rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {tree} | {engine} | {med['process_s']:.2f} | {med['cpu_s']:.2f} | "
              f"{med['call_s']:.2f} |")


if __name__ == "__main__":
    main()
