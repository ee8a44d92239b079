"""OCI image layout archives, written without a registry or a container engine.

An archive holds `oci-layout`, `index.json` and `blobs/sha256/<hex>` (OCI image-spec, image
layout 1.0.0): a gzip tar per layer, the image config and the manifest. `index.json` names the
manifest twice, `<repository>:<tag>` and `<repository>@sha256:<manifest digest>`, each with
containerd's `io.containerd.image.name` annotation, so that after

    ctr -n k8s.io images import <archive>

a pod naming the image by digest finds it in the node's store and the kubelet pulls nothing.
Other readers select one name by its `org.opencontainers.image.ref.name`, the tag:
`skopeo inspect oci-archive:<archive>:<tag>`, `umoci unpack --image <layout dir>:<tag>`.

The same input gives the same bytes, hence the same digest: entries are sorted, every mtime is
one fixed time (SOURCE_DATE_EPOCH, else 0), owners are numeric with no names, gzip carries no
name or time, JSON is written with sorted keys. Only zlib's own output could differ between
zlib releases. Extended attributes (file capabilities, SELinux labels) are not carried.

From another module of hack/ (stdlib only, so any Python 3.11 can run it):

    import oci
    layer = oci.directory_entries(rootfs, owner=None) + [
        oci.file("usr/local/bin/tool", source=Path("tool"), mode=0o755),
    ]
    image = oci.build(
        layers=[layer],
        config=oci.Config(user="65532:65532", entrypoint=("/usr/local/bin/tool",)),
        name="registry.example/tool:1.0",
        out=Path("build/tool.oci.tar"),
    )
    image.digest  # "sha256:<manifest digest>"; image.names: the two names in index.json

A layer is a sequence of entries, or a `LayerBlob` already written by `write_layer` (a cache
keeps those for slow layers). A layer gets a 0755 root-owned directory for each missing parent
of its entries, so place nothing under a path that a lower layer makes a symlink (/bin, /lib in a
merged-/usr base). From the shell:

    python hack/oci.py build --name registry.example/tool:1.0 --out tool.oci.tar \
        --file tool:/usr/local/bin/tool:0755 --user 65532:65532 --entrypoint /usr/local/bin/tool
    python hack/oci.py digest tool.oci.tar     # the manifest digest of an archive

Each prints the manifest digest on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd's name for an image in an index.json (core/images/annotations.go); `ctr images
# import` creates one image per annotated manifest descriptor.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
# The OCI name of a descriptor inside an image layout: the tag alone, as containerd exports it.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"

# Python's gzip default is 9; 6 (gzip's own default) halves the time for a few per cent more size.
GZIP_LEVEL = 6
_CHUNK = 1 << 20

# A name as the container runtime interface looks it up: a registry host first (a name without
# one is normalised to docker.io/library/..., and a local image would never be found under it).
_REPOSITORY = re.compile(
    r"^(?P<host>localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::[0-9]+)?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageError(ValueError):
    """Bad input to the image writer; the message names the entry, file or field."""


# --------------------------------------------------------------------------------------------
# Layer entries
# --------------------------------------------------------------------------------------------

Kind = Literal["file", "dir", "symlink", "hardlink"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One member of a layer. `path` is relative to the image's root, in POSIX form.

    A file's bytes come from `source` (a host file, read when the layer is written) or `data`;
    a symlink's and a hard link's target is `target` (a hard link's is another entry's path).
    """

    path: str
    kind: Kind = "file"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    source: Path | None = None
    data: bytes | None = None
    target: str = ""


def _clean(path: str) -> str:
    """`path` relative to the image root, normalised; refuses what would leave the root."""
    pure = PurePosixPath("/", path)
    parts = [p for p in pure.parts[1:] if p not in ("", ".")]
    if ".." in parts or not parts:
        raise ImageError(f"layer path {path!r}: must name something inside the image root")
    return "/".join(parts)


def file(
    path: str,
    *,
    source: Path | None = None,
    data: bytes | None = None,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
) -> Entry:
    """A regular file from a host file (`source`) or from bytes (`data`)."""
    if (source is None) == (data is None):
        raise ImageError(f"layer file {path!r}: give exactly one of source= and data=")
    return Entry(_clean(path), "file", mode, uid, gid, source=source, data=data)


def directory(path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), "dir", mode, uid, gid)


