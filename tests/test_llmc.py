"""binarize.format: llmc writes llm.c's token files (a 1024-byte header of 256 little-endian
int32: magic, version, token count; then the ids), holding the very token stream of the
headerless nanoGPT bins; every reader of tokbin's reads both formats alike, checks the header
as llm.c's loader does, and a reader written from llm.c's documented layout reads the shards."""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import tokbin.binarize
from conftest import make_project, run, write_parquet_dataset
from test_shards import use_shard_outs
from tokbin import BinLoader, TokbinError
from tokbin.binarize import binarize
from tokbin.cli import main
from tokbin.format import (ids_crc32, llmc_header, llmc_max_tokens, read_llmc_header,
                           read_meta)
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

SUPPORT = Path(__file__).parent / "support"
DOCS = {"train": [f"Story {i}: " + "the cat sat on the mat. " * (i % 9) for i in range(120)],
        "validation": ["The end.", "Another short story about a dog.", "A third one."]}
VARIANTS = {"uint16": ("gpt2", 20240520, 1), "uint32": ("cl100k_base", 20240801, 7)}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict[str, Path]:
    """The tokenized splits (eot prepend, as llm.c's scripts do) in each dtype: gpt2 ids fit
    uint16, cl100k_base's need uint32."""
    root = tmp_path_factory.mktemp("llmc")
    write_parquet_dataset(root / "dataset", DOCS)
    (root / "raw").mkdir()
    materialize(str(root / "dataset"), "main", list(DOCS), "text", root / "raw")
    out = {}
    for dtype, (encoding, _, _) in VARIANTS.items():
        out[dtype] = root / f"tokens-{dtype}"
        tokenize_dataset(root / "raw", out[dtype], list(DOCS), "text", encoding, "prepend",
                         workers=1, engine="tiktoken")
    return out


def build(tokens: Path, out: Path, bin_format: str, shard_tokens: int = 0):
    out.mkdir(parents=True)
    return binarize(tokens, out, "auto", shard_tokens, bin_format)


def header_words(path: Path) -> np.ndarray:
    return np.frombuffer(path.read_bytes()[:1024], dtype="<i4")


@pytest.mark.parametrize("dtype", VARIANTS)
def test_an_llmc_bin_is_llm_c_s_header_then_exactly_the_nanogpt_bin(tokens, tmp_path, dtype):
    _, magic, version = VARIANTS[dtype]
    build(tokens[dtype], tmp_path / "nanogpt", "nanogpt")
    meta = build(tokens[dtype], tmp_path / "llmc", "llmc")
    assert (meta.dtype, meta.bin_format) == (dtype, "llmc")
    for split, info in meta.splits.items():
        plain = (tmp_path / "nanogpt" / f"{split}.bin").read_bytes()
        data = (tmp_path / "llmc" / f"{split}.bin").read_bytes()
        words = header_words(tmp_path / "llmc" / f"{split}.bin")
        assert (words[0], words[1], words[2]) == (magic, version, info.tokens)
        assert not words[3:].any() and data[:4] == magic.to_bytes(4, "little")
        assert data[1024:] == plain and info.bytes == len(data) == 1024 + len(plain)
        assert read_llmc_header(tmp_path / "llmc" / f"{split}.bin", len(data)) == (
            dtype, info.tokens)
    assert read_meta(tmp_path / "llmc") == meta  # meta.json records the format


