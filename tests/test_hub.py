"""The download stage against the Hub's HTTP API, served offline by a local fake Hub: the real
huggingface_hub client code runs, pointed at it through HF_ENDPOINT."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_project, stage_command
from support.fakehub import FakeHub
from tokbin.format import read_meta

REPO = "acme/stories"
SHA_V1, SHA_V2 = "1" * 40, "2" * 40


def parquet_bytes(texts: list[str]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), sink)
    return sink.getvalue()


@pytest.fixture
def hub():
    """Two commits of one dataset repo laid out as TinyStories is; `main` and `v1` name v1."""
    fake = FakeHub()
    fake.add_commit(REPO, {
        "data/train-00000-of-00001.parquet": parquet_bytes(["v1 train story"]),
        "data/validation-00000-of-00001.parquet": parquet_bytes(["v1 validation"]),
        "TinyStories-train.txt": b"a large file the splits do not need",
        "README.md": b"# stories"}, sha=SHA_V1, branch="main")
    fake.add_commit(REPO, {
        "data/train-00000-of-00001.parquet": parquet_bytes(["v2 train story"]),
        "data/validation-00000-of-00001.parquet": parquet_bytes(["v2 validation"])},
        sha=SHA_V2, branch=None)
    fake.refs[REPO]["v1"] = SHA_V1
    with fake:
        yield fake


def move_main_on_first_file(hub: FakeHub) -> None:
    def moved(name: str) -> None:
        hub.refs[REPO]["main"] = SHA_V2
    hub.on_file = moved


def run_stage(project: Path, endpoint: str, stage: str = "download", check: bool = True):
    import os
    import subprocess
    import sys
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HOME": str(project / ".hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(stage_command(project, stage), cwd=project, env=env,
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_download_resolves_the_revision_once_and_fetches_only_the_splits_files_at_that_sha(
        tmp_path, hub):
    project = make_project(tmp_path / "p", download__dataset=REPO, download__revision="main")
    run_stage(project, hub.endpoint)
    source = json.loads((project / "data/raw/source.json").read_text())
    assert source["sha"] == SHA_V1 and source["revision"] == "main"
    resolves = [r for r in hub.requests if "/resolve/" in r]
    assert all(f"/datasets/{REPO}/resolve/{SHA_V1}/" in r for r in resolves)
    fetched = {r.rpartition(f"{SHA_V1}/")[2] for r in resolves if r.startswith("GET ")}
    assert fetched == {"README.md", "data/train-00000-of-00001.parquet",  # the README: configs
                       "data/validation-00000-of-00001.parquet"}
    assert hub.unknown == []
    assert not (project / "data/raw/.cache").exists()
    assert sorted(p.name for p in (project / "data/raw/data").iterdir()) == [
        "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]


def test_a_branch_moving_mid_download_cannot_mix_versions(tmp_path, hub):
    move_main_on_first_file(hub)
    project = make_project(tmp_path / "p", download__dataset=REPO, download__revision="main")
    run_stage(project, hub.endpoint)
    raw = project / "data/raw/data"
    texts = [pq.read_table(p).column("text").to_pylist()[0] for p in sorted(raw.iterdir())]
    assert texts == ["v1 train story", "v1 validation"]


def test_the_resolved_sha_reaches_meta_json_through_the_whole_pipeline(tmp_path, hub):
    project = make_project(tmp_path / "p", download__dataset=REPO, download__revision="v1")
    for stage in ("download", "tokenize", "binarize"):
        run_stage(project, hub.endpoint, stage)
    meta = read_meta(project / "data")
    assert (meta.source.dataset, meta.source.revision, meta.source.sha) == (REPO, "v1", SHA_V1)


def test_an_unknown_revision_is_a_clear_error(tmp_path, hub):
    project = make_project(tmp_path / "p", download__dataset=REPO, download__revision="nope")
    result = run_stage(project, hub.endpoint, check=False)
    assert result.returncode == 1
    assert "revision 'nope' not found" in result.stderr and "download.revision" in result.stderr
    assert not (project / "data/raw").exists()


def test_an_unknown_dataset_is_a_clear_error(tmp_path, hub):
    project = make_project(tmp_path / "p", download__dataset="acme/missing")
    result = run_stage(project, hub.endpoint, check=False)
    assert result.returncode == 1
    assert "'acme/missing' not found on the Hub" in result.stderr
    assert not (project / "data/raw").exists()


def test_an_unreachable_hub_says_so_and_points_to_offline_data(tmp_path):
    import socket
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    project = make_project(tmp_path / "p", download__dataset=REPO)
    result = run_stage(project, endpoint, check=False)
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "./sample" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data/raw").exists()
