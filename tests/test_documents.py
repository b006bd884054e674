"""Document boundaries: binarize's document index (<split>.docs) for every eot policy, and
BinLoader's document-aware batches: rows that start at documents (align="document"), every
document once per epoch across ranks, and each batch's layout (return_documents: cu_seqlens and
position_ids), resumable and prefetchable like every batch.

The synthetic bins hold position tokens (token i identifies position i, as in
tests/test_loader.py), so a batch says exactly which stream positions it took."""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from conftest import write_parquet_dataset
from test_loader import position_tokens
from tokbin import BinLoader, TokbinError
from tokbin.binarize import binarize
from tokbin.crc import crc32_hex
from tokbin.format import DOCS_DTYPE, Meta, Source, SplitInfo, write_meta
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

ROOT = Path(__file__).resolve().parents[1]
EOT = 50256


# --- the document index ------------------------------------------------------------------------

TEXTS = ["Once upon a time.", "", "A cat sat.", "<|endoftext|> is text here.", "", "The end."]


@pytest.mark.parametrize("eot", ["append", "prepend", "none"])
@pytest.mark.parametrize("shard_tokens", [0, 7])
def test_the_document_index_has_every_document_s_start_for_every_eot_policy(tmp_path, eot,
                                                                          shard_tokens):
    write_parquet_dataset(tmp_path / "dataset", {"train": TEXTS})
    (tmp_path / "raw").mkdir()
    materialize(str(tmp_path / "dataset"), "main", ["train"], "text", tmp_path / "raw")
    tokenize_dataset(tmp_path / "raw", tmp_path / "tokens", ["train"], "text", "gpt2", eot,
                     workers=1)
    (tmp_path / "out").mkdir()
    meta = binarize(tmp_path / "tokens", tmp_path / "out", "auto", shard_tokens)
    info = meta.splits["train"]
    offsets = np.fromfile(tmp_path / "out" / info.docs, dtype=DOCS_DTYPE)
    lengths = [len(tiktoken.get_encoding("gpt2").encode_ordinary(t)) + (eot != "none")
               for t in TEXTS]  # independently of tokbin
    assert info.docs == "train.docs" and offsets.tolist() == [0, *itertools.accumulate(lengths)]
    assert info.docs_crc32 == crc32_hex(zlib.crc32(offsets.tobytes()))  # what readers check
    ids = np.fromfile(tmp_path / "tokens" / "train.bin", dtype="<u2")
    if eot == "prepend":
        assert (ids[offsets[:-1]] == EOT).all()
    if eot == "append":
        assert (ids[offsets[1:] - 1] == EOT).all()
    if eot == "none":  # two empty documents: offsets repeat, no separator to find them by
        assert offsets[1] == offsets[2] and offsets[4] == offsets[5] and EOT not in ids[:5]


# --- document-aware batches ---------------------------------------------------------------------

