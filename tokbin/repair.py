"""`python -m tokbin repair`: every output whose bytes differ from what dvc.lock records, and
every damaged DVC cache object, restored from the DVC remote; what no remote has, named with
the `dvc repro` that rebuilds it.

DVC cannot do this by itself. With the hardlink cache a workspace output *is* its cache
object, so a write into data/train.bin (as root, read-only bits do not stop it) changes the
cache too; DVC trusts a read-only cache object without re-hashing it, so `dvc checkout
--force` and `dvc pull` relink the damaged bytes and `dvc fetch` never downloads an object
it has. So this re-hashes everything itself:

1. the md5 dvc.lock records for every cached file output and every file of a cached
   directory output (from the directory's listing object, itself checked and re-fetched),
   of the outputs this clone has: binarize's (what verify checks), and every other output
   present in the workspace or the DVC cache; one absent from both was never pulled (`dvc
   pull binarize` leaves data/raw and data/tokens out) and is left out, named;
2. each cache object and workspace file re-hashed (once per inode);
3. bins inside a directory output that its listing does not have (and .dvcignore does not
   hide) removed: llm.c's globs would read a stray shard; damaged cache objects removed, with every workspace file that is
   damaged or a hard link of a damaged object;
4. `dvc fetch`, what arrived re-hashed (a remote copy may be damaged too), `dvc checkout`;
5. for what no remote had: the stages a plain `dvc repro` reruns to rebuild it (their
   outputs are now missing, so DVC reruns them instead of relinking anything).

Before any of it, a whole build (every file matches its meta.json) that dvc.lock does not
record and no cache holds stops it, unless forced: the workspace may hold its only copy.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tokbin.crc import file_crc32
from tokbin.dvclock import (LOCK_FILE, file_md5, find_dvc_lock, lock_outputs,
                            lock_stage_outputs, uncached_outputs)
from tokbin.errors import TokbinError
from tokbin.format import META_FILENAME, read_meta, recorded_crcs
from tokbin.remote_objects import bad_on_remote, damaged_remote_fix, remote_odb

VERIFIED_STAGE = "binarize"  # its outputs are what verify checks: always restored


@dataclass(frozen=True)
class Expected:
    """A workspace file dvc.lock records, with its md5 and the output and stage it belongs to."""
    path: Path    # relative to the project root
    md5: str
    output: str   # the dvc.lock output: the file itself, or its directory
    stage: str


class Project:
    """A DVC project's workspace and cache, hashed from scratch (nothing DVC remembers)."""

    def __init__(self, root: Path):
        from dvc.repo import Repo
        self.root = root
        with Repo(str(root)) as repo:
            self._odb = repo.cache.local
            self.remote = remote_odb(repo)
        self._md5_of_inode: dict[tuple[int, int], str] = {}

    def ignored(self, path: Path) -> bool:
        """Whether .dvcignore hides `path` from DVC (then no listing has it, rightly)."""
        from dvc.repo import Repo
        with Repo(str(self.root)) as repo:
            return repo.dvcignore.is_ignored_file(os.fspath(path))

    def object_path(self, oid: str) -> Path:
        return Path(self._odb.oid_to_path(oid))

    def md5(self, path: Path) -> str | None:
        """The md5 of a file's bytes (hashed once per inode), None when it does not exist."""
        key = _inode(path)
        if key is None:
            return None
        if key not in self._md5_of_inode:
            self._md5_of_inode[key] = file_md5(path)
        return self._md5_of_inode[key]

    def object_ok(self, oid: str) -> bool:
        """Whether the cache holds `oid` with the bytes its name says (a directory listing's
        name is the md5 of its bytes plus ".dir")."""
        return self.md5(self.object_path(oid)) == oid.removesuffix(".dir")

    def remove(self, path: Path, why: str) -> None:
        print(f"repair: removing {path}: {why}")
        self._md5_of_inode.pop(_inode(path), None)  # a later file may reuse the inode
        path.unlink(missing_ok=True)

    def dvc(self, *args: str) -> int:
        print(f"repair: $ dvc {' '.join(args)}", flush=True)
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=self.root).returncode


