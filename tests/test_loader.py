"""BinLoader: what its batches are, how they are sampled and resumed, and what it refuses."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import itertools
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbin.tokens
from tokbin import BinLoader, TokbinError
from tokbin.format import DTYPES, Meta, SplitInfo, Source, read_meta, write_meta

ROOT = Path(__file__).resolve().parents[1]

# Odd multipliers permute the ids mod 2**16 / 2**32, so every token marks its own position and
# ids reach the top half of the dtype (where a signed transfer would go negative).
MIXERS = {"uint16": 7919, "uint32": 2654435761}


def position_tokens(n: int, dtype: str = "uint16") -> np.ndarray:
    """n distinct tokens (n <= 2**16 for uint16): token i identifies position i."""
    bits = 8 * DTYPES[dtype].itemsize
    return ((np.arange(n, dtype=np.uint64) * MIXERS[dtype]) % (1 << bits)).astype(DTYPES[dtype])


def write_bin(folder: Path, tokens: np.ndarray, meta: bool = True, name: str = "train.bin",
              n_vocab: int | None = None) -> Path:
    """A bin, and by default the meta.json the pipeline would write beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tokens.tofile(path)
    if meta:
        info = SplitInfo(file=name, tokens=len(tokens), documents=1,
                         bytes=len(tokens) * tokens.dtype.itemsize,
                         crc32=f"{zlib.crc32(tokens.tobytes()):08x}")
        n_vocab = n_vocab or 1 << 8 * tokens.dtype.itemsize
        write_meta(folder, Meta(encoding="gpt2", n_vocab=n_vocab, eot_token=0, eot="none",
                                dtype=tokens.dtype.name, source=Source("test", None, None),
                                splits={"train": info}))
    return path


def starts_of(x: torch.Tensor, tokens: np.ndarray) -> list[int]:
    """The bin position each row of x starts at."""
    position = {int(t): i for i, t in enumerate(tokens)}
    return [position[int(row[0])] for row in x]


def take(loader: BinLoader, batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [loader.next_batch() for _ in range(batches)]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def a_process_group(monkeypatch, rank: int, world_size: int) -> None:
    """torch.distributed as it is in a process of an initialized group, from here on."""
    import torch.distributed as dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: world_size)


@pytest.fixture
def tokens() -> np.ndarray:
    return position_tokens(5000)


@pytest.fixture
def bin_path(tmp_path, tokens) -> Path:
    return write_bin(tmp_path / "data", tokens)


# -- what a batch is ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["random", "epoch"])
def test_x_is_a_run_of_the_bins_tokens_and_y_the_same_run_shifted_by_one(bin_path, tokens,
                                                                         sampling):
    loader = BinLoader(bin_path, batch_size=8, block_size=32, sampling=sampling)
    for x, y in take(loader, 5):
        assert x.shape == y.shape == (8, 32)
        assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
        assert x.is_contiguous() and y.is_contiguous()
        for row_x, row_y, start in zip(x, y, starts_of(x, tokens)):
            assert row_x.tolist() == tokens[start:start + 32].tolist()
            assert row_y.tolist() == tokens[start + 1:start + 33].tolist()


def test_uint32_bins_give_their_ids_including_ones_above_2_to_the_31(tmp_path):
    tokens = position_tokens(3000, "uint32")
    assert tokens.max() >= 1 << 31
    loader = BinLoader(write_bin(tmp_path, tokens), batch_size=16, block_size=20)
    assert loader.dtype == np.dtype("uint32")
    x, y = loader.next_batch()
    for row_x, row_y, start in zip(x, y, starts_of(x, tokens)):
        assert row_x.tolist() == tokens[start:start + 20].tolist()
        assert row_y.tolist() == tokens[start + 1:start + 21].tolist()


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_the_compact_transfer_path_that_cuda_and_mps_take_widens_unsigned_ids_exactly(
        tmp_path, dtype):
    # No GPU here: run the accelerator path (compact signed transfer, widen and mask after) on
    # the CPU device, where the copy to the device is a no-op.
    tokens = position_tokens(3000, dtype)
    direct = BinLoader(write_bin(tmp_path, tokens), batch_size=16, block_size=20)
    compact = BinLoader(tmp_path / "train.bin", batch_size=16, block_size=20)
    compact._gather.compact_transfer = True
    assert_same_batches(take(direct, 4), take(compact, 4))


