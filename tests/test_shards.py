"""binarize.shard_tokens: a split as a directory of shards of at most N tokens, described in
meta.json per shard, byte for byte the single bin cut in pieces; and DVC tracking, pushing and
pulling the shards one by one."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, make_project, run, write_parquet_dataset
from tokbin.binarize import binarize
from tokbin.errors import TokbinError
from tokbin.format import Meta, open_split, read_meta
from tokbin.params import parse_params
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

DOCS = {"train": [f"Story {i}: " + "the cat sat on the mat. " * (i % 7) for i in range(40)]
        + ["", "Ünïcödé “quotes” 🐈", "a" * 500],
        "validation": ["The end.", "", "Another short story about a dog."]}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    """The tokenized splits (eot append), shared by the binarize runs below."""
    root = tmp_path_factory.mktemp("tokens")
    dataset = write_parquet_dataset(root / "dataset", DOCS)
    (root / "raw").mkdir()
    materialize(str(dataset), "main", list(DOCS), "text", root / "raw")
    tokenize_dataset(root / "raw", root / "tokens", list(DOCS), "text", "gpt2", "append",
                     workers=1)
    return root / "tokens"


def binarized(tokens: Path, out: Path, shard_tokens: int) -> Meta:
    out.mkdir()
    return binarize(tokens, out, "auto", shard_tokens)


def documents_starting_in_each_shard(texts: list[str], shard_tokens: int, tokens: int):
    """Independently of tokbin: document i starts at the sum of the earlier documents' ids."""
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    counts = [0] * max(1, -(-tokens // shard_tokens))
    start = 0
    for text in texts:
        counts[min(start // shard_tokens, len(counts) - 1)] += 1
        start += len(enc.encode_ordinary(text)) + 1  # + the appended eot
    return counts


@pytest.mark.parametrize("shard_tokens", [3, 100, 10 ** 9])
def test_shards_are_the_single_bin_cut_every_n_tokens_with_per_shard_meta(
        tokens, tmp_path, shard_tokens):
    single = binarized(tokens, tmp_path / "single", 0)
    sharded = binarized(tokens, tmp_path / "sharded", shard_tokens)
    assert read_meta(tmp_path / "sharded") == sharded
    for split, texts in DOCS.items():
        info = sharded.splits[split]
        whole = (tmp_path / "single" / f"{split}.bin").read_bytes()
        files = sorted((tmp_path / "sharded" / split).iterdir())
        assert [f.name for f in files] == [s.file for s in info.shards] == [
            f"{i:06d}.bin" for i in range(len(files))]
        assert b"".join(f.read_bytes() for f in files) == whole
        sizes = [s.tokens for s in info.shards]
        assert all(n == shard_tokens for n in sizes[:-1]) and 0 < sizes[-1] <= shard_tokens
        assert [s.bytes for s in info.shards] == [f.stat().st_size for f in files]
        assert [s.documents for s in info.shards] == documents_starting_in_each_shard(
            texts, shard_tokens, info.tokens)
        assert (info.file, info.tokens, info.documents, info.bytes) == (
            split, single.splits[split].tokens, len(texts), len(whole))
        assert np.concatenate(open_split(tmp_path / "sharded", sharded, split)).tobytes() == whole


def test_unsharded_meta_json_lists_no_shards_and_sharded_lists_shards(tokens, tmp_path):
    binarized(tokens, tmp_path / "single", 0)
    single = json.loads((tmp_path / "single" / "meta.json").read_text())
    assert set(single["splits"]["train"]) == {"file", "tokens", "documents", "bytes", "crc32",
                                              "docs", "docs_crc32"}
    binarized(tokens, tmp_path / "sharded", 50)
    sharded = json.loads((tmp_path / "sharded" / "meta.json").read_text())
    assert set(sharded["splits"]["train"]) == {"file", "tokens", "documents", "bytes", "crc32",
                                               "docs", "docs_crc32", "shards"}
    assert set(sharded["splits"]["train"]["shards"][0]) == {"file", "tokens", "documents",
                                                            "bytes", "crc32"}
    # the split's CRC-32 is the single bin's: the shards concatenated are its bytes
    assert sharded["splits"]["train"]["crc32"] == single["splits"]["train"]["crc32"]


def test_meta_json_whose_shards_do_not_add_up_is_refused(tokens, tmp_path):
    binarized(tokens, tmp_path / "sharded", 50)
    path = tmp_path / "sharded" / "meta.json"
    raw = json.loads(path.read_text())
    raw["splits"]["train"]["shards"][0]["documents"] += 1
    path.write_text(json.dumps(raw))
    with pytest.raises(TokbinError, match=r"splits.train: tokens, documents and bytes must be "
                                          r"the sums"):
        read_meta(path)


def test_a_missing_or_truncated_shard_is_named_with_the_fix(tokens, tmp_path):
    meta = binarized(tokens, tmp_path / "sharded", 50)
    shard = tmp_path / "sharded" / "train" / "000001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(TokbinError, match=r"000001.bin is \d+ bytes but meta.json says"):
        open_split(tmp_path / "sharded", meta, "train")
    shard.unlink()
    with pytest.raises(TokbinError, match=r"000001.bin is missing.*python -m tokbin repair"):
        open_split(tmp_path / "sharded", meta, "train")


def test_negative_shard_tokens_is_an_error(tokens, tmp_path):
    with pytest.raises(TokbinError, match="shard_tokens is -1"):
        binarized(tokens, tmp_path / "out", -1)
    params = (ROOT / "params.yaml").read_text().replace("shard_tokens: 0 ", "shard_tokens: -1")
    with pytest.raises(TokbinError, match="binarize.shard_tokens is -1; set it to 0"):
        parse_params(params, Path("params.yaml"))


def test_changing_the_layout_leaves_no_bins_of_the_other_behind(tokens, tmp_path, capsys):
    # DVC deletes no output that dvc.yaml stopped listing: left there, data/train/*.bin (llm.c's
    # glob) or data/train.bin would be an earlier build's tokens beside this build's meta.json
    out = tmp_path / "out"
    binarized(tokens, out, 0)
    assert (out / "train.bin").is_file()
    binarize(tokens, out, "auto", 50)
    assert not (out / "train.bin").exists() and (out / "train").is_dir()
    assert f"binarize: removed {out / 'train.bin'}" in capsys.readouterr().err
    binarize(tokens, out, "auto", 0)
    assert not (out / "train").exists() and (out / "train.bin").is_file()
    (out / "validation").mkdir()
    (out / "validation" / "notes.txt").write_text("mine")  # not a shard directory: not ours
    binarize(tokens, out, "auto", 0)
    assert (out / "validation" / "notes.txt").read_text() == "mine"
    binarized(tokens, tmp_path / "moved", 50)  # shards moved to another disk, linked back
    (out / "train").symlink_to(tmp_path / "moved" / "train")
    binarize(tokens, out, "auto", 0)
    assert not (out / "train").exists() and len(list((tmp_path / "moved" / "train").iterdir()))


def test_a_split_whose_name_is_another_folder_is_not_overwritten(tokens, tmp_path):
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "notes.txt").write_text("mine")
    with pytest.raises(TokbinError, match="is not a shard directory"):
        binarize(tokens, tmp_path / "out", "auto", 50)
    assert (tmp_path / "out" / "train" / "notes.txt").read_text() == "mine"


def use_shard_outs(project: Path) -> None:
    """The dvc.yaml change docs/scale_out.md describes: shard directories instead of bins, in
    the binarize command and its outs."""
    path = project / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    binarize = pipeline["stages"]["binarize"]
    binarize["cmd"] = binarize["cmd"].replace(".bin ", " ")
    binarize["outs"] = [out.removesuffix(".bin") if isinstance(out, str) else out
                        for out in binarize["outs"]]
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def test_dvc_tracks_pushes_and_pulls_shards_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default remote lives under ~
    project = make_project(tmp_path / "project", download__dataset="./sample",
                           binarize__shard_tokens=100_000)
    failed = run(["dvc", "repro"], project, check=False)
    assert failed.returncode != 0
    assert ("in dvc.yaml replace data/train.bin, data/validation.bin with data/train, "
            "data/validation") in failed.stderr

    use_shard_outs(project)
    run(["dvc", "repro"], project)
    meta = read_meta(project / "data")
    shards = [s.file for s in meta.splits["train"].shards]
    assert len(shards) >= 3
    run(["dvc", "push"], project)
    remote = tmp_path / "home" / ".local/share/tokbin/dvc-remote" / "files" / "md5"
    for shard in shards:  # each shard is its own object in the remote
        digest = hashlib.md5((project / "data" / "train" / shard).read_bytes()).hexdigest()
        assert (remote / digest[:2] / digest[2:]).is_file()

    # A teammate's fresh clone fetches the meta.json and one shard, not the whole split.
    clone = tmp_path / "clone"
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "shards"],
        project)
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "pull", "data/meta.json", f"data/train/{shards[1]}"], clone)
    assert sorted(p.name for p in (clone / "data" / "train").iterdir()) == [shards[1]]
    assert (clone / "data" / "train" / shards[1]).read_bytes() == (
        project / "data" / "train" / shards[1]).read_bytes()

    # The pinned version of a shard directory: every shard fetched (the clone's cache has one,
    # the remote the rest) and checked, then read by BinLoader like the bin.
    from tokbin.loader import BinLoader
    from tokbin.pinned import pinned_path
    pinned = pinned_path("HEAD", "data/train", repo=clone, cache_dir=tmp_path / "pinned")
    assert sorted(p.name for p in pinned.iterdir()) == shards
    assert all((pinned / s).read_bytes() == (project / "data" / "train" / s).read_bytes()
               for s in shards)
    assert BinLoader(pinned, batch_size=2, block_size=8).tokens == meta.splits["train"].tokens

    # A file the shard directory should not hold (llm.c's data/train/*.bin would read it):
    # verify names it, repair removes it, as `dvc checkout` would.
    train = project / "data" / "train"
    shutil.copyfile(train / shards[-1], train / f"{len(shards):06d}.bin")
    with open(project / ".dvcignore", "a") as f:
        f.write("kept.bin\n")
    (train / "kept.bin").write_bytes(b"")  # hidden from DVC: no listing has it, rightly
    found = run([sys.executable, "-m", "tokbin", "verify"], project, check=False)
    assert found.returncode == 1
    assert (f"train/{len(shards):06d}.bin: in the shard directory but not in meta.json"
            in found.stdout and "tokbin repair" in found.stdout)
    repaired = run([sys.executable, "-m", "tokbin", "repair"], project)
    assert f"removing {train / f'{len(shards):06d}.bin'}: its directory's listing" in (
        repaired.stdout)
    assert sorted(p.name for p in train.iterdir()) == sorted([*shards, "kept.bin"])
    (train / "kept.bin").unlink()
    assert run([sys.executable, "-m", "tokbin", "verify"], project).returncode == 0



