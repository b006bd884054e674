"""A dataset in object storage: ``download.dataset: s3://bucket/folder`` (or ``gs://``), a
folder laid out like a Hub dataset repo.

Its splits and files are what ``datasets.load_dataset`` would take from the same folder: it is
listed once with fsspec, its metadata files (README.md and its ``configs:``,
.huggingface.yaml, dataset_infos.json) are fetched, and datasets' own resolution
(tokbin.resolve) runs on a mirror of it holding those files and an empty stand-in for every
other name, since it decides from names alone. Then the files are copied into data/raw
(materialize: true) or only recorded (false; tokbin.remote reads them where they are).
Credentials come from the environment or the client's usual files (tokbin.remote).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.remote import filesystem, scheme, source_errors

METADATA_FILES = ("README.md", ".huggingface.yaml", "dataset_infos.json")  # datasets reads them


def resolve(url: str, config: str | None, data_files: dict[str, list[str]] | None):
    """datasets' resolution (tokbin.resolve.Resolution) of the folder at `url`."""
    from tokbin.resolve import resolve_files  # imports datasets: the download stage only

    names = list_folder(url)
    mirror = Path(tempfile.mkdtemp(prefix="tokbin-bucket-"))
    try:
        fs = filesystem(scheme(url), versions=False)
        for name in names:
            path = mirror / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name in METADATA_FILES:
                with source_errors(f"{url}/{name}"):
                    path.write_bytes(fs.cat_file(f"{url}/{name}"))
            else:
                path.touch()
        return resolve_files(url, mirror, None, config, data_files)
    finally:
        shutil.rmtree(mirror, ignore_errors=True)


def list_folder(url: str) -> list[str]:
    """Every object under the folder, as paths relative to it, sorted."""
    fs = filesystem(scheme(url), versions=False)
    prefix = url.split("://", 1)[1] + "/"
    with source_errors(url):
        try:
            found = fs.find(url)
        except FileNotFoundError:  # no such bucket: said below, as for an empty folder
            found = []
    names = sorted(path[len(prefix):] for path in found
                   if path.startswith(prefix) and not path.endswith("/"))
    if not names:
        raise TokbinError(f"download.dataset {url}: no objects under it (or no such bucket, "
                          "or no access to list it); check the URL, and this machine's "
                          "credentials for it")
    return names


def copy(url: str, names: list[str], out: Path) -> None:
    """Copies `names` of the folder at `url` into `out`, at their paths (several at once)."""
    fs = filesystem(scheme(url), versions=False)
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
    with source_errors(url):
        fs.get([f"{url}/{name}" for name in names], [str(out / name) for name in names])
