"""The download stage against the Hub's HTTP API, served offline by a local fake Hub: the real
huggingface_hub client code runs, pointed at it through HF_ENDPOINT."""
from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_project, stage_command
from tokbin.format import read_meta

REPO = "acme/stories"
SHA_V1, SHA_V2 = "1" * 40, "2" * 40


def parquet_bytes(texts: list[str]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), sink)
    return sink.getvalue()


class FakeHub:
    """Two commits of one dataset repo; `main` points at v1 until `move_main_on_first_file`."""

    def __init__(self):
        self.commits = {
            SHA_V1: {"data/train-00000-of-00001.parquet": parquet_bytes(["v1 train story"]),
                     "data/validation-00000-of-00001.parquet": parquet_bytes(["v1 validation"]),
                     "TinyStories-train.txt": b"a large file the splits do not need",
                     "README.md": b"# stories"},
            SHA_V2: {"data/train-00000-of-00001.parquet": parquet_bytes(["v2 train story"]),
                     "data/validation-00000-of-00001.parquet": parquet_bytes(["v2 validation"])},
        }
        self.refs = {"main": SHA_V1, "v1": SHA_V1}
        self.requests: list[str] = []
        self.move_main_on_first_file = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.respond(head=True)

            def do_GET(self):
                self.respond(head=False)

            def respond(self, head: bool):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/datasets/{REPO}/revision/"
                files = f"/datasets/{REPO}/resolve/"
                if path.startswith(api):
                    sha = hub.resolve(path[len(api):])
                    if sha is None:
                        return self.error(404, "RevisionNotFound", "Invalid rev id")
                    body = json.dumps({"id": REPO, "sha": sha, "private": False,
                                       "siblings": [{"rfilename": n} for n in hub.commits[sha]]})
                    return self.send(body.encode(), {"Content-Type": "application/json"}, head)
                if path.startswith(files):
                    revision, _, name = path[len(files):].partition("/")
                    sha = hub.resolve(revision)
                    if hub.move_main_on_first_file:
                        hub.refs["main"] = SHA_V2
                    if sha is None or name not in hub.commits[sha]:
                        return self.error(404, "EntryNotFound", "Entry not found")
                    data = hub.commits[sha][name]
                    return self.send(data, {"X-Repo-Commit": sha,
                                            "ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                                     head)
                self.error(404, "RepoNotFound", "Repository not found")

            def send(self, body: bytes, headers: dict, head: bool):
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def error(self, status: int, code: str, message: str):
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


@pytest.fixture
def hub():
    fake = FakeHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()


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
    fetched = [r for r in hub.requests if "/resolve/" in r]
    assert fetched and all(f"/resolve/{SHA_V1}/data/" in r for r in fetched)
    assert not any("TinyStories-train.txt" in r or "README" in r for r in hub.requests)
    assert not (project / "data/raw/.cache").exists()
    assert sorted(p.name for p in (project / "data/raw/data").iterdir()) == [
        "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]


def test_a_branch_moving_mid_download_cannot_mix_versions(tmp_path, hub):
    hub.move_main_on_first_file = True
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
