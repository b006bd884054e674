"""Team data versioning with real git and dvc: one teammate builds, tags and pushes; the others
clone and `dvc pull`, never rebuild, and can go back to any tagged data version.

The builder is the session's `team_origin` (tests/conftest.py): data-v1 = the sample with
tokenize.eot append, data-v2 = the same with eot none, both pushed to the default remote."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from conftest import TEAM_OUTPUTS, clone, git, lock_md5s, object_path, run
from conftest import team_outputs as workspace


def stored_objects(storage: Path) -> set[str]:
    """The md5s of the objects in a DVC remote directory or cache (a `.dir` listing is one)."""
    return {p.parent.name + p.name for p in (storage / "files" / "md5").glob("*/*")}


# --- the team scenario -----------------------------------------------------------------------

def test_a_fresh_clone_pulls_the_latest_version_byte_for_byte_with_no_remote_setup(team,
                                                                                 tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    assert not (teammate / ".dvc" / "config.local").exists()
    run(["dvc", "pull"], teammate)
    assert workspace(teammate) == team.versions["data-v2"]


def test_checking_out_the_data_v1_tag_and_pulling_gives_version_1_byte_for_byte(team, tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    git(teammate, "checkout", "-q", "data-v1")
    run(["dvc", "pull"], teammate)
    assert workspace(teammate) == team.versions["data-v1"]
    assert team.versions["data-v1"]["data/train.bin"] != team.versions["data-v2"]["data/train.bin"]


def test_params_diff_between_the_tags_shows_the_changed_parameter_only(team):
    diff = json.loads(run(["dvc", "params", "diff", "data-v1", "data-v2", "--json"],
                          team.repo).stdout)
    assert diff == {"params.yaml": {"tokenize.eot": {"old": "append", "new": "none"}}}


def test_metrics_diff_between_the_tags_shows_the_token_counts_that_changed(team):
    diff = json.loads(run(["dvc", "metrics", "diff", "data-v1", "data-v2", "--json"],
                          team.repo).stdout)["reports/metrics.json"]
    meta_v1 = json.loads(team.versions["data-v1"]["data/meta.json"])
    documents = meta_v1["splits"]["train"]["documents"]
    # eot none drops the one eot token per document; the document counts did not change
    assert diff["train.tokens"]["old"] - diff["train.tokens"]["new"] == documents
    assert "validation.tokens" in diff and "train.documents" not in diff


def test_dvc_pull_binarize_fetches_only_the_bins_their_document_indexes_and_meta_json(
        team, tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    run(["dvc", "pull", "binarize"], teammate)
    assert workspace(teammate) == team.versions["data-v2"]
    assert not (teammate / "data" / "raw").exists() and not (teammate / "data" / "tokens").exists()
    md5s = lock_md5s(teammate)
    cached = stored_objects(teammate / ".dvc" / "cache")
    assert cached == {md5s[path] for path in TEAM_OUTPUTS}
    # ... although the remote holds the intermediates: they were left there, not missed.
    intermediates = {md5s["data/raw"], md5s["data/tokens"]}
    assert intermediates <= stored_objects(team.remote) and not intermediates & cached



def test_repair_after_pulling_only_binarize_fetches_nothing_and_names_what_it_left_out(
        team, tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    run(["dvc", "pull", "binarize"], teammate)
    cached = stored_objects(teammate / ".dvc" / "cache")
    repaired = run([sys.executable, "-m", "tokbin", "repair"], teammate)
    assert "$ dvc" not in repaired.stdout  # no fetch, no checkout
    assert "data/raw" in repaired.stdout and "not pulled" in repaired.stdout
    assert "nothing to do" in repaired.stdout
    assert stored_objects(teammate / ".dvc" / "cache") == cached
    assert not (teammate / "data" / "raw").exists() and not (teammate / "data" / "tokens").exists()


def test_repair_restores_an_intermediate_deleted_by_accident_from_the_dvc_cache(team, tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    run(["dvc", "pull"], teammate)
    shutil.rmtree(teammate / "data" / "tokens")  # its cache objects are still in .dvc/cache
    run([sys.executable, "-m", "tokbin", "repair"], teammate)
    assert workspace(teammate) == team.versions["data-v2"]
    assert (teammate / "data" / "tokens" / "train.bin").read_bytes() == (
        team.versions["data-v2"]["data/train.bin"])

# --- disk: one copy per bin -------------------------------------------------------------------

def test_pulled_bins_are_hardlinks_to_their_cache_objects(team, tmp_path):
    teammate = clone(team, tmp_path / "teammate")
    run(["dvc", "pull", "binarize"], teammate)
    md5s = lock_md5s(teammate)
    for path in TEAM_OUTPUTS:
        cached = object_path(teammate / ".dvc" / "cache", md5s[path])
        assert (teammate / path).stat().st_ino == cached.stat().st_ino, path


def test_a_built_repo_stores_each_output_once_on_disk(team):
    """The workspace's outputs take no disk beyond the cache's objects: `du` of workspace plus
    cache (a hardlinked file counted once, as du does) equals du of the cache alone."""
    repo = team.repo
    outputs = [p for p in (repo / "data").rglob("*") if p.is_file() and p.name != ".gitignore"]
    objects = [p for p in (repo / ".dvc" / "cache" / "files").rglob("*") if p.is_file()]
    assert len(outputs) >= 8 and all(p.stat().st_nlink >= 2 for p in outputs)
    assert du(outputs + objects) == du(objects)


def du(files: list[Path]) -> int:
    """Bytes allocated on disk for `files`, each inode counted once."""
    return sum({p.stat().st_ino: p.stat().st_blocks * 512 for p in files}.values())


def test_linked_outputs_are_read_only_so_a_stray_write_cannot_reach_the_cache(team):
    for path in TEAM_OUTPUTS:
        assert (team.repo / path).stat().st_mode & 0o222 == 0, path


def test_rebuilding_replaced_the_linked_bins_and_never_wrote_through_to_the_cache(team):
    """data-v2 was built over data-v1's hardlinked outputs: each cache object still hashes to its
    own name, the data-v1 objects included."""
    objects = [p for p in (team.repo / ".dvc" / "cache" / "files" / "md5").glob("*/*")]
    assert len(objects) > 10
    for obj in objects:
        assert hashlib.md5(obj.read_bytes()).hexdigest() == (obj.parent.name + obj.name)[:32], obj


def test_the_default_remote_lives_in_home_and_verifies_downloads(team):
    config = run(["dvc", "config", "--list", "--project"], team.repo).stdout.split()
    assert "core.remote=storage" in config
    assert "remote.storage.verify=true" in config
    assert "cache.type=hardlink,symlink" in config
    assert run(["dvc", "remote", "list"], team.repo).stdout.split()[:2] == [
        "storage", os.fspath(team.remote)]
