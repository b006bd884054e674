"""Durable files: outputs that appear whole or not at all, and what makes them reach the disk.

A writer works on a temporary beside its final path (`atomic_path`) and renames it into place
once everything is fsynced, so a reader sees no file or a complete one; a temporary left by a
killed writer is removed by the next stage run (`remove_stale_temps`, from tokbin.stage). A
full disk is reported as what it is, with the space needed and the space free.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from tokbin.errors import TokbinError

TEMP_MARKER = ".tmp-"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/tokbin (~/.cache/tokbin): files that every project on this machine reuses."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tokbin"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `final` (file or folder); renames it into place on success.

    On any error the temporary is removed and `final` is untouched, so readers never see a
    partial output. A temporary left by a killed process is removed by `remove_stale_temps`.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMP_MARKER}{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.is_dir() and not final.is_symlink():
            _remove(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        written = _tree_bytes(tmp)
        _remove(tmp)  # first, so the free space reported below is what a rerun will have
        raise disk_full_error(final, written) from None
    finally:
        _remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def disk_full_error(final: Path, written: int) -> TokbinError:
    free = shutil.disk_usage(final.parent).free
    return TokbinError(f"disk full while writing {final}: it needs more than the "
                       f"{written / 1e6:.1f} MB written before the disk filled and only "
                       f"{free / 1e6:.1f} MB are free (the partial output was removed); free "
                       f"space on that disk or move {final.parent} to a bigger one, then rerun "
                       "`dvc repro`")


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Removes temporaries left in `folder` by writers that are no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name, _, pid = entry.name.rpartition(TEMP_MARKER)
        if name.startswith(".") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove(entry)


class Writeback:
    """fdatasyncs an open file on a helper thread every `every_bytes` written, so the disk
    writes while the writer goes on, and the final fsync waits for the last few megabytes
    instead of the whole file. A write error the kernel reports there is raised by the writer
    (the kernel reports it only once)."""

    def __init__(self, file: BinaryIO, every_bytes: int):
        self.file, self.every_bytes = file, every_bytes
        self._unsynced = 0
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def wrote(self, nbytes: int) -> None:
        self._unsynced += nbytes
        if self._unsynced < self.every_bytes:
            return
        if self._thread is not None and self._thread.is_alive():
            return  # the running fdatasync is still busy; the next one will cover these bytes
        self._raise_error()
        self.file.flush()
        self._unsynced = 0
        self._thread = threading.Thread(target=self._fdatasync, daemon=True)
        self._thread.start()

    def _fdatasync(self) -> None:
        try:
            os.fdatasync(self.file.fileno())
        except OSError as e:
            self._error = e

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self._raise_error()


def copy_into(source: BinaryIO, out: BinaryIO, size: int) -> None:
    """Appends the next `size` bytes of the open file `source` to the open file `out`, by a
    copy inside the kernel where it can."""
    out.flush()
    start = source.tell()
    copy = getattr(os, "copy_file_range", None)
    done = 0
    while done < size:
        try:
            if copy is None:
                raise OSError(errno.ENOSYS, "no copy_file_range")
            copied = copy(source.fileno(), out.fileno(), size - done, start + done)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            source.seek(start + done)
            shutil.copyfileobj(source, out, 8 << 20)
            out.flush()
            copied = size - done
        if copied == 0:
            raise TokbinError(f"{source.name} ended early; rerun")
        done += copied
    out.seek(0, os.SEEK_END)  # the buffered file learns where the kernel wrote


def _tree_bytes(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed writer stays a zombie until its parent reaps it (init may take seconds): it
    answers kill(pid, 0) but will never finish its temporary."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS) or already gone
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_tree(path: Path) -> None:
    paths = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.is_dir():
        for d in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
