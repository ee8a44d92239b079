"""A small model server for the tests and `make run`: it serves the files of its model volume
and answers with the root digest of the bytes it loaded, so a caller can tell which model serves.

At start it
1. tries once to write into the model volume and reports the outcome (in a model pod the volume
   is mounted read-only, so the write fails, and a test reads that from the answer);
2. hashes every regular file under the volume (--models, default /models, where the Deployment
   builder mounts it) and computes the root digest as OMS v1.0 and model_signing do for the files
   serialization with SHA-256: per file, SHA-256 of its bytes, named by its POSIX path relative to
   the volume; root digest = SHA-256 over the raw file digests in manifest order. The order is
   model_signing's (by path components), the one ModelGuard's status.verification.rootDigest
   comes from; it differs from plain code point order only for a name that has a character
   sorting before "/" (such as "-" or ".") where the other has a directory separator;
3. notes how it runs, as the kernel sees it: the Uid, Gid, Seccomp, NoNewPrivs and CapEff lines
   of its own /proc/self/status, the outcome of one write into its root file system, and whether
   a ServiceAccount token is mounted (a test reads from the answer what the pod really got);
4. only then listens (--port, default 8080, the ModelDeployment's default serving port), so the
   Deployment's TCP probes see it ready once the model is loaded.

Answers (every one carries the `X-Model-Root-Digest` header):
    GET /                  {"rootDigest": "sha256:...", "files": [...], "volumeWrite": {...},
                            "runtime": {"process": {...}, "rootWrite": {...},
                                        "serviceAccountToken": false}}
    GET /files/<path>      the bytes of a loaded file (only those: nothing else on disk is served)

Standard library only, and independent of the operator's code: a test comparing its digest with
ModelGuard's compares two implementations.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import json
import os
import stat
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

DEFAULT_MODELS = Path("/models")
DEFAULT_PORT = 8080
WRITE_PROBE = ".model-server-write-probe"
PROCESS_STATUS = Path("/proc/self/status")
PROCESS_FIELDS = ("Uid", "Gid", "Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff")
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
DIGEST_HEADER = "X-Model-Root-Digest"
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class LoadedFile:
    path: str  # POSIX, relative to the volume
    size: int
    sha256: str  # hex


@dataclasses.dataclass(frozen=True)
class Model:
    root: Path
    files: tuple[LoadedFile, ...]  # in manifest order
    root_digest: str  # "sha256:<hex>"
    skipped: tuple[str, ...]  # what is neither a file nor a directory (symlinks, ...)


def try_write(root: Path) -> dict[str, object]:
    """One attempt to create a file in the volume; the outcome, as the answer reports it."""
    probe = root / WRITE_PROBE
    try:
        with probe.open("xb") as handle:
            handle.write(b"written by the model server\n")
    except OSError as error:
        return {
            "path": str(probe),
            "failed": True,
            "error": f"{error.strerror} (errno {error.errno})",
        }
    probe.unlink()
    return {"path": str(probe), "failed": False, "error": ""}


def runtime(
    *,
    status: Path = PROCESS_STATUS,
    root: Path = Path("/"),
    token: Path = SERVICE_ACCOUNT_TOKEN,
) -> dict[str, object]:
    """How this process runs: its status lines (e.g. "Seccomp": "2" under a seccomp filter,
    "Uid": "65532 65532 65532 65532"), one write attempt into the root file system, and whether
    a ServiceAccount token is mounted where Kubernetes puts one."""
    process: dict[str, str] = {}
    try:
        lines = status.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key in PROCESS_FIELDS:
            process[key] = " ".join(value.split())
    return {
        "process": process,
        "rootWrite": try_write(root),
        "serviceAccountToken": token.exists(),
    }


def load(root: Path) -> Model:
    """Hashes every regular file under `root` (symlinks are not followed) into the root digest."""
    found: list[LoadedFile] = []
    skipped: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(directory)
        for name in [*sorted(filenames), *[d for d in dirnames if (here / d).is_symlink()]]:
            path = here / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                skipped.append(relative)
                continue
            found.append(LoadedFile(relative, info.st_size, _sha256(path)))
    found.sort(key=lambda f: PurePosixPath(f.path).parts)
    root_hash = hashlib.sha256()
    for loaded in found:
        root_hash.update(bytes.fromhex(loaded.sha256))
    return Model(
        root=root,
        files=tuple(found),
        root_digest=f"sha256:{root_hash.hexdigest()}",
        skipped=tuple(sorted(skipped)),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def summary(
    model: Model, volume_write: dict[str, object], observed: dict[str, object] | None = None
) -> dict[str, object]:
    return {
        "rootDigest": model.root_digest,
        "files": [dataclasses.asdict(f) for f in model.files],
        "skipped": list(model.skipped),
        "volumeWrite": volume_write,
        **({"runtime": observed} if observed is not None else {}),
    }


def handler(
    model: Model, volume_write: dict[str, object], observed: dict[str, object] | None = None
) -> type[http.server.BaseHTTPRequestHandler]:
    by_path = {f.path: f for f in model.files}
    answer = json.dumps(summary(model, volume_write, observed), indent=1).encode() + b"\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "modelguard-model-server"
        sys_version = ""

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/":
                self._send(200, "application/json", answer)
                return
            relative = urllib.parse.unquote(path.removeprefix("/files/"))
            loaded = by_path.get(relative) if path.startswith("/files/") else None
            if loaded is None:
                self._send(404, "text/plain", b"not a loaded file\n")
                return
            self.send_response(200)
            self._headers("application/octet-stream", loaded.size)
            with (model.root / loaded.path).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    self.wfile.write(chunk)

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self._headers(content_type, len(body))
            self.wfile.write(body)

        def _headers(self, content_type: str, length: int) -> None:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            self.send_header(DIGEST_HEADER, model.root_digest)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            sys.stdout.write(f"model-server: {self.address_string()} {format % args}\n")
            sys.stdout.flush()

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--address", default="0.0.0.0", help="default: every address")  # noqa: S104
    args = parser.parse_args(argv)
    if not args.models.is_dir():
        print(f"model-server: --models {args.models}: not a directory", file=sys.stderr)
        return 2
    volume_write = try_write(args.models)
    if volume_write["failed"]:
        print(f"model-server: writing {volume_write['path']} failed: {volume_write['error']}")
    else:
        print(f"model-server: WARNING: the model volume is writable ({volume_write['path']})")
    model = load(args.models)
    observed = runtime()
    print(f"model-server: runtime {json.dumps(observed, sort_keys=True)}", flush=True)
    print(
        f"model-server: loaded {len(model.files)} files from {args.models}, "
        f"root digest {model.root_digest}",
        flush=True,
    )
    server = http.server.ThreadingHTTPServer(
        (args.address, args.port), handler(model, volume_write, observed)
    )
    print(f"model-server: listening on {args.address}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