@pytest.mark.parametrize("shard_tokens", [5, 64, 10 ** 9])
@pytest.mark.parametrize("sampling", ["random", "epoch"])
def test_binloader_reads_a_shard_directory_exactly_as_the_single_bin(
        tokens, tmp_path, shard_tokens, sampling):
    from tokbin.loader import BinLoader
    binarized(tokens, tmp_path / "single", 0)
    binarized(tokens, tmp_path / "sharded", shard_tokens)
    options = dict(batch_size=16, block_size=8, sampling=sampling, seed=3)
    single = BinLoader(tmp_path / "single" / "train.bin", **options)
    sharded = BinLoader(tmp_path / "sharded" / "train", **options)
    assert (sharded.tokens, sharded.windows_per_epoch) == (single.tokens, single.windows_per_epoch)
    for _ in range(3 * (single.windows_per_epoch or 20) // 16):  # a few epochs' worth
        for a, b in zip(single.next_batch(), sharded.next_batch()):
            assert a.equal(b)


def test_binloader_on_a_shard_directory_with_a_missing_shard_says_how_to_fetch_it(
        tokens, tmp_path):
    from tokbin.loader import BinLoader
    binarized(tokens, tmp_path / "sharded", 64)
    (tmp_path / "sharded" / "train" / "000002.bin").unlink()
    with pytest.raises(TokbinError, match=r"000002.bin is missing.*python -m tokbin repair"):
        BinLoader(tmp_path / "sharded" / "train", batch_size=2, block_size=8)


@pytest.mark.parametrize("leftover", ["train.bin", "train"])
def test_binloader_refuses_a_leftover_of_the_other_layout_naming_what_meta_json_lists(
        tokens, tmp_path, leftover):
    # a targeted `dvc pull binarize` after switching layouts leaves the other one in data/: an
    # earlier build's tokens, which the loader must not invite reading (dtype=) as a bare bin
    from tokbin.loader import BinLoader
    data = tmp_path / "data"
    binarized(tokens, tmp_path / "other", 64 if leftover == "train" else 0)
    binarized(tokens, data, 0 if leftover == "train" else 64)
    shutil.move(tmp_path / "other" / leftover, data / leftover)
    listed = (f"{data / 'train.bin'}, {data / 'validation.bin'}" if leftover == "train" else
              f"{data / 'train'} (a shard directory), {data / 'validation'} (a shard directory)")
    own = (". A bin of your own without a meta.json belongs in a folder of its own (read it "
           "there with dtype=)" if leftover == "train.bin" else "")
    with pytest.raises(TokbinError) as refused:
        BinLoader(data / leftover, batch_size=2, block_size=8)
    assert str(refused.value) == (
        f"{data / leftover} is not one of the bins {data / 'meta.json'} lists: not part of the "
        f"build it describes (a leftover of an earlier one?); read what it lists instead: "
        f"{listed}{own}")


def test_verify_names_a_file_in_a_shard_directory_that_meta_json_does_not_list(tokens, tmp_path,
                                                                             capsys):
    from tokbin.cli import main
    binarized(tokens, tmp_path / "sharded", 64)
    train = tmp_path / "sharded" / "train"
    shutil.copyfile(train / "000002.bin", train / "000099.bin")  # a glob's *.bin reads it too
    (train / "extra.bin").write_bytes(b"\0\0")
    (train / "notes.txt").write_text("mine")  # no reader of *.bin takes it
    assert main(["verify", str(tmp_path / "sharded")]) == 1
    out = capsys.readouterr().out
    for name in ("000099.bin", "extra.bin"):
        assert (f"train/{name}: in the shard directory but not in meta.json" in out
                and "copy the data again" in out), out
    assert "notes.txt" not in out


def test_verify_and_inspect_take_a_shard_directory_as_they_take_a_bin(tokens, tmp_path,
                                                                      capsys):
    from tokbin.cli import main
    binarized(tokens, tmp_path / "sharded", 64)
    assert main(["verify", str(tmp_path / "sharded" / "train")]) == 0  # its split
    shown = capsys.readouterr().out
    assert f"verify: {tmp_path / 'sharded' / 'train'} is good" in shown
    assert "ok    train: " in shown and "validation" not in shown
    assert main(["verify", str(tmp_path / "sharded")]) == 0  # the folder: every split
    shown = capsys.readouterr().out
    assert f"verify: {tmp_path / 'sharded'} is good" in shown and "ok    validation" in shown
    assert main(["inspect", str(tmp_path / "sharded" / "train"), "--windows", "1"]) == 0
    shown = capsys.readouterr().out
    assert "== train/000000.bin" in shown and "== validation" not in shown
    assert read_meta(tmp_path / "sharded" / "train") == read_meta(tmp_path / "sharded")
