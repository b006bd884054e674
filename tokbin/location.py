"""Where download.dataset is: a local directory, an object-storage folder or a Hub dataset id,
decided offline and without datasets (the check stage and `tokbin set` ask it first)."""
from __future__ import annotations

import re
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.remote import OBJECT_STORES, require_client, scheme


def folder_url(dataset: str) -> str | None:
    """`dataset` as the URL of an object-storage folder (no trailing slash), or None when it
    is not one (a Hub id or a local path)."""
    kind = scheme(dataset)
    if kind is None:
        if "://" in dataset:
            raise TokbinError(f"download.dataset {dataset!r}: tokbin reads "
                              f"{', '.join(s + '://' for s in OBJECT_STORES)} folders, Hub "
                              "dataset ids (owner/name) and local directories")
        return None
    if kind == "hf":
        raise TokbinError(f"download.dataset {dataset!r}: give a Hub dataset as its id "
                          f"({dataset.removeprefix('hf://datasets/').split('@')[0]}) and its "
                          "revision in download.revision")
    kind_, _, path = dataset.partition("://")
    if not path.strip("/"):
        raise TokbinError(f"download.dataset {dataset!r} names no bucket; give the folder that "
                          f"holds the dataset ({kind_}://<bucket>/<folder>)")
    url = dataset.rstrip("/")
    if "/" not in url.split("://", 1)[1]:
        raise TokbinError(f"download.dataset {dataset!r} is a whole bucket; give the folder "
                          f"that holds the dataset ({url}/<folder>)")
    return url


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name


def local_root(dataset: str) -> Path | None:
    """The local directory `dataset` names, or None for a Hub dataset id.

    A path that exists, or starts with /, ./, ../ or ~, is local; so is one that cannot be a
    Hub id (which is owner/name) or whose first part is a local folder: a mistyped local
    path is reported as one, not looked up on the Hub."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise TokbinError(f"download.dataset {dataset!r} is a file, not a directory: give the "
                          "directory that holds it (and name the file in download.data_files)")
    first = Path(dataset.split("/", 1)[0]).expanduser()
    if dataset.startswith(("/", "./", "../", "~")) or not HUB_ID.fullmatch(dataset) \
            or first.is_dir():
        raise TokbinError(f"download.dataset {dataset!r}: {str(path)!r} is not a directory "
                          f"({path.absolute()} does not exist): give a local directory laid out "
                          "like a Hub dataset repo, or a Hub dataset id such as "
                          "roneneldan/TinyStories (owner/name)")
    return None


def dataset_location(dataset: str, revision: str, copy: bool = True
                     ) -> tuple[str | None, Path | None]:
    """Where `dataset` is: (its object-storage folder's URL, None), (None, its local
    directory), or (None, None) for a Hub dataset id. What cannot be read as asked is refused
    here, with no network call (the check stage runs it before DVC deletes anything)."""
    bucket = folder_url(dataset)
    root = None if bucket else local_root(dataset)
    if root is not None and not copy:
        raise TokbinError(f"download.materialize: false streams a dataset from the Hub or "
                          f"object storage, but {dataset} is a local directory: set "
                          "download.materialize: true (it is copied into data/raw), or put it "
                          "in a bucket (download.dataset: s3://bucket/folder)")
    if bucket:
        if revision != "main":
            raise TokbinError(f"download.revision ({revision}) names a Hub revision, but "
                              f"{dataset} is an object-storage folder: set download.revision: "
                              "main (each object's version or ETag is recorded in "
                              "data/raw/source.json)")
        require_client(scheme(bucket))
    return bucket, root
