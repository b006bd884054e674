"""tokenize.executor: ray, against a real Ray cluster of two nodes on this machine (started by
this module, each node in its own working directory, tokbin shipped to them as on a real
cluster): the same bytes as executor local whatever order tasks finish in, a killed task
retried by Ray, data errors surfacing as TokbinError, RAY_ADDRESS honoured, and tasks on both
nodes streaming their inputs from S3 or the Hub (download.materialize: false) while the
driver holds no data file at all."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FAKE_HUB, make_project, run, stage_command
from support.fakehub import tree_of
from tokbin import ray_executor
from tokbin.errors import TokbinError
from tokbin.format import Holdout
from tokbin.readers import DataFile, Reading, WorkUnit, work_units
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

ray_executor.keep_local_ray_on_loopback()  # the test cluster listens on 127.0.0.1 only
ray = pytest.importorskip("ray")

TRAIN = [["Once upon a time, there was a cat.", "", "Tom said: <|endoftext|> is text here.",
          "Ünïcödé “quotes” — 日本語の物語 🐈‍⬛👍🏽\tand tabs\r\nCRLF", "a" * 3000]
         + [f"Story {i}: the dog ran {i} times." for i in range(60)],
         [f"Second file, story {i}." for i in range(30)]]
VALIDATION = ["The end.", "Another short story about a dog.", ""]
NODES = ("head", "worker")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto_s3):
    """One Ray cluster for the module: a head and a worker node of 1 CPU each, each started in
    its own working directory (its tasks run there), with a small object store. The nodes'
    environment reaches the session's S3 server and fake Hub, as a real node's would reach
    its stores; tokbin reaches them with the job (Ray py_modules), as on a real cluster."""
    from ray.cluster_utils import Cluster
    nodes = tmp_path_factory.mktemp("ray-nodes")
    with pytest.MonkeyPatch.context() as env:
        for key, value in moto_s3.env.items():
            env.setenv(key, value)
        cluster = Cluster()
        for name in NODES:
            (nodes / name).mkdir()
            env.chdir(nodes / name)  # a node's processes start in the directory it starts in
            cluster.add_node(num_cpus=1, object_store_memory=80 << 20, include_dashboard=False)
    ray.init(address=cluster.address,
             runtime_env={"py_modules": [str(ray_executor.TOKBIN_PACKAGE)]})
    yield cluster.address, nodes
    ray.shutdown()
    cluster.shutdown()


def write_dataset(folder: Path) -> Path:
    """Train in 2 parquet files of 7-row row groups, validation in one, in Hub layout."""
    (folder / "data").mkdir(parents=True)
    for i, texts in enumerate(TRAIN):
        pq.write_table(pa.table({"text": texts}),
                       folder / "data" / f"train-0000{i}-of-00002.parquet", row_group_size=7)
    pq.write_table(pa.table({"text": VALIDATION}),
                   folder / "data" / "validation-00000-of-00001.parquet")
    return folder


def download(dataset: str, raw: Path, copy: bool = True) -> Path:
    raw.mkdir()
    materialize(dataset, "main", ["train", "validation"], "text", raw, copy=copy)
    return raw


@pytest.fixture
def raw(tmp_path) -> Path:
    """A downloaded dataset (`write_dataset`)."""
    return download(str(write_dataset(tmp_path / "dataset")), tmp_path / "raw")


@pytest.fixture
def task_per_row_group(monkeypatch):
    """Every row group its own Ray task, so there are many tasks to finish out of order."""
    monkeypatch.setattr(ray_executor, "TASK_BYTES", 1)


def tokenize(raw: Path, out: Path, executor: str, splits=("train", "validation"),
             holdout=None) -> dict[str, bytes]:
    """Tokenizes the splits; returns every output file's bytes by name."""
    tokenize_dataset(raw, out, list(splits), "text", "gpt2", "append", workers=2,
                     executor=executor, holdout=holdout)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_work_units_cover_every_row_group_once_in_order(raw):
    files = [DataFile(str(p), p.name) for p in sorted((raw / "data").glob("train-*.parquet"))]
    reading = Reading("parquet", "text")
    units = work_units(files, reading, unit_bytes=1)
    assert [(s.file.name, s.row_groups) for s in units] == (
        [(files[0].name, (g,)) for g in range(10)] + [(files[1].name, (g,)) for g in range(5)])
    assert work_units(files, reading, unit_bytes=1 << 30) == [
        WorkUnit(files[0], reading, tuple(range(10))), WorkUnit(files[1], reading, tuple(range(5)))]


def test_ray_output_is_byte_identical_to_local_whatever_order_tasks_finish_in(
        cluster, raw, tmp_path, monkeypatch, task_per_row_group):
    encode = ray_executor._encode_unit

    def early_units_finish_last(unit, *args):
        if unit.row_groups is not None:
            time.sleep(0.5 if unit.row_groups[0] % 4 == 0 else 0)
        return encode(unit, *args)

    monkeypatch.setattr(ray_executor, "_encode_unit", early_units_finish_last)
    local = tokenize(raw, tmp_path / "local", "local")
    assert tokenize(raw, tmp_path / "ray", "ray") == local
    assert set(local) == {"meta.json", "train.bin", "train.doclens", "validation.bin",
                          "validation.doclens"}


