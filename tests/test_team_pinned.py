"""tokbin.pinned: a data version's bins by git revision or tag, read from Python without touching
the workspace, checked against that revision's dvc.lock, fetched once."""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import clone, git, lock_md5s, object_path, run
from tokbin.errors import TokbinError
from tokbin.format import read_meta
from tokbin.pinned import pinned_loader, pinned_path


@pytest.fixture
def consumer(team, tmp_path) -> Path:
    """A fresh clone with an empty DVC cache and its own copy of the remote (so a test may
    damage or remove it): whatever pinned_path returns came through DVC from that remote."""
    repo = clone(team, tmp_path / "consumer")
    remote = shutil.copytree(team.remote, tmp_path / "remote")
    (repo / ".dvc" / "config.local").write_text(f"['remote \"storage\"']\n    url = {remote}\n")
    return repo


def remote_of(repo: Path) -> Path:
    return repo.parent / "remote"


def test_a_tag_gives_the_exact_bytes_of_that_version_with_meta_json_and_its_index_beside(
        team, consumer, tmp_path):
    for tag in ("data-v1", "data-v2"):
        for path in ("data/train.bin", "data/validation.bin"):
            local = pinned_path(tag, path, repo=consumer, cache_dir=tmp_path / "pinned")
            assert local.read_bytes() == team.versions[tag][path]
            assert local.with_name("meta.json").read_bytes() == team.versions[tag]["data/meta.json"]
            docs = path.replace(".bin", ".docs")
            assert local.with_suffix(".docs").read_bytes() == team.versions[tag][docs]
    assert read_meta(pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")).eot == (
        "append")


def test_the_workspace_head_and_dvc_cache_are_left_untouched(team, consumer, tmp_path):
    run(["dvc", "pull", "binarize"], consumer)
    files = [p for p in consumer.rglob("*") if p.is_file() and ".git" not in p.parts
             and "tmp" not in p.relative_to(consumer).parts[:2]]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    head = git(consumer, "rev-parse", "HEAD")

    pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    after = [p for p in consumer.rglob("*") if p.is_file() and ".git" not in p.parts
             and "tmp" not in p.relative_to(consumer).parts[:2]]
    assert sorted(after) == sorted(before)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in after} == before
    assert git(consumer, "rev-parse", "HEAD") == head
    workspace_bin = (consumer / "data" / "train.bin").read_bytes()
    assert workspace_bin == team.versions["data-v2"]["data/train.bin"]


def test_a_pinned_copy_is_its_own_file_not_a_link_to_the_projects_dvc_cache(team, consumer,
                                                                            tmp_path):
    # With cache.type hardlink,symlink DVC links a cached object instead of copying it: a write
    # into such a "copy" (root ignores its read-only bits) would damage the cache and the
    # workspace, and fetching it again would read the same damaged object.
    run(["dvc", "pull", "binarize"], consumer)  # the repo's cache holds data-v2's objects
    workspace = consumer / "data" / "train.bin"
    mode = workspace.stat().st_mode
    local = pinned_path("data-v2", repo=consumer, cache_dir=tmp_path / "pinned")
    assert not local.is_symlink() and local.stat().st_nlink == 1
    assert local.stat().st_ino != workspace.stat().st_ino
    assert workspace.stat().st_mode == mode  # the read-only bit went on the copy alone
    local.chmod(0o644)
    with open(local, "r+b") as f:
        f.write(b"\xff\xff")
    assert workspace.read_bytes() == team.versions["data-v2"]["data/train.bin"]
    again = pinned_path("data-v2", repo=consumer, cache_dir=tmp_path / "pinned")
    assert again.read_bytes() == team.versions["data-v2"]["data/train.bin"]


def test_a_second_call_reuses_the_local_copy_without_fetching(team, consumer, tmp_path):
    first = pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    shutil.rmtree(remote_of(consumer))  # nothing left to fetch from
    assert not (consumer / ".dvc" / "cache").exists()  # and nothing was kept in the repo's cache
    second = pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    assert second == first
    assert second.read_bytes() == team.versions["data-v1"]["data/train.bin"]


def test_a_corrupted_local_copy_is_detected_and_fetched_again(team, consumer, tmp_path, caplog):
    local = pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    local.chmod(0o644)
    with open(local, "r+b") as f:  # same size, different bytes
        f.write(b"\xff\xff\xff\xff")
    with caplog.at_level(logging.WARNING, logger="tokbin.pinned"):
        again = pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    assert again.read_bytes() == team.versions["data-v1"]["data/train.bin"]
    assert "does not match" in caplog.text


def test_a_corrupted_object_in_the_remote_is_refused_against_the_md5_in_dvc_lock(consumer,
                                                                                 tmp_path):
    lock_md5 = lock_md5s(consumer, "data-v1")["data/train.bin"]
    obj = object_path(remote_of(consumer), lock_md5)
    obj.chmod(0o644)
    obj.write_bytes(b"\x00" * obj.stat().st_size)
    with pytest.raises(TokbinError, match=f"dvc.lock records {lock_md5}: the DVC remote .*"
                                          "tokbin repair. in the repo restores its cache"):
        pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    assert not list((tmp_path / "pinned").rglob("train.bin*"))  # no bad copy left to reuse


def test_an_object_missing_from_the_remote_is_a_clear_error(consumer, tmp_path):
    object_path(remote_of(consumer), lock_md5s(consumer, "data-v1")["data/train.bin"]).unlink()
    with pytest.raises(TokbinError, match="neither in this repo's DVC cache nor on its DVC remote"):
        pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")