def test_a_bare_bin_without_meta_json_reads_with_an_explicit_dtype(tmp_path, tokens):
    path = write_bin(tmp_path, tokens, meta=False)
    for dtype in ("uint16", np.uint16, np.dtype("<u2")):
        x, _ = BinLoader(path, batch_size=4, block_size=8, dtype=dtype).next_batch()
        start = starts_of(x, tokens)[0]
        assert x[0].tolist() == tokens[start:start + 8].tolist()


def test_an_explicit_dtype_that_agrees_with_meta_json_is_accepted(bin_path):
    assert BinLoader(bin_path, 4, 8, dtype="uint16").tokens == 5000


def test_the_loader_iterates_endlessly_over_the_same_batches_as_next_batch(bin_path):
    expected = take(BinLoader(bin_path, 4, 8, seed=3), 50)
    assert_same_batches(list(itertools.islice(BinLoader(bin_path, 4, 8, seed=3), 50)), expected)


def test_each_batch_is_a_new_tensor_so_held_batches_do_not_change(bin_path):
    loader = BinLoader(bin_path, 4, 8, prefetch=2)
    x, _ = loader.next_batch()
    kept = x.clone()
    take(loader, 10)
    assert torch.equal(x, kept)
    loader.close()


# Digests of the first 40 batches (x then y) of each setup, taken from tokbin before align and
# return_documents existed: align="token" batches stay what they were, byte for byte.
TOKEN_BATCH_DIGESTS = {("random", 0, 1): "7b2df80b964315a4", ("random", 1, 3): "c03a73323f544c55",
                       ("epoch", 0, 1): "737feb74d70e7585", ("epoch", 1, 3): "008b83281c857988"}


@pytest.mark.parametrize("setup", TOKEN_BATCH_DIGESTS)
def test_token_batches_are_byte_for_byte_those_of_earlier_versions(tmp_path, setup):
    import hashlib
    sampling, rank, world_size = setup
    loader = BinLoader(write_bin(tmp_path, position_tokens(5000)), batch_size=8, block_size=32,
                       sampling=sampling, seed=7, rank=rank, world_size=world_size)
    digest = hashlib.sha256()
    for x, y in take(loader, 40):
        digest.update(x.numpy().tobytes())
        digest.update(y.numpy().tobytes())
    assert digest.hexdigest()[:16] == TOKEN_BATCH_DIGESTS[setup]


# -- random sampling ---------------------------------------------------------------------------

def test_random_offsets_span_zero_to_n_minus_block_size_minus_one(tmp_path):
    tokens = position_tokens(36)  # block 32: offsets 0, 1, 2, 3
    loader = BinLoader(write_bin(tmp_path, tokens), batch_size=16, block_size=32)
    seen = {s for x, _ in take(loader, 10) for s in starts_of(x, tokens)}
    assert seen == {0, 1, 2, 3}


def test_random_batches_are_reproducible_from_the_seed(bin_path):
    assert_same_batches(take(BinLoader(bin_path, 8, 16, seed=7), 20),
                        take(BinLoader(bin_path, 8, 16, seed=7), 20))


def test_different_seeds_give_different_batches(bin_path):
    a, _ = BinLoader(bin_path, 8, 16, seed=1).next_batch()
    b, _ = BinLoader(bin_path, 8, 16, seed=2).next_batch()
    assert not torch.equal(a, b)


def test_each_rank_draws_its_own_random_stream(bin_path, tokens):
    firsts = [starts_of(BinLoader(bin_path, 8, 16, rank=r, world_size=4).next_batch()[0], tokens)
              for r in range(4)]
    assert len({tuple(f) for f in firsts}) == 4


# -- epoch sampling ----------------------------------------------------------------------------

