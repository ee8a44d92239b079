"""Backup stores: objects written once, with a retention lock, and read back by version.

`Store` is what a backup (and anything else that keeps evidence offline, such as signed audit
checkpoints) needs of a store; `put_immutable` is the whole of it for a small object:

    stored = await store.put_immutable("checkpoints/<id>.json", data, retain_until=until)

creates the object once (the store refuses to overwrite it), locks it until `until` (an S3 store
with object lock), reads it back and checks it, and returns where it is and which version; the
same bytes put again return the object already there, other bytes under a taken key raise
ObjectExists. Open one with `open_s3` or `open_volume`.

- `S3Store`: a bucket (below an optional prefix) through sources.s3objects: If-None-Match on
  every PUT, the object lock mode and retain-until date on every object, the SHA-256 signed when
  known so that the server itself refuses other bytes, reads by version id.
- `VolumeStore`: a directory on a mounted volume. Files are created with O_EXCL and linked into
  place (never replaced), then made read-only; but whoever can write to the volume can change
  them: not immutable, only by explicit choice (BackupStore spec.volume.acceptMutable).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import os
import stat
import typing
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from modelguard.sources import base, credentials, errors, locations, s3objects

Body = bytes | Callable[[], AsyncIterator[bytes]]
_DIR_FLAGS: typing.Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: typing.Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_WRITE_FLAGS: typing.Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Stored:
    """An object in a store: its key (inside the store), version, size and SHA-256."""

    key: str
    version_id: str | None
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Found:
    """What a store says of an object it holds."""

    size: int
    version_id: str | None
    retain_until: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class Condition:
    """What a store is like: what its BackupStore's Ready condition is decided from."""

    object_lock: str
    """Enabled, Disabled or Unsupported (a volume)."""
    versioning: str
    """Enabled, Suspended, Disabled or Unsupported (a volume)."""