def test_a_killed_task_is_retried_by_ray_and_the_output_is_still_identical(
        cluster, raw, tmp_path, monkeypatch, task_per_row_group):
    encode = ray_executor._encode_unit
    marker = tmp_path / "killed-once"

    def killed_on_first_attempt(unit, *args):
        if unit.row_groups == (3,) and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task
        return encode(unit, *args)

    monkeypatch.setattr(ray_executor, "_encode_unit", killed_on_first_attempt)
    assert tokenize(raw, tmp_path / "ray", "ray") == tokenize(raw, tmp_path / "local", "local")
    assert marker.exists()


def test_a_task_that_dies_on_every_attempt_is_a_tokbin_error_and_no_output(
        cluster, raw, tmp_path, monkeypatch, task_per_row_group):
    monkeypatch.setattr(ray_executor, "TASK_RETRIES", 1)
    encode = ray_executor._encode_unit

    def always_killed(unit, *args):
        if unit.row_groups == (2,):
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(unit, *args)

    monkeypatch.setattr(ray_executor, "_encode_unit", always_killed)
    with pytest.raises(TokbinError, match=r"row groups 2-2\) failed 2 times"):
        tokenize(raw, tmp_path / "ray", "ray")
    assert not (tmp_path / "ray").exists()


def test_a_holdout_gives_the_same_bins_on_ray_as_locally(cluster, raw, tmp_path,
                                                         task_per_row_group):
    holdout = Holdout(0.3, 11)
    local = tokenize(raw, tmp_path / "local", "local", ["train"], holdout)
    assert tokenize(raw, tmp_path / "ray", "ray", ["train"], holdout) == local
    assert {"train.bin", "validation.bin"} <= set(local) and len(local["validation.bin"]) > 0


def test_a_data_error_in_a_task_surfaces_as_the_tokbin_error_and_no_output(
        cluster, raw, tmp_path):
    validation = raw / "data" / "validation-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["fine", None]}), validation)  # a null, after download
    with pytest.raises(TokbinError, match=r"validation-00000-of-00001.parquet: column 'text' "
                                          r"has 1 null value\(s\)") as error:
        tokenize(raw, tmp_path / "ray", "ray")
    assert "Traceback" not in str(error.value)
    assert not (tmp_path / "ray").exists()


def test_executor_ray_without_ray_installed_says_how_to_install_it(raw, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(TokbinError, match=r"Ray is not installed.*pip install -r "
                                          r"requirements-ray.txt"):
        tokenize(raw, tmp_path / "ray", "ray")


def test_the_stage_connects_to_the_cluster_named_by_RAY_ADDRESS(cluster, tmp_path, monkeypatch):
    address, _ = cluster
    project = make_project(tmp_path / "project", download__dataset="./sample",
                           tokenize__executor="ray")
    run(stage_command(project, "download"), project)
    monkeypatch.setenv("RAY_ADDRESS", address)
    result = run(stage_command(project, "tokenize"), project)
    assert f"Connecting to existing Ray cluster at address: {address}" in result.stderr
    local = tmp_path / "local"
    tokenize_dataset(project / "data" / "raw", local, ["train", "validation"], "text", "gpt2",
                     "append", workers=2)
    for name in ("train.bin", "validation.bin", "meta.json"):
        assert (project / "data" / "tokens" / name).read_bytes() == (local / name).read_bytes()


@pytest.mark.parametrize("where", ["s3", "hub"])
def test_tasks_on_both_nodes_stream_their_inputs_and_the_driver_holds_no_data_file(
        cluster, s3_env, tmp_path, monkeypatch, task_per_row_group, where):
    _, nodes = cluster
    folder = write_dataset(tmp_path / "dataset")
    if where == "s3":
        s3_env.bucket("ray-stream")
        dataset = s3_env.put_folder(folder, f"s3://ray-stream/{tmp_path.name}")
    else:
        dataset = "ray/stream"
        FAKE_HUB.add_commit(dataset, tree_of(folder))
    streamed = download(dataset, tmp_path / "streamed", copy=False)
    assert [p.name for p in streamed.rglob("*")] == ["source.json"]  # nothing a task could open
    encode, ran = ray_executor._encode_unit, tmp_path / "ran"
    ran.mkdir()

    def encode_where_it_runs(unit, *args):
        node = ray.get_runtime_context().get_node_id()
        (ran / f"{node}-{os.getpid()}").write_text(os.getcwd())
        # a task holds its node's only CPU until the other node has run one too (at most 30 s)
        deadline = time.monotonic() + 30
        while len({p.name.split("-")[0] for p in ran.iterdir()}) < len(NODES) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        return encode(unit, *args)

    monkeypatch.setattr(ray_executor, "_encode_unit", encode_where_it_runs)
    copied = download(dataset, tmp_path / "copied")
    assert tokenize(streamed, tmp_path / "ray", "ray") == \
        tokenize(copied, tmp_path / "local", "local")
    assert len({p.name.split("-")[0] for p in ran.iterdir()}) == len(NODES)
    assert {p.read_text() for p in ran.iterdir()} == {str(nodes / n) for n in NODES}
