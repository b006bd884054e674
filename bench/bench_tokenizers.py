"""Each kind of tokenizer's tokenize stage against its reference library, in one run.

    python -m bench.bench_tokenizers --stories 100000
    python -m bench.bench_tokenizers --stories 600000 --only "Llama 3 tokenizer.model"

Builds a TinyStories-shaped corpus (tests.support.corpus) and one tokenizer per kind: gpt2 (a
tiktoken name); Llama 3's tiktoken rank file and Mistral 7B's SentencePiece model (from their
PyPI wheels); a byte-level BPE tokenizer.json in SmolLM's layout (single digits, then GPT-2's
ByteLevel) trained on the corpus. For each it times tokbin's tokenize path (tokenize_dataset in
a fresh process, one worker per core) with the reference engine, in threads and in worker
processes, and with fastokens where tokbin runs it; next to the reference library alone on
one core in this process (its per-document call, the baseline). The table's ratios are to the
reference engine's threaded stage, measured in the same run; the bins of every run of a
tokenizer must be identical (exit 1 otherwise). Results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_engines import machine
from bench.bench_pipeline import bench_env, make_corpus, measure
from tokbin.executors import default_workers

STAGE_RUN = """
import json, sys, time
from pathlib import Path
from tokbin import executors
from tokbin.tokenize import tokenize_dataset
from tokbin.tokenizer_spec import resolve_tokenizer

raw, out, engine, executor, settings = sys.argv[1:6]
if executor == "processes":
    executors.PROCESSES_FROM_BYTES = 0
settings = json.loads(settings)
started = time.perf_counter()
tokenizer = resolve_tokenizer(**settings)
meta = tokenize_dataset(Path(raw), Path(out), ["train", "validation"], "text", tokenizer,
                        "append", engine=engine)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "tokens": sum(s.tokens for s in meta.splits.values())}))
"""


def tokenizers(work: Path) -> dict[str, tuple[str, dict]]:
    """name -> (kind, resolve_tokenizer's arguments)."""
    from tests.support.tokenizer_fixtures import stories_like, train_tokenizer_json, wheel_file
    llama3 = wheel_file("llama_models-0.0.24-py3-none-any.whl",
                        "llama_models/llama3/api/tokenizer.model", work)
    mistral = wheel_file("mistral_common-1.0.0-py3-none-any.whl",
                         "mistral_common/data/tokenizer.model.v1", work)
    smollm = work / "smollm-layout.tokenizer.json"
    smollm.write_text(train_tokenizer_json(stories_like(20000, seed=1), 16000, "digits", False))
    return {"gpt2": ("tiktoken name", dict(encoding="gpt2")),
            "Llama 3 tokenizer.model": ("tiktoken rank file", dict(
                encoding=str(llama3), pattern="llama3", special_tokens="llama3")),
            "SmolLM-layout tokenizer.json (16k)": ("tokenizer.json", dict(encoding=str(smollm))),
            "Mistral 7B tokenizer.model.v1": ("SentencePiece", dict(encoding=str(mistral)))}


def one_core_rate(settings: dict, texts: list[str]) -> float:
    """Tokens per second of the reference library alone, one call per document, one core."""
    from tokbin.tokenizer_spec import resolve_tokenizer
    from tokbin.vocab import load_vocabulary
    engine = load_vocabulary(resolve_tokenizer(**settings)).reference_engine()
    started = time.perf_counter()
    tokens = sum(len(engine.encode_ordinary(t)) for t in texts)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=100_000, help="train stories")
    parser.add_argument("--only", nargs="+", default=None, help="tokenizers to run (by name)")
    args = parser.parse_args()
    cores = default_workers()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench_tokenizers_") as tmp:
        work = Path(tmp)
        env = {**bench_env(work), "TQDM_DISABLE": "1", "XDG_CACHE_HOME": str(work / "cache")}
        corpus = make_corpus(work, args.stories)
        from tokbin.readers import iter_text_batches
        from tokbin.source import materialize
        raw = work / "raw"
        materialize(str(corpus), "main", ["train", "validation"], "text", raw)
        megabytes = sum(p.stat().st_size for p in raw.rglob("*.parquet")) / 1e6
        sample = [t for p in sorted(raw.glob("data/train-*.parquet"))
                  for b in iter_text_batches(p, "text", 1 << 20) for t in b.texts()][:20_000]
        text_mb = sum(sum(len(t.encode()) for t in b.texts()) for p in raw.rglob("*.parquet")
                      for b in iter_text_batches(p, "text", 1 << 20)) / 1e6
        rows = []
        for name, (kind, settings) in tokenizers(work).items():
            if args.only and name not in args.only:
                continue
            from tokbin.engines import effective_engine
            from tokbin.tokenizer_spec import resolve_tokenizer
            from tokbin.vocab import load_vocabulary
            vocabulary = load_vocabulary(resolve_tokenizer(**settings))
            runs = [("reference", "threads"), ("reference", "processes")]
            if effective_engine("fastokens", vocabulary) == "fastokens":
                runs += [("fastokens", "threads"), ("fastokens", "processes")]
            results, outputs = {}, []
            for engine, executor in runs:
                out = work / f"tokens-{len(rows)}-{engine}-{executor}"
                run = measure([sys.executable, "-c", STAGE_RUN, str(raw), str(out), engine,
                               executor, json.dumps(settings)], Path.cwd(), env)
                results[(engine, executor)] = json.loads(run.lines[-1][1])
                outputs.append((out / "train.bin").read_bytes() + (out / "validation.bin")
                               .read_bytes())
            same = all(o == outputs[0] for o in outputs)
            failures += not same
            rows.append((name, kind, one_core_rate(settings, sample), results, same))
    print(f"\ntokenize stage per kind of tokenizer, {args.stories:,} TinyStories-shaped stories "
          f"({text_mb:.0f} MB of text, {megabytes:.0f} MB of parquet)\nmachine: {machine()}, "
          f"{cores} workers\n")
    print("| tokenizer | kind | run | M tokens/s | MB of text/s | x reference stage | seconds "
          "| bins identical |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for name, kind, one_core, results, same in rows:
        base = results[("reference", "threads")]
        base_rate = base["tokens"] / base["seconds"]
        print(f"| {name} | {kind} | library alone, 1 core, per document | {one_core / 1e6:.2f} "
              f"| | {one_core / base_rate:.2f} | | |")
        for (engine, executor), r in results.items():
            rate = r["tokens"] / r["seconds"]
            print(f"| {name} | {kind} | {engine}, {cores} {executor} | {rate / 1e6:.2f} | "
                  f"{text_mb / r['seconds']:.1f} | {rate / base_rate:.2f} | {r['seconds']:.1f} | "
                  f"{'yes' if same else 'NO'} |")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
