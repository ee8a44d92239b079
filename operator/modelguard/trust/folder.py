"""Reading a local model folder: listing it safely, hashing it in parallel, sniffing formats.

The only module of the trust layer that touches files. Listing never follows a symlink (one is an
UnsafePath, as are special files and unsafe names); hashing runs on a bounded thread pool, each
thread reading into one reusable buffer, so memory stays at workers x CHUNK_BYTES whatever the
model size (hashlib releases the GIL while it hashes, so threads use every core).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import stat
import threading
import typing
import zipfile

from modelguard.trust import digests, formats, paths, reasons

CHUNK_BYTES: typing.Final = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class LocalFile:
    path: str
    """POSIX path relative to the model folder."""
    size: int


def scan(root: pathlib.Path, *, ignore_paths: typing.Collection[str]) -> list[LocalFile]:
    """Every regular file below `root` but the ignored ones; UnsafePath for a symlink."""
    found: list[LocalFile] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            entries = list(os.scandir(root / relative if relative else root))
        except OSError as error:
            raise _unreadable(relative or ".", error) from None
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            if paths.is_ignored(name, ignore_paths):
                continue
            violation = paths.check_name(name, field="file")
            if violation is not None:
                raise reasons.VerificationError.of(violation)
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                raise _unreadable(name, error) from None
            if stat.S_ISLNK(info.st_mode):
                raise reasons.VerificationError(
                    reasons.Reason.UNSAFE_PATH,
                    f"{name!r} is a symlink; a model folder may hold only regular files and "
                    "directories",
                )
            if stat.S_ISDIR(info.st_mode):
                pending.append(name)
            elif stat.S_ISREG(info.st_mode):
                found.append(LocalFile(name, info.st_size))
            else:
                raise reasons.VerificationError(
                    reasons.Reason.UNSAFE_PATH, f"{name!r} is not a regular file"
                )
    return sorted(found, key=lambda item: pathlib.PurePosixPath(item.path).parts)


def hash_files(
    root: pathlib.Path,
    files: typing.Sequence[LocalFile],
    *,
    hash_type: str,
    shard_size: int | None,
    workers: int | None = None,
) -> list[digests.Resource]:
    """The model_signing resources of `files`, in manifest order, hashed in parallel."""
    digests.new_hash(hash_type)  # UnsupportedHash before any thread starts
    tasks: list[tuple[LocalFile, int, int]] = []
    for item in files:
        if shard_size is None:
            tasks.append((item, 0, item.size))
        else:
            tasks.extend(
                (item, start, end) for start, end in digests.shard_ranges(item.size, shard_size)
            )
    buffers = threading.local()
    algorithm = digests.resource_algorithm(hash_type, shard_size=shard_size)

    def run(task: tuple[LocalFile, int, int]) -> digests.Resource:
        item, start, end = task
        buffer = getattr(buffers, "buffer", None)
        if buffer is None:
            buffer = buffers.buffer = bytearray(CHUNK_BYTES)
        hasher = digests.new_hash(hash_type)
        _hash_range(root / item.path, hasher, start=start, end=end, buffer=buffer, name=item.path)
        if shard_size is None:
            return digests.Resource(item.path, algorithm, hasher.digest())
        return digests.Resource(item.path, algorithm, hasher.digest(), start=start, end=end)

    count = workers or min(32, (os.cpu_count() or 1) + 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        # Largest first, so one big file started last does not leave the other cores idle.
        order = sorted(range(len(tasks)), key=lambda i: tasks[i][2] - tasks[i][1], reverse=True)
        futures = {index: pool.submit(run, tasks[index]) for index in order}
        results = [futures[index].result() for index in range(len(tasks))]
    return digests.manifest_order(results)


def _hash_range(
    path: pathlib.Path,
    hasher: digests.Hash,
    *,
    start: int,
    end: int,
    buffer: bytearray,
    name: str,
) -> None:
    view = memoryview(buffer)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        raise _unreadable(name, error) from None
    try:
        offset = start
        while offset < end:
            wanted = min(len(buffer), end - offset)
            read = os.preadv(descriptor, [view[:wanted]], offset)
            if read == 0:
                raise reasons.VerificationError(
                    reasons.Reason.DIGEST_MISMATCH, f"file {name!r} shrank while it was read"
                )
            hasher.update(view[:read])
            offset += read
    except OSError as error:
        raise _unreadable(name, error) from None
    finally:
        os.close(descriptor)


def sniff(root: pathlib.Path, item: LocalFile) -> formats.Format:
    """The format of one file, from its first bytes (and its members', for a zip archive)."""
    path = root / item.path
    try:
        with path.open("rb") as handle:
            head = handle.read(formats.HEAD_BYTES)
        if not head.startswith(b"PK"):
            return formats.sniff(head)
        return formats.sniff(head, zip_members=_zip_members(path))
    except OSError as error:
        raise _unreadable(item.path, error) from None


def _zip_members(path: pathlib.Path) -> dict[str, bytes] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist()[: formats.MAX_ZIP_MEMBERS]:
                if info.is_dir():
                    continue
                with archive.open(info) as member:
                    members[info.filename] = member.read(formats.ZIP_MEMBER_HEAD_BYTES)
            return members
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError):
        # Not a readable zip: judged by its head alone.
        return None


def _unreadable(name: str, error: OSError) -> reasons.VerificationError:
    return reasons.VerificationError(
        reasons.Reason.UNREADABLE, f"cannot read {name!r}: {error.strerror or error}"
    )
