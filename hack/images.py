"""The project's container images, built without a registry or an engine (see hack/oci.py).

- modelguard: the operator, and the verifying init container of every model pod. Three layers:
  the Debian base (hack/debianbase.py: bookworm's Python 3.11, no shell), the Python dependencies
  pinned with their hashes in hack/image-requirements.txt, and the project's own wheel. User
  65532:65532 (`nonroot`), entrypoint /usr/local/bin/modelguard, a script run by the image's
  Python with -I (no environment variable or user directory changes what it imports). Every
  .pyc is an unchecked-hash one, compiled by the image's own interpreter.
- model-server: hack/modelserver.py on the same base (the base layer is shared, so on a node
  the image costs its small layer only); same user; serves 8080.
- pause: the sandbox image of the local node, upstream Kubernetes' build/pause/linux/pause.c of
  the pinned k8s.io/kubernetes module compiled with `gcc -static`, as upstream's Dockerfile
  packs it (/pause, user 65535:65535). The binary is built once into the binary cache, keyed by
  the pause version and the Kubernetes version it comes from.

Slow parts are cached in the binary cache (~/.cache/modelguard): the base keyed by its exact
Debian package set, the dependency layer by the requirements file and the base. The project's
layer is rebuilt on every run (seconds). The same sources, requirements and Debian packages give
the same digests (SOURCE_DATE_EPOCH, default 0, is every file's time).

Usage:
    python hack/images.py modelguard|model-server|pause [--out ARCHIVE]   # prints the digest
    python hack/images.py all                  # the three, one "name digest archive" line each
    python hack/images.py lock                 # rewrites hack/image-requirements.txt

Archives go to .build/images/ unless --out says otherwise; import one into a node's containerd
with `ctr -n k8s.io images import <archive>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import debianbase
import localcluster
import modelserver
import oci

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
BUILD_DIR = REPO_ROOT / ".build" / "images"

PAUSE_REPOSITORY = "localhost/modelguard/pause"
# The chart's default image.repository: the name the cluster imports it under.
MODELGUARD_REPOSITORY = "ghcr.io/modelguard-dev/modelguard"
MODEL_SERVER_REPOSITORY = "localhost/modelguard/model-server"
REQUIREMENTS = HACK_DIR / "image-requirements.txt"
USER = f"{debianbase.NONROOT}:{debianbase.NONROOT}"
SITE_PACKAGES = f"usr/local/lib/{debianbase.PYTHON}/dist-packages"
PATH = "PATH=/usr/local/bin:/usr/bin"
# The one interpreter of the images, isolated: no PYTHON* variable, no user site directory.
SHEBANG = f"#!/usr/bin/{debianbase.PYTHON} -I\n"
_RECIPE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
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


def _pip(*args: str, what: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"{what}: pip {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}"
        )


def _compiled(base: debianbase.Base, tree: Path, *, at: str, scratch: Path) -> None:
    """Byte-compiles `tree` as it will sit at `at` in the image, by the image's interpreter:
    in a copy of the base made of hard links, so that the cached base is never written."""
    staging = scratch / "compile-root"
    shutil.rmtree(staging, ignore_errors=True)
    _run(["cp", "-al", str(base.root), str(staging)], what="copying the base for compileall")
    target = staging / at
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    tree.rename(target)
    try:
        debianbase.compile_python(staging, f"/{at}")
    finally:
        target.rename(tree)
        shutil.rmtree(staging, ignore_errors=True)


def _run(argv: list[str], *, what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{what}: {result.stderr.strip()[-2000:]}")


def _cached_layer(entry: Path) -> oci.LayerBlob | None:
    record = entry / "layer.json"
    if not record.is_file():
        return None
    fields = json.loads(record.read_text())
    return oci.LayerBlob(**{**fields, "path": entry / fields["path"]})


def _store_layer(entry: Path, entries: list[oci.Entry]) -> oci.LayerBlob:
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
    try:
        layer = oci.write_layer(entries, partial)
        layer.path.rename(partial / "layer.tar.gz")
        fields = dataclasses.asdict(layer) | {"path": "layer.tar.gz"}
        (partial / "layer.json").write_text(json.dumps(fields, indent=1, sort_keys=True) + "\n")
        partial.chmod(0o755)
        shutil.rmtree(entry, ignore_errors=True)
        partial.rename(entry)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    cached = _cached_layer(entry)
    assert cached is not None
    return cached


def _without_build_paths(tree: Path) -> None:
    """Removes what pip wrote about this machine: console scripts (their first line is the
    interpreter that ran pip; the image runs none of them) and direct_url.json (the path of a
    local wheel), with their lines in each RECORD, so that a layer depends on its inputs only."""
    shutil.rmtree(tree / "bin", ignore_errors=True)
    for direct_url in tree.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
    inside = tree.resolve()
    for record in tree.glob("*.dist-info/RECORD"):
        kept = []
        for line in record.read_text().splitlines(keepends=True):
            listed = (tree / line.split(",", 1)[0]).resolve()
            if listed.is_relative_to(inside) and listed.exists():
                kept.append(line)
        record.write_text("".join(kept))


def dependencies_layer(base: debianbase.Base, *, scratch: Path) -> oci.LayerBlob:
    """The pinned Python dependencies, installed as pip installs them, compiled; cached."""
    requirements = REQUIREMENTS.read_bytes()
    key = hashlib.sha256(requirements + base.key.encode() + _RECIPE.encode()).hexdigest()[:20]
    entry = localcluster.cache_root() / "python-deps" / key
    if (cached := _cached_layer(entry)) is not None:
        return cached
    tree = scratch / "deps"
    shutil.rmtree(tree, ignore_errors=True)
    # --require-hashes: every file is the one the requirements file names, byte for byte.
    _pip("install", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:",
         "--no-compile", "--target", str(tree), "-r", str(REQUIREMENTS),
         what="the Python dependencies")  # fmt: skip
    _without_build_paths(tree)
    _compiled(base, tree, at=SITE_PACKAGES, scratch=scratch)
    return _store_layer(entry, oci.directory_entries(tree, prefix=SITE_PACKAGES))


def project_wheel(scratch: Path) -> Path:
    """The project's wheel, built from a copy of its sources (no build/ or egg-info left in the
    checkout, nothing but the package and its metadata)."""
    source = scratch / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO_ROOT / name).is_file():
            shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "operator" / "modelguard",
        source / "operator" / "modelguard",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    wheels = scratch / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source),
         what="the project's wheel")  # fmt: skip
    (wheel,) = wheels.glob("modelguard-*.whl")
    return wheel


def project_layer(base: debianbase.Base, *, scratch: Path) -> list[oci.Entry]:
    """The project installed from its wheel, compiled, and the `modelguard` entrypoint."""
    wheel = project_wheel(scratch)
    tree = scratch / "project"
    shutil.rmtree(tree, ignore_errors=True)
    _pip("install", "--quiet", "--no-deps", "--no-compile", "--target", str(tree), str(wheel),
         what="the project")  # fmt: skip
    _without_build_paths(tree)
    _compiled(base, tree, at=SITE_PACKAGES, scratch=scratch)
    entrypoint = (
        SHEBANG
        + '"""ModelGuard\'s command line: the entrypoint of its image."""\n'
        + "import sys\n\nfrom modelguard import cli\n\nsys.exit(cli.main())\n"
    )
    return [
        *oci.directory_entries(tree, prefix=SITE_PACKAGES),
        oci.file("usr/local/bin/modelguard", data=entrypoint.encode(), mode=0o755),
    ]


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    if not match:
        raise BuildError("pyproject.toml: no version")
    return match.group(1)


