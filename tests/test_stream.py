"""download.materialize: false: data/raw holds only source.json, which records every data file
(size, the source's checksum, the object's version), and tokenize reads each file straight from
its source at that commit or version: a Hub dataset (the session's fake Hub) or an s3:// or
gs:// folder laid out like one (moto's S3 server, gcp-storage-emulator's GCS server). The bins
are byte for byte those of the materialized path; a file that changed at its source is
refused, never silently read; what cannot be streamed is refused with the fix. (Ray's tasks
streaming from two nodes: tests/test_ray.py.)
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FAKE_HUB, ROOT, make_project, run
from support import shapes
from support.fakehub import tree_of
from support.gcs import BUCKET
from support.s3 import CREDENTIALS
from tokbin import remote
from tokbin.errors import TokbinError
from tokbin.format import read_source
from tokbin.remote import DataFile, open_binary
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

GPT4 = dict(data_files={"train": ["TinyStoriesV2-GPT4-train.txt"],
                        "validation": ["TinyStoriesV2-GPT4-valid.txt"]},
            splits=["train", "validation"], separator=shapes.SEPARATOR)
# (id, shape, where, arguments)
CASES = [("hub-parquet-subset", "fineweb_edu", "hub",
          dict(config="sample-10BT", splits=["train"])),
         ("hub-csv-in-git", "csv_valid", "hub", dict(splits=["train", "validation"])),
         ("s3-json-gz-configs", "c4", "s3", dict(splits=["train", "validation"])),
         ("s3-txt-separator", "gpt4_txt", "s3", GPT4),
         ("gs-json-gz-configs", "c4", "gs", dict(splits=["train", "validation"])),
         ("gs-parquet-subset", "fineweb_edu", "gs", dict(config="sample-10BT", splits=["train"]))]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every repo shape, written once and served by the fake Hub as stream/<shape>."""
    folders = shapes.write_all(tmp_path_factory.mktemp("shapes"))
    for name, folder in folders.items():
        FAKE_HUB.add_commit(f"stream/{name}", tree_of(folder))
    return folders


@pytest.fixture(scope="module")
def bucket(moto_s3, folders) -> str:
    """s3://stream: every shape under <shape>/ (an unversioned bucket)."""
    moto_s3.bucket("stream")
    for name, folder in folders.items():
        moto_s3.put_folder(folder, f"s3://stream/{name}")
    return "s3://stream"


@pytest.fixture(scope="module")
def gs_bucket(fake_gcs, folders) -> str:
    """gs://stream: every shape under <shape>/ (the emulator keeps no old generations)."""
    for name, folder in folders.items():
        fake_gcs.put_folder(folder, f"gs://{BUCKET}/{name}")
    return f"gs://{BUCKET}"


def dataset_of(shape: str, where: str, buckets: dict[str, str]) -> str:
    return f"stream/{shape}" if where == "hub" else f"{buckets[where]}/{shape}"


def download(tmp_path: Path, name: str, dataset: str, copy: bool, splits, config=None,
             data_files=None, **_):
    raw = tmp_path / name
    raw.mkdir()
    return raw, materialize(dataset, "main", splits, "text", raw, config=config,
                            data_files=data_files, copy=copy)


