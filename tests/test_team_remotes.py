"""DVC remotes served for real on 127.0.0.1: S3 (a moto server, through dvc-s3), a read-only HTTP
server and a local directory; and the bad cases: an unreachable remote, a missing object, a push
without credentials, a corrupted object. A pull fails loudly or gets the right bytes, never a
wrong bin in the workspace."""
from __future__ import annotations

import functools
import http.server
import re
import shlex
import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest

from conftest import TEAM_OUTPUTS, clone, git, lock_md5s, object_path, run
from conftest import team_outputs as workspace_bins
from tokbin.errors import TokbinError
from tokbin.pinned import pinned_path

BUCKET = "tokbin-team"


def dvc(repo: Path, *args: str, check: bool = True):
    return run(["dvc", *args], repo, check=check)


def use_remote(repo: Path, url: str, name: str = "storage", **options: str) -> None:
    """Points remote `name` (default: the project's default remote) of `repo` at `url` through
    .dvc/config.local, which overrides .dvc/config key by key (written directly: one dvc process
    per key would cost a second each; the documented commands are run in the S3 test)."""
    lines = [f"['remote \"{name}\"']", f"    url = {url}",
             *(f"    {key} = {value}" for key, value in options.items())]
    (repo / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def train_bin_md5(repo: Path) -> str:
    return lock_md5s(repo)["data/train.bin"]


def flip_first_bytes(data: bytes) -> bytes:
    """The same bytes with the first 8 inverted: a corrupted object of the right size."""
    return bytes(b ^ 0xFF for b in data[:8]) + data[8:]


def corrupt(path: Path) -> None:
    path.chmod(0o644)  # DVC stores objects read-only
    path.write_bytes(flip_first_bytes(path.read_bytes()))


@pytest.fixture
def remote_copy(team, tmp_path) -> Path:
    """A private copy of the team's default remote, for tests that damage it."""
    return Path(shutil.copytree(team.remote, tmp_path / "remote-copy"))


@pytest.fixture
def teammate(team, tmp_path) -> Path:
    return clone(team, tmp_path / "teammate")


@pytest.fixture(scope="module")
def builder(team_origin, tmp_path_factory) -> Path:
    """A clone holding data-v2's bins in its cache, ready to push them to another remote."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(team_origin.home))
        repo = clone(team_origin, tmp_path_factory.mktemp("builder") / "repo")
        dvc(repo, "pull", "binarize")
    return repo


# --- S3: a moto server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint(moto_s3):
    """The session's moto S3 server (tests/support/s3.py), with an empty bucket."""
    moto_s3.bucket(BUCKET)
    return moto_s3.endpoint


def s3_client(endpoint: str):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def s3_keys(endpoint: str, prefix: str) -> set[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for item in listing.get("Contents", [])}


FAKE_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
S3_PREFIX = "team/data"


@pytest.fixture(autouse=True)
def no_aws_credentials(monkeypatch, tmp_path):
    """No AWS credentials anywhere botocore looks (and no slow instance-metadata lookup): the
    tests' credentials come from the remote's config alone."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def s3_pushed(builder, s3_endpoint) -> str:
    """s3://bucket/team/data holding data-v2's bins, pushed by the builder with `dvc push`."""
    url = f"s3://{BUCKET}/{S3_PREFIX}"
    use_remote(builder, url, name="s3", endpointurl=s3_endpoint, **FAKE_CREDENTIALS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        dvc(builder, "push", "-r", "s3", "binarize")
    return url


def test_push_to_s3_then_a_fresh_clone_pulls_the_bins_byte_for_byte(
        team, teammate, s3_endpoint, s3_pushed):
    assert len(s3_keys(s3_endpoint, S3_PREFIX)) == len(TEAM_OUTPUTS)
    # docs/data_versions.md's remote switch: the url and endpoint are shared, the credentials stay local
    dvc(teammate, "remote", "modify", "storage", "url", s3_pushed)
    dvc(teammate, "remote", "modify", "storage", "endpointurl", s3_endpoint)
    for key, value in FAKE_CREDENTIALS.items():
        dvc(teammate, "remote", "modify", "--local", "storage", key, value)
    assert "testing" not in (teammate / ".dvc" / "config").read_text()
    dvc(teammate, "pull", "binarize")
    assert workspace_bins(teammate) == team.versions["data-v2"]


def test_push_to_s3_without_credentials_fails_naming_the_problem_and_uploads_nothing(
        builder, s3_endpoint):
    use_remote(builder, f"s3://{BUCKET}/no-credentials", name="s3", endpointurl=s3_endpoint)
    pushed = dvc(builder, "push", "-r", "s3", "binarize", check=False)
    assert pushed.returncode != 0
    assert "Unable to locate credentials" in pushed.stderr
    assert s3_keys(s3_endpoint, "no-credentials") == set()


def test_a_corrupted_object_on_s3_fails_the_pull(teammate, s3_endpoint, s3_pushed):
    client, damaged = s3_client(s3_endpoint), "damaged/data"
    for key in s3_keys(s3_endpoint, S3_PREFIX):
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if key.endswith(train_bin_md5(teammate)[2:]):
            body = flip_first_bytes(body)
        client.put_object(Bucket=BUCKET, Key=damaged + key.removeprefix(S3_PREFIX), Body=body)
    use_remote(teammate, f"s3://{BUCKET}/{damaged}", endpointurl=s3_endpoint, **FAKE_CREDENTIALS)
    assert_pull_refuses_the_corrupted_train_bin(teammate)


# --- HTTP: a read-only server -----------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve_http():
    """serve_http(folder) -> its http:// URL: a plain read-only HTTP server (GET and HEAD only,
    as for a public dataset) on a free 127.0.0.1 port, stopped after the test."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_pull_over_http_from_a_read_only_server_gives_the_bins_byte_for_byte(
        team, teammate, serve_http):
    use_remote(teammate, serve_http(team.remote))
    dvc(teammate, "pull", "binarize")
    assert workspace_bins(teammate) == team.versions["data-v2"]


def test_push_to_the_read_only_http_server_fails_and_uploads_nothing(
        builder, tmp_path, serve_http):
    served = tmp_path / "served"
    served.mkdir()
    use_remote(builder, serve_http(served), name="web")
    pushed = dvc(builder, "push", "-r", "web", "binarize", check=False)
    assert pushed.returncode != 0
    assert list(served.iterdir()) == []


# --- a local-directory remote, and the bad cases ------------------------------------------------

def test_a_local_directory_remote_elsewhere_on_disk_round_trips(team, builder, teammate, tmp_path):
    shared = tmp_path / "nfs" / "tokbin-remote"  # e.g. a mounted shared drive
    use_remote(builder, str(shared), name="shared-drive")
    dvc(builder, "push", "-r", "shared-drive", "binarize")
    use_remote(teammate, str(shared))
    dvc(teammate, "pull", "binarize")
    assert workspace_bins(teammate) == team.versions["data-v2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pull_from_an_unreachable_remote_fails_and_leaves_no_bins(teammate):
    use_remote(teammate, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    pulled = dvc(teammate, "pull", check=False)
    assert pulled.returncode != 0
    assert "failed to pull data from the cloud" in pulled.stderr
    assert workspace_bins(teammate) == {}


def test_pull_with_an_object_missing_from_the_remote_fails_naming_it(team, teammate, remote_copy):
    md5 = train_bin_md5(teammate)
    object_path(remote_copy, md5).unlink()
    use_remote(teammate, str(remote_copy))
    pulled = dvc(teammate, "pull", "binarize", check=False)
    assert pulled.returncode != 0
    assert md5 in pulled.stderr and "data/train.bin" in pulled.stderr
    assert not (teammate / "data" / "train.bin").exists()
    # what the remote does have arrives intact
    assert (teammate / "data" / "validation.bin").read_bytes() == (
        team.versions["data-v2"]["data/validation.bin"])


def assert_pull_refuses_the_corrupted_train_bin(repo: Path) -> None:
    """`dvc pull` of a remote whose train.bin object is corrupted: it fails, names the object,
    and neither the workspace nor the cache keeps the bad bytes."""
    md5 = train_bin_md5(repo)
    pulled = dvc(repo, "pull", "binarize", check=False)
    assert pulled.returncode != 0
    assert "failed to pull data from the cloud" in pulled.stderr
    assert "data/train.bin" in pulled.stderr
    assert not (repo / "data" / "train.bin").exists()
    assert not object_path(repo / ".dvc" / "cache", md5).exists()


def test_a_corrupted_object_in_a_local_remote_fails_the_pull(teammate, remote_copy):
    corrupt(object_path(remote_copy, train_bin_md5(teammate)))
    use_remote(teammate, str(remote_copy))
    assert_pull_refuses_the_corrupted_train_bin(teammate)


def test_a_corrupted_object_served_over_http_fails_the_pull(teammate, remote_copy, serve_http):
    corrupt(object_path(remote_copy, train_bin_md5(teammate)))
    use_remote(teammate, serve_http(remote_copy))
    assert_pull_refuses_the_corrupted_train_bin(teammate)


@pytest.mark.parametrize("folder", ["remote-copy", "team remote"])  # the fix is pasted in a shell
def test_a_damaged_object_a_pull_dropped_is_named_and_restored_by_the_fix_pinned_path_gives(
        team, teammate, remote_copy, tmp_path, folder):
    remote_copy = remote_copy.rename(remote_copy.with_name(folder))
    git(teammate, "checkout", "-q", "data-v1")
    md5 = train_bin_md5(teammate)
    corrupt(object_path(remote_copy, md5))
    use_remote(teammate, str(remote_copy))
    assert_pull_refuses_the_corrupted_train_bin(teammate)  # and the local remote drops it
    with pytest.raises(TokbinError, match="nor on its DVC remote, though a directory "
                                          "listing there names it") as refused:
        pinned_path("data-v1", repo=teammate, cache_dir=tmp_path / "pinned")
    fix = re.search(r"passes, run `(rm -f .*)` \(the remote's copy and each directory "
                    r"listing naming it\), then `dvc push`", str(refused.value))[1]
    tokens_listing = lock_md5s(teammate)["data/tokens"]
    assert shlex.split(fix) == ["rm", "-f", str(object_path(remote_copy, md5)),
                                str(object_path(remote_copy, tokens_listing))]
    repaired = run([sys.executable, "-m", "tokbin", "repair"], teammate, check=False)
    assert repaired.returncode == 1
    assert "the remote's copy of data/train.bin is damaged" in repaired.stdout
    assert f"passes, run `{fix}` (the remote's copy" in repaired.stdout
    good = clone(team, tmp_path / "good")  # a clone with the right data, from a good remote
    git(good, "checkout", "-q", "data-v1")
    dvc(good, "pull")
    use_remote(good, str(remote_copy))
    dvc(good, "push")  # DVC takes data/tokens' listing as proof that the bin is there ...
    assert not object_path(remote_copy, md5).exists()
    run(["sh", "-c", fix], good)  # ... so the fix, pasted as printed, deletes that listing too
    assert not object_path(remote_copy, tokens_listing).exists()
    dvc(good, "push")
    assert object_path(remote_copy, md5).read_bytes() == team.versions["data-v1"]["data/train.bin"]
    dvc(teammate, "pull", "binarize")
    assert workspace_bins(teammate) == team.versions["data-v1"]
