"""The seed notebook's pipeline (../shared/seed/tinystories_prepare_notebook.txt), as it ran:
Hugging Face `datasets.map` with tiktoken `encode_ordinary`, then 1024 shard writes per split
into a uint16 memmap. The reference tokbin's `eot: none` bins must equal byte for byte.

    python -m tests.support.seed_pipeline DATASET_DIR OUT_DIR [--num-proc N]

prints its stage wall times as one JSON line: {"load": s, "tokenize": s, "write": s}.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .reference_cli import run_reference


def process(example):
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    ids = enc.encode_ordinary(example["text"])
    return {"ids": ids, "len": len(ids)}


def seed_prepare(dataset_dir: Path, out_dir: Path, num_proc: int | None = None,
                 total_batches: int = 1024) -> dict[str, float]:
    """Returns each stage's wall time in seconds (load, tokenize, write)."""
    started = time.perf_counter()
    from datasets import load_dataset
    data_files = {split: sorted(str(p) for p in (dataset_dir / "data").glob(f"{split}-*.parquet"))
                  for split in ("train", "validation")}
    ds = load_dataset("parquet", data_files=data_files)
    loaded = time.perf_counter()
    tokenized = ds.map(process, remove_columns=["text"], desc="tokenizing the splits",
                       num_proc=num_proc or os.cpu_count())
    mapped = time.perf_counter()
    for split, dset in tokenized.items():
        arr_len = np.sum(dset["len"], dtype=np.uint64)
        arr = np.memmap(out_dir / f"{split}.bin", dtype=np.uint16, mode="w+", shape=(arr_len,))
        idx = 0
        for batch_idx in range(min(total_batches, len(dset))):
            batch = dset.shard(num_shards=min(total_batches, len(dset)), index=batch_idx,
                               contiguous=True).with_format("numpy")
            arr_batch = np.concatenate(batch["ids"])
            arr[idx: idx + len(arr_batch)] = arr_batch
            idx += len(arr_batch)
        arr.flush()
    return {"load": loaded - started, "tokenize": mapped - loaded,
            "write": time.perf_counter() - mapped}


def main() -> None:
    run_reference(seed_prepare, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
