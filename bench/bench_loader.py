"""BinLoader vs the seed notebook's get_batch, and document-aware batches vs token batches,
same bin, same run, on CPU.

    python -m bench.bench_loader                      # builds a 50M-token uint16 bin in a temp dir
    python -m bench.bench_loader --bin data/train.bin # or measures an existing bin

Prints batches/s for the seed's get_batch and BinLoader (sampling="random", gathering inline
and with the prefetch thread) at 64 x 256 and 12 x 1024, each with its ratio to the seed; then
per sampling BinLoader's align="token" against align="document" without and with
return_documents (each with its ratio to align="token"); then the fraction of an epoch's
tokens that align="document", sampling="epoch" puts in a batch, on TinyStories-shaped
documents at TinyStories' document count; then the process RSS over 100,000 BinLoader batches
(with the default mapped-pages budget, and with one below the bin's size). The built bin's
documents have the lengths of the bundled sample's stories (tests/support/corpus.py, gpt2, eot
prepend), drawn at random. Configurations are measured in interleaved rounds and the best
round is kept, so background load on a shared machine hurts every column alike. Results and
method: docs/performance.md.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

import tokbin.tokens
from tokbin import TokbinError
from tokbin.doc_sampling import document_spans
from tokbin.format import DOCS_DTYPE, Meta, Source, SplitInfo, write_meta
from tokbin.loader import BinLoader
from tokbin.packing import EpochDocuments

SHAPES = [(64, 256), (12, 1024)]
GPT2_VOCAB = 50257
EOT = GPT2_VOCAB - 1
TINYSTORIES_DOCUMENTS = 2_119_719  # its train split's stories
ROOT = Path(__file__).resolve().parents[1]


def seed_get_batch(path: str, batch_size: int, block_size: int, device: str = "cpu"):
    """The seed notebook's get_batch (nanoGPT's), for one split: the memmap is reopened every
    batch and the rows are stacked in a Python loop as int64."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64))
                     for i in ix])
    if device == "cuda":
        x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device,
                                                                               non_blocking=True)
    else:
        x, y = x.to(device), y.to(device)
    return x, y


def batches_per_second(next_batch, seconds: float, clock=time.perf_counter) -> float:
    next_batch()  # warm up (first prefetch thread start, first page faults)
    done, start = 0, clock()
    while (elapsed := clock() - start) < seconds:
        for _ in range(50):
            next_batch()
        done += 50
    return done / elapsed


def sample_lengths() -> np.ndarray:
    """The gpt2 lengths of the bundled sample's train stories, + 1 for an eot: the length
    distribution of tests/support/corpus.py's TinyStories-shaped stories."""
    import pyarrow.parquet as pq
    import tiktoken
    texts = pq.read_table(ROOT / "sample/data/train-00000-of-00001.parquet").column("text")
    encoding = tiktoken.get_encoding("gpt2")
    return np.array([len(ids) + 1 for ids in encoding.encode_ordinary_batch(
        texts.to_pylist())], dtype=np.int64)


