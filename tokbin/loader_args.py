"""What a BinLoader may be given, checked before it reads anything: whole numbers, the rank and
world size (passed, torch.distributed's, or 0 and 1 for want of a process group, and which of
these each was), and a device it can feed."""
from __future__ import annotations

import numpy as np
import torch

from tokbin.errors import TokbinError


def check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise TokbinError(f"{name} must be an integer >= {minimum}, got {value!r}")


def rank_and_world_size(rank, world_size) -> tuple[int, int, dict[str, str]]:
    """rank and world_size, and where each came from: "passed", "torch.distributed", or
    "default" (0 and 1: no process group is initialized)."""
    origin = {"rank": "passed", "world_size": "passed"}
    if rank is None or world_size is None:
        import torch.distributed as dist
        initialized = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank, origin["rank"] = ((dist.get_rank(), "torch.distributed") if initialized
                                    else (0, "default"))
        if world_size is None:
            world_size, origin["world_size"] = ((dist.get_world_size(), "torch.distributed")
                                                if initialized else (1, "default"))
    check_int("world_size", world_size, minimum=1)
    check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise _rank_error(rank, world_size, origin)
    return int(rank), int(world_size), origin


def _rank_error(rank: int, world_size: int, origin: dict[str, str]) -> TokbinError:
    """rank >= world_size, saying where each came from (one may be torch.distributed's, or a
    default for want of it) and what to pass instead."""
    said = {"passed": "{} passed", "torch.distributed": "{} from torch.distributed",
            "default": "{} defaulted to {}: torch.distributed is not initialized"}
    values = {"rank": rank, "world_size": world_size}
    if set(origin.values()) == {"passed"}:
        where, fix = "both passed", "pass a rank below world_size"
    else:
        where = "; ".join(said[came].format(name, values[name]) for name, came in origin.items())
        fix = ("pass world_size= with rank=, or build the loader after init_process_group to "
               "take both from it" if "default" in origin.values() else
               "pass rank= and world_size= together (the data-parallel rank and size), or "
               "neither to take torch.distributed's")
    return TokbinError(f"rank {rank} is not < world_size {world_size} ({where}): ranks are "
                       f"numbered 0 .. {world_size - 1}; {fix}")


def check_device(device) -> torch.device:
    """`device` as a torch.device a BinLoader can feed, or a TokbinError saying why not (and
    what to use). A training script can call it before init_process_group picks a backend."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise TokbinError(f"device {device!r} is not a torch device ({e})") from None
    if device.type not in ("cpu", "cuda", "mps"):  # the copies are written for these alone
        raise TokbinError(f"device {str(device)!r}: BinLoader feeds cpu, cuda and mps devices")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TokbinError(f"device {str(device)!r} asked for but torch.cuda.is_available() is "
                          "False: use device='cpu' or a CUDA build of torch")
    if device.type == "cuda" and device.index is None:
        # Pin "cuda" to the device current now (under DDP: this rank's, once set_device ran),
        # so batches do not follow later set_device calls or the prefetch thread's default 0.
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TokbinError("device 'mps' asked for but torch.backends.mps.is_available() is "
                          "False: use device='cpu'")
    return device
