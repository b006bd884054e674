"""A pinned data version: the bins of a git revision or tag (e.g. ``data-v1``), read from Python
without touching the workspace.

    from tokbin.pinned import pinned_path, pinned_loader
    path = pinned_path("data-v1")                          # .../<md5s>/train.bin (+ meta.json)
    loader = pinned_loader("data-v1", batch_size=64, block_size=256)

How: the revision's ``dvc.lock`` is read from git (nothing is checked out) to learn the md5 of
the bin, its ``meta.json`` and its document index (``<split>.docs``, where the revision has
one); the files are fetched through DVC's Python API (``DVCFileSystem``: from
the repo's DVC cache when it has them, else from the DVC remote) into a local folder named by
those md5s, checked against them, and renamed into place. A later call finds the folder and
fetches nothing. The folder is content-addressed, so revisions with the same data share it and
any number of repos can share one cache folder. A local repo (a path, or a ``file://`` URL) is
read in place; a git URL is cloned by DVC into a temporary folder, removed before returning.

It needs DVC, which the loader's light install (``tokbin[loader]``) leaves out: there it raises a
TokbinError saying so.

A shard directory (``pinned_path("data-v1", "data/train")`` with ``binarize.shard_tokens > 0``)
is fetched the same way, shard by shard, each checked against its md5 in the directory's DVC
listing; the result is a directory BinLoader reads like a bin.
"""
from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tokbin.dvclock import LOCK_FILE, file_md5, lock_outputs
from tokbin.errors import TokbinError
from tokbin.format import META_FILENAME, docs_file, is_shard_file
from tokbin.fsio import atomic_path, user_cache_dir

log = logging.getLogger(__name__)

CACHE_ENV = "TOKBIN_PINNED_CACHE"


