"""Data files where they are: on this machine, or streamed straight from their source
(``download.materialize: false``): a Hub dataset at its commit, or an object store.

`DataFile` names one file for every reader, and `open_binary` (or `arrow_source`, for
pyarrow's readers) opens it, in whichever process or Ray task reads it: a local path as
itself; a URL through fsspec: huggingface_hub's HfFileSystem for ``hf://``, s3fs for
``s3://``, gcsfs for ``gs://``. Credentials and settings are each client's own, from the
environment or its usual files on the machine that reads (HF_TOKEN or `hf auth login`;
AWS_* variables, ~/.aws or an instance role, AWS_ENDPOINT_URL_S3; Google's application
default credentials; fsspec's own config), never from params.yaml.

A streamed file is read exactly as the download stage recorded it (`format.SourceFile`):
- `verify`, before any work: every file's size and checksum or version, from one metadata
  call (an object's HEAD; for the Hub one paths-info call per `HUB_PATHS_PER_CALL` files at
  the commit), must match the record, else a TokbinError names the file and the fix;
- every read is pinned: at the commit sha (a commit's files cannot change), by the recorded
  S3 VersionId or GCS generation, or, in an unversioned S3 bucket, conditionally: the HEAD
  that opens the object must match the record and each range request carries ``If-Match``
  with its ETag, so an object replaced mid-read fails the read (HTTP 412) rather than mix two
  versions. The bytes are not hashed again: TLS and the stores' own checksums cover transfer.
"""
from __future__ import annotations

import importlib.util
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, TypeVar

from tokbin.errors import TokbinError
from tokbin.format import SourceFile

if TYPE_CHECKING:
    from tokbin.format import SourceRecord

T = TypeVar("T")
OBJECT_STORES = {"s3": "s3fs", "gs": "gcsfs"}  # URL scheme -> the fsspec package that reads it
BLOCK_BYTES = 8 << 20        # one range request: few requests per file, bounded memory
METADATA_THREADS = 16        # metadata calls (and footers read) at once
HUB_PATHS_PER_CALL = 1000
RERUN_DOWNLOAD = "`dvc repro --force download`"


@dataclass(frozen=True)
class DataFile:
    path: str  # an absolute local path (workers share no working directory), or a URL
    name: str  # what messages call it: the user's path, not data/raw's copy
    pin: SourceFile | None = None  # a streamed file: what the download stage recorded

    def size(self) -> int:
        return self.pin.size if self.pin is not None else os.path.getsize(self.path)


def record_file(record: SourceRecord, raw_dir: Path, name: str) -> DataFile:
    """Data file `name` of a source.json: its copy in `raw_dir`, or its source, pinned."""
    if record.stream is None:
        return DataFile(str((raw_dir / name).resolve()), record.origin(name))
    return DataFile(f"{record.stream.url}/{name}", record.origin(name),
                    record.stream.files[name])


def scheme(url: str) -> str | None:
    """The URL's scheme when tokbin streams it (hf, s3, gs); None for anything else."""
    head, sep, _ = url.partition("://")
    return head if sep and head in ("hf", *OBJECT_STORES) else None


def require_client(kind: str) -> None:
    """Refuses an object store whose fsspec package this machine lacks."""
    package = OBJECT_STORES.get(kind)
    if package is not None and importlib.util.find_spec(package) is None:
        extra = "requirements-gcs.txt" if kind == "gs" else "requirements.txt"
        raise TokbinError(f"reading {kind}:// needs the {package} package on this machine: "
                          f"pip install -r {extra}")


def filesystem(kind: str, versions: bool = True):
    """The fsspec filesystem for a scheme (one per process: fsspec caches instances)."""
    if kind == "hf":
        from huggingface_hub import HfFileSystem
        return HfFileSystem()
    require_client(kind)
    import fsspec
    return fsspec.filesystem(kind, **({"version_aware": True} if versions else {}))


