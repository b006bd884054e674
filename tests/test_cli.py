"""`python -m tokbin verify` finds every way a bin can disagree with meta.json or dvc.lock and
exits 1; `python -m tokbin inspect` shows the meta, the stats and the text a model will see."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import make_project, run, write_parquet_dataset
from tokbin.cli import main, size_text
from tokbin.format import read_meta

STORY = "The quick brown fox jumps over the lazy dog."
DOCS = {"train": [f"{STORY} Story {i}." for i in range(200)],
        "validation": [f"{STORY} The end {i}." for i in range(10)]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A DVC project whose `dvc repro` has built a small dataset (copied by each test)."""
    repo = make_project(tmp_path_factory.mktemp("cli") / "project", download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(["dvc", "repro"], repo)
    return repo


@pytest.fixture
def repo(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "project", symlinks=True))


@pytest.fixture
def tokbin(capsys, monkeypatch):
    """Runs `python -m tokbin <args>` in-process, in `repo` (main() is what __main__ calls)."""
    def run_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
        monkeypatch.chdir(repo)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run_cli


def train_ids(repo: Path) -> np.ndarray:
    return np.fromfile(repo / "data" / "train.bin", dtype="<u2")


def write_train_ids(repo: Path, ids: np.ndarray) -> None:
    """Replaces train.bin (a read-only hardlink into DVC's cache) with a new file."""
    path = repo / "data" / "train.bin"
    path.unlink(missing_ok=True)
    ids.astype("<u2").tofile(path)


def assert_verify_fails(tokbin, repo: Path, *fragments: str) -> str:
    result = tokbin(repo, "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failures, result.stdout
    for fragment in fragments:
        assert any(fragment in line for line in failures), result.stdout
    return result.stdout


# --- verify ----------------------------------------------------------------------------------

def test_verify_passes_a_fresh_build_and_checks_the_md5s_in_dvc_lock(tokbin, repo):
    result = tokbin(repo, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    train.bin" in result.stdout and "ok    validation.bin" in result.stdout
    assert ("md5 of train.bin, validation.bin, train.docs, validation.docs, meta.json match"
            in result.stdout)
    assert "FAIL" not in result.stdout


def test_python_m_tokbin_verify_takes_the_data_folder_as_an_argument(repo):
    result = run([sys.executable, "-m", "tokbin", "verify", str(repo / "data")], repo,
                 check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is good" in result.stdout


def test_verify_fails_on_a_truncated_bin(tokbin, repo):
    write_train_ids(repo, train_ids(repo)[:-1])
    assert_verify_fails(tokbin, repo, "train.bin", "truncated, padded")


def test_verify_fails_on_a_padded_bin(tokbin, repo):
    write_train_ids(repo, np.append(train_ids(repo), 0))
    assert_verify_fails(tokbin, repo, "truncated, padded")


def test_verify_fails_on_a_missing_bin(tokbin, repo):
    (repo / "data" / "validation.bin").unlink()
    assert_verify_fails(tokbin, repo, "validation.bin: missing", "python -m tokbin repair")


def test_verify_fails_on_an_id_not_below_n_vocab(tokbin, repo):
    ids = train_ids(repo)
    ids[5] = 60000
    write_train_ids(repo, ids)
    assert_verify_fails(tokbin, repo, "token id 60000 at position 5 is >= n_vocab 50257")


def test_verify_fails_when_end_of_text_ids_do_not_match_the_document_count(tokbin, repo):
    ids = train_ids(repo)
    ids[np.flatnonzero(ids == 50256)[0]] = 13  # an eot turned into "."
    write_train_ids(repo, ids)
    assert_verify_fails(tokbin, repo, "199 end-of-text ids but meta.json says 200 documents")


def test_verify_fails_on_a_bin_that_changed_after_dvc_repro(tokbin, repo):
    ids = train_ids(repo)
    ids[3] = ids[3] + 1 if ids[3] < 50255 else 0  # still a valid id, same size, same eots
    write_train_ids(repo, ids)
    out = assert_verify_fails(tokbin, repo, "train.bin: md5", "recorded in",
                              "run `python -m tokbin repair`")
    assert "validation.bin: md5" not in out
    assert "dvc checkout" not in out  # it relinks the damaged cache object: no fix


def test_verify_fails_on_a_meta_json_that_changed_after_dvc_repro(tokbin, repo):
    meta = json.loads((repo / "data" / "meta.json").read_text())
    (repo / "data" / "meta.json").write_text(json.dumps(meta))  # same content, other bytes
    assert_verify_fails(tokbin, repo, "meta.json: md5")


def write_train_docs(repo: Path, offsets: np.ndarray) -> None:
    path = repo / "data" / "train.docs"
    path.unlink()
    offsets.astype("<i8").tofile(path)


def test_verify_fails_on_a_document_index_that_does_not_mark_the_documents(tokbin, repo):
    offsets = np.fromfile(repo / "data" / "train.docs", dtype="<i8")
    moved = offsets.copy()
    moved[50] += 1  # still increasing, but not where document 50's text starts
    write_train_docs(repo, moved)
    assert_verify_fails(tokbin, repo, "train.docs and train.bin disagree at token")
    moved[50] = moved[52]
    write_train_docs(repo, moved)
    assert_verify_fails(tokbin, repo, "train.docs: document offsets decrease", "tokbin repair")
    write_train_docs(repo, offsets[:-1])
    assert_verify_fails(tokbin, repo, "not the 1608 of 200 documents + 1 int64 offsets")
    (repo / "data" / "train.docs").unlink()
    assert_verify_fails(tokbin, repo, "train.docs is missing")


def test_verify_without_dvc_lock_still_finds_an_edited_index_and_an_edited_eot_policy(
        tokbin, repo, tmp_path):
    # no dvc.lock to compare md5s with: meta.json's CRC-32 of the index, and the rule that
    # eot none places no end-of-text id, are what is left
    data = Path(shutil.copytree(repo / "data", tmp_path / "elsewhere" / "data",
                                ignore=shutil.ignore_patterns("raw", "tokens")))
    offsets = np.fromfile(data / "train.docs", dtype="<i8")
    moved = offsets.copy()
    moved[50] += 1  # the same size, first and last entries, still increasing
    docs = data / "train.docs"
    docs.chmod(0o644)
    moved.tofile(docs)
    assert_verify_fails(tokbin, data.parent, "train.docs: its CRC-32",
                        "the document index changed after it was written", "copy the data again")
    offsets.astype("<i8").tofile(docs)
    assert tokbin(data.parent, "verify").returncode == 0
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "eot": "none"}))
    assert_verify_fails(tokbin, data.parent, "train.bin: 200 end-of-text ids (50256) but "
                        "meta.json says eot: none")