def write_documents(folder: Path, lengths: list[int], eot: str = "prepend",
                    name: str = "train") -> tuple[Path, np.ndarray]:
    """A bin of position tokens cut into documents of `lengths`, with meta.json and the
    document index; returns (bin, offsets)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = position_tokens(int(offsets[-1]))
    folder.mkdir(parents=True, exist_ok=True)
    tokens.tofile(folder / f"{name}.bin")
    offsets.astype(DOCS_DTYPE).tofile(folder / f"{name}.docs")
    info = SplitInfo(f"{name}.bin", len(tokens), len(lengths), 2 * len(tokens),
                     docs=f"{name}.docs", docs_crc32=crc32_hex(zlib.crc32(offsets.tobytes())))
    write_meta(folder, Meta("gpt2", 1 << 16, 0, eot, "uint16", Source("test", None, None),
                            {name: info}))
    return folder / f"{name}.bin", offsets


UNMIX = np.empty(1 << 16, np.int64)
UNMIX[position_tokens(1 << 16)] = np.arange(1 << 16)


def positions(x: torch.Tensor) -> np.ndarray:
    """The stream position of every token of a batch of position tokens."""
    return UNMIX[x.numpy()]


def lengths_of(seed: int, documents: int, longest: int, empty: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest, documents)
    lengths[rng.choice(documents, empty, replace=False)] = 0  # empty texts with eot none
    return lengths.tolist()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, np.ndarray]:
    """600 documents of 1 to 99 tokens, five of them empty."""
    return write_documents(tmp_path / "data", lengths_of(0, 600, 100, empty=5), eot="none")


def check_layout(x, y, docs, offsets: np.ndarray, starts_documents: bool) -> None:
    """What every document-aware batch promises, whatever its sampling."""
    B, T = x.shape
    pos, target = positions(x), positions(y)
    assert (target == pos + 1).all()  # y: the stream's next token, at every position
    starts = offsets[:-1][np.diff(offsets) > 0]
    if starts_documents:
        assert np.isin(pos[:, 0], starts).all(), "a row does not start at a document"
    cu = docs.cu_seqlens
    assert cu.dtype == torch.int32 and cu.device == x.device
    cu = cu.numpy()
    assert cu[0] == 0 and cu[-1] == B * T and (np.diff(cu) > 0).all()
    assert set(range(0, B * T, T)) <= set(cu.tolist()), "a segment crosses a row"
    assert docs.max_seqlen == int(np.diff(cu).max()) and isinstance(docs.max_seqlen, int)
    flat, document = pos.reshape(-1), np.searchsorted(offsets, pos.reshape(-1), "right") - 1
    for a, b in zip(cu[:-1], cu[1:]):
        assert (np.diff(flat[a:b]) == 1).all(), "a segment is not consecutive tokens"
        assert (document[a:b] == document[a]).all(), "a segment holds two documents"
    new_document = np.isin(flat, starts)
    assert set(np.flatnonzero(new_document)) <= set(cu[:-1].tolist())
    ids = docs.position_ids
    assert ids.dtype == torch.int64 and ids.shape == (B, T) and ids.device == x.device
    expected = np.arange(B * T) - np.repeat(cu[:-1], np.diff(cu))
    assert (ids.numpy().reshape(-1) == expected).all()  # 0 exactly at each segment's start


MODES = [("random", "document"), ("epoch", "document"), ("random", "token"), ("epoch", "token")]


def test_a_state_whose_later_epoch_rows_are_not_this_datas_is_refused_at_that_epoch(corpus):
    # only epoch 0 is known when the state loads; an epoch is compared once laid out
    path, _ = corpus
    loader = BinLoader(path, 4, 16, sampling="epoch", align="document")
    take(loader, 2 * -(-loader.windows_per_epoch // 4) + 3)  # into epoch 2
    state = loader.state_dict()
    assert len(state["epoch_rows"]) >= 2
    edited = {**state, "epoch_rows": [state["epoch_rows"][0], 10 ** 6]}  # resumes in epoch 1
    resumed = BinLoader(path, 4, 16, sampling="epoch", align="document")
    resumed.load_state_dict(edited)
    with pytest.raises(TokbinError, match=r"loader state's epoch_rows\[1\] is 1000000, but this "
                                          r"data's epoch 1 has \d+ rows"):
        resumed.next_batch()


@pytest.mark.parametrize("sampling, align", MODES)
def test_every_batch_s_documents_are_its_segments_and_rows_start_at_documents(
        corpus, sampling, align):
    path, offsets = corpus
    loader = BinLoader(path, batch_size=6, block_size=48, sampling=sampling, align=align,
                       return_documents=True, seed=4)
    for _ in range(30):
        check_layout(*loader.next_batch(), offsets, starts_documents=align == "document")


@pytest.mark.parametrize("sampling, align", MODES)
def test_a_split_that_ends_in_empty_documents_serves_every_mode(tmp_path, sampling, align):
    # eot none: empty texts at the end of the split leave the last token inside the last
    # non-empty document, whose last token then has no target
    path, offsets = write_documents(tmp_path, lengths_of(2, 120, 40) + [0, 0], eot="none")
    loader = BinLoader(path, batch_size=4, block_size=16, sampling=sampling, align=align,
                       return_documents=True, seed=1)
    for _ in range(80):  # two epochs and more: about 2,400 tokens, 4 x 16 a batch
        check_layout(*loader.next_batch(), offsets, starts_documents=align == "document")


@pytest.mark.parametrize("sampling", ["random", "epoch"])
def test_align_document_without_documents_gives_the_same_tokens(corpus, sampling):
    path, _ = corpus
    options = dict(batch_size=5, block_size=40, sampling=sampling, align="document", seed=9)
    plain, with_docs = BinLoader(path, **options), BinLoader(path, return_documents=True,
                                                              **options)
    for _ in range(25):
        x, y = plain.next_batch()
        x2, y2, _ = with_docs.next_batch()
        assert x.equal(x2) and y.equal(y2)


def test_align_token_with_documents_keeps_today_s_token_batches(corpus):
    path, _ = corpus
    for sampling in ("random", "epoch"):
        plain = BinLoader(path, 8, 32, sampling=sampling, seed=7)
        described = BinLoader(path, 8, 32, sampling=sampling, seed=7, return_documents=True)
        for _ in range(20):
            assert all(a.equal(b) for a, b in zip(plain.next_batch(), described.next_batch()))


def test_random_rows_start_at_documents_drawn_uniformly_per_rank(tmp_path):
    path, offsets = write_documents(tmp_path, [3] * 200 + [300] * 20)  # long ones: few
    loader = BinLoader(path, batch_size=64, block_size=16, align="document", seed=1)
    firsts = np.concatenate([positions(loader.next_batch()[0])[:, 0] for _ in range(60)])
    index = np.searchsorted(offsets, firsts)
    assert (offsets[index] == firsts).all()
    counts = np.bincount(index, minlength=220)
    assert counts[:200].mean() > 15 and counts[200:219].mean() < 2 * counts[:200].mean()
    other = BinLoader(path, batch_size=64, block_size=16, align="document", seed=1, rank=1,
                      world_size=2)
    assert not other.next_batch()[0].equal(BinLoader(path, batch_size=64, block_size=16,
                                                     align="document", seed=1).next_batch()[0])


def epoch_rows(loader: BinLoader, epoch: int) -> np.ndarray:
    """The positions of the rows `loader` yields in `epoch`, [rows, T] (batches may straddle
    epochs: the rows of the rank's stream that are the epoch's)."""
    first = sum(loader._offsets.rows_in(e) for e in range(epoch))
    count, B = loader._offsets.rows_in(epoch), loader.batch_size
    loader.load_state_dict({**loader.state_dict(), "batches": first // B})
    x = np.concatenate([positions(loader.next_batch()[0])
                        for _ in range(first // B, -(-(first + count) // B))])
    return x[first % B:first % B + count]


def take(loader: BinLoader, batches: int) -> list:
    return [loader.next_batch() for _ in range(batches)]


@pytest.mark.parametrize("world_size", [1, 3])
def test_an_epoch_packs_every_document_once_and_gives_each_to_one_rank(tmp_path, world_size):
    # documents up to 4 blocks long: cut into pieces, the tails of long ones packed apart
    path, offsets = write_documents(tmp_path, lengths_of(5, 400, 130))
    n, T = int(offsets[-1]), 32
    loaders = [BinLoader(path, batch_size=7, block_size=T, sampling="epoch", align="document",
                         seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    plan = loaders[0]._offsets.plan(0)
    assert len({loader.windows_per_epoch for loader in loaders}) == 1
    seen, owner = np.zeros(n, np.int64), {}
    for rank, loader in enumerate(loaders):
        rows = epoch_rows(loader, 0)
        assert len(rows) == plan.rows
        seen[rows.reshape(-1)] += 1
        for document in np.unique(np.searchsorted(offsets, rows, "right") - 1):
            assert owner.setdefault(document, rank) == rank, "a document on two ranks"
    assert seen.max() == 1, "a token twice in one epoch"
    assert seen.sum() == n - 1 - plan.dropped_tokens  # the last token: a target only
    # a row needs a document start of its own: at most min(windows, documents) rows
    assert plan.rows * world_size >= 0.95 * min((n - 1) // T, len(offsets) - 1)
    second = epoch_rows(BinLoader(path, batch_size=7, block_size=T, sampling="epoch",
                                  align="document", seed=3, rank=0, world_size=world_size), 1)
    assert not np.array_equal(second[:5], epoch_rows(loaders[0], 0)[:5])  # reshuffled


def test_epoch_counts_the_epoch_of_the_next_batch_across_epoch_boundaries(tmp_path):
    path, _ = write_documents(tmp_path, lengths_of(1, 100, 40))
    loader = BinLoader(path, batch_size=5, block_size=16, sampling="epoch", align="document")
    per_epoch = loader.windows_per_epoch
    assert loader.epoch == 0 and per_epoch > 5
    take(loader, -(-per_epoch // 5))  # the batch that crosses into epoch 1 has been taken
    assert loader.epoch == 1


@pytest.mark.parametrize("sampling, align", MODES)
@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_resumed_document_loader_continues_exactly(corpus, sampling, align, prefetch):
    path, _ = corpus

    def make():
        return BinLoader(path, 6, 40, sampling=sampling, align=align, return_documents=True,
                         seed=2, prefetch=prefetch)
    with make() as first:
        epoch_batches = -(-first.windows_per_epoch // 6) if sampling == "epoch" else 30
        uninterrupted = take(first, epoch_batches + 8)  # across an epoch's end
    with make() as second:
        take(second, epoch_batches - 2)
        state = second.state_dict()
    with make() as resumed:
        resumed.load_state_dict(state)
        for a, b in zip(take(resumed, 10), uninterrupted[epoch_batches - 2:]):
            assert a[0].equal(b[0]) and a[1].equal(b[1])
            assert a[2].cu_seqlens.equal(b[2].cu_seqlens)
            assert a[2].position_ids.equal(b[2].position_ids)


@pytest.mark.parametrize("sampling, align", MODES)
def test_a_batch_changed_in_place_changes_no_later_batch(corpus, sampling, align):
    # a training step may write into its batch; a rewind must still give the batch as it was
    path, _ = corpus
    loader = BinLoader(path, 4, 16, sampling=sampling, align=align, return_documents=True,
                       seed=6)
    state = loader.state_dict()
    x, y, docs = loader.next_batch()
    kept = [t.clone() for t in (x, y, docs.cu_seqlens, docs.position_ids)]
    for tensor in (x, y, docs.cu_seqlens, docs.position_ids):
        tensor.zero_()
    loader.load_state_dict(state)
    x, y, docs = loader.next_batch()
    assert all(a.equal(b) for a, b in zip(kept, (x, y, docs.cu_seqlens, docs.position_ids)))


@pytest.mark.parametrize("change", [+7, -7])
def test_a_state_whose_epoch_rows_are_not_this_datas_is_refused_by_a_fresh_loader(corpus,
                                                                                  change):
    # a fresh loader is the usual resume; it must check the counts it is handed, not only a
    # loader that has already counted its epochs
    path, _ = corpus

    def make():
        return BinLoader(path, 4, 16, sampling="epoch", align="document")
    loader = make()
    take(loader, -(-loader.windows_per_epoch // 4) + 3)  # into epoch 1
    state = loader.state_dict()
    assert len(state["epoch_rows"]) == 1
    edited = {**state, "epoch_rows": [state["epoch_rows"][0] + change]}
    with pytest.raises(TokbinError, match="epoch_rows disagree with this data's epochs"):
        make().load_state_dict(edited)
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.next_batch()[0].equal(loader.next_batch()[0])


@pytest.mark.parametrize("sampling, align", MODES)
def test_numpy_integer_arguments_give_a_state_of_plain_ints(corpus, sampling, align):
    # torch.load(weights_only=True), torch's default, and json refuse numpy scalars
    import io
    import json
    path, _ = corpus
    loader = BinLoader(path, np.int64(4), np.int64(16), sampling=sampling, align=align,
                       seed=np.int64(7))
    loader.load_state_dict({**loader.state_dict(), "batches": np.int64(3)})
    take(loader, 2)
    state = loader.state_dict()
    json.dumps(state)
    buffer = io.BytesIO()
    torch.save({"loader": state}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["loader"] == state


def test_a_state_from_another_alignment_is_refused(corpus):
    path, _ = corpus
    state = BinLoader(path, 4, 16).state_dict()
    with pytest.raises(TokbinError, match="align: saved 'token', now 'document'"):
        BinLoader(path, 4, 16, align="document").load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "align"}  # saved before align existed
    BinLoader(path, 4, 16).load_state_dict(old)


@pytest.mark.parametrize("sampling, align", MODES)
def test_the_compact_transfer_path_gives_the_same_batches_and_documents(corpus, sampling,
                                                                        align):
    # No GPU here: the CUDA path's compact copies and device-side widening, on the CPU device
    path, _ = corpus
    options = dict(batch_size=6, block_size=40, sampling=sampling, align=align, seed=8,
                   return_documents=True)
    direct, compact = BinLoader(path, **options), BinLoader(path, **options)
    compact._gather.compact_transfer = True
    for _ in range(10):
        (x, y, d), (x2, y2, d2) = direct.next_batch(), compact.next_batch()
        assert x.equal(x2) and y.equal(y2) and x2.dtype == torch.int64
        assert d.cu_seqlens.equal(d2.cu_seqlens) and d2.cu_seqlens.dtype == torch.int32
        assert d.position_ids.equal(d2.position_ids) and d2.position_ids.dtype == torch.int64
        assert d.max_seqlen == d2.max_seqlen


def test_packed_rows_are_the_same_where_numpy_would_not_write_rows_in_order(corpus,
                                                                          monkeypatch):
    # packed rows are copied in overlapping cells that rely on NumPy writing rows in order,
    # checked at import; without it they are gathered token by token, to the same batches
    import tokbin.gathers
    path, _ = corpus
    options = dict(batch_size=6, block_size=40, sampling="epoch", align="document", seed=5)
    expected = take(BinLoader(path, **options), 12)
    monkeypatch.setattr(tokbin.gathers, "ORDERED_ROW_WRITES", False)
    for a, b in zip(take(BinLoader(path, **options), 12), expected):
        assert a[0].equal(b[0]) and a[1].equal(b[1])


def test_rows_longer_than_int16_positions_use_wider_ones(tmp_path):
    path, offsets = write_documents(tmp_path, [40000, 20000])
    loader = BinLoader(path, 1, 40000, sampling="epoch", align="document",
                       return_documents=True)
    x, y, docs = loader.next_batch()
    check_layout(x, y, docs, offsets, starts_documents=True)
    assert docs.position_ids.max() >= 1 << 15


def test_document_batches_need_the_document_index(tmp_path):
    path, _ = write_documents(tmp_path / "data", [10] * 20)
    (tmp_path / "data" / "train.docs").unlink()
    with pytest.raises(TokbinError, match=r"train.docs is missing .*`dvc pull binarize`"):
        BinLoader(path, 2, 8, align="document")
    bare = tmp_path / "bare" / "train.bin"
    bare.parent.mkdir()
    path.rename(bare)
    with pytest.raises(TokbinError, match="no meta.json beside it, so no document index"):
        BinLoader(bare, 2, 8, dtype="uint16", return_documents=True)
    assert BinLoader(bare, 2, 8, dtype="uint16").next_batch()[0].shape == (2, 8)


@pytest.mark.parametrize("eot", ["prepend", "none"])
def test_a_document_index_that_is_not_the_one_meta_json_records_is_refused(tmp_path, eot):
    # the same documents in another order: the right size, first and last entries and order,
    # and with eot none nothing in the bin to tell; only the CRC-32 meta.json records does
    lengths = lengths_of(4, 60, 30)
    path, offsets = write_documents(tmp_path, lengths, eot=eot)
    swapped = [lengths[1], lengths[0], *lengths[2:]]
    assert swapped != lengths
    np.concatenate([[0], np.cumsum(swapped)]).astype(DOCS_DTYPE).tofile(tmp_path / "train.docs")
    for options in (dict(align="document"), dict(return_documents=True)):
        with pytest.raises(TokbinError, match=r"train\.docs: its CRC-32 .* differs from the .* "
                                              r"meta\.json records.*tokbin repair"):
            BinLoader(path, 2, 8, **options)
    BinLoader(path, 2, 8)  # token batches read no index


def test_a_document_index_from_before_tokbin_wrote_one_says_to_rebuild(tmp_path):
    path, _ = write_documents(tmp_path, [10] * 20)
    meta = (tmp_path / "meta.json").read_text()
    (tmp_path / "meta.json").write_text(re.sub(r',\s*"docs": "train.docs",\s*"docs_crc32": "\w+"',
                                               "", meta))
    with pytest.raises(TokbinError, match="lists no document index for split 'train'.*dvc repro"):
        BinLoader(path, 2, 8, align="document")


@pytest.mark.parametrize("options, message", [
    (dict(align="documents"), "align 'documents' is not one of"),
    (dict(return_documents=1), "return_documents must be True or False"),
    (dict(align="document", sampling="epoch", world_size=20, rank=0),
     "no window of block_size 8 .* for every one of 20 rank"),
])
def test_document_options_the_data_cannot_serve_are_refused(tmp_path, options, message):
    path, _ = write_documents(tmp_path, [100, 100, 100])
    with pytest.raises(TokbinError, match=message):
        BinLoader(path, **{"batch_size": 2, "block_size": 8, **options})


def test_the_flex_attention_example_in_docs_loader_md_runs_on_cpu(tmp_path):
    """docs/loader.md's model with a FlexAttention document mask, run as written (on the
    sample's tokens, eot prepend), in seconds."""
    text = (ROOT / "docs" / "loader.md").read_text()
    marker = "# flex_attention example"
    code = marker + text.split(f"```python\n{marker}")[1].split("```")[0]
    (tmp_path / "raw").mkdir()
    materialize(str(ROOT / "sample"), "main", ["train"], "text", tmp_path / "raw")
    tokenize_dataset(tmp_path / "raw", tmp_path / "tokens", ["train"], "text", "gpt2",
                     "prepend", workers=1)
    (tmp_path / "data").mkdir()
    binarize(tmp_path / "tokens", tmp_path / "data", "auto")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "other documents unchanged: True" in result.stdout, result.stdout


def test_the_shortest_hosts_are_a_stable_sort_s_first_without_sorting_everything():
    from tokbin.packing import _shortest
    lengths = np.random.default_rng(3).integers(1, 40, 5000)  # many ties
    for count in (1, 7, 300, 4000):
        assert np.array_equal(_shortest(lengths, count),
                              np.argsort(lengths, kind="stable")[:count])