def epoch_windows(loader: BinLoader, tokens: np.ndarray, epoch: int) -> list[int]:
    """The window starts `loader` yields in `epoch` (its batches may straddle epochs)."""
    per_epoch = loader.windows_per_epoch
    needed = (epoch + 1) * per_epoch
    starts = [s for x, _ in take(loader, -(-needed // loader.batch_size))
              for s in starts_of(x, tokens)]
    return starts[epoch * per_epoch:needed]


def test_an_epoch_deals_each_window_to_exactly_one_rank_and_drops_only_the_remainder(
        bin_path, tokens):
    windows = (5000 - 1) // 32                     # 156 windows
    ranks = 5                                      # 5 ranks x 31 = 155: one window dropped
    seen = [epoch_windows(BinLoader(bin_path, 8, 32, sampling="epoch", rank=r, world_size=ranks),
                          tokens, epoch=0) for r in range(ranks)]
    assert [len(s) for s in seen] == [windows // ranks] * ranks
    everything = [s for rank in seen for s in rank]
    assert len(set(everything)) == len(everything) == windows - windows % ranks
    assert set(everything) <= {k * 32 for k in range(windows)}


def test_one_rank_sees_every_window_once_per_epoch_including_batches_that_straddle_epochs(
        bin_path, tokens):
    windows = (5000 - 1) // 32                     # 156: not a multiple of the batch size 10
    loader = BinLoader(bin_path, 10, 32, sampling="epoch")
    assert loader.windows_per_epoch == windows
    for epoch in range(3):
        twin = BinLoader(bin_path, 10, 32, sampling="epoch")
        assert sorted(epoch_windows(twin, tokens, epoch)) == [k * 32 for k in range(windows)]


def test_every_epoch_is_shuffled_differently(bin_path, tokens):
    orders = [epoch_windows(BinLoader(bin_path, 12, 32, sampling="epoch"), tokens, e)
              for e in range(3)]
    assert orders[0] != orders[1] != orders[2] != orders[0]


def test_the_dropped_remainder_changes_from_epoch_to_epoch(bin_path, tokens):
    ranks = 5                                      # 156 windows: one dropped per epoch
    per_epoch = [set().union(*(epoch_windows(BinLoader(bin_path, 8, 32, sampling="epoch",
                                                       rank=r, world_size=ranks), tokens, e)
                               for r in range(ranks))) for e in range(4)]
    assert len({frozenset(s) for s in per_epoch}) > 1
    assert all(len(s) == 155 for s in per_epoch)


def test_epoch_counts_the_epoch_the_next_batch_starts_in(bin_path):
    loader = BinLoader(bin_path, 52, 32, sampling="epoch", world_size=3, rank=1)
    assert loader.windows_per_epoch == 52 and loader.epoch == 0
    loader.next_batch()
    assert loader.epoch == 1
    assert BinLoader(bin_path, 4, 8).epoch is None


# -- resume ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["random", "epoch"])
@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_resumed_loader_yields_exactly_the_batches_of_an_uninterrupted_run(
        bin_path, sampling, prefetch):
    def make():
        return BinLoader(bin_path, 10, 32, sampling=sampling, seed=5, prefetch=prefetch)
    uninterrupted = take(make(), 70)
    first = make()
    take(first, 37)  # a prefetch thread is now batches ahead of what was handed out
    state = first.state_dict()
    first.close()
    resumed = make()
    resumed.load_state_dict(state)
    assert_same_batches(take(resumed, 33), uninterrupted[37:])


def test_loading_an_earlier_state_replays_the_same_batches(bin_path):
    loader = BinLoader(bin_path, 8, 16, prefetch=2)
    take(loader, 3)
    state = loader.state_dict()
    after = take(loader, 6)
    loader.load_state_dict(state)
    assert_same_batches(take(loader, 6), after)
    loader.close()


def test_prefetching_does_not_change_the_batches(bin_path):
    ahead = BinLoader(bin_path, 8, 16, sampling="epoch", prefetch=4)
    assert_same_batches(take(ahead, 40), take(BinLoader(bin_path, 8, 16, sampling="epoch",
                                                        prefetch=0), 40))
    ahead.close()


def test_state_saved_by_rank_0_resumes_another_rank(bin_path):
    rank0 = BinLoader(bin_path, 8, 16, rank=0, world_size=2)
    take(rank0, 9)
    expected = BinLoader(bin_path, 8, 16, rank=1, world_size=2)
    take(expected, 9)
    resumed = BinLoader(bin_path, 8, 16, rank=1, world_size=2)
    resumed.load_state_dict(rank0.state_dict())
    assert_same_batches(take(resumed, 3), take(expected, 3))


def test_a_random_state_given_another_world_size_resumes_each_rank_s_own_stream(bin_path):
    """docs/loader.md's way to change the number of ranks under sampling="random"."""
    on_two = BinLoader(bin_path, 8, 16, rank=1, world_size=2)
    take(on_two, 9)
    on_three = BinLoader(bin_path, 8, 16, rank=1, world_size=3)
    on_three.load_state_dict(on_two.state_dict() | {"world_size": 3})
    assert_same_batches(take(on_three, 3), take(on_two, 3))


def test_state_from_a_different_setup_is_refused(bin_path):
    state = BinLoader(bin_path, 8, 16, seed=1).state_dict()
    with pytest.raises(TokbinError, match="seed: saved 1, now 2"):
        BinLoader(bin_path, 8, 16, seed=2).load_state_dict(state)
    with pytest.raises(TokbinError, match="not a BinLoader.state_dict"):
        BinLoader(bin_path, 8, 16).load_state_dict({"batches": 3})


def test_a_state_from_other_tokens_of_the_same_sizes_is_refused(tmp_path):
    # another data version with the same token count: the sizes agree, the ids' CRC-32 not
    path = write_bin(tmp_path / "data", position_tokens(4000))
    loader = BinLoader(path, 8, 16, sampling="epoch")
    take(loader, 3)
    state = loader.state_dict()
    assert state["ids"] == {"dtype": "uint16", "crc32": read_meta(path.parent).splits[
        "train"].crc32}
    buffer = io.BytesIO()  # it still saves with a checkpoint and loads with weights_only
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state
    write_bin(tmp_path / "data", position_tokens(4000)[::-1].copy())
    other = BinLoader(path, 8, 16, sampling="epoch")
    with pytest.raises(TokbinError, match=r"loader state is from other data: .*train\.bin has "
                       r"the saved sizes \(4,000 tokens\) but other ids .*git checkout"):
        other.load_state_dict(state)
    other.load_state_dict({k: v for k, v in state.items() if k != "ids"})  # on purpose
    assert other.batches == 3


def test_states_without_the_ids_crc32_still_resume(tmp_path):
    recorded = write_bin(tmp_path / "recorded", position_tokens(3000))
    bare = write_bin(tmp_path / "bare", position_tokens(3000), meta=False)
    assert "ids" not in BinLoader(bare, 8, 16, dtype="uint16").state_dict()  # nothing to go by
    for path, dtype in ((recorded, None), (bare, "uint16")):
        older = {**BinLoader(path, 8, 16, dtype=dtype).state_dict(), "batches": 4}
        older.pop("ids", None)  # as a tokbin before this check saved it
        loader = BinLoader(path, 8, 16, dtype=dtype)
        loader.load_state_dict(older)
        expected = BinLoader(path, 8, 16, dtype=dtype)
        take(expected, 4)
        assert_same_batches(take(loader, 2), take(expected, 2))


@pytest.mark.parametrize("ids", ["0badc0de", {"crc32": "0badc0de"},
                                 {"dtype": "uint16", "crc32": 7}])
def test_a_state_whose_ids_record_was_edited_is_refused(bin_path, ids):
    state = {**BinLoader(bin_path, 8, 16).state_dict(), "ids": ids}
    with pytest.raises(TokbinError, match="loader state's 'ids' must be"):
        BinLoader(bin_path, 8, 16).load_state_dict(state)


# -- the prefetch thread -----------------------------------------------------------------------

def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tokbin-prefetch" and t.is_alive()]


def test_close_stops_the_prefetch_thread(bin_path):
    before = len(prefetch_threads())
    loader = BinLoader(bin_path, 8, 16, prefetch=2)
    loader.next_batch()
    assert len(prefetch_threads()) == before + 1
    loader.close()
    assert len(prefetch_threads()) == before


def test_a_dropped_loader_stops_its_prefetch_thread(bin_path):
    before = len(prefetch_threads())
    loader = BinLoader(bin_path, 8, 16, prefetch=2)
    loader.next_batch()
    del loader
    gc.collect()
    assert len(prefetch_threads()) == before


def test_an_error_in_the_prefetch_thread_is_raised_by_next_batch(bin_path):
    loader = BinLoader(bin_path, 8, 16, prefetch=2)

    def broken(batch):
        raise OSError("disk went away")
    loader._gather.host_batch = broken
    with pytest.raises(OSError, match="disk went away"):
        loader.next_batch()
    assert loader.batches == 0
    loader.close()


# -- memory ------------------------------------------------------------------------------------

def rss_growth(path: Path, batches: int) -> int:
    psutil = pytest.importorskip("psutil")
    process = psutil.Process()
    loader = BinLoader(path, 64, 256, dtype="uint16")
    loader.next_batch()
    before = process.memory_info().rss
    for _ in range(batches):
        loader.next_batch()  # and drop it: only the loader's own memory is measured
    return process.memory_info().rss - before


@pytest.mark.parametrize("measured", [True, False], ids=["rss-measured", "rss-estimated"])
def test_rss_stays_bounded_while_batches_touch_all_of_a_large_bin(tmp_path, monkeypatch,
                                                                  measured):
    if not measured:  # as on a system without /proc: each row is assumed to map 64 KiB
        monkeypatch.setattr(tokbin.tokens, "_resident_file_bytes", lambda: None)
    path = tmp_path / "big.bin"
    np.zeros(32 << 20, dtype=np.uint16).tofile(path)         # 64 MiB
    monkeypatch.setattr(tokbin.tokens, "CHECK_EVERY_ROWS", 64)  # every batch
    monkeypatch.setattr(tokbin.tokens, "RELEASE_MAPPED_BYTES", 1 << 62)
    unbounded = rss_growth(path, 400)
    if unbounded < 32 << 20:
        pytest.skip("this OS does not count a memmap's read pages in RSS")
    monkeypatch.setattr(tokbin.tokens, "RELEASE_MAPPED_BYTES", 4 << 20)
    bounded = rss_growth(path, 400)
    assert bounded < 16 << 20, f"RSS grew {bounded >> 20} MiB (unbounded: {unbounded >> 20} MiB)"


# -- validation --------------------------------------------------------------------------------

def test_a_bin_whose_size_disagrees_with_meta_json_is_refused(tmp_path, tokens):
    path = write_bin(tmp_path, tokens)
    with open(path, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(TokbinError, match="10002 bytes but meta.json says 10000"):
        BinLoader(path, 4, 8)


def test_a_dtype_that_disagrees_with_meta_json_is_refused(bin_path):
    with pytest.raises(TokbinError, match="dtype uint32 disagrees with .*meta.json"):
        BinLoader(bin_path, 4, 8, dtype="uint32")


def test_a_bare_bin_that_is_not_a_whole_number_of_tokens_is_refused(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\0" * 4001)
    with pytest.raises(TokbinError, match="4001 bytes, not a whole number of uint16 tokens"):
        BinLoader(path, 4, 8, dtype="uint16")


def test_a_bare_bin_without_dtype_points_to_the_dtype_argument(tmp_path, tokens):
    with pytest.raises(TokbinError, match="meta.json not found.*dtype="):
        BinLoader(write_bin(tmp_path, tokens, meta=False), 4, 8)


def test_a_bin_that_meta_json_does_not_list_is_refused(tmp_path, tokens):
    write_bin(tmp_path, tokens)
    other = write_bin(tmp_path, tokens, meta=False, name="other.bin")
    with pytest.raises(TokbinError) as refused:
        BinLoader(other, 4, 8)
    assert str(refused.value) == (
        f"{other} is not one of the bins {tmp_path / 'meta.json'} lists: not part of the build it "
        f"describes (a leftover of an earlier one?); read what it lists instead: "
        f"{tmp_path / 'train.bin'}. A bin of your own without a meta.json belongs in a folder of "
        "its own (read it there with dtype=)")


def test_a_missing_bin_is_refused(tmp_path):
    with pytest.raises(TokbinError, match="not found"):
        BinLoader(tmp_path / "train.bin", 4, 8, dtype="uint16")


def test_an_unknown_dtype_is_refused(tmp_path, tokens):
    with pytest.raises(TokbinError, match="dtype 'int16' is not a token dtype"):
        BinLoader(write_bin(tmp_path, tokens, meta=False), 4, 8, dtype="int16")


def test_a_block_size_the_data_cannot_fill_is_refused(tmp_path):
    path = write_bin(tmp_path, position_tokens(32))
    with pytest.raises(TokbinError, match="block_size 32 needs at least 33 tokens .* has 32"):
        BinLoader(path, 4, 32)


def test_epoch_sampling_with_fewer_windows_than_ranks_is_refused(tmp_path):
    path = write_bin(tmp_path, position_tokens(100))         # 3 windows of 32
    with pytest.raises(TokbinError, match="3 windows .* fewer than world_size 4"):
        BinLoader(path, 4, 32, sampling="epoch", rank=0, world_size=4)


def test_a_rank_outside_the_world_size_is_refused(bin_path):
    with pytest.raises(TokbinError, match="rank 2 is not < world_size 2"):
        BinLoader(bin_path, 4, 8, rank=2, world_size=2)


def test_a_rank_outside_a_world_size_of_1_for_want_of_a_process_group_says_so(bin_path):
    """rank=int(os.environ["RANK"]) run without torchrun, say."""
    with pytest.raises(TokbinError, match=re.escape(
            "rank 1 is not < world_size 1 (rank passed; world_size defaulted to 1: "
            "torch.distributed is not initialized): ranks are numbered 0 .. 0; pass "
            "world_size= with rank=, or build the loader after init_process_group to take both "
            "from it")):
        BinLoader(bin_path, 4, 8, rank=1)


def test_a_rank_from_torch_distributed_outside_a_world_size_passed_says_so(bin_path,
                                                                          monkeypatch):
    a_process_group(monkeypatch, rank=1, world_size=2)
    with pytest.raises(TokbinError, match=re.escape(
            "rank 1 is not < world_size 1 (rank from torch.distributed; world_size passed): "
            "ranks are numbered 0 .. 0; pass rank= and world_size= together (the data-parallel "
            "rank and size), or neither to take torch.distributed's")):
        BinLoader(bin_path, 4, 8, world_size=1)


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("batch_size", -1),
                                         ("block_size", 0), ("block_size", 2.5),
                                         ("world_size", 0), ("seed", -1), ("prefetch", -1)])
def test_sizes_that_are_not_positive_integers_are_refused(bin_path, name, value):
    args = {"batch_size": 4, "block_size": 8, name: value}
    with pytest.raises(TokbinError, match=f"{name} must be an integer"):
        BinLoader(bin_path, **args)


def test_an_unknown_sampling_is_refused(bin_path):
    with pytest.raises(TokbinError, match="sampling 'shuffle' is not one of"):
        BinLoader(bin_path, 4, 8, sampling="shuffle")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_cuda_device_without_cuda_is_refused(bin_path):
    with pytest.raises(TokbinError, match="torch.cuda.is_available"):
        BinLoader(bin_path, 4, 8, device="cuda")


def test_a_device_the_loader_does_not_feed_is_refused_in_the_constructor(bin_path):
    with pytest.raises(TokbinError, match="device 'xpu': BinLoader feeds cpu, cuda and mps"):
        BinLoader(bin_path, 4, 8, device="xpu")


def test_a_loader_does_not_pickle_and_says_to_build_one_per_process(bin_path):
    # pickled, its memory-mapped row views would be copies of the whole bin
    with pytest.raises(TypeError, match="a BinLoader does not pickle .*build it in the process "
                                        "that uses it"):
        pickle.dumps(BinLoader(bin_path, 4, 8))


def _next_batch_in_a_forked_child(loader, errors) -> None:
    try:
        loader.next_batch()
        errors.put(None)
    except TokbinError as e:
        errors.put(str(e))


def test_a_loader_copied_by_a_fork_refuses_to_repeat_its_parent_s_batches(bin_path):
    loader = BinLoader(bin_path, 4, 8)
    fork = multiprocessing.get_context("fork")  # what a DataLoader worker is, on Linux
    errors = fork.Queue()
    child = fork.Process(target=_next_batch_in_a_forked_child, args=(loader, errors))
    child.start()
    child.join(60)
    assert "built before a fork (a DataLoader worker?)" in errors.get(timeout=10)
    assert loader.next_batch()[0].shape == (4, 8)  # the parent's own goes on


# -- defaults ----------------------------------------------------------------------------------

def test_rank_and_world_size_default_to_torch_distributed_when_initialized(bin_path,
                                                                          monkeypatch):
    import torch.distributed as dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 2)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    loader = BinLoader(bin_path, 4, 8)
    assert (loader.rank, loader.world_size) == (2, 3)


def test_rank_and_world_size_default_to_0_and_1_without_torch_distributed(bin_path):
    loader = BinLoader(bin_path, 4, 8)
    assert (loader.rank, loader.world_size) == (0, 1)


@pytest.mark.parametrize("passed", [{}, {"rank": 0}, {"world_size": 2}])
def test_a_loader_built_before_init_process_group_refuses_its_first_batch(bin_path, monkeypatch,
                                                                         passed):
    loader = BinLoader(bin_path, 4, 8, **passed)  # rank 0 of 1 (or of 2), defaulted
    a_process_group(monkeypatch, rank=1, world_size=2)
    with pytest.raises(TokbinError, match=r"built before init_process_group: it took rank 0 of "
                       r"world_size [12], but this process is rank 1 of 2 in torch.distributed, "
                       r"so ranks would train on the same batches; build the loader after "
                       r"init_process_group \(or pass rank= and world_size=\)"):
        loader.next_batch()


def test_a_loader_built_before_init_process_group_says_so_when_it_loads_a_ranks_state(
        bin_path, monkeypatch):
    # the state of a 2-rank run would otherwise be refused for its world_size alone
    state = BinLoader(bin_path, 4, 8, rank=0, world_size=2).state_dict()
    loader = BinLoader(bin_path, 4, 8)  # before the group: rank 0 of 1
    early = BinLoader(bin_path, 4, 8)
    early.load_state_dict(early.state_dict())  # loaded before the group too
    a_process_group(monkeypatch, rank=1, world_size=2)
    with pytest.raises(TokbinError, match="built before init_process_group"):
        loader.load_state_dict(state)
    with pytest.raises(TokbinError, match="built before init_process_group"):
        early.next_batch()  # its first batch still checks


def test_a_loader_built_before_a_one_process_group_gives_its_batches(bin_path, monkeypatch):
    loader = BinLoader(bin_path, 4, 8)
    a_process_group(monkeypatch, rank=0, world_size=1)
    assert_same_batches(take(loader, 3), take(BinLoader(bin_path, 4, 8), 3))


def test_rank_and_world_size_passed_are_the_data_parallel_ones_whatever_the_group(bin_path,
                                                                                 monkeypatch):
    """Tensor or pipeline parallelism: the peers of a data-parallel rank share its batches."""
    a_process_group(monkeypatch, rank=3, world_size=4)
    loader = BinLoader(bin_path, 4, 8, rank=1, world_size=2)
    assert (loader.rank, loader.world_size) == (1, 2)
    assert_same_batches(take(loader, 3), take(BinLoader(bin_path, 4, 8, rank=1, world_size=2), 3))


def test_the_process_group_is_compared_at_the_first_batch_only(bin_path, monkeypatch):
    """After it, next_batch looks nothing up: batch timing matters (docs/performance.md)."""
    loader = BinLoader(bin_path, 4, 8)
    loader.next_batch()
    a_process_group(monkeypatch, rank=1, world_size=2)
    assert loader.next_batch()[0].shape == (4, 8)


# -- the example training loop -----------------------------------------------------------------

def train_bigram(*args) -> dict[int, str]:
    """Runs examples/train_bigram.py's main (in this process: torch is already imported);
    returns its log line per step."""
    from examples.train_bigram import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([*map(str, args), "--device", "cpu", "--log-every", "1"])
    lines = [line for line in out.getvalue().splitlines() if line.startswith("step ")]
    return {int(line.split(":")[0].split()[1]): line for line in lines}


def loss_at(log: dict[int, str], step: int) -> float:
    return float(log[step].split("train loss ")[1].split(",")[0])


@pytest.fixture(scope="module")
def pattern_bin(tmp_path_factory) -> Path:
    """Ids 0..96 in a fixed cycle: a bigram model can learn to predict every next id."""
    cycle = (np.arange(97) * 5 + 3) % 97
    folder = tmp_path_factory.mktemp("pattern")
    return write_bin(folder, np.tile(cycle, 200).astype(np.uint16), n_vocab=100)


@pytest.fixture(scope="module")
def uninterrupted_log(pattern_bin) -> dict[int, str]:
    return train_bigram(pattern_bin, "--steps", 30)


def test_the_bigram_example_trains_on_a_bin(uninterrupted_log):
    assert sorted(uninterrupted_log) == list(range(1, 31))
    assert loss_at(uninterrupted_log, 30) < loss_at(uninterrupted_log, 1) / 2


def test_the_bigram_example_resumed_from_its_checkpoint_logs_what_an_uninterrupted_run_logs(
        pattern_bin, uninterrupted_log, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    train_bigram(pattern_bin, "--steps", 12, "--checkpoint", checkpoint)
    resumed = train_bigram(pattern_bin, "--steps", 30, "--checkpoint", checkpoint)
    assert resumed == {step: uninterrupted_log[step] for step in range(13, 31)}


def test_the_bigram_example_says_a_checkpoint_at_or_past_steps_leaves_nothing_to_train(
        pattern_bin, tmp_path, capsys):
    """A rerun of a finished job (or with fewer --steps) trains nothing and keeps the file."""
    from examples.train_bigram import main
    checkpoint = tmp_path / "ckpt.pt"
    train_bigram(pattern_bin, "--steps", 5, "--checkpoint", checkpoint)
    os.utime(checkpoint, ns=(0, 0))
    capsys.readouterr()
    for steps in (5, 3):
        main([str(pattern_bin), "--steps", str(steps), "--checkpoint", str(checkpoint),
              "--device", "cpu", "--log-every", "1"])
        assert capsys.readouterr().out.splitlines()[-1:] == [
            f"checkpoint {checkpoint} is at step 5, --steps {steps}: nothing to train; raise "
            "--steps to go on"]
    assert checkpoint.stat().st_mtime_ns == 0  # not saved again


def test_the_bigram_example_reads_a_bare_bin_given_dtype_and_vocab(tmp_path):
    path = write_bin(tmp_path, np.tile(np.arange(50, dtype=np.uint16), 40), meta=False)
    assert sorted(train_bigram(path, "--dtype", "uint16", "--vocab", 50, "--steps", 3)) == [1, 2, 3]


def test_the_bigram_example_refuses_a_validation_path_that_does_not_exist(pattern_bin, capsys):
    with pytest.raises(SystemExit):
        train_bigram(pattern_bin, "--steps", 1, "--val", pattern_bin.with_name("valid.bin"))
    assert "--val " + str(pattern_bin.with_name("valid.bin")) + ": no such bin or shard " \
        "directory" in capsys.readouterr().err


def test_the_bigram_example_refuses_a_bin_that_does_not_exist(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_bigram(tmp_path / "train.bin", "--steps", 1)
    assert f"{tmp_path / 'train.bin'}: no such bin or shard directory" in capsys.readouterr().err


def test_the_bigram_example_asks_for_its_own_options_for_a_bare_bin(tmp_path):
    path = write_bin(tmp_path, np.arange(50, dtype=np.uint16), meta=False)
    with pytest.raises(TokbinError, match="pass --dtype and --vocab for a bare bin"):
        train_bigram(path, "--steps", 1)


@pytest.fixture(scope="module")
def short_validation(tmp_path_factory) -> Path:
    """A validation split of 40 tokens: shorter than a block of 64."""
    return write_bin(tmp_path_factory.mktemp("short"), np.arange(40, dtype=np.uint16),
                     name="validation.bin", n_vocab=100)


def test_the_bigram_example_without_validation_batches_does_not_read_the_validation_split(
        pattern_bin, short_validation):
    assert sorted(train_bigram(pattern_bin, "--val", short_validation, "--block-size", 64,
                               "--eval-batches", 0, "--steps", 2)) == [1, 2]


def test_the_bigram_example_says_how_to_get_past_a_validation_split_shorter_than_a_block(
        pattern_bin, short_validation):
    with pytest.raises(TokbinError, match=re.escape(
            f"the validation split: block_size 64 needs at least 65 tokens (x and its shifted y) "
            f"but {short_validation} has 40; use a smaller block_size or more data; or pass "
            "another split with --val, or --eval-batches 0 to train without validation")):
        train_bigram(pattern_bin, "--val", short_validation, "--block-size", 64, "--steps", 2)


def test_the_bigram_example_says_it_has_no_validation_split_to_evaluate(pattern_bin, capsys):
    from examples.train_bigram import main
    main([str(pattern_bin), "--steps", "1", "--device", "cpu"])
    assert (f"no {pattern_bin.with_name('validation.bin')} beside {pattern_bin}: no validation "
            "loss (pass --val)") in capsys.readouterr().out


def test_the_bigram_example_under_torchrun_checks_the_device_before_joining_the_group(
        pattern_bin, monkeypatch):
    """Not nccl's "Distributed package doesn't have NCCL built in" on a torch without CUDA."""
    import torch.distributed as dist
    from examples.train_bigram import main

    def join(*args, **kwargs):
        raise AssertionError("init_process_group before the device was checked")
    monkeypatch.setattr(dist, "init_process_group", join)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RANK", "0")  # as torchrun sets them
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(TokbinError, match=re.escape(
            "device 'cuda:0' asked for but torch.cuda.is_available() is False: use "
            "device='cpu' or a CUDA build of torch")):
        main([str(pattern_bin), "--steps", "1", "--device", "cuda"])


def test_importing_tokbin_does_not_import_torch():
    result = subprocess.run([sys.executable, "-c", "import sys, tokbin, tokbin.format; "
                             "print('torch' in sys.modules)"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", [None, "uint16"])
@pytest.mark.parametrize("name, what", [("train.docs", "train's document index"),
                                        ("meta.json", "meta.json"),
                                        ("notes.txt", "not a token bin")])
def test_a_file_of_a_data_folder_that_is_not_a_bin_is_refused_naming_the_bins(
        tmp_path, tokens, name, what, dtype):
    path = write_bin(tmp_path / "data", tokens)
    meta = read_meta(path)  # and the document index binarize lists beside the bin
    write_meta(path.parent, dataclasses.replace(meta, splits={"train": dataclasses.replace(
        meta.splits["train"], docs="train.docs")}))
    (path.parent / "train.docs").write_bytes(np.array([0, len(tokens)], np.int64).tobytes())
    (path.parent / "notes.txt").write_text("not tokens")
    with pytest.raises(TokbinError, match=rf"data/{re.escape(name)} is {re.escape(what)}, not one "
                                          r"of the bins .*meta.json lists: pass one of "
                                          r"\['train.bin'\]"):
        BinLoader(path.parent / name, 4, 8, dtype=dtype)


def test_a_data_folder_is_refused_naming_the_bins_to_pass(tmp_path, tokens):
    write_bin(tmp_path / "data", tokens)
    with pytest.raises(TokbinError, match=r"data is a data folder, not a bin: pass one of the "
                                          r"bins its meta.json lists \(.*data/train.bin\)"):
        BinLoader(tmp_path / "data", 4, 8)
