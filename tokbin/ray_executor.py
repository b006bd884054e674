"""Tokenizing a split as Ray tasks (``tokenize.executor: ray``): the same bins as the local pool.

The input is cut into **shards**: runs of consecutive parquet row groups of about
`TASK_BYTES` of text, or a whole ``.jsonl``/``.txt`` file. Each shard is one Ray task that
reads its documents itself (the driver ships a path, never text: the files must be reachable
at the same path on every node, e.g. a shared filesystem) and encodes them with the local
path's per-batch code (`tokbin.tokenize.BatchEncoder`: same engine, same eot policy, same
dtype). The driver writes results strictly in shard order with at most `2 x cluster CPUs`
tasks in flight, so its memory is bounded and the output is byte-identical to
``executor: local`` whatever the number of workers or the order tasks finish in.

A task whose worker process dies (killed, out of memory, node lost) is rerun by Ray up to
`TASK_RETRIES` times; a task is a pure function of its shard, so a rerun gives the same ids.
Errors in the data (a TokbinError in a task) are not retried: they surface as themselves.

Where Ray runs: the cluster named by ``RAY_ADDRESS`` (Ray's convention; the tokbin package is
shipped to its workers, which need the requirements installed), else a Ray instance started
for this process with one CPU per tokenizer worker (TOKBIN_WORKERS, default all cores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tokbin import tokenize
from tokbin.errors import TokbinError
from tokbin.source import InputShard, input_shards

TASK_BYTES = 8 << 20  # text per task: ~1 s of encoding, so Ray's ~ms per task is noise
TASK_RETRIES = 3
TOKBIN_PACKAGE = Path(__file__).resolve().parent


# --- worker side: a Ray task ---------------------------------------------------------------

def _encode_shard(shard: InputShard, text_column: str, encoding: str, eot: str,
                  engine: str) -> tuple[np.ndarray, np.ndarray]:
    """The ids (eot placed, compact dtype) and document lengths of one shard."""
    parts = [np.zeros(0, tokenize.batch_encoder(encoding, eot, engine).info.dtype)]
    lengths = tokenize.encode_shard(shard, text_column, (encoding, eot, engine), parts.append)
    return np.concatenate(parts), lengths


# --- driver side ---------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise TokbinError("tokenize.executor is ray but Ray is not installed; install it with "
                          "`pip install -r requirements-ray.txt`, or set tokenize.executor: "
                          "local") from None
    return ray


def keep_local_ray_on_loopback() -> None:
    """A local Ray instance otherwise listens on this machine's network address; it serves this
    machine only, so it stays on 127.0.0.1. Must run before ray is imported (Ray reads it then)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(workers: int):
    """Connects to RAY_ADDRESS's cluster, or starts a local Ray with `workers` CPUs; a Ray
    already initialized in this process is used as it is. Returns the ray module."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        keep_local_ray_on_loopback()
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address:
        # The cluster's workers import tokbin from this copy, so they run the driver's code.
        ray.init(address=address, runtime_env={"py_modules": [str(TOKBIN_PACKAGE)]})
    else:
        ray.init(address="local", num_cpus=workers, include_dashboard=False)
    return ray


def tokenize_files_on_ray(files: list[Path], text_column: str, encoding: str, eot: str,
                          engine: str, out_bin: Path, out_doclens: Path,
                          info: "tokenize.EncodingInfo", workers: int,
                          progress: Callable[[int], None] = lambda n: None
                          ) -> "tokenize.SplitCounts":
    """Writes the tokens of `files` to `out_bin` and their lengths to `out_doclens`."""
    ray = connect(workers)
    # Looked up at call time, not import time, so a test can substitute a faulty task.
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_encode_shard)
    in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    submitted = ((shard, task.remote(shard, text_column, encoding, eot, engine))
                 for shard in input_shards(files, TASK_BYTES))
    return tokenize.write_in_order(submitted, in_flight, lambda work: _result(ray, *work),
                                   lambda work: ray.cancel(work[1]), out_bin, out_doclens, info,
                                   progress)


def _result(ray, shard: InputShard, ref) -> tuple[np.ndarray, np.ndarray]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, TokbinError):
            raise TokbinError(str(e.cause)) from None
        raise  # a bug, not bad data: keep Ray's report with the worker's traceback
    except ray.exceptions.RayError as e:
        raise TokbinError(f"the Ray task tokenizing {shard} failed {TASK_RETRIES + 1} times "
                          f"({type(e).__name__}: its worker or node died, e.g. out of memory); "
                          "check the workers' memory and logs (`ray logs`), then rerun") from None