def write_bin(path: Path, tokens: int) -> None:
    """Random gpt2 ids as uint16 (the gather's speed does not depend on the ids), cut into
    documents of the sample's lengths (each begins with an eot, as with eot prepend), with
    their document index and meta.json."""
    rng = np.random.default_rng(0)
    lengths = rng.choice(sample_lengths(), tokens // 100)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    offsets = np.append(offsets[offsets < tokens], tokens)
    with open(path, "wb") as f:
        for start in range(0, tokens, 1 << 24):
            ids = rng.integers(0, EOT, min(1 << 24, tokens - start), dtype=np.uint16)
            starts = offsets[(offsets >= start) & (offsets < start + len(ids))]
            ids[starts - start] = EOT
            f.write(ids.tobytes())
    offsets.astype(DOCS_DTYPE).tofile(path.with_suffix(".docs"))
    info = SplitInfo(path.name, tokens, len(offsets) - 1, 2 * tokens,
                     docs=path.with_suffix(".docs").name)
    write_meta(path.parent, Meta("gpt2", GPT2_VOCAB, EOT, "prepend", "uint16",
                                 Source("bench", None, None), {"train": info}))


def measure_speed(path: str, dtype, seconds: float, rounds: int) -> None:
    torch.manual_seed(0)
    print(f"{'batch x block':>13} | {'seed get_batch':>14} | {'BinLoader inline':>20} | "
          f"{'BinLoader prefetch=2':>22}")
    for batch_size, block_size in SHAPES:
        inline = BinLoader(path, batch_size, block_size, dtype=dtype, prefetch=0)
        ahead = BinLoader(path, batch_size, block_size, dtype=dtype, prefetch=2)
        runs = {"seed": lambda: seed_get_batch(path, batch_size, block_size),
                "inline": inline.next_batch, "prefetch": ahead.next_batch}
        best = {name: 0.0 for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                best[name] = max(best[name], batches_per_second(run, seconds))
        ahead.close()
        seed = best["seed"]
        print(f"{f'{batch_size} x {block_size}':>13} | {seed:>10,.0f} b/s | "
              f"{best['inline']:>10,.0f} b/s {best['inline'] / seed:>5.1f}x | "
              f"{best['prefetch']:>10,.0f} b/s {best['prefetch'] / seed:>5.1f}x")


def measure_documents(path: str, dtype, seconds: float, rounds: int) -> None:
    """align="document" (without and with return_documents) against align="token", inline,
    in batches per second of this process's CPU time: all of the work is on this thread, and
    time the shared machine gives to others does not count."""
    print("\nbatches per CPU second")
    print(f"{'batch x block':>13} | {'sampling':>8} | {'align=token':>14} | "
          f"{'align=document':>22} | {'+ return_documents':>22}")
    for batch_size, block_size in SHAPES:
        for sampling in ("random", "epoch"):
            loaders = {name: BinLoader(path, batch_size, block_size, dtype=dtype, prefetch=0,
                                       sampling=sampling, **options)
                       for name, options in (("token", {}), ("document", dict(align="document")),
                                             ("documents", dict(align="document",
                                                                return_documents=True)))}
            best = {name: 0.0 for name in loaders}
            for _ in range(rounds):
                for name, loader in loaders.items():
                    best[name] = max(best[name], batches_per_second(
                        loader.next_batch, seconds, time.process_time))
            token = best["token"]
            print(f"{f'{batch_size} x {block_size}':>13} | {sampling:>8} | {token:>10,.0f} b/s | "
                  + " | ".join(f"{best[k]:>10,.0f} b/s {best[k] / token:>5.2f}x"
                               for k in ("document", "documents")))


def measure_coverage(world_sizes=(1, 8)) -> None:
    """The fraction of an epoch's tokens in a batch with align="document", sampling="epoch",
    for TinyStories-shaped documents: the sample's lengths, and the same scaled to TinyStories'
    own mean (about 222 tokens: 470 M tokens in 2,119,719 stories)."""
    base = sample_lengths()
    rng = np.random.default_rng(1)
    corpora = {"sample's lengths": rng.choice(base, TINYSTORIES_DOCUMENTS)}
    scaled = np.maximum(1, np.round(corpora["sample's lengths"] * 222 / base.mean()))
    corpora["scaled to mean 222"] = scaled.astype(np.int64)
    print(f"\n{'documents':>20} | {'tokens':>13} | {'block':>5} | "
          + " | ".join(f"{f'ranks {w}: in a batch, layout time':>31}" for w in world_sizes))
    for name, lengths in corpora.items():
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        starts, spans = document_spans(offsets)
        for block_size in (256, 1024):
            cells = []
            for world_size in world_sizes:
                started = time.process_time()
                plan = EpochDocuments(starts, spans, block_size, 1, 0, 0, world_size,
                                      Path(name)).plan(0)
                used = plan.rows * block_size * world_size / offsets[-1]
                cells.append(f"{used:.6f}, {plan.dropped_tokens:,} dropped, "
                             f"{time.process_time() - started:.1f} s")
            print(f"{name:>20} | {int(offsets[-1]):>13,} | {block_size:>5} | "
                  + " | ".join(f"{c:>31}" for c in cells))


def measure_rss(path: str, dtype, batches: int, budget: int) -> None:
    """RSS every tenth of the run, with `budget` as the loader's mapped-pages budget."""
    process = psutil.Process()
    tokbin.tokens.RELEASE_MAPPED_BYTES = budget
    loader = BinLoader(path, 64, 256, dtype=dtype, prefetch=2)
    samples, start = [process.memory_info().rss], time.perf_counter()
    for i in range(1, batches + 1):
        loader.next_batch()
        if i % (batches // 10) == 0:
            samples.append(process.memory_info().rss)
    rate = batches / (time.perf_counter() - start)
    loader.close()
    mib = [s / 2**20 for s in samples]
    print(f"RSS over {batches:,} batches (64 x 256, prefetch=2, mapped-pages budget "
          f"{budget / 2**20:,.0f} MiB), every {batches // 10:,} batches: "
          f"{' -> '.join(f'{m:.0f}' for m in mib)} MiB; max growth {max(mib) - mib[0]:+.0f} MiB, "
          f"first tenth to end {mib[-1] - mib[1]:+.1f} MiB; {rate:,.0f} b/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", type=Path, help="an existing bin (default: build one)")
    parser.add_argument("--dtype", default=None,
                        help="for a bare --bin without meta.json: uint16 (the seed reads uint16)")
    parser.add_argument("--tokens", type=int, default=50_000_000, help="size of the built bin")
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-batches", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokbin-bench-") as tmp:
        if args.bin is None:
            path, dtype = Path(tmp) / "train.bin", "uint16"
            write_bin(path, args.tokens)
        else:
            path, dtype = args.bin, args.dtype
        if BinLoader(path, 1, 1, dtype=dtype).dtype != np.uint16:
            parser.error("the seed's get_batch reads uint16 bins only")
        size = path.stat().st_size
        print(f"bin: {path} ({size / 1e6:.0f} MB); {platform.processor() or platform.machine()}, "
              f"{psutil.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")
        measure_speed(str(path), dtype, args.seconds, args.rounds)
        try:
            BinLoader(path, 1, 1, dtype=dtype, align="document")
        except TokbinError as e:
            print(f"\nno document-aware batches: {e}")
        else:
            measure_documents(str(path), dtype, args.seconds, args.rounds)
        measure_coverage()
        if args.rss_batches:
            # The default budget (1 GiB) is above this bin: RSS rises by about the bin's size,
            # then stays flat. A budget of a third of the bin shows the release at work.
            default = tokbin.tokens.RELEASE_MAPPED_BYTES
            measure_rss(str(path), dtype, args.rss_batches, default)
            measure_rss(str(path), dtype, args.rss_batches, min(default, size // 3))


if __name__ == "__main__":
    main()
