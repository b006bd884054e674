"""A complete minimal training loop fed by BinLoader: a bigram language model.

    python -m examples.train_bigram                          # data/train.bin, data/validation.bin
    python -m examples.train_bigram path/to/train.bin --steps 500 --device cuda
    python -m examples.train_bigram bare.bin --dtype uint16 --vocab 50257   # no meta.json
    python -m examples.train_bigram data/train --val data/validation        # shard directories
    torchrun --standalone --nproc_per_node 2 -m examples.train_bigram      # DDP, one GPU a rank

Run from the repository root. On the bundled sample (the README's first command builds
data/*.bin from it) the defaults train in seconds on a CPU. With
--checkpoint, the model, the optimizer and the loader's position are saved at the end and
resumed by the next run, which continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tokbin import BinLoader, TokbinError, read_meta
from tokbin.format import meta_path, read_chunks
from tokbin.loader_args import check_device
from tokbin.tokens import open_tokens


class Bigram(nn.Module):
    """Next-token logits from the current token alone.

    A table over every gpt2 id would hold 50,257^2 = 2.5 billion numbers, so each id the
    training data uses gets a slot (the ids it never uses share one extra slot) and the
    slot x slot table is factored through `dim` numbers per slot.
    """

    def __init__(self, used_ids: torch.Tensor, n_vocab: int, dim: int):
        super().__init__()
        slot = torch.full((n_vocab,), len(used_ids), dtype=torch.int64)
        slot[used_ids] = torch.arange(len(used_ids))
        self.register_buffer("slot", slot)
        self.embed = nn.Embedding(len(used_ids) + 1, dim)
        self.head = nn.Linear(dim, len(used_ids) + 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of predicting y[:, t] from x[:, t]."""
        logits = self.head(self.embed(self.slot[x]))
        return F.cross_entropy(logits.flatten(0, 1), self.slot[y].flatten())


def used_ids(path: Path, dtype: str | None, n_vocab: int) -> torch.Tensor:
    """The distinct ids in a bin or shard directory (the sample's train.bin uses 311), read
    in chunks: slicing the memmap would keep every page read resident."""
    tokens, seen = open_tokens(path, dtype), np.zeros(n_vocab, dtype=bool)
    for part in getattr(tokens, "shards", [tokens]):
        for chunk in (read_chunks(Path(part.filename), tokens.dtype, offset=part.offset)
                      if len(part) else []):  # offset: past an llm.c header
            seen[chunk] = True
    return torch.from_numpy(np.flatnonzero(seen))


def start_distributed(device: str) -> str:
    """Under torchrun (RANK is set): join the process group and pick this rank's GPU.
    BinLoader then reads its rank and world_size from torch.distributed."""
    if "RANK" not in os.environ:
        return device
    local = f"cuda:{os.environ['LOCAL_RANK']}" if device == "cuda" else device
    check_device(local)  # the loader's message, not nccl's where torch has no CUDA
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(local)
    return local


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bin", nargs="?", default="data/train.bin", type=Path)
    parser.add_argument("--val", type=Path, default=None,
                        help="validation bin or shard directory (default: validation.bin, or "
                             "a validation shard directory, beside the train one)")
    parser.add_argument("--dtype", default=None, help="for a bare bin without meta.json")
    parser.add_argument("--vocab", type=int, default=None, help="default: meta.json's n_vocab")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--sampling", default="random", choices=["random", "epoch"])
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="resume from this file if it exists; save to it at the end")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)

    device = start_distributed(args.device)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    if not args.bin.exists():
        parser.error(f"{args.bin}: no such bin or shard directory")
    if args.vocab is None and args.dtype is not None:
        raise TokbinError("a bare bin (--dtype) has no meta.json to give the vocabulary size: "
                          "pass --vocab")
    if args.vocab is None and not meta_path(args.bin).is_file():  # read_meta's says dtype=
        raise TokbinError(f"{meta_path(args.bin)} not found: build the data with `dvc repro`, "
                          "or pass --dtype and --vocab for a bare bin")
    vocab = args.vocab or read_meta(args.bin).n_vocab
    train = BinLoader(args.bin, args.batch_size, args.block_size, device=device,
                      sampling=args.sampling, seed=args.seed, dtype=args.dtype)
    val_path = args.val or args.bin.with_name("validation" + args.bin.suffix)  # or shards
    if args.val and not args.val.exists():
        parser.error(f"--val {args.val}: no such bin or shard directory")
    val_batches = []  # a fixed set, so successive evaluations compare like with like
    if args.eval_batches > 0 and not val_path.exists():  # only the default can be missing
        if rank0:
            print(f"no {val_path} beside {args.bin}: no validation loss (pass --val)")
    elif args.eval_batches > 0:  # with 0 the split is not read (it may be shorter than a block)
        try:
            val = BinLoader(val_path, args.batch_size, args.block_size, device=device,
                            seed=args.seed, dtype=args.dtype)
        except TokbinError as e:
            raise TokbinError(f"the validation split: {e}; or pass another split with --val, "
                              "or --eval-batches 0 to train without validation") from None
        val_batches = [val.next_batch() for _ in range(args.eval_batches)]

    model = Bigram(used_ids(args.bin, args.dtype, vocab), vocab, args.dim).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    if args.checkpoint and args.checkpoint.is_file():
        saved = torch.load(args.checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        train.load_state_dict(saved["loader"])  # rank 0's state resumes every rank
        step = saved["step"]
        if step >= args.steps and rank0:
            print(f"checkpoint {args.checkpoint} is at step {step}, --steps {args.steps}: "
                  "nothing to train; raise --steps to go on")
    resumed_at = step
    trained = DistributedDataParallel(model) if dist.is_initialized() else model

    def evaluate() -> str:
        if not val_batches:
            return ""
        with torch.no_grad():
            losses = [model(x, y).item() for x, y in val_batches]
        return f", validation loss {sum(losses) / len(losses):.4f}"

    while step < args.steps:
        x, y = train.next_batch()
        loss = trained(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if rank0 and (step % args.log_every == 0 or step == args.steps):
            print(f"step {step}: train loss {loss.item():.4f}{evaluate()}", flush=True)

    if args.checkpoint and rank0 and step > resumed_at:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "loader": train.state_dict(), "step": step}, args.checkpoint)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except TokbinError as e:
        raise SystemExit(f"train_bigram: error: {e}")