def test_verify_says_which_files_meta_json_records_no_crc_for(tokbin, repo, tmp_path):
    # an older tokbin's meta.json, or one made by hand: nothing to check those bytes against
    data = Path(shutil.copytree(repo / "data", tmp_path / "elsewhere" / "data",
                                ignore=shutil.ignore_patterns("raw", "tokens")))
    meta = json.loads((data / "meta.json").read_text())
    del meta["splits"]["train"]["crc32"], meta["splits"]["train"]["docs_crc32"]
    (data / "meta.json").write_text(json.dumps(meta))
    result = tokbin(data.parent, "verify")
    assert result.returncode == 0, result.stdout
    assert "note  meta.json records no CRC-32 of train.bin, train.docs" in result.stdout
    assert "validation.bin" not in [line for line in result.stdout.splitlines()
                                    if line.startswith("note  meta.json")][0]


def test_a_split_without_tokens_is_noted_by_verify_and_inspect(tokbin, repo, tmp_path):
    # e.g. eot none on a split whose documents are all empty: whole, but nothing to train on
    data = Path(shutil.copytree(repo / "data", tmp_path / "elsewhere" / "data",
                                ignore=shutil.ignore_patterns("raw", "tokens")))
    for name in ("validation.bin", "validation.docs"):
        (data / name).unlink()
    (data / "validation.bin").write_bytes(b"")
    np.zeros(1, "<i8").tofile(data / "validation.docs")
    meta = json.loads((data / "meta.json").read_text())
    meta["splits"]["validation"].update(tokens=0, documents=0, bytes=0, crc32="00000000",
                                        docs_crc32=f"{zlib.crc32(bytes(8)):08x}")
    (data / "meta.json").write_text(json.dumps(meta))
    result = tokbin(data.parent, "verify")
    assert result.returncode == 0, result.stdout
    assert ("note  validation.bin: no tokens (0 documents, all empty): nothing to train or "
            "validate on") in result.stdout
    result = tokbin(data.parent, "inspect", "data")
    assert result.returncode == 0, result.stderr
    assert "== validation.bin: no tokens" in result.stdout and "largest id -1" not in result.stdout