class Store(typing.Protocol):
    """Objects written once and read back; keys are relative, safe file names."""

    description: str
    """For messages: the BackupStore and where it writes."""
    immutable: bool
    """The store enforces a retention (S3 object lock), rather than only being written once."""

    async def put(
        self,
        key: str,
        body: Body,
        *,
        size: int,
        sha256: str | None,
        retain_until: datetime.datetime,
    ) -> str | None:
        """Creates the object with exactly `size` bytes; ObjectExists when the key is taken.
        `sha256`, when known, makes the store refuse other bytes. Returns the version id."""
        ...

    async def head(self, key: str, *, version_id: str | None = None) -> Found | None: ...

    def stream(
        self, key: str, *, version_id: str | None = None, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]: ...

    async def read(self, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes: ...

    async def extend(
        self, key: str, *, version_id: str | None, retain_until: datetime.datetime
    ) -> None:
        """Locks the object at least until `retain_until` (a reused object must outlive every
        backup that refers to it); never shortens a lock."""
        ...

    async def list_keys(self, prefix: str) -> list[base.ObjectInfo]: ...

    async def versions(self, key: str) -> list[str | None]:
        """Every version of `key`, newest first ([None] where the store keeps no versions)."""
        ...

    async def condition(self) -> Condition: ...

    async def put_immutable(
        self, key: str, data: bytes, *, retain_until: datetime.datetime
    ) -> Stored: ...

    async def aclose(self) -> None: ...


class _PutImmutable:
    """`put_immutable` on top of put, head and read, for every store."""

    async def put_immutable(
        self, key: str, data: bytes, *, retain_until: datetime.datetime
    ) -> Stored:
        store = typing.cast(Store, self)
        digest = hashlib.sha256(data).hexdigest()
        try:
            version = await store.put(
                key, data, size=len(data), sha256=digest, retain_until=retain_until
            )
        except errors.ObjectExists:
            found = await store.head(key)
            version = found.version_id if found is not None else None
        back = await store.read(key, version_id=version, max_bytes=len(data))
        if hashlib.sha256(back).hexdigest() != digest:
            raise errors.ObjectExists(
                f"{store.description}: {key} holds other bytes; it is never overwritten"
            )
        await store.extend(key, version_id=version, retain_until=retain_until)
        return Stored(key=key, version_id=version, size=len(data), sha256=digest)


class S3Store(_PutImmutable):
    """A bucket of an S3-compatible server, below `prefix`."""

    immutable = True

    def __init__(
        self,
        bucket: s3objects.S3Bucket,
        *,
        prefix: str,
        mode: s3objects.LockMode | None,
        description: str,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._mode = mode
        self.immutable = mode is not None
        self.description = description

    def _key(self, key: str) -> str:
        return self._prefix + locations.check_name(key)

    def _retention(self, until: datetime.datetime) -> s3objects.Retention | None:
        return None if self._mode is None else s3objects.Retention(mode=self._mode, until=until)

    async def put(
        self,
        key: str,
        body: Body,
        *,
        size: int,
        sha256: str | None,
        retain_until: datetime.datetime,
    ) -> str | None:
        return await self._bucket.put(
            self._key(key),
            body,
            size=size,
            sha256=sha256,
            retention=self._retention(retain_until),
        )

    async def head(self, key: str, *, version_id: str | None = None) -> Found | None:
        found = await self._bucket.head(self._key(key), version_id=version_id)
        if found is None:
            return None
        return Found(
            size=found.size,
            version_id=found.version_id,
            retain_until=found.retention.until if found.retention is not None else None,
        )

    def stream(
        self, key: str, *, version_id: str | None = None, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        return self._bucket.stream(self._key(key), version_id=version_id, chunk_size=chunk_size)

    async def read(self, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        return await self._bucket.read(self._key(key), version_id=version_id, max_bytes=max_bytes)

    async def extend(
        self, key: str, *, version_id: str | None, retain_until: datetime.datetime
    ) -> None:
        retention = self._retention(retain_until)
        if retention is None:
            return
        found = await self._bucket.head(self._key(key), version_id=version_id)
        if (
            found is not None
            and found.retention is not None
            and found.retention.until >= (retain_until)
        ):
            return
        await self._bucket.extend_retention(
            self._key(key), version_id=version_id, retention=retention
        )

    async def list_keys(self, prefix: str) -> list[base.ObjectInfo]:
        return await self._bucket.list_keys(self._prefix + prefix)

    async def versions(self, key: str) -> list[str | None]:
        found: list[str | None] = list(await self._bucket.versions(self._key(key)))
        return found or [None]

    async def condition(self) -> Condition:
        lock = await self._bucket.object_lock()
        versioning = await self._bucket.versioning()
        return Condition(
            object_lock="Enabled" if lock.enabled else "Disabled",
            versioning=versioning or "Disabled",
        )

    async def aclose(self) -> None:
        await self._bucket.aclose()


class VolumeStore(_PutImmutable):
    """A directory on a volume mounted into the operator: written once, read-only, not locked."""

    immutable = False

    def __init__(self, root: Path, *, description: str) -> None:
        self._root = root
        self.description = description

    async def put(
        self,
        key: str,
        body: Body,
        *,
        size: int,
        sha256: str | None,
        retain_until: datetime.datetime,
    ) -> str | None:
        locations.check_name(key)
        temporary = await asyncio.to_thread(self._create_temporary, key)
        fd, directory, name = temporary
        written = 0
        digest = hashlib.sha256()
        try:
            chunks: AsyncIterator[bytes]
            chunks = _once(body) if isinstance(body, bytes) else body()
            async for chunk in chunks:
                written += len(chunk)
                if written > size:
                    raise errors.BadResponse(f"{self.description}: {key}: more than {size} bytes")
                digest.update(chunk)
                await asyncio.to_thread(_write_all, fd, chunk)
            if written != size or (sha256 is not None and digest.hexdigest() != sha256):
                raise errors.BadResponse(
                    f"{self.description}: {key}: the bytes are not the {size} announced"
                )
            await asyncio.to_thread(self._link, fd, directory, name, key)
        finally:
            await asyncio.to_thread(_discard, fd, directory, name)
        return None

    def _create_temporary(self, key: str) -> tuple[int, int, str]:
        *parents, _ = key.split("/")
        directory = self._open_dirs(parents, create=True)
        name = f".tmp-{uuid.uuid4().hex}"
        try:
            fd = os.open(name, _WRITE_FLAGS, 0o600, dir_fd=directory)
        except OSError as error:
            os.close(directory)
            raise self._error(key, error) from None
        return fd, directory, name

    def _link(self, fd: int, directory: int, name: str, key: str) -> None:
        leaf = key.rsplit("/", 1)[-1]
        try:
            os.fsync(fd)
            os.fchmod(fd, 0o444)
            # A hard link fails when the name exists: never replaces, unlike rename.
            os.link(name, leaf, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
            os.fsync(directory)
        except FileExistsError:
            raise errors.ObjectExists(
                f"{self.description}: {key} already exists; it is never overwritten"
            ) from None
        except OSError as error:
            raise self._error(key, error) from None

    def _open_dirs(self, parents: list[str], *, create: bool) -> int:
        try:
            fd = os.open(self._root, _DIR_FLAGS)
        except OSError as error:
            raise errors.SourceNotFound(f"{self.description}: {error.strerror or error}") from None
        for segment in parents:
            parent = fd
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(segment, 0o755, dir_fd=parent)
                fd = os.open(segment, _DIR_FLAGS, dir_fd=parent)
            except OSError as error:
                raise self._error("/".join(parents), error) from None
            finally:
                os.close(parent)
        return fd

    def _open_file(self, key: str) -> int | None:
        locations.check_name(key)
        *parents, leaf = key.split("/")
        try:
            directory = self._open_dirs(parents, create=False)
        except errors.SourceError:
            return None
        try:
            fd = os.open(leaf, _READ_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._error(key, error) from None
        finally:
            os.close(directory)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise errors.UnsafePath(f"{self.description}: {key} is not a regular file")
        os.set_blocking(fd, True)
        return fd

    async def head(self, key: str, *, version_id: str | None = None) -> Found | None:
        fd = await asyncio.to_thread(self._open_file, key)
        if fd is None:
            return None
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        return Found(size=size, version_id=None, retain_until=None)

    def stream(
        self, key: str, *, version_id: str | None = None, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        return self._stream(key, chunk_size=chunk_size)

    async def _stream(self, key: str, *, chunk_size: int) -> AsyncGenerator[bytes, None]:
        fd = await asyncio.to_thread(self._open_file, key)
        if fd is None:
            raise errors.MissingFile(f"{self.description}: {key}: not found")
        try:
            while chunk := await asyncio.to_thread(os.read, fd, chunk_size):
                yield chunk
        finally:
            os.close(fd)

    async def read(self, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        parts = []
        total = 0
        async with contextlib.aclosing(self._stream(key, chunk_size=1 << 20)) as chunks:
            async for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise errors.TooLarge(f"{self.description}: {key}: more than {max_bytes} bytes")
                parts.append(chunk)
        return b"".join(parts)

    async def extend(
        self, key: str, *, version_id: str | None, retain_until: datetime.datetime
    ) -> None:
        """A volume has no retention to extend."""

    async def list_keys(self, prefix: str) -> list[base.ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def versions(self, key: str) -> list[str | None]:
        return [None]

    def _list(self, prefix: str) -> list[base.ObjectInfo]:
        parents = [segment for segment in prefix.split("/") if segment]
        try:
            fd = self._open_dirs(parents, create=False)
        except errors.SourceError:
            return []
        found = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
                        found.append(base.ObjectInfo(name=entry.name, size=entry.stat().st_size))
        finally:
            os.close(fd)
        return sorted(found, key=lambda item: item.name)

    async def condition(self) -> Condition:
        def probe() -> None:
            fd = self._open_dirs([], create=False)
            os.close(fd)
            if not os.access(self._root, os.W_OK):
                raise errors.SourceDenied(f"{self.description}: not writable by the operator")

        await asyncio.to_thread(probe)
        return Condition(object_lock="Unsupported", versioning="Unsupported")

    async def aclose(self) -> None:
        """Nothing stays open."""

    def _error(self, key: str, error: OSError) -> errors.SourceError:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_NOFOLLOW with O_DIRECTORY answers ENOTDIR for a symlink to a directory.
            return errors.UnsafePath(
                f"{self.description}: {key}: a symlink or a file where a folder should be"
            )
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return errors.SourceDenied(f"{self.description}: {key}: {error.strerror}")
        return errors.SourceUnreachable(f"{self.description}: {key}: {error.strerror or error}")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def _discard(fd: int, directory: int, name: str) -> None:
    try:
        os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=directory)
        os.close(directory)


def open_s3(
    *,
    bucket: str,
    prefix: str,
    settings: credentials.SourceSettings,
    mode: s3objects.LockMode | None,
    description: str,
) -> S3Store:
    """An S3 store; `settings` are credentials.SourceSettings already bound to the store's
    endpoint and address rules; `mode` None for a bucket without object lock."""
    return S3Store(
        s3objects.S3Bucket(bucket, settings=settings.s3, transport_settings=settings.transport),
        prefix=prefix,
        mode=mode,
        description=description,
    )


def open_volume(root: Path, *, description: str) -> VolumeStore:
    return VolumeStore(root, description=description)
