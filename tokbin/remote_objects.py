"""A DVC remote's copy of a cached object, and how to restore it when it is damaged.

`dvc push` does not restore a damaged remote copy (DVC 3): it uploads only what the remote
lacks, asking the remote whether a file exists and never re-hashing it, and it takes every
file of a directory output as present when the remote has the directory's listing
(``<md5>.dir``; dvc_data's `_indexed_dir_hashes`, which also records those files in the
remote's index in DVC's site cache dir). data/tokens/<split>.bin is the same object as
data/<split>.bin, so the listing of data/tokens keeps `dvc push` from re-uploading a bin
that a failed `dvc pull` dropped (a local remote removes an object whose md5 fails the check).
Deleting the damaged object and every remote listing naming it makes the next `dvc push`
check and upload them again (a missing listing also clears that index).
"""
from __future__ import annotations

import json
import shlex


def listings_naming(odb, md5: str, outputs: dict[str, dict]) -> list[str]:
    """The .dir md5s of `outputs` ({path: {"md5", ...}}, from dvc.lock) whose listing is on the
    remote `odb` and has a file with `md5`."""
    naming = []
    for out in outputs.values():
        dir_md5 = out.get("md5") or ""
        if not dir_md5.endswith(".dir"):
            continue
        try:
            entries = json.loads(odb.fs.cat_file(odb.oid_to_path(dir_md5)))
        except (FileNotFoundError, ValueError):  # not on the remote, or damaged: push re-checks it
            continue
        if any(entry.get("md5") == md5 for entry in entries):
            naming.append(dir_md5)
    return naming


def damaged_remote_fix(odb, md5: str, outputs: dict[str, dict]) -> str:
    """The fix, in the user's terms: what to delete from the remote (for a local remote, the
    `rm` that does it, each path quoted for the shell), then `dvc push` from a clone with good
    data."""
    doomed = [odb.fs.unstrip_protocol(odb.oid_to_path(oid))
              for oid in (md5, *listings_naming(odb, md5, outputs))]
    delete = (f"run `rm -f {' '.join(shlex.quote(path) for path in doomed)}` (the remote's copy "
              "and each directory listing naming it)" if odb.fs.protocol == "local" else
              f"delete {', '.join(doomed)} from the remote (those still there)")
    return (f"a plain `dvc push` skips it while the remote has it or a directory listing naming "
            f"it; in a clone where `python -m tokbin verify` passes, {delete}, then `dvc push`")


def remote_odb(repo, remote: str | None = None):
    """The DVC remote `remote` (default: the repo's default) as an object database, or None
    when the repo has none (or DVC cannot open it: the commands that need it say why)."""
    from dvc.exceptions import DvcException
    try:
        return repo.cloud.get_remote_odb(remote)
    except DvcException:  # none configured, or its client (dvc-s3 ...) is not installed
        return None


def missing_but_listed(odb, md5: str, outputs: dict[str, dict]) -> bool:
    """Whether the remote lacks `md5` though a listing there names it: a damaged copy a `dvc
    pull` dropped, which a plain `dvc push` will not upload again."""
    if odb is None:
        return False
    try:
        return not odb.fs.exists(odb.oid_to_path(md5)) and bool(listings_naming(odb, md5, outputs))
    except OSError:  # an unreachable remote: the caller's own message names that
        return False


def bad_on_remote(odb, md5: str, outputs: dict[str, dict]) -> bool:
    """Whether the remote's copy of `md5`, which gave no good copy, is damaged: there, or
    dropped as damaged while a listing still names it (not simply never pushed)."""
    if odb is None:
        return False
    try:
        return odb.fs.exists(odb.oid_to_path(md5)) or missing_but_listed(odb, md5, outputs)
    except OSError:
        return False