def test_verify_without_dvc_lock_checks_meta_json_only_and_says_so(tokbin, repo, tmp_path):
    bare = Path(shutil.copytree(repo / "data", tmp_path / "elsewhere" / "data",
                                ignore=shutil.ignore_patterns("raw", "tokens")))
    result = tokbin(bare.parent, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no dvc.lock" in result.stdout and "md5s not checked" in result.stdout


def test_verify_of_a_bin_its_meta_json_does_not_list_is_a_clear_error(tokbin, repo):
    # e.g. data/train.bin left from before binarize.shard_tokens changed: not this build's
    shutil.copyfile(repo / "data" / "train.bin", repo / "data" / "old.bin")
    result = tokbin(repo, "verify", "data/old.bin")
    assert result.returncode == 1
    assert ("data/old.bin is not one of the bins" in result.stderr
            and "train.bin, validation.bin" in result.stderr), result.stderr
    for part in ("data/train.bin", "data/train.docs", "data/meta.json", "data/", "./data"):
        assert tokbin(repo, "verify", part).returncode == 0, part


def test_verify_of_a_folder_without_meta_json_is_a_clear_error(tokbin, repo):
    result = tokbin(repo, "verify", "data/raw")
    assert result.returncode == 1
    assert "meta.json not found" in result.stderr and "dvc repro" in result.stderr
    assert "`dvc pull binarize` fetches the data a teammate built" in result.stderr


def test_verify_of_one_bin_checks_its_split_alone_as_a_pinned_copy_holds_one(tokbin, repo,
                                                                             tmp_path):
    copy = tmp_path / "pinned" / "0123abcd"  # what pinned_path("data-v1") leaves: one split
    copy.mkdir(parents=True)
    for name in ("train.bin", "train.docs", "meta.json"):
        shutil.copyfile(repo / "data" / name, copy / name)
    result = tokbin(tmp_path, "verify", str(copy / "train.bin"))
    assert result.returncode == 0, result.stdout
    assert f"verify: {copy / 'train.bin'} is good" in result.stdout
    assert "validation" not in result.stdout
    result = tokbin(tmp_path, "verify", str(copy))  # the whole folder: every split it lists
    assert result.returncode == 1 and "validation.bin: missing" in result.stdout


def test_verify_notes_bins_and_shard_directories_that_are_not_part_of_the_build(tokbin, repo):
    # after a targeted `dvc checkout binarize` from a sharded version to an unsharded one
    (repo / "data" / "train").mkdir()
    shutil.copyfile(repo / "data" / "train.bin", repo / "data" / "train" / "000000.bin")
    shutil.copyfile(repo / "data" / "train.bin", repo / "data" / "old.bin")
    result = tokbin(repo, "verify")
    assert result.returncode == 0, result.stdout  # the build itself is whole
    notes = [line for line in result.stdout.splitlines() if "not part of this build" in line]
    assert [line.split(":")[0] for line in notes] == ["note  old.bin", "note  train/"]
    assert "An untargeted `dvc checkout` removes it" in notes[0]
    assert not any("tokens/" in line or "raw/" in line for line in result.stdout.splitlines())


def test_verify_of_a_path_that_does_not_exist_is_a_clear_error(tokbin, repo):
    result = tokbin(repo, "verify", "no-such-data")
    assert result.returncode == 1 and "no-such-data does not exist" in result.stderr


# --- inspect ---------------------------------------------------------------------------------

def test_inspect_prints_the_meta_the_split_stats_and_decoded_windows(tokbin, repo):
    result = tokbin(repo, "inspect", "data/train.bin", "--windows", "2", "--tokens", "30")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    meta = read_meta(repo / "data")
    assert json.loads(out[out.index("{"):out.index("== splits")]) == json.loads(meta.to_json())
    assert f"{meta.splits['train'].tokens:,} tokens" in out and "200 documents" in out
    assert "10 documents" in out  # every split's stats, not only the inspected one
    assert "200 end-of-text ids" in out
    windows = out.split("-- tokens ")[1:]
    assert len(windows) == 2
    assert all("quick brown fox" in w or "lazy dog" in w for w in windows), out


def test_inspect_of_a_bin_meta_json_does_not_list_is_a_clear_error(tokbin, repo):
    shutil.copy(repo / "data" / "train.bin", repo / "data" / "other.bin")
    result = tokbin(repo, "inspect", "data/other.bin")
    assert result.returncode == 1
    assert "data/other.bin is not one of the bins meta.json lists" in result.stderr


def test_inspect_gives_sizes_in_units_that_show_them(tokbin, repo):
    result = tokbin(repo, "inspect", "data/validation.bin", "--windows", "0")
    size = (repo / "data" / "validation.bin").stat().st_size  # 300 bytes
    assert f"{size} B  (validation.bin)" in result.stdout
    assert [size_text(n) for n in (31_418, 1_514_936, 1_900_000_000)] == ["31.4 kB", "1.5 MB",
                                                                          "1.90 GB"]


# --- a bare bin (no meta.json) ---------------------------------------------------------------

@pytest.fixture
def bare(repo) -> Path:
    """A nanoGPT-style bin: the ids of train.bin without its meta.json."""
    (repo / "bare").mkdir()
    shutil.copy(repo / "data" / "train.bin", repo / "bare" / "train.bin")
    return repo / "bare" / "train.bin"


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_bare_bin_without_dtype_asks_for_the_dtype_option_the_cli_has(tokbin, repo, bare,
                                                                         command):
    result = tokbin(repo, command, str(bare))
    assert result.returncode == 1
    assert "is a bare bin: pass its --dtype (uint16 or uint32)" in result.stderr
    assert "dtype=" not in result.stderr


def test_verify_and_inspect_read_a_bare_bin_given_its_dtype(tokbin, repo, bare):
    result = tokbin(repo, "verify", str(bare), "--dtype", "uint16")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok    train.bin: {len(train_ids(repo)):,} uint16 tokens, every id < 50257" in (
        result.stdout)
    result = tokbin(repo, "inspect", str(bare), "--dtype", "uint16", "--windows", "1")
    assert result.returncode == 0 and "a bare bin (no meta.json) read as uint16" in result.stdout
    assert "quick brown fox" in result.stdout or "lazy dog" in result.stdout
    ids = train_ids(repo)
    ids[7] = 60000
    ids.astype("<u2").tofile(bare)
    assert_verify_fails_at(tokbin, repo, [str(bare), "--dtype", "uint16"],
                           "token id 60000 at position 7 is >= n_vocab 50257")