def symlink(path: str, target: str, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), "symlink", 0o777, uid, gid, target=target)


def directory_entries(
    root: Path,
    *,
    prefix: str = "",
    owner: tuple[int, int] | None = (0, 0),
    exclude: Iterable[str] = (),
) -> list[Entry]:
    """Every file, directory and symlink under `root`, as entries placed under `prefix`.

    Modes come from the file system. `owner` (uid, gid) is given to every entry; None keeps the
    file system's owners (a root file system built as root, whose /etc/shadow is root:shadow).
    Files with several links become hard links to the first path in sorted order. `exclude`
    holds paths relative to `root` left out with everything below them. Sockets, devices and
    FIFOs are refused: a layer for this project has no use for them.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"layer directory {root}: not a directory")
    excluded = {_clean(p) for p in exclude}
    entries: list[Entry] = []
    first_path: dict[tuple[int, int], str] = {}

    def place(relative: str) -> str:
        return _clean(f"{prefix}/{relative}") if prefix else _clean(relative)

    if prefix:
        entries.append(_from_stat(place("."), root, root.lstat(), owner))

    for dirpath, dirnames, filenames in os.walk(root):
        # os.walk yields in directory order; sort in place so the walk itself is deterministic.
        dirnames.sort()
        here = Path(dirpath)
        relative_dir = here.relative_to(root).as_posix()
        descend = []
        for name in dirnames:
            rel = _join(relative_dir, name)
            if rel in excluded:
                continue
            info = (here / name).lstat()
            entries.append(_from_stat(place(rel), here / name, info, owner))
            # os.walk lists a symlink to a directory among the directories; it stays a symlink.
            if not stat.S_ISLNK(info.st_mode):
                descend.append(name)
        dirnames[:] = descend
        for name in sorted(filenames):
            rel = _join(relative_dir, name)
            if rel in excluded:
                continue
            host = here / name
            info = host.lstat()
            entry = _from_stat(place(rel), host, info, owner)
            if entry.kind == "file" and info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in first_path:
                    entry = dataclasses.replace(
                        entry, kind="hardlink", target=first_path[key], source=None
                    )
                else:
                    first_path[key] = entry.path
            entries.append(entry)
    # Hard-link targets were chosen in walk order; the writer sorts by path, so a link could
    # precede its target. Re-point each group at its path that sorts first.
    return _canonical_hardlinks(entries)


def _join(directory_rel: str, name: str) -> str:
    return name if directory_rel == "." else f"{directory_rel}/{name}"


def _from_stat(path: str, host: Path, info: os.stat_result, owner: tuple[int, int] | None) -> Entry:
    uid, gid = owner if owner is not None else (info.st_uid, info.st_gid)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        return Entry(path, "dir", mode, uid, gid)
    if stat.S_ISLNK(info.st_mode):
        return Entry(path, "symlink", 0o777, uid, gid, target=str(host.readlink()))
    if stat.S_ISREG(info.st_mode):
        return Entry(path, "file", mode, uid, gid, source=host)
    raise ImageError(f"layer directory: {host} is neither a file, a directory nor a symlink")


def _canonical_hardlinks(entries: list[Entry]) -> list[Entry]:
    groups: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        if entry.kind == "file" and entry.source is not None:
            groups.setdefault(entry.path, []).append(index)
        elif entry.kind == "hardlink":
            groups.setdefault(entry.target, []).append(index)
    result = list(entries)
    for members in groups.values():
        if len(members) < 2:
            continue
        first = min(members, key=lambda i: _order(entries[i].path))
        head = entries[next(i for i in members if entries[i].kind == "file")]
        result[first] = dataclasses.replace(
            entries[first], kind="file", source=head.source, target=""
        )
        for i in members:
            if i != first:
                result[i] = dataclasses.replace(
                    entries[i], kind="hardlink", source=None, target=entries[first].path
                )
    return result


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerBlob:
    """A written layer: its gzip tar at `path`, its digest and size, and the digest of the
    uncompressed tar (`diff_id`, which the image config lists)."""

    path: Path
    digest: str
    size: int
    diff_id: str
    unpacked_size: int


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it into `sink`."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.count += len(data)
        self._sink.write(data)
        return len(data)


def source_date_epoch() -> int:
    """The fixed time of every entry: SOURCE_DATE_EPOCH (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not value.isdigit():
        raise ImageError(f"SOURCE_DATE_EPOCH={value!r}: must be whole seconds since 1970")
    return int(value)


def _with_parents(entries: Sequence[Entry]) -> list[Entry]:
    """`entries` sorted by path, with a 0755 root-owned directory for each missing parent."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise ImageError(f"layer path {entry.path!r} appears twice")
        by_path[entry.path] = entry
    for entry in list(by_path.values()):
        parent = PurePosixPath(entry.path).parent
        while str(parent) != ".":
            key = str(parent)
            existing = by_path.get(key)
            if existing is None:
                by_path[key] = Entry(key, "dir", 0o755)
            elif existing.kind != "dir":
                raise ImageError(
                    f"layer path {entry.path!r}: its parent {key!r} is not a directory"
                )
            parent = parent.parent
    # Sorting by path components puts every directory right before what it holds.
    return sorted(by_path.values(), key=lambda e: _order(e.path))


def _order(path: str) -> tuple[str, ...]:
    """The order of a layer's members: by path components, so a directory precedes its contents."""
    return PurePosixPath(path).parts


def write_layer(
    entries: Sequence[Entry], directory_out: Path, *, mtime: int | None = None
) -> LayerBlob:
    """Writes `entries` as a gzip tar into `directory_out`, named by its digest."""
    when = source_date_epoch() if mtime is None else mtime
    ordered = _with_parents(entries)
    written = {e.path for e in ordered}
    directory_out.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory_out, prefix=".layer-")
    try:
        with os.fdopen(handle, "wb") as raw:
            compressed = _Hashing(raw)
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
            ) as gz:
                plain = _Hashing(gz)
                with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for entry in ordered:
                        if entry.kind == "hardlink" and entry.target not in written:
                            raise ImageError(
                                f"layer hard link {entry.path!r}: target {entry.target!r} "
                                "is not in the layer"
                            )
                        _add(tar, entry, when)
        digest = "sha256:" + compressed.sha256.hexdigest()
        final = directory_out / digest.removeprefix("sha256:")
        Path(temporary).replace(final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise
    return LayerBlob(
        path=final,
        digest=digest,
        size=compressed.count,
        diff_id="sha256:" + plain.sha256.hexdigest(),
        unpacked_size=sum(_size(e) for e in ordered),
    )


def _size(entry: Entry) -> int:
    if entry.kind != "file":
        return 0
    if entry.data is not None:
        return len(entry.data)
    assert entry.source is not None
    return entry.source.stat().st_size


def _add(tar: tarfile.TarFile, entry: Entry, mtime: int) -> None:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mtime = mtime
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
        tar.addfile(info)
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, entry.target
        tar.addfile(info)
    elif entry.data is not None:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))
    else:
        assert entry.source is not None
        try:
            with entry.source.open("rb") as data:
                info.size = os.fstat(data.fileno()).st_size
                tar.addfile(info, data)
        except OSError as error:
            raise ImageError(
                f"layer file {entry.path!r}: cannot read {entry.source}: {error}"
            ) from error


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """The run-time part of the image config (OCI image-spec config.md, `config`)."""

    user: str = ""
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = "/"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exposed_ports: Sequence[str] = ()  # "8080/tcp"
    stop_signal: str = ""


