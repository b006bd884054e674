"""Tokenizer engines against their references: exactness over a million documents, and speed.

    python -m bench.bench_engines --differential 60000   # 15 classes x 60,000 documents plus
                                                         # every safe code point in 8 contexts
    python -m bench.bench_engines --differential 5000 --tokenizers llama3 split_llama3
    python -m bench.bench_engines --stories 300000 1200000   # the tokenize stage's speed

The differential run compares, per character class, (1) the fastokens engine as tokbin runs
it (routing and cross-check) and (2) fastokens alone on the documents routing gives it (joined
by the separator, and one string per document for those holding its text), against the
reference (tiktoken's encode_ordinary for gpt2 and rank files, tokenizers for tokenizer.json);
it also counts the fast-path documents that the conservative rule
(tokbin.fast_path.conservative_unsafe: every tokenizer without a code point table, and gpt2
on engine versions its table was not measured on) would send to the reference, and how often
fastokens alone would have disagreed on the documents routing sends to the reference. Exit
status 1 on any mismatch in (1) or (2). `--tokenizers` picks what runs
(default: all of `DIFFERENTIAL`): gpt2; Llama 3's rank file (from its PyPI wheel) and o200k's
ranks as a rank file, each with its own regex; and a tokenizer.json per layout the fast engine
takes, trained on TinyStories-shaped text.

The speed run builds TinyStories-shaped corpora (tests.support.corpus) and times tokbin's tokenize
path (tokenize_dataset in a fresh process, one worker per core) with each engine,
next to tiktoken's one-core rate and the ceiling a perfect tiktoken pool could reach (cores x
one-core rate).
Run it on a quiet machine: other load shows up as a lower speedup. Results and method:
docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.support.text_classes import CLASSES, class_documents
from tokbin.engines import make_engine
from tokbin.executors import default_workers
from tokbin.fast_path import documents_containing, proven_class
from tokbin.format import token_ends
from tokbin.readers import TextBatch
from tokbin.tokenizer_spec import resolve_tokenizer
from tokbin.vocab import get_encoding, load_vocabulary

CONTEXTS = ["{c}", "a{c}b", " {c}{c}", "{c}'s", "1{c}2", "\n{c} ", "  {c}x", "{c}\r\n"]
CHUNK = 5000


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{cpu}, {default_workers()} cores, Python {platform.python_version()}"


DIFFERENTIAL = ("gpt2", "llama3", "o200k_ranks", "bytelevel", "nfc", "digits", "split_llama3")


def fast_engine(name: str, folder: Path):
    """The fastokens engine tokbin runs for one of DIFFERENTIAL's tokenizers."""
    from tests.support.tokenizer_fixtures import stories_like, train_tokenizer_json, wheel_file
    settings: dict = {}
    if name == "gpt2":
        encoding = "gpt2"
    elif name == "llama3":
        encoding = str(wheel_file("llama_models-0.0.24-py3-none-any.whl",
                                  "llama_models/llama3/api/tokenizer.model", folder))
        settings = dict(pattern="llama3", special_tokens="llama3")
    elif name == "o200k_ranks":
        import base64
        ranks = get_encoding("o200k_base")._mergeable_ranks
        path = folder / "o200k.tiktoken"
        path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n"
                                for t, r in ranks.items()))
        encoding = str(path)
        settings = dict(pattern="o200k_base", special_tokens={"<|endoftext|>": 199999})
    else:
        path = folder / f"{name}.json"
        path.write_text(train_tokenizer_json(stories_like(20000), 8000, name, False))
        encoding = str(path)
    vocabulary = load_vocabulary(resolve_tokenizer(encoding, **settings))
    engine = make_engine("fastokens", vocabulary)
    assert engine.name == "fastokens", name
    return engine


def differing_documents(ids, lengths, want_ids, want_lengths) -> int:
    if np.array_equal(lengths, want_lengths):
        if np.array_equal(ids, want_ids):
            return 0
        ends = token_ends(lengths) - 1
        return sum(not np.array_equal(ids[e - n:e + 1], want_ids[e - n:e + 1])
                   for e, n in zip(ends, lengths))
    return int((lengths != want_lengths).sum())  # a lower bound; any count > 0 fails


def differential(per_class: int, names: list[str]) -> int:
    failures = 0
    for name in names:
        with tempfile.TemporaryDirectory(prefix="bench_differential_") as folder:
            failures += differential_of(name, fast_engine(name, Path(folder)), per_class)
    return 1 if failures else 0