def test_inspect_of_a_bare_bin_read_with_the_wrong_dtype_names_the_dtype_to_fix(tokbin, repo,
                                                                               bare):
    result = tokbin(repo, "inspect", str(bare), "--dtype", "uint32", "--windows", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not below n_vocab 50257: it is not uint32 ids of gpt2; pass its right --dtype" in (
        result.stderr)


def test_inspect_of_a_bin_with_an_id_not_below_n_vocab_says_to_verify_and_repair(tokbin, repo):
    ids = train_ids(repo)
    ids[7] = 60000
    write_train_ids(repo, ids)
    result = tokbin(repo, "inspect", "data/train.bin", "--windows", "1")
    assert result.returncode == 1
    assert ("train.bin holds token id 60000 (at position 7), not below n_vocab 50257: it is "
            "damaged; `python -m tokbin verify` checks it") in result.stderr


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_encoding_for_a_bin_with_meta_json_is_refused_not_ignored(tokbin, repo, command):
    result = tokbin(repo, command, "data/train.bin", "--encoding", "cl100k_base")
    assert result.returncode == 1
    assert "data/meta.json gives data/train.bin's encoding; drop --encoding" in result.stderr


def test_inspect_refuses_a_tokenizer_file_for_a_tiktoken_encoding_not_ignores_it(tokbin, repo,
                                                                                 bare):
    result = tokbin(repo, "inspect", "data/train.bin", "--tokenizer", "/nonexistent.json")
    assert result.returncode == 1 and result.stdout == ""
    assert ("data/train.bin decodes with tiktoken's gpt2 (meta.json says so), which has no "
            "tokenizer file: drop --tokenizer") in result.stderr
    result = tokbin(repo, "inspect", str(bare), "--dtype", "uint16", "--tokenizer", "t.json")
    assert result.returncode == 1 and "(--encoding says so)" in result.stderr


def test_dtype_for_a_bin_with_meta_json_is_refused(tokbin, repo):
    result = tokbin(repo, "verify", "data/train.bin", "--dtype", "uint32")
    assert result.returncode == 1 and "drop --dtype" in result.stderr


def assert_verify_fails_at(tokbin, repo: Path, args: list[str], fragment: str) -> None:
    result = tokbin(repo, "verify", *args)
    assert result.returncode == 1 and fragment in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("option, value, low", [("--windows", "-1", 0), ("--tokens", "0", 1),
                                                ("--tokens", "many", 1), ("--seed", "-5", 0)])
def test_inspect_refuses_a_window_count_size_or_seed_below_its_least(capsys, option, value, low):
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "data/train.bin", option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: {value!r} is not a whole number of at least {low}" in \
        capsys.readouterr().err


def test_a_bare_bin_s_unknown_encoding_names_the_flag_to_fix(tmp_path, capsys):
    np.arange(10, dtype=np.uint16).tofile(tmp_path / "bare.bin")
    assert main(["verify", str(tmp_path / "bare.bin"), "--dtype", "uint16",
                 "--encoding", "gpt5"]) == 1
    err = capsys.readouterr().err
    assert "unknown tiktoken encoding 'gpt5'; set --encoding to one of" in err
    assert "tokenize.encoding" not in err