def default_cache_dir() -> Path:
    """$TOKBIN_PINNED_CACHE, else $XDG_CACHE_HOME/tokbin/pinned (~/.cache/tokbin/pinned)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return user_cache_dir() / "pinned"


def pinned_path(rev: str, path: str | os.PathLike = "data/train.bin", *,
                repo: str | os.PathLike | None = None, remote: str | None = None,
                cache_dir: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """The local path of `path` (an output in dvc.lock, relative to the repo root) as of git
    revision `rev` (a tag such as "data-v1", a branch or a commit), with its meta.json and its
    split's document index (where that revision has one) beside it.

    repo: the project (a local path or a git URL; default: the one around the current
    directory). remote: a DVC remote name (default: the revision's default remote).
    cache_dir: where fetched files are kept (default: `default_cache_dir()`).
    verify: also re-hash a copy found in cache_dir before reusing it (a fresh download is always
    checked); a copy that does not match is fetched again. False trusts a copy of the right size.
    """
    rev, path = _revision(rev), _repo_path(path)
    repo = _local_path(repo)
    if repo is not None and "://" not in repo and ":" not in repo.split("/")[0] \
            and not os.path.exists(repo):  # a path, not a URL (DVC would clone it, and fail)
        raise TokbinError(f"repo {repo!r} does not exist: pass repo= the path of a git + DVC "
                          "project (the tokbin checkout holding dvc.lock) or a git URL")
    fs, outputs = _open_revision(repo, rev, remote)
    try:
        wanted = {path: _output(outputs, path, rev)}
        split = posixpath.basename(path).removesuffix(".bin")
        for beside in (META_FILENAME, docs_file(split)):  # and the split's document index
            extra = posixpath.join(posixpath.dirname(path), beside)
            if extra in outputs and extra != path:
                wanted[extra] = outputs[extra]
        # content-addressed: revisions with the same files share one folder
        folder = Path(cache_dir or default_cache_dir()) / "-".join(
            out["md5"] for out in wanted.values())
        for repo_path, out in wanted.items():
            local = folder / posixpath.basename(repo_path)
            if out["md5"].endswith(".dir"):
                for shard in _shards(fs, repo_path, rev):
                    _ensure_copy(fs, shard["name"], {"md5": shard["md5"], "size": shard["size"]},
                                 local / posixpath.basename(shard["name"]), rev, verify)
            else:
                _ensure_copy(fs, repo_path, out, local, rev, verify)
    except _RemoteDamage as damage:  # named with the fix, which needs the remote and dvc.lock
        if damage.missing and not _dropped_from_remote(fs, remote, damage.md5, outputs):
            raise TokbinError(damage.missing) from None
        raise TokbinError(f"{damage}; {_remote_fix(fs, remote, damage.md5, outputs)}") from None
    finally:
        _close(fs, repo)
    return folder / posixpath.basename(path)


def pinned_loader(rev: str, path: str | os.PathLike = "data/train.bin", *, batch_size: int,
                  block_size: int, repo: str | os.PathLike | None = None,
                  remote: str | None = None, cache_dir: str | os.PathLike | None = None,
                  verify: bool = True, **loader_options):
    """A BinLoader over `path` as of `rev` (see pinned_path); loader_options go to BinLoader."""
    from tokbin.loader import BinLoader
    local = pinned_path(rev, path, repo=repo, remote=remote, cache_dir=cache_dir, verify=verify)
    return BinLoader(local, batch_size=batch_size, block_size=block_size, **loader_options)


def _revision(rev) -> str:
    if not isinstance(rev, str):  # a Path or bytes is no git revision: DVC fails on it raw
        raise TokbinError(f"rev must be a git revision as a str (a tag such as 'data-v1', a "
                          f"branch or a commit), not {rev!r}")
    return rev


def _repo_path(path) -> str:
    """`path` (str or os.PathLike) as dvc.lock spells its outputs: relative, '/'-separated."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TokbinError(f"path must be an output in dvc.lock as a str or Path (e.g. "
                          f"'data/train.bin'), not {path!r}")
    return path.replace(os.sep, "/")


def _local_path(repo: str | os.PathLike | None) -> str | None:
    """A file:// URL as the plain path it names: DVC reads a path's git objects where they are,
    but clones any URL (file:// too) into a temporary folder first."""
    if repo is None:
        return None
    url = urlsplit(os.fspath(repo))
    if url.scheme == "file" and url.netloc in ("", "localhost"):
        return unquote(url.path)
    return os.fspath(repo)


def _open_revision(repo: str | None, rev: str, remote: str | None):
    """The project as of `rev` (read from git, nothing checked out) and its dvc.lock's cached
    outputs: {path: {"md5", "size", ...}}."""
    try:
        from dvc.api import DVCFileSystem
    except ImportError:
        raise TokbinError("pinned_path needs DVC, which tokbin's loader install "
                          "(tokbin[loader]) leaves out: install tokbin[pipeline] (or, in a "
                          "checkout, `pip install -r requirements.txt`)") from None
    where = repo if repo is not None else os.getcwd()
    fs = DVCFileSystem(repo=repo, rev=_commit(repo, rev, where), remote=remote)
    try:
        outputs = _lock_outputs(fs, rev, where)
        remotes = sorted(fs.repo.config["remote"])
        if remote is not None and remote not in remotes:  # else ignored once a copy is cached
            raise TokbinError(f"remote {remote!r} doesn't exist at {rev!r}; its remotes are "
                              f"{remotes} (`dvc remote list` shows them; remote=None uses the "
                              "default)")
        return fs, outputs
    except BaseException:
        _close(fs, repo)
        raise


def _close(fs, repo: str | None) -> None:
    """Closes `fs` and removes the clone and cache DVC made for a repo URL (its CLI does that at
    exit; its Python API never does)."""
    fs.close()
    if repo is None or os.path.exists(repo):
        return
    from dvc.repo import open_repo
    clone, _ = open_repo.CLONES.pop(repo, (None, None))
    for folder in (clone, open_repo.CACHE_DIRS.pop(repo, None)):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def _commit(repo: str | None, rev: str, where: str) -> str:
    """The commit `rev` names, resolved in the project's git repo (a repo URL's clone), which is
    closed again. DVC, given an unknown revision, raises with that git repo's object store
    left open: its pack files then fail to close at interpreter exit, printing a screen of
    tracebacks after the error."""
    from dvc.api import DVCFileSystem
    from dvc.scm import NoSCM, RevError, resolve_rev
    fs = DVCFileSystem(repo=repo)  # no revision: nothing is resolved while it opens
    try:
        with _project_errors(where):
            scm = fs.repo.scm
        if isinstance(scm, NoSCM):  # a folder git does not know
            raise TokbinError(_not_a_project(where))
        commit = resolve_rev(scm, rev)
    except BaseException as e:
        _close(fs, repo)
        if isinstance(e, RevError):
            raise TokbinError(f"unknown git revision {rev!r} in {where}: pass a tag, branch or "
                              "commit (list data versions with `git tag -l 'data-v*'`; `git "
                              "fetch --tags` gets teammates' tags)") from None
        raise
    fs.close()  # a repo URL's clone stays, for the revision's DVCFileSystem to reuse
    return commit


def _not_a_project(where: str) -> str:
    return (f"{where} is not a git + DVC project: pass repo= the tokbin checkout (or its git "
            "URL)")


@contextlib.contextmanager
def _project_errors(where: str):
    from dvc.exceptions import NotDvcRepoError
    from dvc.scm import SCMError
    try:
        yield
    except (NotDvcRepoError, SCMError):
        raise TokbinError(_not_a_project(where)) from None


def _lock_outputs(fs, rev: str, where: str) -> dict[str, dict]:
    try:
        with _project_errors(where), fs.open(LOCK_FILE, "r") as f:
            text = f.read()
    except FileNotFoundError:
        raise TokbinError(f"revision {rev!r} has no {LOCK_FILE}: nothing was built and committed "
                          "there; pick a data version tag (`git tag -l 'data-v*'`)") from None
    return lock_outputs(text, f"{LOCK_FILE} at {rev!r}")


def _output(outputs: dict[str, dict], path: str, rev: str) -> dict:
    out = outputs.get(path)
    if out is None:
        raise TokbinError(f"{path} is not an output in {LOCK_FILE} at {rev!r}; its outputs are "
                          f"{sorted(outputs)} (paths are relative to the repo root)")
    return out


def _shards(fs, path: str, rev: str) -> list[dict]:
    """The files of a shard directory output (each its own DVC object, with its md5)."""
    files = fs.ls(path, detail=True)
    if not all(f["type"] == "file" and is_shard_file(posixpath.basename(f["name"]))
               for f in files):
        raise TokbinError(f"{path} is a directory at {rev!r} but not a shard directory; pass "
                          "one of its files, e.g. a bin")
    return files


class _RemoteDamage(Exception):
    """A copy on the remote that is damaged, or missing (`missing`: the message when it was
    never pushed, rather than dropped as damaged by a `dvc pull`)."""

    def __init__(self, message: str, md5: str, missing: str | None = None):
        super().__init__(message)
        self.md5, self.missing = md5, missing


def _remote_fix(fs, remote: str | None, md5: str, outputs: dict[str, dict]) -> str:
    from tokbin.remote_objects import damaged_remote_fix, remote_odb
    odb = remote_odb(fs.repo, remote)
    return damaged_remote_fix(odb, md5, outputs) if odb is not None else (
        "re-push it from a clone that has the right data (`dvc push`), or rebuild it (`dvc repro`)")


def _dropped_from_remote(fs, remote: str | None, md5: str, outputs: dict[str, dict]) -> bool:
    from tokbin.remote_objects import missing_but_listed, remote_odb
    return missing_but_listed(remote_odb(fs.repo, remote), md5, outputs)


def _ensure_copy(fs, repo_path: str, out: dict, local: Path, rev: str, verify: bool) -> None:
    """Makes `local` a verified copy of the revision's `repo_path`, reusing a good one."""
    from dvc.config import RemoteNotFoundError
    if local.exists():
        # DVC lists no size for a file inside a directory output: the md5 check decides
        size_ok = out["size"] in (None, local.stat().st_size)
        if size_ok and (not verify or file_md5(local) == out["md5"]):
            _own_copy(local)
            return
        log.warning("%s does not match %s at %s (md5 %s): fetching it again", local, repo_path,
                    rev, out["md5"])
        local.unlink(missing_ok=True)  # another process may have replaced it already
    local.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(local) as tmp:
        try:
            fs.get_file(repo_path, os.fspath(tmp))
            _own_copy(tmp)
        except RemoteNotFoundError as e:
            raise TokbinError(f"{e}; `dvc remote list` shows the remotes (remote=None uses "
                              "the default)") from None
        except FileNotFoundError:
            raise _RemoteDamage(
                f"{repo_path} at {rev!r} (md5 {out['md5']}) is neither in this repo's DVC cache "
                "nor on its DVC remote, though a directory listing there names it (a damaged "
                "copy that a `dvc pull` removed, or a deleted one)", out["md5"],
                missing=f"{repo_path} at {rev!r} (md5 {out['md5']}) is neither in this "
                "repo's DVC cache nor on its DVC remote (or the remote is "
                "unreachable; `dvc remote list` shows it): push it from the clone "
                "that built it (`dvc push`)") from None
        got = file_md5(tmp)
        if got != out["md5"]:
            # DVCFileSystem streams remote objects without checking them: this is the check.
            raise _RemoteDamage(f"{repo_path} at {rev!r} was fetched with md5 {got}, but "
                                f"{LOCK_FILE} records {out['md5']}: the DVC remote (or cache) "
                                "holds a damaged copy (`python -m tokbin repair` in the repo "
                                "restores its cache)", out["md5"])
        tmp.chmod(0o444)  # a pinned version is read-only: a stray write would corrupt it


def _own_copy(path: Path) -> None:
    """Makes `path` a file of its own where DVC linked it to its cache (cache.type hardlink or
    symlink): a write into the pinned copy, or its chmod, would otherwise change the cached
    object and every workspace file linked to it."""
    if not path.is_symlink() and path.stat().st_nlink == 1:
        return
    with atomic_path(path) as copy:
        shutil.copyfile(path, copy)
        copy.chmod(0o444)
