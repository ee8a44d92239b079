"""Reading a directory of a PersistentVolumeClaim that the pod mounts read-only.

`pvc://claim/path` is `<mount root>/<claim>/<path>` in the pod. Every step below the claim's mount
is opened relative to its parent with O_NOFOLLOW, so a symlink anywhere in a name is refused
(UnsafePath) rather than followed out of the volume, and only regular files are read. Blocking
file system calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

from modelguard.sources import base, errors, locations

# Where the pod spec mounts claims: <root>/<claim>.
DEFAULT_MOUNT_ROOT = Path("/var/run/modelguard/claims")
DEFAULT_MAX_FILES = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the volume must not hang the agent.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class PvcSource:
    """A directory of a mounted claim."""

    can_list = True

    def __init__(
        self,
        location: locations.PvcLocation,
        *,
        mount_root: Path = DEFAULT_MOUNT_ROOT,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        self.location = location
        self.uri = str(location)
        self._claim_dir = mount_root / location.claim
        self._max_files = max_files

    async def __aenter__(self) -> PvcSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing stays open between calls."""

    # -- opening, synchronously (called in threads) ------------------------------------------

    def _open_folder(self) -> int:
        try:
            fd = os.open(self._claim_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise errors.SourceNotFound(
                f"{self.uri}: claim {self.location.claim!r} is not mounted at {self._claim_dir} "
                f"({error.strerror})"
            ) from None
        if not self.location.path:
            return fd
        try:
            return self._descend(fd, self.location.path.split("/"), what=self.uri)
        except errors.MissingFile:
            raise errors.SourceNotFound(f"{self.uri}: no such directory in the claim") from None

    def _descend(self, fd: int, segments: list[str], *, what: str) -> int:
        """Opens the directory `segments` below `fd` step by step; closes `fd`."""
        try:
            for segment in segments:
                child = _open_at(fd, segment, flags=_DIR_FLAGS, what=what)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _open_file(self, name: str) -> Iterator[tuple[int, int]]:
        """The open descriptor and size of the regular file `name`."""
        *parents, leaf = locations.check_name(name).split("/")
        what = f"{self.uri.rstrip('/')}/{name}"
        folder = self._descend(self._open_folder(), parents, what=what)
        try:
            fd = _open_at(folder, leaf, flags=_FILE_FLAGS, what=what)
        finally:
            os.close(folder)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise errors.UnsafePath(f"{what}: not a regular file")
            # Reads block normally from here on; O_NONBLOCK was for opening only.
            os.set_blocking(fd, True)
            yield fd, info.st_size
        finally:
            os.close(fd)

    # -- the interface -----------------------------------------------------------------------

    async def read_small(self, name: str, *, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._read_small, name, max_bytes=max_bytes)

    def _read_small(self, name: str, *, max_bytes: int) -> bytes:
        with self._open_file(name) as (fd, size):
            if size > max_bytes:
                raise errors.TooLarge(f"{name}: {size} bytes, more than the {max_bytes} allowed")
            parts: list[bytes] = []
            total = 0
            while chunk := os.read(fd, max_bytes + 1 - total):
                total += len(chunk)
                parts.append(chunk)
                if total > max_bytes:
                    # The file grew after fstat.
                    raise errors.TooLarge(f"{name}: more than the {max_bytes} bytes allowed")
            return b"".join(parts)

    def stream(
        self, name: str, *, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        locations.check_name(name)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return self._stream(name, chunk_size=chunk_size)

    async def _stream(self, name: str, *, chunk_size: int) -> AsyncGenerator[bytes, None]:
        opened = self._open_file(name)
        fd, _ = await asyncio.to_thread(opened.__enter__)
        try:
            while chunk := await asyncio.to_thread(os.read, fd, chunk_size):
                yield chunk
        finally:
            opened.__exit__(None, None, None)

    async def list_files(self) -> list[base.ObjectInfo]:
        return await asyncio.to_thread(self._list_files)

    def _list_files(self) -> list[base.ObjectInfo]:
        found: list[base.ObjectInfo] = []
        self._walk(self._open_folder(), prefix="", found=found)
        return sorted(found, key=lambda info: info.name)

    def _walk(self, fd: int, *, prefix: str, found: list[base.ObjectInfo]) -> None:
        """Adds the files below directory `fd` to `found`; closes `fd`."""
        try:
            with os.scandir(fd) as entries:
                listed = list(entries)
            for entry in listed:
                name = locations.check_name(prefix + entry.name)
                what = f"{self.uri.rstrip('/')}/{name}"
                if entry.is_symlink():
                    raise errors.UnsafePath(f"{what}: a symlink")
                if entry.is_dir(follow_symlinks=False):
                    child = _open_at(fd, entry.name, flags=_DIR_FLAGS, what=what)
                    self._walk(child, prefix=name + "/", found=found)
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    found.append(base.ObjectInfo(name=name, size=size))
                    if len(found) > self._max_files:
                        raise errors.TooLarge(f"{self.uri}: more than {self._max_files} files")
                else:
                    raise errors.UnsafePath(f"{what}: not a regular file or directory")
        finally:
            os.close(fd)


def _open_at(fd: int, segment: str, *, flags: int, what: str) -> int:
    try:
        return os.open(segment, flags, dir_fd=fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(segment, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise errors.UnsafePath(f"{what}: goes through a symlink") from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise errors.MissingFile(f"{what}: not found") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise errors.SourceDenied(f"{what}: permission denied") from None
        raise errors.SourceUnreachable(f"{what}: {error.strerror}") from None