def repair(folder: Path, force: bool = False) -> int:
    lock = find_dvc_lock(folder.resolve())
    if lock is None:
        raise TokbinError(f"no {LOCK_FILE} in {folder} or above it: repair restores the outputs "
                          "of a DVC project that `dvc repro` has built")
    project = Project(lock.parent)
    files, unknown, uncached, unpulled = expected_files(project, lock)
    kept = unsaved_builds(project, files)
    if kept and not force:
        names = ", ".join(str(path.relative_to(project.root)) for path in kept)
        print(f"repair: {names}: a whole build (every file matches the CRC-32 its meta.json "
              f"records), but not the one {lock} records, and no DVC cache holds it: it may be "
              "its only copy. Nothing was changed. To keep it, go back to the git commit (or "
              "stash) whose dvc.lock records it and run `dvc commit` (then `dvc push`); to "
              "discard it, `python -m tokbin repair --force`", file=sys.stderr)
        return 1
    if unpulled:
        print(f"repair: {', '.join(unpulled)} neither in the workspace nor in the DVC cache "
              "(not pulled): left out; `dvc pull` gets them")
    removed = remove_unlisted(project, files)
    remove_damaged(project, files)
    for e in files:  # a good workspace copy (not a link: another inode) refills the cache
        workspace, cached = project.root / e.path, project.object_path(e.md5)
        if not cached.exists() and project.md5(workspace) == e.md5:
            print(f"repair: restoring the DVC cache object of {e.path} from the workspace")
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workspace, cached)
            cached.chmod(0o444)
    missing = {e.output for e in files if not (project.root / e.path).exists()}
    absent = sorted({e.output for e in files if not project.object_ok(e.md5)})
    gone = [path for path in uncached if not (project.root / path).exists()]
    if gone:  # what a failed stage run deleted, that DVC keeps no copy of
        print(f"repair: {', '.join(gone)} missing, and not in DVC's cache (cache: false): "
              f"`git checkout -- {' '.join(gone)}` restores the committed copies, or `dvc "
              "repro` writes them again")
    if not missing and not absent and not unknown:
        print(f"repair: every output matches {lock} again" if removed else
              f"repair: every cached output matches {lock}; nothing to do")
        return 0
    if absent:
        project.dvc("fetch", *absent)  # a failure for some objects is reported below
        remove_damaged(project, files)  # a remote without `verify = true` may hand back damage
    lost = {e for e in files if not project.object_ok(e.md5)}
    restorable = sorted(missing - {e.output for e in lost})
    if restorable and project.dvc("checkout", *restorable) != 0:
        raise TokbinError("`dvc checkout` failed (its message is above)")
    pipeline = lock_stage_outputs(lock.read_text(encoding="utf-8"), str(lock))
    listed = lock_outputs(lock.read_text(encoding="utf-8"), str(lock))
    rebuild = [stage for stage in pipeline if stage in {e.stage for e in lost} | unknown]
    if rebuild:
        for e in sorted(lost, key=lambda e: e.path):
            print(f"repair: {e.path} ({e.md5}): neither the DVC cache nor the remote has a "
                  "good copy")
            if bad_on_remote(project.remote, e.md5, listed):  # a re-push alone skips it
                print(f"repair: the remote's copy of {e.path} is damaged (or was removed as "
                      f"damaged): {damaged_remote_fix(project.remote, e.md5, listed)}")
        print(f"repair: rebuild it with `dvc repro`: its outputs are missing now, so it reruns "
              f"{', '.join(rebuild)} (and restores or reruns what follows); then `python -m "
              "tokbin verify`, and `dvc push` to put the rebuilt data on the remote")
        return 1
    still = [str(e.path) for e in files if project.md5(project.root / e.path) != e.md5]
    if still:
        raise TokbinError(f"{', '.join(still)} still differ from {LOCK_FILE} after the restore")
    print(f"repair: every output matches {lock} again")
    return 0


def unsaved_builds(project: Project, files: list[Expected]) -> list[Path]:
    """Workspace files that differ from dvc.lock and are kept nowhere else, yet are no damage:
    in a folder whose meta.json every listed file matches (another build, such as one made
    before a `git checkout` or `git stash`, whose cache objects `dvc gc` then removed).
    Repair would delete the only copy, as `dvc checkout` refuses to ("unsaved files")."""
    differing = [path for e in files if (path := project.root / e.path).is_file()
                 and project.md5(path) != e.md5  # and neither damage through a hard link
                 and _inode(path) != _inode(project.object_path(e.md5))
                 and not project.object_ok(project.md5(path))]  # nor saved in the cache
    builds: dict[Path, dict | None] = {}
    kept = []
    for path in differing:
        for folder in (path.parent, path.parent.parent):  # a shard's meta.json is one up
            if folder not in builds:
                builds[folder] = _whole_build(folder)
            listed = builds[folder] or {}
            if path.relative_to(folder).as_posix() in [*listed, META_FILENAME] and listed:
                kept.append(path)
                break
    return kept