def identity(details: dict, kind: str) -> SourceFile:
    """What a file is, from its source's metadata (fsspec info, or the Hub's paths-info)."""
    if kind == "hf":
        lfs = details.get("lfs")
        checksum = f"sha256:{lfs['sha256']}" if lfs else f"git-sha1:{details['blob_id']}"
        return SourceFile(int(details["size"]), checksum, None)
    if kind == "s3":
        version = details.get("VersionId")
        return SourceFile(int(details["size"]), f"etag:{details['ETag'].strip(chr(34))}",
                          None if version in (None, "null") else version)
    return SourceFile(int(details["size"]), f"etag:{details['etag']}",
                      str(details["generation"]))


def identities(urls: list[str], versions: list[str | None] | None = None
               ) -> list[SourceFile]:
    """Each URL's file as its source reports it now (at `versions`, where given: an S3
    VersionId or GCS generation), in order: one metadata call per object, or per
    `HUB_PATHS_PER_CALL` files of a Hub commit."""
    if not urls:
        return []
    kinds = {scheme(url) for url in urls}
    if kinds == {"hf"}:
        return _hub_identities(urls)
    kind = kinds.pop()
    fs = filesystem(kind)
    pinned = list(zip(urls, versions or [None] * len(urls)))
    return map_files(lambda item: _object_identity(fs, kind, *item), pinned, remote=True)


def _object_identity(fs, kind: str, url: str, version: str | None) -> SourceFile:
    with source_errors(url):
        fs.invalidate_cache(url)
        if version is None:
            return identity(fs.info(url), kind)
        pin = {"version_id": version} if kind == "s3" else {"generation": version}
        return identity(fs.info(url, **pin), kind)


def _hub_identities(urls: list[str]) -> list[SourceFile]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    from tokbin.hub import hub_errors
    fs = filesystem("hf")
    resolved = []
    for url in urls:
        with source_errors(url):
            resolved.append(fs.resolve_path(url))
    found, api = {}, HfApi()
    for start in range(0, len(urls), HUB_PATHS_PER_CALL):
        chunk = resolved[start:start + HUB_PATHS_PER_CALL]
        for (repo, sha) in dict.fromkeys((p.repo_id, p.revision) for p in chunk):
            paths = [p.path_in_repo for p in chunk if (p.repo_id, p.revision) == (repo, sha)]
            with hub_errors(repo, sha):
                try:
                    infos = api.get_paths_info(repo, paths, repo_type="dataset", revision=sha)
                except RevisionNotFoundError:
                    raise _gone(f"hf://datasets/{repo}@{sha}", "that commit is no longer on "
                                "the Hub: its history was rewritten") from None
            found.update({(repo, sha, i.path): identity(
                {"size": i.size, "blob_id": i.blob_id, "lfs": i.lfs}, "hf")
                for i in infos if isinstance(i, RepoFile)})
    keys = [(p.repo_id, p.revision, p.path_in_repo) for p in resolved]
    missing = [url for url, key in zip(urls, keys) if key not in found]
    if missing:
        raise _gone(missing[0], f"not in that commit; {len(missing)} file(s) missing")
    return [found[key] for key in keys]


def verify(files: list[DataFile]) -> None:
    """Refuses, before any work, a streamed file that is no longer what source.json records:
    its recorded version (or, unversioned, its current state) must match the record."""
    files = [f for f in dict.fromkeys(files) if f.pin is not None]
    now = identities([f.path for f in files], [f.pin.version for f in files])
    for file, found in zip(files, now):
        if found != file.pin:
            raise _changed(file, found)


