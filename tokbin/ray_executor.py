"""Tokenizing a split as Ray tasks (``tokenize.executor: ray``): the same bins as the local pool.

`RayExecutor` follows tokbin.executors' protocol. The input is cut into work units: runs of
consecutive parquet row groups of about `TASK_BYTES` of text, or a whole file of another
format. Each unit is one Ray task that reads its documents itself (the driver ships where
they are, never text: a path in data/raw, which every node must see at the same place, e.g. a
shared filesystem; or, with download.materialize: false, the file's URL pinned as source.json
records it, which a node reads with its own credentials: tokbin.remote) and encodes them with
the local executors' code (`tokbin.encode`: same engine, same eot policy, same dtype, same
holdout decision per document). The driver writes results
strictly in unit order with at most `2 x cluster CPUs` tasks in flight, so its memory is
bounded and the output is byte-identical to ``executor: local`` whatever the number of
workers or the order tasks finish in.

A task whose worker process dies (killed, out of memory, node lost) is rerun by Ray up to
`TASK_RETRIES` times; a task is a pure function of its unit, so a rerun gives the same ids.
Errors in the data (a TokbinError in a task) are not retried: they surface as themselves.

Where Ray runs: the cluster named by ``RAY_ADDRESS`` (Ray's convention; the tokbin package is
shipped to its workers, which need the requirements installed), else a Ray instance started
for this process with one CPU per tokenizer worker (TOKBIN_WORKERS, default all cores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from tokbin.encode import (EncodeSettings, EncodingInfo, batch_encoder, encode_work_unit,
                           encoding_info)
from tokbin.errors import TokbinError
from tokbin.format import Holdout
from tokbin.readers import WorkUnit, work_units
from tokbin.split_writer import SplitCounts, SplitJob, write_in_order

TASK_BYTES = 8 << 20  # text per task: seconds of encoding, so Ray's cost per task is noise
TASK_RETRIES = 3
TOKBIN_PACKAGE = Path(__file__).resolve().parent


# --- worker side: a Ray task ---------------------------------------------------------------

def _encode_unit(unit: WorkUnit, settings: EncodeSettings, holdout: Holdout | None
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per output (one; two with a holdout), the ids (eot placed, compact dtype) and document
    lengths of one work unit."""
    dtype = batch_encoder(settings).info.dtype
    parts = [[np.zeros(0, dtype)] for _ in range(1 + (holdout is not None))]
    lengths = encode_work_unit(unit, settings, holdout, [p.append for p in parts])
    return [(np.concatenate(ids), unit_lengths) for ids, unit_lengths in zip(parts, lengths)]


# --- driver side ---------------------------------------------------------------------------

RAY_MISSING = ("tokenize.executor is ray but Ray is not installed; install it with "
               "`pip install -r requirements-ray.txt`, or set tokenize.executor: local")


def import_ray():
    try:
        import ray
    except ImportError:
        raise TokbinError(RAY_MISSING) from None
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


class RayExecutor:
    """Splits tokenized as Ray tasks on RAY_ADDRESS's cluster or a local Ray."""

    def __init__(self, settings: EncodeSettings, workers: int):
        self.settings, self.workers = settings, workers

    def encoding_info(self) -> EncodingInfo:
        return encoding_info(self.settings.tokenizer)

    def tokenize_split(self, job: SplitJob, info: EncodingInfo,
                       progress: Callable[[int], None] = lambda n: None) -> list[SplitCounts]:
        ray = connect(self.workers)
        # Looked up at call time, not import time, so a test can substitute a faulty task.
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_encode_unit)
        in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        submitted = ((unit, task.remote(unit, self.settings, job.holdout))
                     for unit in work_units(job.files, job.reading, TASK_BYTES))
        return write_in_order(submitted, in_flight, lambda work: _result(ray, *work),
                              lambda work: ray.cancel(work[1]), job.outputs, info, progress)

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _result(ray, unit: WorkUnit, ref) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, TokbinError):
            raise type(e.cause)(str(e.cause)) from None  # NotUTF8Error stays one
        raise  # a bug, not bad data: keep Ray's report with the worker's traceback
    except ray.exceptions.RayError as e:
        raise TokbinError(f"the Ray task tokenizing {unit} failed {TASK_RETRIES + 1} times "
                          f"({type(e).__name__}: its worker or node died, e.g. out of memory); "
                          "check the workers' memory and logs (`ray logs`), then rerun") from None
