"""An offline fake of the Hugging Face Hub's HTTP API, for dataset and model repos: the real
huggingface_hub client runs against it (point it at `FakeHub.endpoint` with HF_ENDPOINT, and
HF_HUB_DISABLE_XET=1).

Endpoints:
  GET  /api/{datasets|models}/{repo}/revision/{rev}     repo info: id, sha, siblings
  HEAD|GET /datasets/{repo}/resolve/{rev}/{path}        a dataset file + X-Repo-Commit, ETag
  HEAD|GET /{repo}/resolve/{rev}/{path}                 a model file, the same way
A missing repo, revision or file is answered 404 with the Hub's error code. Anything else is
answered 404 and recorded in `unknown`; every request is recorded in `requests`.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

REPO_TYPES = {"datasets": "dataset", "models": "model"}


class FakeHub:
    def __init__(self):
        # (repo type, repo) -> {sha: {path: bytes}}, and -> {branch or tag: sha}
        self.repos: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}
        self.refs: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[str] = []
        self.unknown: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_commit(self, repo: str, files: dict[str, bytes], sha: str | None = None,
                   branch: str | None = "main", repo_type: str = "dataset") -> str:
        """A commit of `files` in `repo`; `branch` (if given) then points at it."""
        key = (repo_type, repo)
        sha = sha or hashlib.sha1(repr((key, sorted((name, hashlib.sha256(data).hexdigest())
                                                     for name, data in files.items())))
                                  .encode()).hexdigest()
        self.repos.setdefault(key, {})[sha] = dict(files)
        if branch:
            self.refs.setdefault(key, {})[branch] = sha
        return sha

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _resolve(self, key: tuple[str, str], revision: str) -> str | None:
        commits = self.repos.get(key, {})
        return revision if revision in commits else self.refs.get(key, {}).get(revision)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append(f"{h.command} {path}")
        info = re.fullmatch(r"/api/(datasets|models)/([^/]+/[^/]+|[^/]+)/revision/(.+)", path)
        if info:
            key = (REPO_TYPES[info.group(1)], info.group(2))
            if key not in self.repos:
                return self._error(h, 404, "RepoNotFound", "Repository not found", head)
            sha = self._resolve(key, info.group(3))
            if sha is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {info.group(3)}",
                                   head)
            body = {"id": key[1], "sha": sha, "private": False, "gated": False,
                    "disabled": False,
                    "siblings": [{"rfilename": n} for n in sorted(self.repos[key][sha])]}
            return self._send(h, json.dumps(body).encode(),
                              {"Content-Type": "application/json"}, head)
        file = (re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                or re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path))
        if file:
            key = ("dataset" if path.startswith("/datasets/") else "model", file.group(1))
            if key not in self.repos:
                return self._error(h, 404, "RepoNotFound", "Repository not found", head)
            sha = self._resolve(key, file.group(2))
            if sha is None:
                return self._error(h, 404, "RevisionNotFound", "Invalid rev id", head)
            data = self.repos[key][sha].get(file.group(3))
            if data is None:
                return self._error(h, 404, "EntryNotFound", "Entry not found", head,
                                   {"X-Repo-Commit": sha})
            return self._send(h, data, {"X-Repo-Commit": sha,
                                        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                        "Content-Type": "application/octet-stream"}, head)
        self.unknown.append(f"{h.command} {h.path}")
        self._error(h, 404, "RepoNotFound", "Not found", head)

    @staticmethod
    def _send(h, body: bytes, headers: dict, head: bool, status: int = 200) -> None:
        h.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(key, value)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str, message: str, head: bool,
               extra: dict | None = None) -> None:
        self._send(h, json.dumps({"error": message}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": message,
                    "Content-Type": "application/json", **(extra or {})}, head, status)


def hub_env(hub: FakeHub, home) -> dict[str, str]:
    """The environment that points huggingface_hub at `hub`, with its cache under `home`."""
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HOME": str(home)}
