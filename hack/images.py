"""The project's container images, built without a registry or an engine (see hack/oci.py).

- pause: the sandbox image of the local node, upstream Kubernetes' build/pause/linux/pause.c of
  the pinned k8s.io/kubernetes module compiled with `gcc -static`, as upstream's Dockerfile
  packs it (/pause, user 65535:65535). The binary is built once into the binary cache, keyed by
  the pause version and the Kubernetes version it comes from.

Usage:
    python hack/images.py pause [--out ARCHIVE]     # prints the manifest digest

Archives go to .build/images/ unless --out says otherwise; import one into a node's containerd
with `ctr -n k8s.io images import <archive>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import localcluster
import oci

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
BUILD_DIR = REPO_ROOT / ".build" / "images"

PAUSE_REPOSITORY = "localhost/modelguard/pause"
# Upstream's pause image runs as this user (build/pause/Dockerfile: USER 65535:65535).
PAUSE_USER = "65535:65535"


class BuildError(RuntimeError):
    """An image could not be built; the message says which step and why."""


def _go_env() -> dict[str, str]:
    # As hack/build-tools.sh: the pinned modules with the local Go, go.sum never edited.
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}


def kubernetes_source() -> tuple[str, Path]:
    """The pinned k8s.io/kubernetes version and its source directory in the Go module cache."""
    version = localcluster.pinned_version("kubernetes", "k8s.io/kubernetes")
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=HACK_DIR / "tools" / "kubernetes",
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go mod download k8s.io/kubernetes@{version}: {result.stderr.strip()}")
    return version, Path(json.loads(result.stdout)["Dir"])


def pause_version(source: Path) -> str:
    """The pause release of this Kubernetes source (build/pause/Makefile: `TAG ?= 3.10.2`)."""
    makefile = (source / "build" / "pause" / "Makefile").read_text()
    match = re.search(r"^TAG \?= (\S+)$", makefile, re.MULTILINE)
    if not match:
        raise BuildError(f"{source}/build/pause/Makefile: no `TAG ?=` line")
    return match.group(1)


def pause_binary() -> tuple[Path, str]:
    """The static pause binary from the binary cache, built on first use; and its version."""
    kubernetes, source = kubernetes_source()
    version = pause_version(source)
    destination = localcluster.cache_root() / f"pause-{version}-{kubernetes}"
    binary = destination / "pause"
    if binary.is_file():
        return binary, version
    compiler = shutil.which("gcc")
    if compiler is None:
        raise BuildError("pause: gcc is not installed")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".pause-{version}-"))
    try:
        # Compiled from a copy in an empty directory, so that no path of this machine ends up in
        # the binary and the same compiler gives the same bytes. Flags as upstream's Makefile;
        # its REV (`git describe` of the Kubernetes tree) is the module version here.
        shutil.copyfile(source / "build" / "pause" / "linux" / "pause.c", partial / "pause.c")
        result = subprocess.run(
            [compiler, "-Os", "-Wall", "-Werror", "-static",
             f"-DVERSION=v{version}-{kubernetes}", "-o", "pause", "pause.c"],
            cwd=partial,
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BuildError(
                f"pause: gcc -static failed (is libc6-dev installed? hack/install-packages.sh "
                f"installs it): {result.stderr.strip()}"
            )
        (partial / "pause.c").unlink()
        partial.chmod(0o755)  # mkdtemp's 0700 would hide the cache entry from other users
        shutil.rmtree(destination, ignore_errors=True)
        partial.rename(destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return binary, version


def pause_image(*, out: Path | None = None) -> oci.Image:
    """The sandbox image: `localhost/modelguard/pause:<version>` and its `@sha256:` name."""
    binary, version = pause_binary()
    return oci.build(
        layers=[[oci.file("pause", source=binary, mode=0o755)]],
        config=oci.Config(user=PAUSE_USER, entrypoint=("/pause",), env=()),
        name=f"{PAUSE_REPOSITORY}:{version}",
        out=out or BUILD_DIR / "pause.oci.tar",
        history=[f"pause.c of Kubernetes build/pause {version}, gcc -Os -static"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", choices=["pause"])
    parser.add_argument("--out", type=Path, help="the archive to write")
    args = parser.parse_args(argv)
    try:
        image = pause_image(out=args.out)
    except (BuildError, oci.ImageError, localcluster.ClusterError) as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    print(
        f"images: {image.name} {image.digest} in {image.archive} ({image.archive_size} bytes)",
        file=sys.stderr,
    )
    print(image.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
