"""BinLoader vs the seed notebook's get_batch, same bin, same run, on CPU.

    python -m bench.bench_loader                      # builds a 50M-token uint16 bin in a temp dir
    python -m bench.bench_loader --bin data/train.bin # or measures an existing bin

Prints batches/s for the seed's get_batch and BinLoader (sampling="random", gathering inline
and with the prefetch thread) at 64 x 256 and 12 x 1024, each with its ratio to the seed, then
the process RSS over 100,000 BinLoader batches (with the default mapped-pages budget, and with
one below the bin's size). Configurations are measured in interleaved
rounds and the best round is kept, so background load on a shared machine hurts every column
alike. Results and method: docs/performance.md.
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
from tokbin.loader import BinLoader

SHAPES = [(64, 256), (12, 1024)]
GPT2_VOCAB = 50257


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


def batches_per_second(next_batch, seconds: float) -> float:
    next_batch()  # warm up (first prefetch thread start, first page faults)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            next_batch()
        done += 50
    return done / elapsed


def write_bin(path: Path, tokens: int) -> None:
    """Random gpt2 ids as uint16: the gather's speed does not depend on the ids."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for start in range(0, tokens, 1 << 24):
            count = min(1 << 24, tokens - start)
            f.write(rng.integers(0, GPT2_VOCAB, count, dtype=np.uint16).tobytes())


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
        if args.rss_batches:
            # The default budget (1 GiB) is above this bin: RSS rises by about the bin's size,
            # then stays flat. A budget of a third of the bin shows the release at work.
            default = tokbin.tokens.RELEASE_MAPPED_BYTES
            measure_rss(str(path), dtype, args.rss_batches, default)
            measure_rss(str(path), dtype, args.rss_batches, min(default, size // 3))


if __name__ == "__main__":
    main()