@dataclasses.dataclass(frozen=True)
class Image:
    """A written archive: `digest` is the manifest's, the one a pod names the image by.

    Each of `layers` has as `path` its member name inside the archive (blobs/sha256/<hex>).
    """

    archive: Path
    digest: str
    name: str
    names: tuple[str, ...]
    config_digest: str
    layers: tuple[LayerBlob, ...]
    archive_size: int

    @property
    def repository(self) -> str:
        return split_name(self.name)[0]

    @property
    def reference(self) -> str:
        """`<repository>@<digest>`: how a pod spec names this image."""
        return f"{self.repository}@{self.digest}"

    @property
    def compressed_size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def unpacked_size(self) -> int:
        return sum(layer.unpacked_size for layer in self.layers)


def split_name(name: str) -> tuple[str, str]:
    """`registry/repo:tag` -> (`registry/repo`, `tag`); refuses names a node would not find."""
    repository, _, tag = name.rpartition(":")
    if "/" in tag or not repository:
        raise ImageError(
            f"image name {name!r}: must be <registry host>/<path>:<tag>, e.g. "
            "localhost/modelguard/pause:3.10.2"
        )
    if not _REPOSITORY.match(repository):
        raise ImageError(
            f"image name {name!r}: the repository must start with a registry host (a dotted "
            "name or localhost) and be lower case; a name without a host is looked up as "
            "docker.io/library/<name> and would never match the imported image"
        )
    if not _TAG.match(tag):
        raise ImageError(f"image name {name!r}: tag {tag!r} is not a valid tag")
    return repository, tag


