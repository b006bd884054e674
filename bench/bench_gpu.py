"""The loader inside a small GPT's training step, on a GPU (or, as a smoke test, the CPU).

    python -m bench.bench_gpu --data data --device cuda            # the sample's bins, built here
    python -m bench.bench_gpu --data data --device cpu --steps 2 --batch-size 2 --block-size 32 \
        --layers 1 --width 48                                       # a quick smoke test

A nanoGPT-sized model (6 layers, 384 wide, block 256, batch 64, bf16 autocast on CUDA) trains
for a fixed number of steps fed by each variant in turn: (0) one fixed device batch (no
loader: the baseline step), (a) the seed notebook's get_batch (the memmap reopened every batch,
rows stacked as int64, pinned, non_blocking), (b) BinLoader random, (c) BinLoader epoch and, when
the loader has it, (d) align="document" with return_documents (the model then takes its
position ids from `docs`). Per variant it prints the mean step time, the time the step waited
on the loader (synchronized around `next_batch`), what the loader adds to the baseline step,
and the host-to-device bytes per step (summed from the CUDA profiler's memcpy events). Before
timing it checks on the device that every variant's x / y (and docs) equal the CPU loader's
for the same seed, on the sample's bin and on a bin holding ids above 32767. It imports only
numpy, torch and tokbin's loader (no DVC): the GPU machine needs nothing else.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tokbin.format import Meta, Source, SplitInfo, read_meta, write_meta
from tokbin.loader import BinLoader

DOCUMENT_ALIGN = "align" in inspect.signature(BinLoader).parameters


class GPT(nn.Module):
    """nanoGPT's model, small: pre-norm blocks, causal SDPA, tied embeddings."""

    def __init__(self, vocab: int, block: int, layers: int = 6, width: int = 384, heads: int = 6):
        super().__init__()
        self.heads = heads
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(width), "qkv": nn.Linear(width, 3 * width),
            "proj": nn.Linear(width, width), "ln2": nn.LayerNorm(width),
            "up": nn.Linear(width, 4 * width), "down": nn.Linear(4 * width, width)})
            for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, x, y, position_ids=None):
        positions = torch.arange(x.shape[1], device=x.device) if position_ids is None else position_ids
        h = self.tok(x) + self.pos(positions)
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](h)).split(h.shape[-1], dim=-1)
            q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + b["proj"](attended.transpose(1, 2).flatten(2))
            h = h + b["down"](F.gelu(b["up"](b["ln2"](h))))
        logits = self.head(self.ln(h))
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def seed_get_batch(path: str, batch_size: int, block_size: int, device: torch.device):
    """The seed notebook's get_batch, verbatim but for its globals."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64))
                     for i in ix])
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device,
                                                                               non_blocking=True)
    return x.to(device), y.to(device)


def variants(bin_path: str, args, device: torch.device) -> dict:
    """name -> (make a next_batch callable, make the same variant's CPU reference or None)."""
    shape = dict(batch_size=args.batch_size, block_size=args.block_size, seed=args.seed)

    def loader(dev, **options):
        return BinLoader(bin_path, device=dev, **shape, **options).next_batch

    def seeded_get_batch(dev):
        generator_seed = args.seed

        def next_batch():
            nonlocal generator_seed
            torch.manual_seed(generator_seed)  # the same draws on both devices
            generator_seed += 1
            return seed_get_batch(bin_path, args.batch_size, args.block_size, dev)
        return next_batch

    found = {"a seed get_batch": (lambda: seeded_get_batch(device),
                                  lambda: seeded_get_batch(torch.device("cpu"))),
             "b BinLoader random": (lambda: loader(device), lambda: loader("cpu")),
             "c BinLoader epoch": (lambda: loader(device, sampling="epoch"),
                                   lambda: loader("cpu", sampling="epoch"))}
    if DOCUMENT_ALIGN:
        docs = dict(align="document", return_documents=True)
        found["d document, docs"] = (lambda: loader(device, **docs), lambda: loader("cpu", **docs))
    return found


def check_equal(name: str, make, make_reference, batches: int) -> None:
    on_device, on_cpu = make(), make_reference()
    for _ in range(batches):
        got, want = on_device(), on_cpu()
        for part, (g, w) in enumerate(zip(flatten(got), flatten(want))):
            if not torch.equal(g.cpu(), w):
                raise SystemExit(f"FAIL {name}: part {part} of a batch differs from the CPU "
                                 "loader's for the same seed")


def flatten(batch) -> list[torch.Tensor]:
    x, y, *docs = batch
    return [x, y, *(t for d in docs for t in (d.cu_seqlens, d.position_ids))]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model, optimizer, next_batch, steps: int, device: torch.device, autocast) -> dict:
    """Mean step time and loader wait over `steps` steps (after as many warm-up steps)."""
    step_s, wait_s = [], []
    for step in range(2 * steps):
        synchronize(device)
        started = time.perf_counter()
        x, y, *docs = next_batch()
        synchronize(device)
        waited = time.perf_counter() - started
        with autocast():
            loss = model(x, y, docs[0].position_ids if docs else None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= steps:
            step_s.append(time.perf_counter() - started)
            wait_s.append(waited)
    return {"step_ms": 1e3 * float(np.mean(step_s)), "wait_ms": 1e3 * float(np.mean(wait_s))}


def h2d_bytes_per_step(next_batch, steps: int, device: torch.device) -> float | None:
    """Host-to-device bytes per batch, from the CUDA profiler's memcpy events."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            next_batch()
        synchronize(device)
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        events = json.loads(Path(trace.name).read_text())["traceEvents"]
    copied = sum(e.get("args", {}).get("bytes", 0) for e in events if "HtoD" in e.get("name", ""))
    return copied / steps if copied else float("nan")  # nan: the profiler saw no copy


def high_id_bin(folder: Path, tokens: int) -> Path:
    """A uint16 bin of uniform gpt2 ids (a third of them above 32767), with its meta.json."""
    ids = np.random.default_rng(0).integers(0, 50257, tokens, dtype=np.uint16)
    (folder / "train.bin").write_bytes(ids.tobytes())
    write_meta(folder, Meta("gpt2", 50257, 50256, "none", "uint16", Source("synthetic", None, None),
                            {"train": SplitInfo("train.bin", tokens, 1, 2 * tokens)}))
    return folder / "train.bin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="holds train.bin + meta.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after as many warm-up)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--layers", type=int, default=6, help="smaller for a quick CPU run")
    parser.add_argument("--width", type=int, default=384)
    args = parser.parse_args()
    device = torch.device(args.device)
    sample = str(args.data / "train.bin")
    meta = read_meta(sample)
    cuda = device.type == "cuda"
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda
                else (lambda: torch.autocast("cpu", enabled=False)))
    card = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    driver = torch.cuda.driver_version() if cuda and hasattr(torch.cuda, "driver_version") else "-"
    print(f"{time.strftime('%Y-%m-%d')}  {card}  driver {driver}  torch {torch.__version__}  "
          f"CUDA {torch.version.cuda}  {args.layers} layers x {args.width}, "
          f"batch {args.batch_size} x block {args.block_size}, "
          f"{args.steps} timed steps  document align: {DOCUMENT_ALIGN}")
    with tempfile.TemporaryDirectory(prefix="tokbin-gpu-") as tmp:
        high = str(high_id_bin(Path(tmp), 200_000))
        for path in (sample, high):
            for name, (make, reference) in variants(path, args, device).items():
                check_equal(name, make, reference, batches=5)
        print(f"ok    x / y (and docs) on {device} equal the CPU loader's for every variant, on "
              f"{sample} and on a bin with ids above 32767")
    torch.manual_seed(0)
    model = GPT(meta.n_vocab, args.block_size, args.layers, args.width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=cuda)
    fixed = next(iter(variants(sample, args, device).values()))[0]()()
    rows = {"0 fixed batch (no loader)": train(model, optimizer, lambda: fixed, args.steps,
                                               device, autocast)}
    base = rows["0 fixed batch (no loader)"]["step_ms"]
    for name, (make, _) in variants(sample, args, device).items():
        rows[name] = train(model, optimizer, make(), args.steps, device, autocast)
        rows[name]["h2d"] = h2d_bytes_per_step(make(), 20, device)
    print(f"{'variant':<28}{'step ms':>10}{'loader wait ms':>16}{'adds to step':>14}"
          f"{'H2D bytes/step':>16}")
    for name, row in rows.items():
        adds = f"{100 * (row['step_ms'] - base) / base:+.1f}%" if not name.startswith("0") else "-"
        h2d = "-" if row.get("h2d") is None else f"{row['h2d']:,.0f}"  # nan: none seen
        print(f"{name:<28}{row['step_ms']:>10.2f}{row['wait_ms']:>16.3f}{adds:>14}{h2d:>16}")
    if not math.isfinite(base):
        raise SystemExit("the baseline step did not run")


if __name__ == "__main__":
    main()