def differential_of(name: str, engine, per_class: int) -> int:
    """Mismatching documents of `engine` against its reference over the suites (a table)."""
    reference = engine.reference.encode_texts
    suites = [(cls, lambda cls=cls, seed=seed: class_documents(cls, CHUNK, seed=seed))
              for cls in CLASSES for seed in range(per_class // CHUNK)]
    safe = np.flatnonzero(~engine.proven.unsafe)
    conservative = proven_class(None)
    sweep = [ctx.format(c=chr(cp)) for cp in safe for ctx in CONTEXTS]
    suites += [("every_safe_char", lambda i=i: sweep[i:i + CHUNK])
               for i in range(0, len(sweep), CHUNK)]
    rows: dict[str, list[int]] = {}
    started = time.perf_counter()
    for suite, make in suites:
        texts = make()
        batch = TextBatch.from_texts(texts)
        fast = engine.proven.mask(batch)
        widened = int((fast & ~conservative.mask(batch)).sum())
        ids, lengths = engine.encode_batch(batch)
        routed_bad = differing_documents(ids, lengths, *reference(texts))
        on_fast = [t for t, f in zip(texts, fast) if f]
        joined = [t for t in on_fast if engine.separator not in t]
        separately = [t for t in on_fast if engine.separator in t]
        alone_bad = sum(differing_documents(*encode(TextBatch.from_texts(part)), *reference(part))
                        for encode, part in [(engine.encode_joined, joined),
                                             (engine.encode_separately, separately)])
        on_slow = [t for t, f in zip(texts, fast) if not f]
        avoided = differing_documents(*engine.encode_separately(TextBatch.from_texts(on_slow)),
                                      *reference(on_slow))
        row = rows.setdefault(suite, [0, 0, 0, 0, 0, 0])
        for k, v in enumerate([len(texts), int(fast.sum()), widened, routed_bad, alone_bad,
                               avoided]):
            row[k] += v
    total = sum(r[0] for r in rows.values())
    print(f"\ndifferential, {name} vs {engine.reference.name}: {total:,} documents in "
          f"{time.perf_counter() - started:.0f} s on {machine()}\n")
    print("| class | documents | fast path | of which outside the conservative class "
          "| engine differs | fastokens differs (fast path) "
          f"| fastokens would differ (routed to {engine.reference.name}) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for suite, (n, n_fast, widened, routed_bad, alone_bad, avoided) in rows.items():
        print(f"| {suite} | {n:,} | {n_fast / n:.1%} | {widened:,} | {routed_bad} | {alone_bad} "
              f"| {avoided} |")
    failures = sum(r[3] + r[4] for r in rows.values())
    print(f"\n{'FAIL' if failures else 'OK'}: {name}: {failures} mismatching documents")
    return failures


STAGE_RUN = """
import json, sys, time
from pathlib import Path
from tokbin.tokenize import tokenize_dataset

raw, out, engine, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
meta = tokenize_dataset(raw, out, ["train", "validation"], "text", "gpt2", "append",
                        engine=engine, workers=workers)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "tokens": sum(s.tokens for s in meta.splits.values())}))
"""


def run_stage(raw: Path, out: Path, engine: str, workers: int, env: dict) -> dict:
    """tokenize_dataset in a fresh process, as `dvc repro` runs it: `seconds` timed from its
    call (without the interpreter's start and imports, about 0.3 s), `process_seconds` and
    `cpu_seconds` (its process tree's, sampled every 50 ms) with them, and the peak RSS of the
    largest process of its tree (its worker processes included)."""
    from bench.bench_pipeline import measure
    run = measure([sys.executable, "-c", STAGE_RUN, str(raw), str(out), engine, str(workers)],
                  Path.cwd(), {**env, "TQDM_DISABLE": "1"})
    return {**json.loads(run.lines[-1][1]), "peak_rss_mb": run.peak_rss / 2**20,
            "process_seconds": run.wall, "cpu_seconds": run.cpu}


def executor_of(raw: Path, workers: int) -> str:
    """How the local executor runs this corpus: worker processes or threads."""
    from tokbin.executors import worth_processes
    from tokbin.readers import DataFile, Reading
    files = [DataFile(str(p), str(p)) for p in sorted(raw.glob("data/*.parquet"))]
    if workers > 1 and worth_processes(files, Reading("parquet", "text"), workers):
        return f"{workers} processes"
    return f"{workers} thread{'s' * (workers > 1)}"


def speed(stories_list: list[int]) -> None:
    from tests.support.corpus import write_corpus
    from tokbin.readers import DataFile, Reading, iter_text_batches
    from tokbin.source import materialize

    cores = default_workers()
    encoding = get_encoding("gpt2")
    one_core = None
    rows = []
    executors: dict[int, dict[int, str]] = {}
    for stories in stories_list:
        with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
            tmp = Path(tmp)
            write_corpus(tmp / "corpus", stories)
            raw = tmp / "raw"
            materialize(str(tmp / "corpus"), "main", ["train", "validation"], "text", raw)
            batches = [b for p in sorted(raw.glob("data/train-*.parquet"))
                       for b in iter_text_batches(DataFile(str(p), str(p)),
                                                  Reading("parquet", "text"), 1 << 20)]
            if one_core is None:  # tiktoken's rate: once per run, on the first corpus
                sample = [t for b in batches[:60] for t in b.texts()][:50_000]
                started = time.perf_counter()
                sample_tokens = sum(len(encoding.encode_ordinary(t)) for t in sample)
                one_core = sample_tokens / (time.perf_counter() - started)
            masks = [proven_class("gpt2").mask(b) for b in batches]
            separately = sum(int((m & documents_containing(b, b"<|endoftext|>")).sum())
                             for b, m in zip(batches, masks))
            fast_share = float(np.concatenate(masks).mean())
            separately_share = separately / sum(len(b) for b in batches)
            del batches, masks
            # The tokenizer.json cache starts empty: the first fastokens run derives it.
            env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
            runs = [("fastokens", cores, "cold tokenizer cache"), ("tiktoken", cores, ""),
                    ("fastokens", cores, ""), ("fastokens", 1, "")]
            results = {}
            for engine, workers, note in runs:
                out = tmp / f"tokens-{engine}-{workers}{note and '-cold'}"
                results[(engine, workers, note)] = run_stage(raw, out, engine, workers, env)
                executors.setdefault(stories, {})[workers] = executor_of(raw, workers)
            same = all((tmp / f"tokens-fastokens-{w}" / f).read_bytes()
                       == (tmp / f"tokens-tiktoken-{cores}" / f).read_bytes()
                       for w in (cores, 1) for f in ("train.bin", "validation.bin"))
        rows.append((stories, results, fast_share, separately_share, same))

    ceiling = cores * one_core
    print(f"\ntokenize stage, TinyStories-shaped corpora\nmachine: {machine()}\n")
    print(f"tiktoken, 1 core (encode_ordinary, in-process): {one_core / 1e6:.2f} M tokens/s; "
          f"the ceiling ({cores} cores x 1 core): {ceiling / 1e6:.2f} M tokens/s\n")
    print("| stories | M tokens | run | M tokens/s | x tiktoken ceiling | seconds | peak RSS MB |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for stories, results, fast_share, separately_share, same in rows:
        for (engine, workers, note), r in results.items():
            rate = r["tokens"] / r["seconds"]
            print(f"| {stories:,} | {r['tokens'] / 1e6:.1f} | {engine}, "
                  f"{executors[stories][workers]}{note and ', ' + note} | {rate / 1e6:.2f} | "
                  f"{rate / ceiling:.2f} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    print()
    for stories, results, fast_share, separately_share, same in rows:
        best = max(r["tokens"] / r["seconds"] for (engine, _, _), r in results.items()
                   if engine == "fastokens")
        print(f"{stories:,} stories: documents on the fast path {fast_share:.2%} (of all "
              f"documents, {separately_share:.2%} hold a literal <|endoftext|> and are encoded "
              f"one by one); fastokens bins identical to tiktoken's: {same}; the stage at 5x "
              f"the tiktoken ceiling: {'met' if best >= 5 * ceiling else 'not met'} (best "
              f"fastokens run: {best / ceiling:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--differential", type=int, metavar="PER_CLASS",
                        help=f"documents per class (a multiple of {CHUNK})")
    parser.add_argument("--tokenizers", nargs="+", choices=DIFFERENTIAL, default=DIFFERENTIAL,
                        help="what the differential run checks (default: all)")
    parser.add_argument("--stories", type=int, nargs="+",
                        help="corpus sizes for the speed run (TinyStories' train split: 2119719)")
    args = parser.parse_args()
    if not args.differential and not args.stories:
        parser.error("give --differential and/or --stories")
    status = differential(args.differential, args.tokenizers) if args.differential else 0
    if args.stories:
        speed(args.stories)
    sys.exit(status)


if __name__ == "__main__":
    main()
