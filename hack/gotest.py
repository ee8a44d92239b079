"""Builds the project's Go test programs (tests/gitopshealth, ...) once per (sources, Go version)
into the binary cache, as the tools are built: the local Go, go.sum never edited, no cgo."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import localcluster


def build(source: Path) -> Path:
    """The binary of the Go module in `source`, named after its folder."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"Go builds {source.name} (Go >= 1.26 on PATH)")
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    version = subprocess.run(
        [go, "env", "GOVERSION"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    digest = hashlib.sha256(version.encode() + b"\0")
    for path in sorted(source.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    destination = localcluster.cache_root() / f"{source.name}-{digest.hexdigest()[:16]}"
    binary = destination / source.name
    if binary.is_file():
        return binary
    partial = destination.with_name(f"{destination.name}.partial.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(
        [go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
        cwd=source,
        env=env,
        check=True,
    )
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return binary