def platform_of_host() -> dict[str, str]:
    machine = platform.machine().lower()
    architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {"architecture": architecture, "os": "linux"}


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _timestamp(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_document(
    config: Config, layers: Sequence[LayerBlob], *, created: int, history: Sequence[str] = ()
) -> dict[str, object]:
    run: dict[str, object] = {"WorkingDir": config.working_dir}
    if config.user:
        run["User"] = config.user
    if config.entrypoint:
        run["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        run["Cmd"] = list(config.cmd)
    if config.env:
        run["Env"] = list(config.env)
    if config.labels:
        run["Labels"] = dict(config.labels)
    if config.exposed_ports:
        run["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    if config.stop_signal:
        run["StopSignal"] = config.stop_signal
    steps = list(history) or [f"layer {i + 1}" for i in range(len(layers))]
    if len(steps) != len(layers):
        raise ImageError(f"image history: {len(steps)} entries for {len(layers)} layers")
    return {
        **platform_of_host(),
        "created": _timestamp(created),
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": _timestamp(created), "created_by": step} for step in steps],
    }


def build(
    *,
    layers: Sequence[Sequence[Entry] | LayerBlob],
    config: Config,
    name: str,
    out: Path,
    history: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """Writes the image as an OCI layout tar at `out` (atomically) and returns what it holds.

    `name` is `<registry host>/<path>:<tag>`; the index also names the manifest
    `<registry host>/<path>@sha256:<digest>`. `history` gives each layer's `created_by` text.
    `annotations` go on the manifest (e.g. org.opencontainers.image.source).
    """
    repository, tag = split_name(name)
    created = source_date_epoch()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as scratch:
        blobs_dir = Path(scratch)
        written = [
            layer if isinstance(layer, LayerBlob) else write_layer(layer, blobs_dir, mtime=created)
            for layer in layers
        ]
        config_bytes = _canonical_json(
            config_document(config, written, created=created, history=history)
        )
        config_desc = _descriptor(MEDIA_CONFIG, config_bytes)
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc,
            "layers": [
                {"mediaType": MEDIA_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in written
            ],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        manifest_bytes = _canonical_json(manifest)
        manifest_desc = _descriptor(MEDIA_MANIFEST, manifest_bytes)
        digest = str(manifest_desc["digest"])
        by_digest = f"{repository}@{digest}"
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    **manifest_desc,
                    "platform": platform_of_host(),
                    "annotations": {ANNOTATION_CONTAINERD_NAME: name, ANNOTATION_REF_NAME: tag},
                },
                {
                    **manifest_desc,
                    "platform": platform_of_host(),
                    "annotations": {ANNOTATION_CONTAINERD_NAME: by_digest},
                },
            ],
        }
        blobs: dict[str, tuple[bytes | Path, int]] = {
            str(config_desc["digest"]): (config_bytes, len(config_bytes)),
            digest: (manifest_bytes, len(manifest_bytes)),
        }
        for layer in written:
            blobs[layer.digest] = (layer.path, layer.size)
        partial = blobs_dir / "archive.tar"
        _write_archive(
            partial,
            index=_canonical_json(index),
            blobs=blobs,
            mtime=created,
        )
        archive_size = partial.stat().st_size
        partial.replace(out)
    return Image(
        archive=out,
        digest=digest,
        name=name,
        names=(name, by_digest),
        config_digest=str(config_desc["digest"]),
        layers=tuple(
            dataclasses.replace(layer, path=Path(_blob_member(layer.digest))) for layer in written
        ),
        archive_size=archive_size,
    )


def _blob_member(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def _write_archive(
    path: Path, *, index: bytes, blobs: Mapping[str, tuple[bytes | Path, int]], mtime: int
) -> None:
    layout = _canonical_json({"imageLayoutVersion": LAYOUT_VERSION})

    def header(name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime = kind, size, mtime
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(header("oci-layout", size=len(layout)), io.BytesIO(layout))
        tar.addfile(header("index.json", size=len(index)), io.BytesIO(index))
        tar.addfile(header("blobs/", kind=tarfile.DIRTYPE))
        tar.addfile(header("blobs/sha256/", kind=tarfile.DIRTYPE))
        for digest in sorted(blobs):
            content, size = blobs[digest]
            info = header(_blob_member(digest), size=size)
            if isinstance(content, bytes):
                tar.addfile(info, io.BytesIO(content))
            else:
                with content.open("rb") as data:
                    tar.addfile(info, data)


# --------------------------------------------------------------------------------------------
# Reading (for tests and the CLI)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def opened(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(archive, "r:") as tar:
            yield tar
    except (OSError, tarfile.TarError) as error:
        raise ImageError(f"{archive}: not an OCI layout tar: {error}") from error


def read_json(tar: tarfile.TarFile, member: str) -> dict[str, object]:
    where = os.fsdecode(tar.name) if tar.name else "archive"
    try:
        handle = tar.extractfile(member)
    except KeyError:
        handle = None
    if handle is None:
        raise ImageError(f"{where}: {member} is missing or not a file")
    try:
        value = json.loads(handle.read())
    except ValueError as error:
        raise ImageError(f"{where}: {member} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ImageError(f"{where}: {member} is not a JSON object")
    return value


def manifest_digest(archive: Path) -> str:
    """The manifest digest the archive's index names (one manifest, possibly under two names)."""
    with opened(archive) as tar:
        index = read_json(tar, "index.json")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{archive}: index.json lists no manifest")
    digests = {m.get("digest") for m in manifests if isinstance(m, dict)}
    if len(digests) != 1:
        raise ImageError(f"{archive}: index.json lists {len(digests)} manifests, expected one")
    return str(digests.pop())


def extract_blob(archive: Path, digest: str, destination: Path) -> None:
    with opened(archive) as tar:
        try:
            handle = tar.extractfile(_blob_member(digest))
        except KeyError:
            handle = None
        if handle is None:
            raise ImageError(f"{archive}: blob {digest} is missing")
        with destination.open("wb") as out:
            shutil.copyfileobj(handle, out, _CHUNK)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_file(spec: str) -> Entry:
    """SOURCE:DEST[:MODE] (octal mode, default 0644 or 0755 for an executable source)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ImageError(f"--file {spec!r}: expected SOURCE:DEST or SOURCE:DEST:MODE")
    source = Path(parts[0])
    if not source.is_file():
        raise ImageError(f"--file {spec!r}: {source} is not a file")
    default = 0o755 if os.access(source, os.X_OK) else 0o644
    mode = int(parts[2], 8) if len(parts) == 3 else default
    return file(parts[1], source=source, mode=mode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write an image archive; prints its digest")
    make.add_argument("--name", required=True, help="<registry host>/<path>:<tag>")
    make.add_argument("--out", required=True, type=Path)
    make.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="DIR[:PREFIX]",
        help="a layer of everything under DIR, owned by 0:0, placed under PREFIX",
    )
    make.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="SOURCE:DEST[:MODE]",
        help="a file of the last layer (one layer holds every --file)",
    )
    make.add_argument("--user", default="")
    make.add_argument("--entrypoint", nargs="*", default=[])
    make.add_argument("--cmd", nargs="*", default=[])
    make.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    make.add_argument("--workdir", default="/")
    make.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    show = commands.add_parser("digest", help="print the manifest digest of an archive")
    show.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "digest":
            print(manifest_digest(args.archive))
            return 0
        layers: list[Sequence[Entry]] = []
        for spec in args.dir:
            host, _, prefix = spec.partition(":")
            layers.append(directory_entries(Path(host), prefix=prefix))
        if args.file:
            layers.append([_parse_file(spec) for spec in args.file])
        if not layers:
            parser.error("build: give at least one --dir or --file")
        env = list(Config().env) + args.env
        labels = dict(label.split("=", 1) for label in args.label)
        image = build(
            layers=layers,
            config=Config(
                user=args.user,
                entrypoint=tuple(args.entrypoint),
                cmd=tuple(args.cmd),
                env=tuple(env),
                working_dir=args.workdir,
                labels=labels,
            ),
            name=args.name,
            out=args.out,
        )
        print(image.digest)
    except ImageError as error:
        print(f"oci: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