@pytest.mark.parametrize("rev, path, message", [
    ("data-v9", "data/train.bin", "unknown git revision 'data-v9'"),
    ("data-v1", "data/test.bin", r"data/test.bin is not an output in dvc.lock at 'data-v1'"),
    ("data-v1", "data/tokens", "is a directory"),
    ("data-v1~1", "data/train.bin", "has no dvc.lock"),
])
def test_a_bad_revision_or_path_is_a_clear_error(consumer, tmp_path, rev, path, message):
    with pytest.raises(TokbinError, match=message):
        pinned_path(rev, path, repo=consumer, cache_dir=tmp_path / "pinned")


def test_an_unknown_remote_name_is_a_clear_error(consumer, tmp_path):
    with pytest.raises(TokbinError, match="remote 'nowhere' doesn't exist.*dvc remote list"):
        pinned_path("data-v1", repo=consumer, remote="nowhere", cache_dir=tmp_path / "pinned")


def test_an_unknown_remote_name_is_refused_with_the_remotes_even_when_a_copy_is_cached(
        consumer, tmp_path):
    pinned_path("data-v1", repo=consumer, cache_dir=tmp_path / "pinned")
    with pytest.raises(TokbinError, match=r"remote 'nowhere' doesn't exist at 'data-v1'; its "
                                          r"remotes are \['storage'\] \(`dvc remote list`"):
        pinned_path("data-v1", repo=consumer, remote="nowhere", cache_dir=tmp_path / "pinned")
    assert pinned_path("data-v1", repo=consumer, remote="storage", cache_dir=tmp_path / "pinned")


def test_a_path_may_be_a_pathlib_path_as_for_binloader(team, consumer, tmp_path):
    local = pinned_path("data-v1", Path("data/validation.bin"), repo=consumer,
                        cache_dir=tmp_path / "pinned")
    assert local.read_bytes() == team.versions["data-v1"]["data/validation.bin"]


@pytest.mark.parametrize("rev", [Path("data-v1"), b"data-v1", None])
def test_a_revision_that_is_not_a_str_is_a_clear_error(consumer, tmp_path, rev):
    with pytest.raises(TokbinError, match="rev must be a git revision as a str"):
        pinned_path(rev, repo=consumer, cache_dir=tmp_path / "pinned")


def test_pinned_loader_batches_come_from_the_pinned_version(team, consumer, tmp_path):
    pytest.importorskip("torch")
    loader = pinned_loader("data-v1", batch_size=4, block_size=16, repo=consumer,
                           cache_dir=tmp_path / "pinned")
    x, y = loader.next_batch()
    tokens = np.frombuffer(team.versions["data-v1"]["data/train.bin"], dtype="<u2")
    windows = np.lib.stride_tricks.sliding_window_view(tokens, 16 + 1)
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        assert (row_y[:-1] == row_x[1:]).all()
        # each row is a window of version 1's tokens
        assert (windows == np.append(row_x, row_y[-1])).all(axis=1).any()
    # and document-aware batches, from the pinned version's document index
    documents = pinned_loader("data-v1", batch_size=4, block_size=16, repo=consumer,
                              cache_dir=tmp_path / "pinned", align="document")
    starts = np.frombuffer(team.versions["data-v1"]["data/train.docs"], dtype="<i8")[:-1]
    x, _ = documents.next_batch()
    assert all(any((tokens[s:s + 16] == row.numpy()).all() for s in starts) for row in x)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """The folder tempfile (and so DVC) makes its temporary folders in, empty to begin with."""
    import tempfile
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_file_url_repo_is_read_in_place_leaving_no_temporary_folder(team, consumer, tmp_path,
                                                                      temp_dir):
    for _ in range(2):  # a fetch, then a hit in the pinned cache
        local = pinned_path("data-v1", repo=f"file://{consumer}", cache_dir=tmp_path / "pinned")
        assert local.read_bytes() == team.versions["data-v1"]["data/train.bin"]
        assert list(temp_dir.iterdir()) == []


def test_a_repo_dvc_clones_leaves_no_clone_or_cache_behind(team, consumer, tmp_path, temp_dir,
                                                            monkeypatch):
    import tokbin.pinned
    monkeypatch.setattr(tokbin.pinned, "_local_path", str)  # the URL as a remote git URL is
    local = pinned_path("data-v1", repo=f"file://{consumer}", cache_dir=tmp_path / "pinned")
    assert local.read_bytes() == team.versions["data-v1"]["data/train.bin"]
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("form", ["path", "file URL"])
def test_a_repo_that_does_not_exist_is_named_and_leaves_no_clone_behind(tmp_path, temp_dir,
                                                                        form):
    missing = tmp_path / "no-such-project"
    repo = str(missing) if form == "path" else f"file://{missing}"
    with pytest.raises(TokbinError, match=f"repo '{missing}' does not exist: pass repo= the "
                                          "path of a git \\+ DVC project"):
        pinned_path("data-v1", repo=repo, cache_dir=tmp_path / "pinned")
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("form", ["path", "repo URL"])
def test_an_unknown_revision_is_the_only_output_with_no_git_teardown_noise_at_exit(consumer,
                                                                                  form):
    # DVC, given an unknown revision, left the git repo's pack files open: at interpreter exit
    # dulwich printed a screen of "Exception ignored in: <function Pack.__del__>" tracebacks
    # after the error.
    git(consumer, "gc", "-q")  # git objects in pack files, as in any clone of a real project
    clone_it = "tokbin.pinned._local_path = str; " if form == "repo URL" else ""
    repo = str(consumer) if form == "path" else f"file://{consumer}"
    result = run([sys.executable, "-c", f"import tokbin.pinned; {clone_it}"
                  f"tokbin.pinned.pinned_path('data-v9', repo={repo!r})"], consumer, check=False)
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith("git fetch --tags` gets teammates' tags)")
    assert "TokbinError: unknown git revision 'data-v9'" in result.stderr
    assert "Exception ignored" not in result.stderr
