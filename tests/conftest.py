"""Test setup: offline tiktoken vocabularies, no DVC analytics, shared fixtures."""
from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.tokenizer_fixtures import tokenizer_files  # noqa: F401  (a session fixture)

ROOT = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN_CACHE = ROOT.parent / "shared" / "tiktoken-cache"

if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN_CACHE)
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Every Hugging Face client of the session, in this process and in the stages it runs, talks to
# one offline fake Hub (tests/support/fakehub.py), with a throwaway HF_HOME. Set before any
# test imports huggingface_hub or datasets: both read these at import.
from support.fakehub import FakeHub  # noqa: E402

FAKE_HUB = FakeHub().start()
_HF_HOME = tempfile.mkdtemp(prefix="tokbin-test-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ.update(HF_ENDPOINT=FAKE_HUB.endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=_HF_HOME)
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN"):
    os.environ.pop(_name, None)
# gcsfs reads these when imported: the fake GCS server's needs (tests/support/gcs.py)
from support.gcs import ENV as _GCS_ENV  # noqa: E402

os.environ.update(_GCS_ENV)


@pytest.fixture(scope="session")
def moto_s3():
    """One S3 server (moto's, on 127.0.0.1) for the session: tests/support/s3.py."""
    from support.s3 import MotoS3
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(moto_s3, monkeypatch):
    """S3 clients of this process reach the session's server, with test credentials in the
    environment as on a real machine; each test's clients are new (fsspec caches them)."""
    import s3fs
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield moto_s3
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def fake_gcs():
    """One GCS server (gcp-storage-emulator's, on 127.0.0.1) for the session:
    tests/support/gcs.py."""
    from support.gcs import FakeGCS
    server = FakeGCS().start()
    yield server
    server.stop()


@pytest.fixture
def gcs_env(fake_gcs, monkeypatch):
    """gcsfs clients of this process reach the session's server, as they would reach any
    emulator; each test's clients are new (fsspec caches them)."""
    import gcsfs
    for key, value in fake_gcs.env.items():
        monkeypatch.setenv(key, value)
    gcsfs.GCSFileSystem.clear_instance_cache()
    yield fake_gcs
    gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def gpt2():
    import tiktoken
    return tiktoken.get_encoding("gpt2")


def write_parquet_dataset(root: Path, splits: dict[str, list], column: str = "text") -> Path:
    """A local dataset directory in Hub layout: root/data/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, texts in splits.items():
        pq.write_table(pa.table({column: pa.array(texts, type=pa.string())}),
                       root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=7)
    return root


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs a command (python -m ..., dvc, git) with this interpreter's environment."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def stage_command(repo: Path, name: str) -> list[str]:
    """A stage's command as dvc.yaml gives it, run with this interpreter (as `dvc repro` runs
    it from the repo root)."""
    import shlex
    import yaml
    words = shlex.split(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][name]["cmd"])
    return [sys.executable if words[0] == "python" else words[0], *words[1:]]


PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "tokbin", "sample", "tokenizers",
                 ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "data/.gitignore"]


def make_project(dest: Path, **params) -> Path:
    """A fresh git + DVC repo at `dest` holding the project's pipeline, params overridden by
    `params` given as {"section__key": value} (e.g. download__dataset="./sample")."""
    import shutil
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    set_params(dest, **params)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], dest)
    return dest


def set_params(repo: Path, **params) -> None:
    """Overrides params.yaml keys given as section__key=value."""
    import yaml
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in params.items():
        section, name = key.split("__")
        data[section][name] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def sample_project(tmp_path) -> Path:
    """The project, configured to build the bundled sample dataset."""
    return make_project(tmp_path / "project", download__dataset="./sample")


# --- team data versioning (tests/test_team*.py) ------------------------------------------------

# CI may have no global git config: every commit names its author here.
GIT_IDENTITY = ["-c", "user.name=tokbin test", "-c", "user.email=test@tokbin.invalid"]


def git(repo: Path, *args: str) -> str:
    return run(["git", *GIT_IDENTITY, *args], repo).stdout


@dataclasses.dataclass(frozen=True)
class TeamOrigin:
    """The teammate who builds: a repo holding data versions 1 and 2, both pushed."""
    repo: Path
    home: Path             # $HOME for every team test: the default remote lives under it
    remote: Path           # the default remote, ~/.local/share/tokbin/dvc-remote
    versions: dict         # {"data-v1": {"data/train.bin": bytes, ...}, "data-v2": {...}}


TEAM_OUTPUTS = ("data/train.bin", "data/validation.bin", "data/train.docs",
                "data/validation.docs", "data/meta.json")


@pytest.fixture(scope="session")
def team_origin(tmp_path_factory) -> TeamOrigin:
    """Repo A: builds the sample as data-v1 (eot append), then data-v2 (eot none); tags, commits
    and `dvc push`es each to the project's default remote, as the README's team section
    says."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))
        repo = make_project(tmp_path_factory.mktemp("origin") / "repo",
                            download__dataset="./sample")
        versions = {}
        for tag, eot in (("data-v1", "append"), ("data-v2", "none")):
            set_params(repo, tokenize__eot=eot)
            run(["dvc", "repro"], repo)
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", f"{tag}: tokenize.eot {eot}")
            git(repo, "tag", "-a", tag, "-m", f"data version {tag}")
            run(["dvc", "push"], repo)
            versions[tag] = {path: (repo / path).read_bytes() for path in TEAM_OUTPUTS}
    return TeamOrigin(repo, home, home / ".local/share/tokbin/dvc-remote", versions)


@pytest.fixture
def team(team_origin, monkeypatch) -> TeamOrigin:
    """team_origin, with $HOME set so that `~` in the default remote's url is its remote."""
    monkeypatch.setenv("HOME", str(team_origin.home))
    return team_origin


def team_outputs(repo: Path) -> dict[str, bytes]:
    """The bytes of those of TEAM_OUTPUTS that are in the repo's workspace."""
    return {path: (repo / path).read_bytes() for path in TEAM_OUTPUTS if (repo / path).exists()}


def lock_md5s(repo: Path, rev: str | None = None) -> dict[str, str]:
    """{output path: md5} from dvc.lock in the workspace, or at git revision `rev`."""
    import yaml
    text = (repo / "dvc.lock").read_text() if rev is None else git(repo, "show", f"{rev}:dvc.lock")
    return {out["path"]: out["md5"] for stage in yaml.safe_load(text)["stages"].values()
            for out in stage["outs"]}


def object_path(storage: Path, md5: str) -> Path:
    """Where a DVC remote directory or cache (`repo/.dvc/cache`) keeps the object `md5`."""
    return storage / "files" / "md5" / md5[:2] / md5[2:]


def clone(origin: TeamOrigin, dest: Path) -> Path:
    """Repo B: a fresh `git clone` of the origin (its tags included, no data)."""
    run(["git", "clone", "-q", str(origin.repo), str(dest)], dest.parent)
    return dest


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of a chosen size at a folder; unmounts it after the test."""
    mounted = []

    def mount(folder: Path, size_bytes: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                                 str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)