def _whole_build(folder: Path) -> dict[str, str] | None:
    """The CRC-32s the folder's meta.json records, when every file it lists is there with its
    CRC; None when there is no meta.json, it is damaged, or a file differs (damage)."""
    if not (folder / META_FILENAME).is_file():
        return None
    try:
        crcs = recorded_crcs(read_meta(folder))
    except TokbinError:
        return None
    whole = bool(crcs) and all(crc is not None and (folder / name).is_file()
                               and file_crc32(folder / name) == crc for name, crc in crcs.items())
    return crcs if whole else None


def remove_unlisted(project: Project, files: list[Expected]) -> int:
    """Removes every bin inside a directory output that its listing does not have and
    .dvcignore does not hide (what `dvc checkout --force` of the directory removes): llm.c's
    `data/train/*.bin` would read it. Returns how many."""
    in_folders = [e for e in files if e.path != Path(e.output)]  # from directory listings
    listed = {e.path for e in in_folders}
    unlisted = [path for output in sorted({e.output for e in in_folders})
                for path in sorted((project.root / output).rglob("*"))
                if path.suffix == ".bin" and (path.is_file() or path.is_symlink())
                and path.relative_to(project.root) not in listed and not project.ignored(path)]
    for path in unlisted:
        project.remove(path, f"its directory's listing in {LOCK_FILE} has no such file")
    return len(unlisted)


def remove_damaged(project: Project, files: list[Expected]) -> None:
    """Removes each damaged cache object, and every workspace file that is damaged or one of
    its hard links."""
    damaged = {e.md5 for e in files
               if project.md5(project.object_path(e.md5)) not in (None, e.md5)}
    bad_inodes = {_inode(project.object_path(oid)) for oid in damaged}
    for oid in sorted(damaged):
        project.remove(project.object_path(oid), f"the DVC cache object of {oid} is damaged")
    for e in files:
        path = project.root / e.path
        if path.exists() and (_inode(path) in bad_inodes or project.md5(path) != e.md5):
            project.remove(path, f"its bytes are not the {e.md5} that {LOCK_FILE} records")


def expected_files(project: Project, lock: Path
                   ) -> tuple[list[Expected], set[str], list[str], list[str]]:
    """Every cached file dvc.lock records of the outputs this clone has (`pulled`); the stages
    whose directory listing no cache or remote has (their files are unknown until they
    rerun); the outputs with cache: false; the outputs left out as never pulled."""
    outputs = lock_stage_outputs(lock.read_text(encoding="utf-8"), str(lock))
    dvc_yaml = lock.with_name("dvc.yaml")
    uncached = uncached_outputs(dvc_yaml.read_text(encoding="utf-8"), str(dvc_yaml))
    files, unknown, unpulled = [], set(), []
    recorded = sorted(o["path"] for outs in outputs.values() for o in outs)
    for stage, outs in outputs.items():
        for out in (o for o in outs if o["path"] not in uncached):
            if not pulled(project, stage, out):
                unpulled.append(out["path"])
                continue
            if not out["md5"].endswith(".dir"):
                files.append(Expected(Path(out["path"]), out["md5"], out["path"], stage))
                continue
            listing = project.object_path(out["md5"])
            if not project.object_ok(out["md5"]):
                if listing.exists():
                    project.remove(listing, f"the listing of {out['path']} is damaged")
                project.dvc("fetch", out["path"])
            if not project.object_ok(out["md5"]):
                print(f"repair: the listing of {out['path']} ({out['md5']}): neither the DVC "
                      "cache nor the remote has a good copy")
                unknown.add(stage)
                continue
            for entry in json.loads(listing.read_text(encoding="utf-8")):
                files.append(Expected(Path(out["path"]) / entry["relpath"], entry["md5"],
                                      out["path"], stage))
    return files, unknown, [path for path in recorded if path in uncached], unpulled


def pulled(project: Project, stage: str, out: dict) -> bool:
    """Whether this clone has the output: binarize's always (verify needs it), any other when
    the workspace or the DVC cache has it; a deleted output whose cache object is still here
    is restored, one in neither place is taken as not pulled (fetching it could be the whole
    raw dataset)."""
    return (stage == VERIFIED_STAGE or os.path.lexists(project.root / out["path"])
            or project.object_path(out["md5"]).exists())


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
