"""Multi-process loading under a real `torchrun --nproc_per_node=2` on CPU (gloo): each rank's
BinLoader takes its rank and world size from torch.distributed, the ranks' epoch windows are
disjoint and together they are the whole epoch, for a single bin and for a shard directory."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run
from tokbin.binarize import write_shards
from tokbin.format import Meta, Source, SplitInfo, write_meta

BLOCK, BATCH = 8, 4
TOKENS = 64 * BLOCK + 1  # 64 windows of 8 (+1 for the last y); token i is the id i

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from tokbin import BinLoader

    out, paths = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    for path in paths:
        loader = BinLoader(path, batch_size={batch}, block_size={block}, sampling="epoch", seed=7)
        starts = []
        for _ in range(loader.windows_per_epoch // {batch}):
            x, y = loader.next_batch()
            starts += x[:, 0].tolist()   # token i is i: a row's first id is its window's start
        count = torch.tensor([len(starts)])
        dist.all_reduce(count)
        name = path.rstrip("/").rpartition("/")[2]
        with open(f"{{out}}/{{name}}-rank{{dist.get_rank()}}.json", "w") as f:
            json.dump({{"rank": loader.rank, "world_size": loader.world_size, "starts": starts,
                        "all_reduced_windows": int(count)}}, f)
    dist.destroy_process_group()
""").format(batch=BATCH, block=BLOCK)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """data/train.bin (ids 0 .. TOKENS-1) and data/shards/: the same ids in shards of 100."""
    folder = tmp_path_factory.mktemp("data")
    ids = np.arange(TOKENS, dtype="<u2")
    ids.tofile(folder / "train.bin")
    single = SplitInfo("train.bin", TOKENS, 1, ids.nbytes)
    shards = write_shards(iter([ids]), folder / "shards", "uint16", 1 << 16, 100,
                          [1] + [0] * (TOKENS // 100))
    write_meta(folder, Meta("gpt2", 1 << 16, 0, "none", "uint16", Source("test", None, None),
                            {"train": single, "shards": shards}))
    return folder


def test_torchrun_ranks_share_out_one_epoch_disjointly_from_a_bin_and_a_shard_directory(
        data, tmp_path, monkeypatch):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the rank script imports tokbin from here
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # the ranks talk over loopback only
    names = ["train.bin", "shards"]
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path), *(str(data / name) for name in names)], ROOT)
    for name in names:
        ranks = [json.loads((tmp_path / f"{name}-rank{r}.json").read_text()) for r in range(2)]
        assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
        first, second = (set(r["starts"]) for r in ranks)
        assert len(first) == len(ranks[0]["starts"]) and not first & second
        assert first | second == set(range(0, 64 * BLOCK, BLOCK))
        assert [r["all_reduced_windows"] for r in ranks] == [64, 64]


def docs_train_py() -> str:
    """The "# train.py" code block of docs/scale_out.md, exactly as the page shows it."""
    page = (ROOT / "docs" / "scale_out.md").read_text()
    start = page.index("```python\n# train.py") + len("```python\n")
    return page[start:page.index("```", start)]


def test_the_train_py_of_docs_scale_out_runs_as_written_under_torchrun_on_cpu(tmp_path,
                                                                                 monkeypatch):
    """data/train: a shard directory of 40,000 ids of a 64-id vocabulary, as `dvc pull
    data/meta.json data/train` gives it; the page's script trains on it with 2 gloo ranks."""
    data = tmp_path / "data"
    data.mkdir()
    ids = np.random.default_rng(0).integers(0, 64, 40_000).astype("<u2")
    shards = write_shards(iter([ids]), data / "train", "uint16", 64, 10_000, [1, 0, 0, 0])
    write_meta(data, Meta("gpt2", 64, 0, "none", "uint16", Source("test", None, None),
                          {"train": shards}))
    (tmp_path / "train.py").write_text(docs_train_py())
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU run, with gloo, on any machine
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2", "train.py", "--steps", "3"], tmp_path)
    assert "step 0: loss" in result.stdout
    loss = float(result.stdout.split("step 0: loss ")[1].split()[0])
    assert 3.5 < loss < 5.0  # about ln(64): an untrained model on uniform ids