def map_files(function: Callable[[object], T], items: list, remote: bool | None = None
              ) -> list[T]:
    """`function` of each item, in order: in threads when the items are remote files (each
    call then waits on the network), else one after the other. The first error, in order,
    is raised."""
    if remote is None:
        remote = any(getattr(item, "pin", None) is not None for item in items)
    if not remote or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(METADATA_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


# --- reading -------------------------------------------------------------------------------

@contextmanager
def open_binary(file: DataFile) -> Iterator[BinaryIO]:
    """The file's bytes, seekable: the local file, or its source pinned as recorded."""
    if file.pin is None:
        with open(file.path, "rb") as f:
            yield f
        return
    kind = scheme(file.path)
    fs = filesystem(kind)
    with source_errors(file.name):
        opened = _open_pinned(fs, kind, file)
    with opened as f, io.BufferedReader(_SourceReads(f, file)) as reads:
        yield reads


@contextmanager
def arrow_source(file: DataFile) -> Iterator[str | BinaryIO]:
    """What pyarrow opens: a local file's path (its own reader), else `open_binary`'s file."""
    if file.pin is None:
        yield file.path
        return
    with open_binary(file) as f:
        yield f


def _open_pinned(fs, kind: str, file: DataFile):
    pin = file.pin
    if kind == "hf":  # at the commit sha in the URL: no metadata call per open
        return fs.open(file.path, "rb", block_size=BLOCK_BYTES, size=pin.size)
    if kind == "gs":
        f = fs.open(file.path, "rb", block_size=BLOCK_BYTES, generation=pin.version)
    else:
        fs.invalidate_cache(file.path)  # s3fs's HEAD, fresh, sets the If-Match of every read
        f = fs.open(file.path, "rb", block_size=BLOCK_BYTES, version_id=pin.version)
    now = identity(f.details, kind)
    if now != pin:
        f.close()
        raise _changed(file, now)
    return f


class _SourceReads(io.RawIOBase):
    """A streamed file's reads, with the source's failures (gone, replaced mid-read,
    unreachable) raised as TokbinErrors: the decoders above then never take them for
    damaged data."""

    def __init__(self, f, file: DataFile):
        self._f, self._file = f, file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with source_errors(self._file.name, reading=True):
            data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


# --- errors --------------------------------------------------------------------------------

@contextmanager
def source_errors(name: str, reading: bool = False) -> Iterator[None]:
    """What a source's calls raise (they only fetch: never a decoder's complaint) as
    TokbinErrors that say what to do."""
    try:
        yield
    except TokbinError:
        raise
    except FileNotFoundError as e:
        raise _gone(name, str(e) or "not found") from None
    except Exception as e:
        kind = type(e).__name__
        if kind == "FileExpired":  # s3fs: the If-Match of a read failed
            raise TokbinError(f"{name} was replaced at its source while it was read; rerun "
                              f"{RERUN_DOWNLOAD} to record the new version, then tokenize "
                              "again") from None
        if isinstance(e, PermissionError) or "Credentials" in kind or "Gated" in kind:
            raise TokbinError(f"{name}: its source refused access ({kind}: {e}); give every "
                              "machine that reads it credentials: AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws (s3://), "
                              "GOOGLE_APPLICATION_CREDENTIALS (gs://), HF_TOKEN (the Hub); "
                              "never in params.yaml") from None
        what = "reading it from" if reading else "reaching"
        raise TokbinError(f"{name}: {what} its source failed ({kind}: {e}); check this "
                          "machine's network and the store's endpoint, then rerun") from None


def _gone(name: str, detail: str) -> TokbinError:
    return TokbinError(f"{name} is no longer at its source as source.json records it "
                       f"({detail}): the dataset changed since the download stage; rerun "
                       f"{RERUN_DOWNLOAD} to record its current files")


def _changed(file: DataFile, now: SourceFile) -> TokbinError:
    def state(f: SourceFile) -> str:
        return f"{f.size} bytes, {f.checksum}" + (f", version {f.version}" if f.version else "")
    return TokbinError(f"{file.name} changed at its source since the download stage recorded "
                       f"it (recorded: {state(file.pin)}; now: {state(now)}); tokbin reads "
                       f"only the recorded data: rerun {RERUN_DOWNLOAD} to record the new "
                       "version (source.json and the bins then change)")
