"""What users do wrong costs no data: a bad params.yaml stops `dvc repro` before DVC deletes any
output (the check stage); a bin damaged in place through DVC's hardlink cache is never
published as a new data version (binarize checks the CRC-32 tokenize recorded), and `python -m
tokbin repair` brings the original bytes back, from the remote or by the `dvc repro` it
names."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import git, make_project, run, stage_command, write_parquet_dataset
from tokbin.cli import main as cli
from tokbin.errors import TokbinError

DOCS = {"train": [f"Once upon a time there was a cat number {i}." for i in range(300)],
        "validation": [f"The end of story {i}." for i in range(20)]}
OUTPUTS = ("data/train.bin", "data/validation.bin", "data/meta.json", "data/tokens/train.bin")


def outputs(repo: Path) -> dict[str, tuple[int, bytes]]:
    """Each output's inode and bytes: "untouched" means both are the same."""
    return {path: (os.stat(repo / path).st_ino, (repo / path).read_bytes()) for path in OUTPUTS}


def edit_params(repo: Path, edit) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    edit(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


# --- params.yaml is checked before DVC deletes anything ----------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A project that has built ./dataset with `dvc repro` and committed the result. The tests
    below run in this order on it, each leaving it built for the next."""
    repo = make_project(tmp_path_factory.mktemp("guards") / "project",
                        download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(["dvc", "repro"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data-v1")
    return repo


def misplace_eot(params: dict) -> None:
    params["binarize"]["eot"] = params["tokenize"].pop("eot")


BAD_PARAMS = {
    "wrong value": (lambda p: p["binarize"].update(dtype="uint8"),
                    "params.yaml: binarize.dtype is 'uint8'; valid values: auto, uint16, uint32"),
    "renamed key": (lambda p: p["tokenize"].update(eots=p["tokenize"].pop("eot")),
                    "params.yaml: unknown key tokenize.eots in tokenize (valid keys: encoding, "
                    "eot"),
    "misplaced key": (misplace_eot, "params.yaml: binarize.eot is misplaced: eot is a key of "
                                    "tokenize: (tokenize.eot); move it under tokenize:"),
    "unknown key": (lambda p: p["binarize"].update(foo=1), "params.yaml: unknown key binarize.foo"),
    "streaming a local directory": (
        lambda p: p["download"].update(materialize=False),
        "download.materialize: false streams a dataset from the Hub or object storage, but "
        "./dataset is a local directory: set download.materialize: true"),
    "shards without their outputs": (
        lambda p: p["binarize"].update(shard_tokens=1000),
        "binarize.shard_tokens is 1000, so binarize writes data/train, data/validation, but "
        "dvc.yaml's binarize stage names data/train.bin, data/validation.bin; in dvc.yaml "
        "replace"),
    "llm.c shards beyond llm.c's limit": (
        lambda p: p["binarize"].update(format="llmc", shard_tokens=1_100_000_000),
        "binarize.shard_tokens is 1,100,000,000, but an llm.c file holds at most 1,073,741,311 "
        "uint16 ids"),
    "a dtype narrower than the vocabulary": (
        lambda p: (p["binarize"].update(dtype="uint16"),
                   p["tokenize"].update(encoding="cl100k_base")),
        "binarize.dtype uint16 cannot hold a vocabulary of 100277 ids; set binarize.dtype to auto "
        "or uint32"),
}


@pytest.mark.parametrize("edit, message", BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_a_bad_params_yaml_stops_dvc_repro_before_any_output_is_deleted(built, edit, message):
    before, lock = outputs(built), (built / "dvc.lock").read_text()
    original = (built / "params.yaml").read_text()
    try:
        edit_params(built, edit)
        result = run(["dvc", "repro"], built, check=False)
    finally:
        (built / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert f"check: error: {message}" in result.stderr, result.stderr
    assert "No stage ran: every output is as it was" in result.stderr
    assert "Running stage 'download'" not in result.stdout
    assert outputs(built) == before and (built / "dvc.lock").read_text() == lock


def test_a_binarize_output_missing_from_dvc_yaml_s_outs_is_refused(built, monkeypatch):
    # DVC would not version it, nor would `dvc pull binarize` fetch it
    from tokbin.preflight import check_pipeline
    monkeypatch.chdir(built)  # as DVC runs the stages
    original = (built / "dvc.yaml").read_text()
    message = ("binarize writes data/train.docs, but dvc.yaml's binarize stage does not list "
               "them in its outs")
    try:
        (built / "dvc.yaml").write_text(original.replace("      - data/train.docs\n", ""))
        with pytest.raises(TokbinError, match=message):  # the check stage's
            check_pipeline()
        stage = run(stage_command(built, "binarize"), built, check=False)
        forced = run(["dvc", "repro", "--force"], built, check=False)
    finally:
        (built / "dvc.yaml").write_text(original)
    assert stage.returncode == 1 and f"binarize: error: {message}" in stage.stderr
    assert forced.returncode != 0 and f"check: error: {message}" in forced.stderr
    run(["dvc", "repro"], built)
    assert (built / "data" / "train.docs").is_file()


def test_the_check_reruns_without_making_any_other_stage_rerun(built):
    with open(built / "tokbin" / "preflight.py", "a") as f:
        f.write("# a change to the check alone\n")
    result = run(["dvc", "repro"], built)
    assert "Running stage 'check'" in result.stdout
    for stage in ("download", "tokenize", "binarize"):
        assert f"Stage '{stage}' didn't change, skipping" in result.stdout


def test_repair_of_an_intact_project_changes_nothing(built):
    run(["dvc", "repro"], built)  # up to date whatever ran before (a failed check deletes its out)
    before = outputs(built)
    result = run(["python", "-m", "tokbin", "repair"], built)
    assert "nothing to do" in result.stdout and outputs(built) == before


def test_a_failed_exp_run_says_how_to_undo_the_value_it_wrote_into_params_yaml(built):
    before, original = outputs(built), (built / "params.yaml").read_text()
    result = run(["dvc", "exp", "run", "-S", "binarize.dtype=uint8"], built, check=False)
    assert result.returncode != 0 and "binarize.dtype is 'uint8'" in result.stderr
    assert outputs(built) == before
    assert "touch params.yaml && git checkout params.yaml" in result.stderr
    run(["bash", "-c", "touch params.yaml && git checkout params.yaml"], built)
    assert (built / "params.yaml").read_text() == original


# --- a bin damaged in place ----------------------------------------------------------------------

def damage_in_place(path: Path) -> None:
    """One write into the memory-mapped bin, as a training script with mode="r+" makes it as
    root, whom the read-only bits do not stop (any other user: writable for the write only;
    DVC re-hashes a cache object that is not read-only, which root's write does not cause)."""
    mode = os.stat(path).st_mode
    os.chmod(path, mode | stat.S_IWUSR)
    ids = np.memmap(path, dtype="<u2", mode="r+")
    ids[0] = ids[0] + 1
    ids.flush()
    del ids
    os.chmod(path, mode)


def test_a_bin_damaged_in_place_is_never_published_and_repair_brings_the_original_back(
        built, tmp_path, monkeypatch):
    repo = built  # the tests above leave it built and as committed
    original, lock = outputs(repo), (repo / "dvc.lock").read_text()
    damage_in_place(repo / "data" / "train.bin")
    assert (repo / "data" / "tokens" / "train.bin").read_bytes() != original[OUTPUTS[3]][1]

    # the rebuild that recorded the damage in dvc.lock as a new data version: refused (tokenize
    # reruns, and DVC relinks its fresh output to the damaged cache object it already has)
    result = run(["dvc", "repro", "--force"], repo, check=False)
    assert result.returncode != 0
    assert ("binarize: error: data/tokens/train.bin is not the file its stage wrote"
            in result.stderr) and "run `python -m tokbin repair`" in result.stderr
    assert (repo / "dvc.lock").read_text() == lock

    # no remote has the data yet: repair removes the damage and names the rebuild
    result = run(["python", "-m", "tokbin", "repair"], repo, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("rebuild it with `dvc repro`: its outputs are missing now, so it reruns "
            "tokenize, binarize") in result.stdout
    run(["dvc", "repro"], repo)
    assert contents(repo) == contents(original) and (repo / "dvc.lock").read_text() == lock

    # with the data on the remote, repair restores it from there by itself
    run(["dvc", "remote", "add", "--local", "-d", "here", str(tmp_path / "remote")], repo)
    run(["dvc", "push"], repo)
    damage_in_place(repo / "data" / "train.bin")
    monkeypatch.chdir(repo)
    assert cli(["verify"]) == 1
    result = run(["python", "-m", "tokbin", "repair"], repo)
    assert "every output matches" in result.stdout
    assert cli(["verify"]) == 0
    assert contents(repo) == contents(original) and (repo / "dvc.lock").read_text() == lock
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_a_doclens_damaged_in_place_is_never_published(built):
    # a token moved from one document's length to the next: the same total, another index
    repo, path = built, built / "data" / "tokens" / "train.doclens"
    lock, original = (repo / "dvc.lock").read_text(), path.read_bytes()
    mode = os.stat(path).st_mode
    os.chmod(path, mode | stat.S_IWUSR)
    lengths = np.memmap(path, dtype="<u4", mode="r+")
    lengths[0] -= 1
    lengths[1] += 1
    lengths.flush()
    del lengths
    os.chmod(path, mode)
    try:
        result = run(["dvc", "repro", "--force"], repo, check=False)
        assert result.returncode != 0
        assert ("binarize: error: data/tokens/train.doclens is not the file its stage wrote"
                in result.stderr), result.stderr
        assert (repo / "dvc.lock").read_text() == lock
    finally:  # the original bytes back, in place (the cache object too): built as it was
        os.chmod(path, mode | stat.S_IWUSR)
        with open(path, "r+b") as f:
            f.write(original)
        os.chmod(path, mode)
    run(["dvc", "repro"], repo)
    assert (repo / "dvc.lock").read_text() == lock


def contents(repo_or_outputs) -> dict[str, bytes]:
    found = repo_or_outputs if isinstance(repo_or_outputs, dict) else outputs(repo_or_outputs)
    return {path: data for path, (_, data) in found.items()}


# --- a build only the workspace holds ---------------------------------------------------------

def test_repair_keeps_a_whole_build_that_no_cache_holds_and_verify_names_the_version_switch(
        tmp_path):
    # a new build, not pushed; `git stash` brings back the old dvc.lock and `dvc gc -w` drops
    # the new build's cache objects: the workspace holds its only copy (DVC's checkout refuses
    # to remove such "unsaved files", and so must repair)
    repo = make_project(tmp_path / "project", download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(["dvc", "repro"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data-v1")
    run(["python", "-m", "tokbin", "set", "tokenize.eot=prepend"], repo)
    run(["dvc", "repro"], repo)
    new = contents(repo)
    git(repo, "stash")
    run(["dvc", "gc", "-w", "-f"], repo)

    result = run(["python", "-m", "tokbin", "verify"], repo, check=False)
    assert result.returncode == 1
    assert ("holds a whole build (every file matches its meta.json), but not the one"
            in result.stdout and "`dvc checkout binarize`" in result.stdout), result.stdout
    assert "tokbin repair" not in result.stdout  # nothing is damaged

    result = run(["python", "-m", "tokbin", "repair"], repo, check=False)
    assert result.returncode == 1
    assert ("no DVC cache holds it: it may be its only copy. Nothing was changed"
            in result.stderr), result.stdout + result.stderr
    for path in ("data/train.bin", "data/meta.json", "data/tokens/train.bin"):
        assert path in result.stderr
    assert contents(repo) == new

    git(repo, "stash", "pop")  # what the message says keeps it
    run(["dvc", "commit", "-f"], repo)
    assert run(["python", "-m", "tokbin", "verify"], repo).returncode == 0
    assert contents(repo) == new

    git(repo, "stash")  # now cached: repair may bring back data-v1, and nothing is lost
    run(["python", "-m", "tokbin", "repair"], repo)
    assert run(["python", "-m", "tokbin", "verify"], repo).returncode == 0
    git(repo, "stash", "pop")
    run(["dvc", "checkout"], repo)
    assert contents(repo) == new


def test_repair_force_discards_a_whole_build_that_no_cache_holds(tmp_path):
    repo = make_project(tmp_path / "project", download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", DOCS)
    run(["dvc", "repro"], repo)
    old = contents(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data-v1")
    run(["python", "-m", "tokbin", "set", "tokenize.eot=prepend"], repo)
    run(["dvc", "repro"], repo)
    git(repo, "checkout", "--", "params.yaml", "dvc.lock")  # the new build thrown away
    run(["dvc", "gc", "-w", "-f"], repo)
    assert run(["python", "-m", "tokbin", "repair"], repo, check=False).returncode == 1
    result = run(["python", "-m", "tokbin", "repair", "--force"], repo)
    assert "every output matches" in result.stdout
    assert run(["python", "-m", "tokbin", "verify"], repo).returncode == 0
    assert contents(repo) == old