def test_llmc_shards_are_the_same_stream_in_near_equal_files_that_globs_sort_in_order(
        tokens, tmp_path):
    build(tokens["uint16"], tmp_path / "nanogpt", "nanogpt")
    meta = build(tokens["uint16"], tmp_path / "llmc", "llmc", shard_tokens=1000)
    whole = (tmp_path / "nanogpt" / "train.bin").read_bytes()
    files = sorted(glob.glob(str(tmp_path / "llmc" / "train" / "*.bin")))  # modded-nanogpt's
    info = meta.splits["train"]
    assert [Path(f).name for f in files] == [s.file for s in info.shards] == [
        f"{i:06d}.bin" for i in range(-(-info.tokens // 1000))]
    counts = [int(header_words(Path(f))[2]) for f in files]
    assert counts == [s.tokens for s in info.shards]
    assert max(counts) <= 1000 and max(counts) - min(counts) <= 1  # no tiny last shard
    assert b"".join(Path(f).read_bytes()[1024:] for f in files) == whole
    assert sum(s.documents for s in info.shards) == info.documents == len(DOCS["train"])
    assert not glob.glob(str(tmp_path / "llmc" / "*" / "*.docs"))  # the index is beside


@pytest.mark.parametrize("dtype", VARIANTS)
def test_the_loader_verify_and_inspect_read_both_formats_alike(tokens, tmp_path, capsys, dtype):
    build(tokens[dtype], tmp_path / "nanogpt", "nanogpt")
    build(tokens[dtype], tmp_path / "llmc", "llmc")
    build(tokens[dtype], tmp_path / "shards", "llmc", shard_tokens=700)
    assert header_words(tmp_path / "shards" / "train" / "000000.bin")[0] == VARIANTS[dtype][1]
    paths = [tmp_path / "nanogpt" / "train.bin", tmp_path / "llmc" / "train.bin",
             tmp_path / "shards" / "train"]
    for options in (dict(sampling="random"), dict(sampling="epoch", align="document",
                                                   return_documents=True)):
        loaders = [BinLoader(p, batch_size=4, block_size=64, seed=2, **options) for p in paths]
        for _ in range(12):
            first, *others = [loader.next_batch() for loader in loaders]
            for other in others:
                assert all(a.equal(b) for a, b in zip(first[:2], other[:2]))
                if len(first) == 3:
                    assert first[2].cu_seqlens.equal(other[2].cu_seqlens)
        assert first[0].max() >= 1 << 16 or dtype == "uint16"  # cl100k_base ids beyond uint16
    for folder in ("llmc", "shards"):
        assert main(["verify", str(tmp_path / folder)]) == 0
        assert "llm.c headers, document index train.docs" in capsys.readouterr().out
    windows = []
    for path in paths[:2]:
        assert main(["inspect", str(path), "--windows", "2", "--tokens", "40"]) == 0
        windows.append(capsys.readouterr().out.split("-- tokens ")[1:])
    assert windows[0] == windows[1] and "cat sat" in "".join(windows[0])


@pytest.mark.parametrize("dtype", VARIANTS)
def test_the_ids_crc32_is_the_same_for_the_same_ids_in_every_format_and_sharding(
        tokens, tmp_path, dtype):
    layouts = {"nanogpt": ("nanogpt", 0), "llmc": ("llmc", 0), "nanogpt shards": ("nanogpt", 700),
               "llmc shards": ("llmc", 700)}
    crcs = {name: ids_crc32(build(tokens[dtype], tmp_path / name, fmt, shard), "train")
            for name, (fmt, shard) in layouts.items()}
    ids = (tmp_path / "nanogpt" / "train.bin").read_bytes()
    assert set(crcs.values()) == {f"{zlib.crc32(ids):08x}"}, crcs


def test_a_loader_state_resumes_on_the_same_ids_in_the_other_format(tokens, tmp_path):
    build(tokens["uint16"], tmp_path / "nanogpt", "nanogpt")
    build(tokens["uint16"], tmp_path / "shards", "llmc", shard_tokens=700)
    options = dict(batch_size=4, block_size=16, sampling="epoch", seed=3)
    saved = BinLoader(tmp_path / "nanogpt" / "train.bin", **options)
    for _ in range(5):
        saved.next_batch()
    resumed = BinLoader(tmp_path / "shards" / "train", **options)
    resumed.load_state_dict(saved.state_dict())
    assert all(a.equal(b) for a, b in zip(resumed.next_batch(), saved.next_batch()))


def test_the_example_training_loop_trains_alike_on_both_formats(tokens, tmp_path):
    from test_loader import train_bigram
    build(tokens["uint16"], tmp_path / "nanogpt", "nanogpt")
    build(tokens["uint16"], tmp_path / "llmc", "llmc")
    build(tokens["uint16"], tmp_path / "shards", "llmc", shard_tokens=700)
    logs = [train_bigram(path, "--steps", 5, "--block-size", 8) for path in (
        tmp_path / "nanogpt" / "train.bin", tmp_path / "llmc" / "train.bin",
        tmp_path / "shards" / "train")]
    assert logs[0] == logs[1] == logs[2] and "validation loss" in logs[0][5]  # the same ids


def test_a_bare_llmc_file_is_read_by_its_header(tokens, tmp_path, capsys):
    # llm.c's own files (its scripts', modded-nanogpt's shards) come without a meta.json
    build(tokens["uint16"], tmp_path / "nanogpt", "nanogpt")
    build(tokens["uint16"], tmp_path / "llmc", "llmc")
    (tmp_path / "bare").mkdir()
    bare = tmp_path / "bare" / "fineweb_train_000001.bin"
    shutil.copy(tmp_path / "llmc" / "train.bin", bare)
    options = dict(batch_size=4, block_size=16, seed=5)
    plain = BinLoader(tmp_path / "nanogpt" / "train.bin", **options).next_batch()
    for dtype in (None, "uint16"):
        batch = BinLoader(bare, dtype=dtype, **options).next_batch()
        assert all(a.equal(b) for a, b in zip(plain, batch))
    with pytest.raises(TokbinError, match=r"an llm.c token file of [\d,]+ uint16 ids .* not "
                                          r"uint32; pass dtype='uint16'"):
        BinLoader(bare, dtype="uint32", **options)
    assert main(["verify", str(bare)]) == 0 and "llm.c headers" in capsys.readouterr().out
    assert main(["inspect", str(bare), "--windows", "1"]) == 0
    assert "a bare llm.c file (no meta.json) read as uint16" in capsys.readouterr().out
    assert main(["verify", str(bare), "--dtype", "uint32"]) == 1
    assert "not uint32; drop --dtype" in capsys.readouterr().err


def damage(path: Path, word: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[4 * word:4 * word + 4] = value.to_bytes(4, "little", signed=True)
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("word, value, message", [
    (0, 20240521, "magic number 20240521 is not llm.c's"),
    (1, 2, "version 2, but magic 20240520 goes with version 1"),
    (2, 5, r"its header's 5 uint16 ids need 1034"),
    (2, -1, "negative token count -1"),
    (7, 1, "reserved header words 3..255 are not zero"),
], ids=["magic", "version", "count against the size", "negative count", "reserved word"])
def test_a_damaged_llmc_header_is_refused_by_every_reader(tokens, tmp_path, capsys, word,
                                                          value, message):
    build(tokens["uint16"], tmp_path / "llmc", "llmc")
    damage(tmp_path / "llmc" / "train.bin", word, value)
    with pytest.raises(TokbinError, match=message):
        BinLoader(tmp_path / "llmc" / "train.bin", batch_size=2, block_size=8)
    assert main(["verify", str(tmp_path / "llmc")]) == 1
    out = capsys.readouterr().out  # outside a DVC project: no repair to offer
    assert message.split(" ")[0] in out and "copy the data again" in out
    assert "tokbin repair" not in out


@pytest.mark.parametrize("word, value, message", [
    (7, 1, "reserved header words 3..255 are not zero"),
    (2, 5, r"its header's 5 uint16 ids need 1034"),
], ids=["reserved word", "count against the size"])
def test_an_llmc_file_without_meta_json_or_unlisted_is_never_read_header_and_all(
        tokens, tmp_path, capsys, word, value, message):
    # llm.c's magic and version open it: its 1024-byte header must never become 512 ids
    build(tokens["uint16"], tmp_path / "llmc", "llmc")
    build(tokens["uint16"], tmp_path / "nanogpt", "nanogpt")
    options = dict(batch_size=4, block_size=16, seed=5)
    plain = BinLoader(tmp_path / "nanogpt" / "train.bin", **options).next_batch()
    unlisted = tmp_path / "llmc" / "train_v1.bin"  # beside a meta.json that does not list it
    shutil.copy(tmp_path / "llmc" / "train.bin", unlisted)
    assert all(a.equal(b) for a, b in zip(plain, BinLoader(unlisted, dtype="uint16",
                                                           **options).next_batch()))
    (tmp_path / "bare").mkdir()
    for path in (unlisted, tmp_path / "bare" / "damaged.bin"):
        shutil.copy(tmp_path / "llmc" / "train.bin", path)
        damage(path, word, value)
        for dtype in (None, "uint16"):
            with pytest.raises(TokbinError, match=message):
                BinLoader(path, dtype=dtype, **options)
    bare = tmp_path / "bare" / "damaged.bin"
    for args in (["verify", str(bare)], ["verify", str(bare), "--dtype", "uint16"],
                 ["inspect", str(bare), "--dtype", "uint16"]):
        assert main(args) == 1
        assert "the llm.c header is damaged" in capsys.readouterr().err, args


def test_a_header_that_agrees_with_its_size_but_not_with_meta_json_is_refused(tokens,
                                                                              tmp_path):
    meta = build(tokens["uint32"], tmp_path / "llmc", "llmc")
    path = tmp_path / "llmc" / "validation.bin"
    damage(path, 0, 20240520)  # uint16's magic and version, and twice the count: the same size
    damage(path, 1, 1)
    damage(path, 2, 2 * meta.splits["validation"].tokens)
    with pytest.raises(TokbinError, match="its llm.c header says .* uint16 ids but meta.json "
                                          "says .* uint32"):
        BinLoader(path, batch_size=1, block_size=4)


def test_read_llmc_header_refuses_a_file_shorter_than_the_header(tmp_path):
    (tmp_path / "short.bin").write_bytes(llmc_header("uint16", 0)[:100])
    with pytest.raises(TokbinError, match="shorter than llm.c's 1024-byte header"):
        read_llmc_header(tmp_path / "short.bin", 100)


def test_a_reader_written_from_llm_c_s_documented_layout_reads_the_shards(tokens, tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or gcc) on PATH to build tests/support/llmc_read.c")
    exe = tmp_path / "llmc_read"
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(exe), str(SUPPORT / "llmc_read.c")],
                   check=True)
    for dtype in VARIANTS:
        meta = build(tokens[dtype], tmp_path / dtype, "llmc", shard_tokens=800)
        shards = tmp_path / dtype / "train"
        lines = subprocess.run([str(exe), str(shards / "*.bin")], check=True, text=True,
                               capture_output=True).stdout.splitlines()
        assert len(lines) == len(meta.splits["train"].shards)
        for line, info in zip(lines, meta.splits["train"].shards):
            ids = np.fromfile(shards / info.file, dtype=f"<u{2 if dtype == 'uint16' else 4}",
                              offset=1024).astype(np.uint64)
            name, found_dtype, count, total, first, last = line.split()
            assert (Path(name).name, found_dtype) == (info.file, dtype)
            assert [int(v) for v in (count, total, first, last)] == [
                info.tokens, int(ids.sum()), int(ids[0]), int(ids[-1])]
    damage(tmp_path / "uint16" / "train" / "000001.bin", 2, 3)
    bad = subprocess.run([str(exe), str(tmp_path / "uint16" / "train" / "*.bin")],
                         text=True, capture_output=True)
    assert bad.returncode == 1 and "size" in bad.stderr


def test_llm_c_file_limits_are_checked_before_any_work(tokens, tmp_path, monkeypatch):
    assert llmc_max_tokens("uint16") == (2**31 - 1 - 1024) // 2  # llm.c's int file offsets
    assert llmc_max_tokens("uint32") == 2**31 - 1                # its int32 count
    with pytest.raises(TokbinError, match="do not fit one llm.c file"):
        llmc_header("uint32", 2**31)
    monkeypatch.setattr(tokbin.binarize, "llmc_max_tokens", lambda dtype: 1000)
    out = tmp_path / "out"
    with pytest.raises(TokbinError, match=rf"train has [\d,]+: set binarize.shard_tokens to at "
                                          rf"most 1000 .* in dvc.yaml replace {out}/train.bin, "
                                          rf"{out}/validation.bin with {out}/train, "
                                          rf"{out}/validation"):
        build(tokens["uint16"], out, "llmc")
    assert list(out.iterdir()) == []
    with pytest.raises(TokbinError, match="binarize.shard_tokens is 1,001, but an llm.c file"):
        binarize(tokens["uint16"], out, "auto", 1001, "llmc")
    assert list(out.iterdir()) == []
    meta = binarize(tokens["uint16"], out, "auto", 1000, "llmc")
    assert max(s.tokens for s in meta.splits["train"].shards) <= 1000


def test_the_pipeline_builds_llmc_shards_with_their_document_index_and_dvc_pulls_them(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default remote lives under ~
    project = make_project(tmp_path / "project", download__dataset="./sample",
                           tokenize__eot="prepend", binarize__format="llmc",
                           binarize__shard_tokens=300_000)
    use_shard_outs(project)  # the dvc.yaml change docs/llmc.md gives
    run(["dvc", "repro"], project)
    meta = read_meta(project / "data")
    files = sorted(glob.glob(str(project / "data" / "train" / "*.bin")))
    assert meta.bin_format == "llmc" and len(files) == 3  # 757,468 tokens: 3 near-equal shards
    assert all(header_words(Path(f))[0] == 20240520 for f in files)
    assert np.fromfile(files[0], "<u2", offset=1024)[0] == 50256  # eot prepend: a BOS first
    assert run([sys.executable, "-m", "tokbin", "verify", "data"], project).returncode == 0
    run(["dvc", "push"], project)
    for name in ("train.docs", "validation.docs"):
        (project / "data" / name).unlink()
    run(["dvc", "pull", "binarize"], project)
    assert np.fromfile(project / "data" / "train.docs", "<i8")[-1] == meta.splits["train"].tokens