def _labels(*, title: str, description: str, base: debianbase.Base) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": project_version(),
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.source": "https://github.com/modelguard-dev/modelguard",
        "org.opencontainers.image.base.name": f"debian:{debianbase.SUITE} ({base.key})",
    }


def modelguard_image(*, out: Path | None = None) -> oci.Image:
    """ghcr.io/modelguard-dev/modelguard:<version> and its @sha256: name."""
    with tempfile.TemporaryDirectory(dir=_work(), prefix="modelguard-") as scratch_dir:
        scratch = Path(scratch_dir)
        base = debianbase.build(work=scratch)
        deps = dependencies_layer(base, scratch=scratch)
        project = project_layer(base, scratch=scratch)
        return oci.build(
            layers=[base.layer, deps, project],
            config=oci.Config(
                user=USER,
                entrypoint=("/usr/local/bin/modelguard",),
                env=(PATH, "LANG=C.UTF-8"),
                labels=_labels(
                    title="ModelGuard",
                    description="Kubernetes operator that makes ML model deployments secure by "
                    "default; also the verifying init container of model pods.",
                    base=base,
                ),
            ),
            name=f"{MODELGUARD_REPOSITORY}:{project_version()}",
            out=out or BUILD_DIR / "modelguard.oci.tar",
            history=[
                f"Debian {debianbase.SUITE}: {', '.join(debianbase.INCLUDE)} (no shell)",
                "Python dependencies: hack/image-requirements.txt",
                f"modelguard {project_version()}",
            ],
        )


