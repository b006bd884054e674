"""An offline fake of the Hugging Face Hub's HTTP API for dataset repos: what huggingface_hub's
HfApi, snapshot_download and HfFileSystem (hence datasets' resolution) call. The real clients
run against it: point them at `FakeHub.endpoint` with HF_ENDPOINT (and HF_HUB_DISABLE_XET=1).

Endpoints (all that datasets 5.2.0 + huggingface_hub 2.4.0 use to resolve and fetch):
  GET  /api/datasets/{repo}/revision/{rev}              repo info: id, sha, siblings
  GET  /api/datasets/{repo}/tree/{rev}[/{path}]          listing; ?recursive=true|false, paged
  POST /api/datasets/{repo}/paths-info/{rev}             form: paths=..&paths=..&expand=
  HEAD|GET /datasets/{repo}/resolve/{rev}/{path}         file bytes + X-Repo-Commit, ETag; a
                                                         missing file: 404 EntryNotFound; a
                                                         Range header: 206, those bytes
  GET  /api/models/{repo}/revision/{rev}                a model repo's info (add_commit with
  HEAD|GET /{repo}/resolve/{rev}/{path}                 repo_type="model"), and its files
Files named as the Hub's default .gitattributes stores in LFS (`LFS_SUFFIXES`) carry an `lfs`
entry (sha256, size) in listings, as there; the others only a git blob id (`oid`).
Anything else is answered 404 and recorded in `unknown` (so a test can assert none was hit).
Every request is recorded in `requests`; `on_file` (if set) is called with each file name
served, before it is served.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


LFS_SUFFIXES = (".parquet", ".arrow", ".gz", ".zst", ".bz2", ".xz", ".zip")


def tree_of(root: Path) -> dict[str, bytes]:
    """The files of a local folder as {repo-relative path: bytes}."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> sha -> files
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch/tag -> sha
        self.models: dict[str, dict[str, dict[str, bytes]]] = {}  # model repos, the same way
        self.model_refs: dict[str, dict[str, str]] = {}
        self.requests: list[str] = []
        self.unknown: list[str] = []
        self.page_size = 1000
        self.on_file = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

            def do_POST(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---- set-up -------------------------------------------------------------------------------
    def add_commit(self, repo: str, files: dict[str, bytes], sha: str | None = None,
                   branch: str | None = "main", repo_type: str = "dataset") -> str:
        sha = sha or hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest())
                                              for k, v in files.items()))
                                  .encode() + repo_type.encode() + repo.encode()).hexdigest()
        repos, refs = ((self.repos, self.refs) if repo_type == "dataset"
                       else (self.models, self.model_refs))
        repos.setdefault(repo, {})[sha] = dict(files)
        if branch:
            refs.setdefault(repo, {})[branch] = sha
        return sha

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- serving ------------------------------------------------------------------------------
    def _resolve(self, repo: str, rev: str, model: bool = False) -> str | None:
        repos, refs = (self.models, self.model_refs) if model else (self.repos, self.refs)
        commits = repos.get(repo, {})
        return rev if rev in commits else refs.get(repo, {}).get(rev)

    def _model(self, h, path: str, head: bool) -> bool:
        """Serves a model repo's info or file; False when `path` is neither."""
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
        file = None if info else re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if info is None and (file is None or path.startswith(("/api/", "/datasets/"))):
            return False
        repo, rev = (info or file).group(1), (info or file).group(2)
        if repo not in self.models:
            self._error(h, 404, "RepoNotFound", "Repository not found")
            return True
        sha = self._resolve(repo, rev, model=True)
        if sha is None:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return True
        files = self.models[repo][sha]
        if info:
            self._json(h, {"id": repo, "sha": sha, "private": False, "gated": False,
                           "disabled": False,
                           "siblings": [{"rfilename": n} for n in sorted(files)]}, head)
        elif file.group(3) not in files:
            self._error(h, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        else:
            data = files[file.group(3)]
            self._send(h, 200, data, {"X-Repo-Commit": sha,
                                      "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                      "Content-Type": "application/octet-stream"}, head)
        return True

    def _handle(self, h: BaseHTTPRequestHandler, head: bool):
        url = urlparse(h.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        body = b""
        if h.command == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length)
        h.is_head = head
        self.requests.append(f"{h.command} {path}" + (f"?{url.query}" if url.query else ""))
        if self._model(h, path, head):
            return

        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(revision|tree|paths-info)/(.*)", path)
        if m:
            repo, kind, rest = m.groups()
            if repo not in self.repos:
                return self._error(h, 404, "RepoNotFound", "Repository not found")
            # the revision is one url-quoted segment (a branch may hold a "/": quoted as %2F)
            raw_rest = url.path.split(f"/{kind}/", 1)[1]
            raw_rev, _, raw_sub = raw_rest.partition("/")
            rev, sub = unquote(raw_rev), unquote(raw_sub).strip("/")
            sha = self._resolve(repo, rev)
            if sha is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = self.repos[repo][sha]
            if kind == "revision":
                info = {"id": repo, "sha": sha, "private": False, "gated": False, "disabled": False,
                        "siblings": [{"rfilename": n} for n in sorted(files)]}
                return self._json(h, info, head)
            if kind == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                entries = self._tree(files, sub, recursive)
                if entries is None:
                    return self._error(h, 404, "EntryNotFound", f"{sub} does not exist on {rev}")
                cursor = int(query.get("cursor", ["0"])[0])
                page = entries[cursor:cursor + self.page_size]
                headers = {}
                if cursor + self.page_size < len(entries):
                    nxt = (f"{self.endpoint}{url.path}?recursive={str(recursive).lower()}"
                           f"&expand=false&cursor={cursor + self.page_size}")
                    headers["Link"] = f'<{nxt}>; rel="next"'
                return self._json(h, page, head, headers)
            # paths-info
            form = parse_qs(body.decode())
            out = []
            for p in form.get("paths", []):
                p = p.strip("/")
                if p in files:
                    out.append(self._file_entry(p, files[p]))
                elif any(n.startswith(p + "/") for n in files):
                    out.append(self._dir_entry(p))
            return self._json(h, out, head)

        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url.path)
        if m:
            repo, rev, name = unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3))
            if repo not in self.repos:
                return self._error(h, 404, "RepoNotFound", "Repository not found")
            sha = self._resolve(repo, rev)
            if sha is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = self.repos[repo][sha]
            if self.on_file is not None:
                self.on_file(name)
            if name not in files:
                return self._error(h, 404, "EntryNotFound", "Entry not found",
                                   {"X-Repo-Commit": sha})
            data, status = files[name], 200
            extra = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range") or "")
            if wanted:  # what HfFileSystem's reads ask for
                start = int(wanted.group(1))
                end = min(int(wanted.group(2) or len(data) - 1), len(data) - 1)
                status, extra["Content-Range"] = 206, f"bytes {start}-{end}/{len(data)}"
                data = data[start:end + 1]
            return self._send(h, status, data, {"X-Repo-Commit": sha, **extra,
                                                "Content-Type": "application/octet-stream"},
                                  head)
        self.unknown.append(f"{h.command} {h.path}")
        return self._error(h, 404, "RepoNotFound", "Not found")

    @staticmethod
    def _file_entry(path: str, data: bytes) -> dict:
        entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                 "path": path}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": 134}
        return entry

    @staticmethod
    def _dir_entry(path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                "path": path}

    def _tree(self, files: dict[str, bytes], sub: str, recursive: bool) -> list[dict] | None:
        prefix = sub + "/" if sub else ""
        if sub and sub in files:
            return [self._file_entry(sub, files[sub])]
        below = [n for n in sorted(files) if n.startswith(prefix)]
        if sub and not below:
            return None
        entries, dirs = [], set()
        for n in below:
            parts = n[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                d = prefix + "/".join(parts[:depth])
                if d not in dirs and (recursive or depth == 1):
                    dirs.add(d)
                    entries.append(self._dir_entry(d))
            if recursive or len(parts) == 1:
                entries.append(self._file_entry(n, files[n]))
        return entries

    def _json(self, h, obj, head: bool, headers: dict | None = None):
        self._send(h, 200, json.dumps(obj).encode(),
                   {"Content-Type": "application/json", **(headers or {})}, head)

    def _send(self, h, status: int, body: bytes, headers: dict, head: bool):
        h.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str, message: str, extra: dict | None = None):
        body = json.dumps({"error": message}).encode()
        self._send(h, status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                     "Content-Type": "application/json", **(extra or {})},
                   getattr(h, "is_head", False))
