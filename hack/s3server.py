"""A local S3-compatible server for development and the integration tests: MinIO, built from its Go
module by hack/build-tools.sh, started as a plain process on loopback.

Each server gets a free port, a data directory and random root credentials of its own; it runs in
its own process group and logs to <dir>/logs/minio.log. Buckets can be made with object lock, which
backups need, and versioning.

Usage:
    python hack/s3server.py up   [--dir .s3]   # starts it in the background
    python hack/s3server.py down [--dir .s3]
    python hack/s3server.py env  [--dir .s3]   # prints the endpoint and credential exports

The endpoint and credentials are kept in <dir>/s3server.json (mode 0600).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import localcluster
from modelguard.sources import sigv4

STATE_FILE = "s3server.json"
REGION = "us-east-1"
_HASH_CHUNK = 1 << 20


class S3ServerError(RuntimeError):
    """The server could not be started or refused a request; the message says why."""


@dataclasses.dataclass
class S3Server:
    """One MinIO server whose data, logs and state live under `state_dir`."""

    state_dir: Path
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = dataclasses.field(default="", repr=False)
    region: str = REGION
    pid: int | None = None

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log(self) -> Path:
        return self.logs_dir / "minio.log"

    @property
    def credentials(self) -> sigv4.Credentials:
        return sigv4.Credentials(access_key=self.access_key, secret_key=self.secret_key)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, timeout: float = 60) -> None:
        """Starts the server and returns once its readiness endpoint answers."""
        if self.is_running():
            raise S3ServerError(f"already running from {self.state_dir}; stop it first")
        binary = localcluster.binary("minio")
        port, console_port = localcluster.free_port(), localcluster.free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.access_key = "mg-" + secrets.token_hex(8)
        self.secret_key = secrets.token_urlsafe(30)
        data_dir = self.state_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.state_dir),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_REGION": self.region,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            # Throwaway test data: durability is not worth the fsync latency.
            "MINIO_API_SYNC_EVENTS": "off",
        }
        with self.log.open("ab") as log:
            # A session of its own: a Ctrl-C meant for pytest must not kill it mid-test, and stop()
            # can signal the whole group.
            process = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    f"--address=127.0.0.1:{port}",
                    f"--console-address=127.0.0.1:{console_port}",
                    f"--config-dir={self.state_dir / 'config'}",
                    str(data_dir),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = process.pid
        self._save()
        deadline = time.monotonic() + timeout
        while not _ready(self.endpoint):
            if process.poll() is not None:
                raise S3ServerError(f"minio exited with code {process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"minio not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.1)
        # The health probe can answer before the object layer is initialised (a 503
        # XMinioServerNotInitialized to the first request): ready means the S3 API answers.
        while True:
            try:
                self.request("GET", "/")
                return
            except S3ServerError as error:
                if time.monotonic() > deadline:
                    self.stop()
                    raise S3ServerError(f"minio does not serve S3 yet: {error}") from None
                time.sleep(0.1)

    def stop(self, *, timeout: float = 10) -> None:
        """Stops the server; escalates to SIGKILL after `timeout`. Data and logs stay."""
        pid = self.pid if self.pid is not None else self._load().pid
        if pid is not None:
            localcluster.terminate(pid, name="minio", timeout=timeout)
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    def is_running(self) -> bool:
        pid = self._load().pid
        return pid is not None and localcluster.alive(pid)

    def _save(self) -> None:
        state = {
            "pid": self.pid,
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
        }
        path = self.state_dir / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)

    def _load(self) -> S3Server:
        try:
            state = json.loads((self.state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return S3Server(self.state_dir)
        return S3Server(self.state_dir, **state)

    @classmethod
    def attach(cls, state_dir: Path) -> S3Server:
        """The server already running from `state_dir` (started by `up`)."""
        server = cls(state_dir)._load()
        if server.pid is None or not localcluster.alive(server.pid):
            raise S3ServerError(f"no server running from {state_dir}; run `s3server.py up`")
        return server

    # -- S3 requests (setting up test data; the operator's own client is modelguard.sources) ---

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | Path = b"",
    ) -> bytes:
        """A signed request as the root user; raises S3ServerError on a non-2xx answer."""
        encoded_path = sigv4.encode_path(path)
        query_string = sigv4.encode_query(query or {})
        if isinstance(body, Path):
            length = body.stat().st_size
            digest = hashlib.sha256()
            with body.open("rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    digest.update(chunk)
            payload_sha256 = digest.hexdigest()
        else:
            length = len(body)
            payload_sha256 = hashlib.sha256(body).hexdigest()
        host = self.endpoint.removeprefix("http://")
        signed = sigv4.sign(
            method=method,
            host=host,
            path=encoded_path,
            query=query_string,
            headers={**(headers or {}), "content-length": str(length)},
            credentials=self.credentials,
            region=self.region,
            now=datetime.datetime.now(datetime.UTC),
            payload_sha256=payload_sha256,
        )
        url = self.endpoint + encoded_path + (f"?{query_string}" if query_string else "")
        with contextlib.ExitStack() as stack:
            data = stack.enter_context(body.open("rb")) if isinstance(body, Path) else body
            # The URL is this server's own http://127.0.0.1 endpoint.
            request = urllib.request.Request(url, data=data, method=method, headers=signed)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
                    return bytes(response.read())
            except urllib.error.HTTPError as error:
                detail = error.read()[:500].decode(errors="replace")
                raise S3ServerError(f"{method} {path}: HTTP {error.code}: {detail}") from None

    def create_bucket(
        self, name: str, *, object_lock: bool = False, versioning: bool = False
    ) -> None:
        """A new bucket; with object lock (which implies versioning) or plain versioning."""
        headers = {"x-amz-bucket-object-lock-enabled": "true"} if object_lock else {}
        self.request("PUT", f"/{name}", headers=headers)
        if versioning and not object_lock:
            body = (
                b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b"<Status>Enabled</Status></VersioningConfiguration>"
            )
            self.request("PUT", f"/{name}", query={"versioning": ""}, body=body)

    def put_object(self, bucket: str, key: str, data: bytes | Path) -> None:
        self.request("PUT", f"/{bucket}/{key}", body=data)

    def delete_object(self, bucket: str, key: str) -> None:
        self.request("DELETE", f"/{bucket}/{key}")

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.request("GET", f"/{bucket}/{key}")


def _ready(endpoint: str) -> bool:
    return localcluster.http_ok(f"{endpoint}/minio/health/ready")


@contextlib.contextmanager
def running(state_dir: Path) -> Iterator[S3Server]:
    server = S3Server(state_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--dir", type=Path, default=localcluster.REPO_ROOT / ".s3")
    args = parser.parse_args(argv)
    state_dir = args.dir.resolve()
    server = S3Server(state_dir)
    try:
        if args.command == "up":
            if server.is_running():
                print(f"s3server: already running; state in {state_dir / STATE_FILE}")
                return 0
            started = time.monotonic()
            server.start()
            print(
                f"s3server: up in {time.monotonic() - started:.1f}s at {server.endpoint}; "
                f"credentials in {state_dir / STATE_FILE}; log {server.log}"
            )
        elif args.command == "down":
            server.stop()
            print("s3server: down")
        else:
            attached = S3Server.attach(state_dir)
            print(f"export AWS_ENDPOINT_URL={attached.endpoint}")
            print(f"export AWS_REGION={attached.region}")
            print(f"export AWS_ACCESS_KEY_ID={attached.access_key}")
            print(f"export AWS_SECRET_ACCESS_KEY={attached.secret_key}")
    except (S3ServerError, localcluster.ClusterError) as error:
        print(f"s3server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