def tokenize(raw: Path, out: Path, splits, separator=None, holdout=None, **_) -> dict:
    """Tokenizes the splits; every output file's bytes by name."""
    tokenize_dataset(raw, out, splits, "text", "gpt2", "append", workers=2,
                     separator=separator, holdout=holdout)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("shape, where, arguments", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_streamed_bins_are_byte_identical_to_materialized_ones_and_raw_holds_only_source_json(
        folders, bucket, s3_env, gs_bucket, gcs_env, tmp_path, shape, where, arguments):
    dataset = dataset_of(shape, where, {"s3": bucket, "gs": gs_bucket})
    copied, copy_record = download(tmp_path, "copied", dataset, True, **arguments)
    streamed, record = download(tmp_path, "streamed", dataset, False, **arguments)
    assert files_under(streamed) == ["source.json"]
    assert record == read_source(streamed)
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in (streamed / "source.json").read_text()
    assert (record.config, record.files) == (copy_record.config, copy_record.files)
    names = [n for split in record.files.values() for n in split]
    assert files_under(copied) == sorted(["source.json", *names])
    assert sorted(record.stream.files) == sorted(names)
    if where == "hub":
        assert record.stream.url == f"hf://datasets/{dataset}@{record.sha}"
    else:  # the same files datasets' own resolution takes from the local folder
        _, local = download(tmp_path, "local", str(folders[shape]), True, **arguments)
        assert (local.config, local.files) == (record.config, record.files)
        assert record.stream.url == dataset and record.sha is None
    for name, entry in record.stream.files.items():
        data = (folders[shape] / name).read_bytes()
        assert entry.size == len(data)
        if where == "s3":  # a single-part upload's ETag is its md5
            assert (entry.checksum, entry.version) == (f"etag:{hashlib.md5(data).hexdigest()}",
                                                       None)
        elif where == "gs":  # the object's ETag and generation, as GCS reports them
            details = gcs_env.filesystem().info(f"{dataset}/{name}")
            assert (entry.checksum, entry.version) == (f"etag:{details['etag']}",
                                                       str(details["generation"]))
        elif name.endswith(".parquet"):  # stored in LFS: the Hub's sha256 of the content
            assert entry.checksum == f"sha256:{hashlib.sha256(data).hexdigest()}"
        else:  # kept in git: its blob id
            assert entry.checksum == f"git-sha1:{hashlib.sha1(data).hexdigest()}"
    assert tokenize(streamed, tmp_path / "from-source", **arguments) == \
        tokenize(copied, tmp_path / "from-raw", **arguments)


@pytest.fixture(params=["s3", "gs"])
def streamed_c4(request, folders, bucket, gs_bucket, tmp_path):
    """(the store, raw, its record): c4 in a folder of the test's own (it may change it) in
    each object store, downloaded with materialize: false."""
    store = request.getfixturevalue({"s3": "s3_env", "gs": "gcs_env"}[request.param])
    root = {"s3": bucket, "gs": gs_bucket}[request.param]
    url = store.put_folder(folders["c4"], f"{root}/{tmp_path.name}/c4")
    return store, *download(tmp_path, "raw", url, False, ["train", "validation"])


def test_an_object_changed_after_download_is_refused_before_any_output(streamed_c4, tmp_path):
    store, raw, record = streamed_c4
    changed = record.files["validation"][0]
    url = f"{record.stream.url}/{changed}"
    store.put(url, store.get(url))  # the same bytes again
    if url.startswith("s3://"):  # the same ETag: still accepted
        tokenize(raw, tmp_path / "same", ["train", "validation"])
        again, _ = download(tmp_path, "again", record.dataset, False, ["train", "validation"])
        assert (again / "source.json").read_bytes() == (raw / "source.json").read_bytes()
    else:  # a new generation: the recorded one is no longer what GCS serves
        with pytest.raises(TokbinError, match=rf"{changed} changed at its source.*version \d+; "
                                              r"now: \d+ bytes, etag:\S+, version \d+"):
            tokenize(raw, tmp_path / "tokens", ["train", "validation"])
    store.put(url, b'{"text": "another document"}\n')
    with pytest.raises(TokbinError, match=rf"{changed} changed at its source since the download "
                                          r"stage recorded it \(recorded: \d+ bytes, etag:[^;]+; "
                                          r"now: \d+ bytes, etag:[^)]+\).*dvc repro --force "
                                          "download"):
        tokenize(raw, tmp_path / "tokens", ["train", "validation"])
    assert not (tmp_path / "tokens").exists()
    store.delete(url)
    with pytest.raises(TokbinError, match=rf"{changed} is no longer at its source"):
        tokenize(raw, tmp_path / "tokens", ["train", "validation"])
    assert not (tmp_path / "tokens").exists()


def test_an_object_replaced_while_it_is_read_fails_the_read(bucket, s3_env, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(remote, "BLOCK_BYTES", 1024)  # a range request per few KB read
    url = f"{bucket}/{tmp_path.name}/big.jsonl"
    data = b"".join(b'{"text": "line %d"}\n' % i for i in range(4000))  # 80 KB: many reads
    s3_env.put(url, data)
    [pin] = remote.identities([url])
    with open_binary(DataFile(url, "big.jsonl", pin)) as f:
        assert f.read(8) == data[:8]
        s3_env.put(url, data.replace(b"line", b"LINE"))
        with pytest.raises(TokbinError, match=r"big.jsonl was replaced at its source while it "
                                              "was read"):
            f.read()


def test_a_versioned_bucket_is_read_at_the_recorded_version(folders, moto_s3, s3_env, tmp_path):
    moto_s3.bucket("versioned", versioned=True)
    url = moto_s3.put_folder(folders["c4"], "s3://versioned/c4")
    raw, record = download(tmp_path, "raw", url, False, ["train", "validation"])
    before = tokenize(raw, tmp_path / "before", ["train", "validation"])
    name = record.files["train"][0]
    assert record.stream.files[name].version  # the VersionId of what was downloaded
    moto_s3.put(f"{url}/{name}", b"newer data that tokenize must not read")
    assert tokenize(raw, tmp_path / "after", ["train", "validation"]) == before


def test_a_hub_file_that_no_longer_matches_its_commit_is_refused(folders, tmp_path):
    FAKE_HUB.add_commit("stream/moving", tree_of(folders["fineweb_edu"]))
    raw, record = download(tmp_path, "raw", "stream/moving", False, ["train"],
                           config="sample-10BT")
    name = record.files["train"][1]
    files = FAKE_HUB.repos["stream/moving"][record.sha]
    files[name] = files[name] + b"\0"  # what a Hub commit can never do: the check still holds
    with pytest.raises(TokbinError, match=rf"{name} changed at its source.*recorded: \d+ bytes, "
                                          r"sha256:[0-9a-f]{64}; now"):
        tokenize(raw, tmp_path / "tokens", ["train"])
    del FAKE_HUB.repos["stream/moving"][record.sha]  # the commit is gone (history squashed)
    with pytest.raises(TokbinError, match=rf"hf://datasets/stream/moving@{record.sha}.* is no "
                                          r"longer at its source.*dvc repro --force download"):
        tokenize(raw, tmp_path / "tokens", ["train"])
    assert not (tmp_path / "tokens").exists()


def test_without_credentials_the_error_says_where_they_come_from(bucket, s3_env, tmp_path,
                                                                 monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(TokbinError, match=r"s3://stream/c4.*AWS_ACCESS_KEY_ID.*never in "
                                          r"params.yaml"):
        download(tmp_path, "raw", f"{bucket}/c4", False, ["train"])


@pytest.mark.parametrize("dataset, revision, copy, fragment", [
    ("./sample", "main", False, r"materialize: false streams .* ./sample is a local directory: "
                                r"set download.materialize: true"),
    ("s3://stream/c4", "v2", False, r"download.revision \(v2\) names a Hub revision.*set "
                                    "download.revision: main"),
    ("s3://stream", "main", True, r"is a whole bucket; give the folder"),
    ("s3://", "main", True, r"names no bucket; give the folder .* \(s3://<bucket>/<folder>\)"),
    ("hf://datasets/stream/c4", "main", False, r"give a Hub dataset as its id \(stream/c4\)"),
    ("az://container/c4", "main", False, r"tokbin reads s3://, gs:// folders"),
    ("s3://stream/no-such-folder", "main", False, r"s3://stream/no-such-folder: no objects "
                                               "under it"),
    ("gs://bucket/c4", "main", False, r"reading gs:// needs the gcsfs package on this machine: "
                                      "pip install -r requirements-gcs.txt"),
], ids=["local-dir", "revision", "whole-bucket", "no-bucket", "hf-url", "azure", "empty-folder",
        "no-gcsfs"])
def test_what_cannot_be_streamed_is_refused_with_the_fix(bucket, s3_env, tmp_path, monkeypatch,
                                                         dataset, revision, copy, fragment):
    monkeypatch.chdir(ROOT)
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # `import gcsfs` fails, as without it
    with pytest.raises(TokbinError, match=fragment):
        materialize(dataset, revision, ["train"], "text", tmp_path, copy=copy)
    assert list(tmp_path.iterdir()) == []


def test_source_json_without_a_stream_is_the_materialized_one_byte_for_byte(streamed_c4,
                                                                            tmp_path):
    _, raw, record = streamed_c4
    body = json.loads((raw / "source.json").read_text())
    del body["stream"]  # what a materialize: true download writes: the fields it always had
    copied, _ = download(tmp_path, "copied", record.dataset, True, ["train", "validation"])
    assert json.loads((copied / "source.json").read_text()) == body
    body = json.loads((raw / "source.json").read_text())
    del body["stream"]["files"][record.files["train"][0]]
    (raw / "source.json").write_text(json.dumps(body))
    with pytest.raises(TokbinError, match=r"stream.files must list exactly the data files"):
        read_source(raw)


WORKER_PROCESSES = """
import sys
from pathlib import Path
from tokbin import executors
from tokbin.tokenize import tokenize_dataset
executors.PROCESSES_FROM_BYTES = 0  # worker processes even for a tiny dataset
started = executors.ProcessExecutor.__init__
executors.ProcessExecutor.__init__ = lambda *a: print("worker processes") or started(*a)
tokenize_dataset(Path(sys.argv[1]), Path(sys.argv[2]), ["train", "validation"], "text",
                 "gpt2", "append", workers=2)
"""


def test_worker_processes_stream_too_with_the_same_bins(folders, streamed_c4, tmp_path):
    _, raw, _ = streamed_c4
    # A new interpreter: its worker processes start from this environment (the store's endpoint).
    ran = subprocess.run([sys.executable, "-c", WORKER_PROCESSES, str(raw),
                          str(tmp_path / "procs")], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={**os.environ, "TOKBIN_WORKERS": "2"})
    assert "worker processes" in ran.stdout
    threads = tokenize(raw, tmp_path / "threads", ["train", "validation"])
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "procs").iterdir())} == threads


def test_dvc_repro_with_materialize_false_tracks_only_the_manifest(bucket, s3_env, tmp_path):
    project = make_project(tmp_path / "project", download__dataset=f"{bucket}/c4",
                           download__materialize=False)
    run(["dvc", "repro"], project)
    assert files_under(project / "data" / "raw") == ["source.json"]
    download_lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["download"]
    assert download_lock["params"]["params.yaml"]["download.materialize"] is False
    assert [(out["path"], out["nfiles"]) for out in download_lock["outs"]] == [("data/raw", 1)]
    assert (project / "data" / "train.bin").stat().st_size > 0
    assert run(["dvc", "status"], project).stdout.strip() == \
        "Data and pipelines are up to date."
