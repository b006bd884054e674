"""An llm.c-style prepare script: the algorithm of karpathy/llm.c's dev/data/fineweb.py.

Per split: `datasets.load_dataset`, then `multiprocessing.Pool(cores).imap(tokenize, docs,
chunksize=16)` where each document becomes [eot] + encode_ordinary(text) as uint16; the main
process copies the results into a preallocated shard buffer of `shard_size` tokens and writes a
shard (llm.c's 256 x int32 header, then the tokens, via `.tolist()` as write_datafile does it)
when it is full and at the end. Its bins differ from tokbin's (eot prepended, a header): it
is here for its speed and memory, not its bytes.

    python -m bench.llmc_pipeline DATASET_DIR OUT_DIR [--num-proc N]

prints its stage wall times as one JSON line: {"load": s, "tokenize": s}.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import tiktoken

from tests.support.reference_cli import run_reference

SHARD_SIZE = 10**8  # fineweb.py's default --shard_size
HEADER_MAGIC, HEADER_VERSION = 20240520, 1

enc = tiktoken.get_encoding("gpt2")
eot = enc._special_tokens["<|endoftext|>"]


def tokenize(doc):
    tokens = [eot]
    tokens.extend(enc.encode_ordinary(doc["text"]))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large"
    return tokens_np.astype(np.uint16)


def write_datafile(filename: Path, toks: list) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = HEADER_MAGIC, HEADER_VERSION, len(toks)
    toks_np = np.array(toks, dtype=np.uint16)
    with open(filename, "wb") as f:
        f.write(header.tobytes())
        f.write(toks_np.tobytes())


def prepare_split(docs, out_dir: Path, split: str, nprocs: int) -> None:
    with mp.Pool(nprocs) as pool:
        shard_index = 0
        all_tokens_np = np.empty((SHARD_SIZE,), dtype=np.uint16)
        token_count = 0
        for tokens in pool.imap(tokenize, docs, chunksize=16):
            if token_count + len(tokens) < SHARD_SIZE:
                all_tokens_np[token_count:token_count + len(tokens)] = tokens
                token_count += len(tokens)
            else:
                remainder = SHARD_SIZE - token_count
                all_tokens_np[token_count:token_count + remainder] = tokens[:remainder]
                write_datafile(out_dir / f"{split}_{shard_index:06d}.bin", all_tokens_np.tolist())
                shard_index += 1
                token_count = len(tokens) - remainder
                all_tokens_np[0:token_count] = tokens[remainder:]
        if token_count != 0:
            write_datafile(out_dir / f"{split}_{shard_index:06d}.bin",
                           all_tokens_np[:token_count].tolist())


def llmc_prepare(dataset_dir: Path, out_dir: Path, num_proc: int | None = None) -> dict:
    """Returns each stage's wall time in seconds (load, tokenize: tokenizing and writing)."""
    started = time.perf_counter()
    from datasets import load_dataset
    splits = {}
    for split in ("train", "validation"):
        files = sorted(str(p) for p in (dataset_dir / "data").glob(f"{split}-*.parquet"))
        splits[split] = load_dataset("parquet", data_files={split: files}, split=split)
    loaded = time.perf_counter()
    for split, docs in splits.items():
        prepare_split(docs, out_dir, split, num_proc or os.cpu_count())
    return {"load": loaded - started, "tokenize": time.perf_counter() - loaded}


def main() -> None:
    run_reference(llmc_prepare, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
