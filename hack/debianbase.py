"""The Debian base layer of the project's images: Debian 12 (bookworm)'s Python 3.11 and the
libraries it needs, from the Debian archive, with no shell and no package tools.

How: mmdebstrap's `extract` variant downloads the packages below with their dependencies (apt
resolves them against bookworm, bookworm-updates and bookworm-security) and unpacks them; no
maintainer script runs. Then, as distroless images are made:
- packages pulled in only for their tools (dpkg, tar, mawk, debconf, the openssl command) are
  removed with their files, and so is every library only they needed;
- documentation, man pages, translations and glibc's gconv modules go (each package's copyright
  file stays);
- /etc gets passwd and group with root and `nonroot` (65532, the uid the Deployment builder
  runs model pods as), nsswitch.conf, and the CA bundle update-ca-certificates would write;
- the standard library is byte-compiled by the image's own Python with unchecked-hash .pyc
  files: the root file system is read-only at run time, and a timestamp .pyc would be checked
  against a source time that the layer normalises, and so recompiled at every start;
- /var/lib/dpkg/status.d/<package> holds the control paragraph of each package kept, so that
  image scanners (trivy, grype) see what is installed.

The layer is cached in the binary cache, keyed by the exact package set (name, version,
architecture), the mirrors and this file: mmdebstrap resolves and downloads on every build (some
seconds) and a new Debian point release or security update makes a new base; otherwise the cached
layer is reused as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import localcluster
import oci

SUITE = "bookworm"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# What the images need; apt adds their dependencies.
INCLUDE = ("base-files", "ca-certificates", "libpython3.11-stdlib", "netbase", "python3.11-minimal")
PYTHON = "python3.11"
# Dependencies that are tools, not run-time needs: removed with their files but for these paths.
DROP: Mapping[str, tuple[str, ...]] = {
    "debconf": (),
    "dpkg": (),
    "mawk": (),
    "tar": (),
    # libssl3 reads its configuration and finds the CA bundle through these.
    "openssl": (
        "etc/ssl/openssl.cnf",
        "etc/ssl/private",
        "usr/lib/ssl/cert.pem",
        "usr/lib/ssl/certs",
        "usr/lib/ssl/openssl.cnf",
        "usr/lib/ssl/private",
    ),
}
# Removed from every package: nothing at run time reads them.
REMOVE = (
    "dev",
    "etc/apt",
    "etc/dpkg",
    # mmdebstrap copies the build machine's; the container runtime provides its own.
    "etc/hostname",
    "etc/resolv.conf",
    "etc/update-motd.d",
    "usr/sbin/update-ca-certificates",  # a shell script: its bundle is written below
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/man",
    "var/cache",
    "var/lib/apt",
    "var/lib/dpkg",
    "var/log",
)
NONROOT = 65532
_RECIPE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


class BaseError(RuntimeError):
    """The base could not be built; the message says which step and why."""


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    control: str
    files: tuple[str, ...]  # as the package lists them: "usr/bin/tar", directories too

    def depends(self) -> list[list[str]]:
        """Depends and Pre-Depends: a list of alternatives per requirement, names only."""
        fields = _fields(self.control)
        wanted = ", ".join(v for k, v in fields.items() if k in ("Depends", "Pre-Depends"))
        result = []
        for requirement in filter(None, (r.strip() for r in wanted.split(","))):
            result.append(
                [re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0] for alt in requirement.split("|")]
            )
        return result


def _fields(control: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in control.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _deb(path: Path) -> Package:
    control = _run(["dpkg-deb", "--field", str(path)], what=f"dpkg-deb --field {path.name}")
    with tempfile.TemporaryFile() as data:
        fsys = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(path)],
            stdout=data,
            stderr=subprocess.PIPE,
            check=False,
        )
        if fsys.returncode != 0:
            raise BaseError(f"dpkg-deb --fsys-tarfile {path.name}: {fsys.stderr.decode().strip()}")
        data.seek(0)
        with tarfile.open(fileobj=data) as tar:
            files = tuple(
                name for m in tar.getmembers() if (name := m.name.removeprefix("./").rstrip("/"))
            )
    fields = _fields(control)
    return Package(
        name=fields["Package"],
        version=fields["Version"],
        architecture=fields["Architecture"],
        control=control.rstrip("\n") + "\n",
        files=files,
    )


def _run(argv: list[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    program = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if program is None:
        raise BaseError(f"{what}: {argv[0]} is not installed")
    result = subprocess.run(
        [program, *argv[1:]], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        raise BaseError(f"{what} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def kept(packages: Mapping[str, Package]) -> set[str]:
    """The packages INCLUDE needs, following dependencies but never through a DROP package."""
    keep: set[str] = set()
    todo = list(INCLUDE)
    while todo:
        name = todo.pop()
        if name in keep or name in DROP:
            continue
        if name not in packages:
            raise BaseError(f"package {name} is needed but apt did not download it")
        keep.add(name)
        for alternatives in packages[name].depends():
            # The first alternative apt installed satisfies the requirement, as dpkg would see it.
            present = [a for a in alternatives if a in packages]
            if present:
                todo.append(present[0])
    return keep


def _remove(root: Path, relative: str) -> None:
    target = root / relative
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


def prune(root: Path, packages: Mapping[str, Package], keep: set[str]) -> None:
    """Removes the files of the packages not kept (but DROP's exceptions) and REMOVE's paths."""
    kept_paths = {f for name in keep for f in packages[name].files}
    kept_paths.update(path for exceptions in DROP.values() for path in exceptions)
    for name in sorted(set(packages) - keep):
        # Deepest first, so that a directory is emptied before it is considered.
        for relative in sorted(packages[name].files, key=lambda f: f.count("/"), reverse=True):
            if relative in kept_paths:
                continue
            target = root / relative
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir() and not any(target.iterdir()):
                target.rmdir()
    for relative in REMOVE:
        _remove(root, relative)
    # Documentation: each package's copyright stays, as Debian's licences ask.
    doc = root / "usr" / "share" / "doc"
    for entry in sorted(doc.iterdir()) if doc.is_dir() else []:
        for item in sorted(entry.iterdir()) if entry.is_dir() and not entry.is_symlink() else []:
            if item.name != "copyright":
                _remove(root, str(item.relative_to(root)))


def configure(root: Path, packages: Mapping[str, Package], keep: set[str]) -> None:
    """What maintainer scripts and a user database would have provided, without a shell."""
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nnonroot:x:{NONROOT}:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    for home, owner in (("root", 0), ("home/nonroot", NONROOT)):
        (root / home).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(root / home, owner, owner)
        (root / home).chmod(0o700)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    # update-ca-certificates' bundle: every certificate of the Mozilla set, in name order.
    mozilla = root / "usr" / "share" / "ca-certificates" / "mozilla"
    bundle = b""
    for certificate in sorted(mozilla.glob("*.crt")):
        pem = certificate.read_bytes()
        bundle += pem if pem.endswith(b"\n") else pem + b"\n"
    if not bundle:
        raise BaseError(f"no certificate in {mozilla}: ca-certificates was not extracted")
    certs = etc / "ssl" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "ca-certificates.crt").write_bytes(bundle)
    python = root / "usr" / "bin" / "python3"
    if not python.exists():
        python.symlink_to(PYTHON)
    status = root / "var" / "lib" / "dpkg" / "status.d"
    status.mkdir(parents=True)
    for name in sorted(keep):
        control = packages[name].control
        # As dpkg's status file has it: the control paragraph and the package's state.
        lines = control.splitlines(keepends=True)
        (status / name).write_text(lines[0] + "Status: install ok installed\n" + "".join(lines[1:]))


def compile_python(root: Path, *directories: str) -> None:
    """Byte-compiles `directories` (absolute inside `root`) with the image's own interpreter."""
    env = {"PATH": "/usr/bin", "SOURCE_DATE_EPOCH": str(oci.source_date_epoch())}
    _run(
        ["chroot", str(root), f"/usr/bin/{PYTHON}", "-I", "-m", "compileall", "-q", "-j", "1",
         "--invalidation-mode", "unchecked-hash", *directories],
        what=f"compileall {' '.join(directories)} (in the image's root, as {PYTHON})",
        env=env,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Base:
    """The base layer and what it holds."""

    layer: oci.LayerBlob
    packages: tuple[str, ...]  # "name version architecture", sorted
    root: Path  # its unpacked tree (the other layers are compiled against it)
    key: str


def cache_dir() -> Path:
    return localcluster.cache_root() / "debian-base"


def build(*, work: Path) -> Base:
    """The base: downloaded and resolved now, built unless the cache holds this package set."""
    work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work, prefix=".base-"))
    try:
        root, debs = scratch / "root", scratch / "debs"
        debs.mkdir()
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(oci.source_date_epoch())}
        _run(
            ["mmdebstrap", "--quiet", "--variant=extract", "--mode=root", "--format=directory",
             f"--include={','.join(INCLUDE)}",
             f"--extract-hook=cp \"$1\"/var/cache/apt/archives/*.deb {debs}/",
             SUITE, str(root), *MIRRORS],
            what="mmdebstrap (downloads from the Debian archive; hack/install-packages.sh "
            "installs it)",
            env=env,
        )  # fmt: skip
        packages = {p.name: p for p in map(_deb, sorted(debs.glob("*.deb")))}
        keep = kept(packages)
        listing = tuple(sorted(f"{p.name} {p.version} {p.architecture}" for p in packages.values()))
        key = hashlib.sha256(json.dumps([_RECIPE, MIRRORS, INCLUDE, listing]).encode()).hexdigest()[
            :20
        ]
        entry = cache_dir() / key
        if not (entry / "layer.json").is_file():
            prune(root, packages, keep)
            configure(root, packages, keep)
            compile_python(root, f"/usr/lib/{PYTHON}")
            _store(entry, root=root, keep=keep, packages=packages)
        return _load(entry, key=key)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _store(entry: Path, *, root: Path, keep: set[str], packages: Mapping[str, Package]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}-"))
    try:
        layer = oci.write_layer(oci.directory_entries(root, owner=None), partial)
        layer.path.rename(partial / "layer.tar.gz")
        (partial / "packages.txt").write_text(
            "".join(
                f"{packages[name].name} {packages[name].version} {packages[name].architecture}\n"
                for name in sorted(keep)
            )
        )
        root.rename(partial / "root")
        blob = dataclasses.asdict(layer) | {"path": "layer.tar.gz"}
        (partial / "layer.json").write_text(json.dumps(blob, indent=1, sort_keys=True) + "\n")
        partial.chmod(0o755)
        shutil.rmtree(entry, ignore_errors=True)
        partial.rename(entry)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _load(entry: Path, *, key: str) -> Base:
    fields = json.loads((entry / "layer.json").read_text())
    fields["path"] = entry / fields["path"]
    return Base(
        layer=oci.LayerBlob(**fields),
        packages=tuple((entry / "packages.txt").read_text().splitlines()),
        root=entry / "root",
        key=key,
    )


def names(packages: Iterable[str]) -> list[str]:
    return [line.split()[0] for line in packages]
