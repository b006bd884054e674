"""A GCS JSON API on 127.0.0.1: gcp-storage-emulator's server, for the tests that read gs://
folders. gcsfs finds it as it finds any emulator: by STORAGE_EMULATOR_HOST (`FakeGCS.env`),
with no credentials (anonymous) and no GCE metadata lookup.

The emulator answers every read with the object's current generation (it keeps no old
ones), as an unversioned bucket does; gcsfs's probe of the bucket's layout over gRPC, which
the emulator does not serve, is turned off (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, read when
gcsfs is imported)."""
from __future__ import annotations

import socket
from pathlib import Path

BUCKET = "stream"  # made when the server starts
ENV = {"NO_GCE_CHECK": "true", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class FakeGCS:
    def __init__(self):
        from gcp_storage_emulator.server import create_server
        with socket.socket() as s:  # a free port, picked here: the emulator does not report its own
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server = create_server("127.0.0.1", port, in_memory=True)

    def start(self) -> "FakeGCS":
        self._server.start()
        self.filesystem().mkdir(BUCKET)
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def env(self) -> dict[str, str]:
        """What a client (gcsfs) on this machine needs to reach it."""
        return {**ENV, "STORAGE_EMULATOR_HOST": self.endpoint}

    def filesystem(self):
        import gcsfs
        return gcsfs.GCSFileSystem(token="anon", endpoint_url=self.endpoint,
                                   skip_instance_cache=True)

    def put_folder(self, folder: Path, url: str) -> str:
        """Uploads every file under `folder` to `url` (gs://bucket/prefix), at its relative
        path; returns the url."""
        fs = self.filesystem()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                fs.pipe(f"{url}/{path.relative_to(folder).as_posix()}", path.read_bytes())
        return url

    def put(self, url: str, data: bytes) -> None:
        self.filesystem().pipe(url, data)

    def get(self, url: str) -> bytes:
        return self.filesystem().cat(url)

    def delete(self, url: str) -> None:
        self.filesystem().rm(url)