def model_server_image(*, out: Path | None = None) -> oci.Image:
    """localhost/modelguard/model-server:<version> and its @sha256: name."""
    with tempfile.TemporaryDirectory(dir=_work(), prefix="model-server-") as scratch_dir:
        base = debianbase.build(work=Path(scratch_dir))
        script = SHEBANG + Path(modelserver.__file__).read_text()
        return oci.build(
            layers=[
                base.layer,
                [oci.file("usr/local/bin/model-server", data=script.encode(), mode=0o755)],
            ],
            config=oci.Config(
                user=USER,
                entrypoint=("/usr/local/bin/model-server",),
                env=(PATH, "LANG=C.UTF-8"),
                exposed_ports=(f"{modelserver.DEFAULT_PORT}/tcp",),
                labels=_labels(
                    title="ModelGuard example model server",
                    description="Serves its read-only model volume and the root digest it loaded.",
                    base=base,
                ),
            ),
            name=f"{MODEL_SERVER_REPOSITORY}:{project_version()}",
            out=out or BUILD_DIR / "model-server.oci.tar",
            history=[
                f"Debian {debianbase.SUITE}: {', '.join(debianbase.INCLUDE)} (no shell)",
                "hack/modelserver.py",
            ],
        )


def _work() -> Path:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    return BUILD_DIR


def lock() -> Path:
    """Resolves pyproject.toml's dependencies, at the versions of this checkout's environment
    where they fit, into hack/image-requirements.txt: one wheel per package, with its hash."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (scratch / "constraints.txt").write_text(frozen)
        report = scratch / "report.json"
        _pip("install", "--quiet", "--dry-run", "--ignore-installed", "--only-binary=:all:",
             "--constraint", str(scratch / "constraints.txt"), "--report", str(report),
             str(REPO_ROOT), what="resolving the dependencies")  # fmt: skip
        resolved = json.loads(report.read_text())["install"]
    lines = []
    for item in sorted(resolved, key=lambda i: i["metadata"]["name"].lower()):
        name = item["metadata"]["name"]
        if name.lower() == "modelguard":
            continue
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name}=={item['metadata']['version']} \\\n    --hash=sha256:{sha}\n")
    REQUIREMENTS.write_text(
        "# The Python dependencies of the ModelGuard image, pinned with their wheels' hashes.\n"
        "# Written by `python hack/images.py lock` for Linux x86_64 and CPython 3.11 (Debian\n"
        "# bookworm's); read by hack/images.py and the Dockerfile. Do not edit by hand.\n"
        + "".join(lines)
    )
    return REQUIREMENTS


BUILDERS = {
    "modelguard": modelguard_image,
    "model-server": model_server_image,
    "pause": pause_image,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", choices=[*BUILDERS, "all", "lock"])
    parser.add_argument("--out", type=Path, help="the archive to write (one image only)")
    args = parser.parse_args(argv)
    try:
        if args.image == "lock":
            print(f"images: wrote {lock()}", file=sys.stderr)
            return 0
        if args.image == "all":
            if args.out:
                parser.error("--out names one archive: give one image")
            for builder in BUILDERS.values():
                image = builder()
                print(f"{image.name} {image.digest} {image.archive}", flush=True)
            return 0
        image = BUILDERS[args.image](out=args.out)
    except (BuildError, debianbase.BaseError, oci.ImageError, localcluster.ClusterError) as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    print(
        f"images: {image.name} {image.digest} in {image.archive}: {image.archive_size} bytes, "
        f"layers {image.compressed_size} bytes compressed, {image.unpacked_size} unpacked",
        file=sys.stderr,
    )
    print(image.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
