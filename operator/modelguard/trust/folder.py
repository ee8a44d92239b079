"""Reading a local model folder: listing it safely, hashing it in parallel, classifying formats.

The only module of the trust layer that touches files. Listing never follows a symlink (one is an
UnsafePath, as are special files and unsafe names). Hashing runs one thread per available core
(hashlib releases the GIL while it hashes, so threads use every core; more threads than cores only
thrash the caches). Each thread maps one window of a file at a time and hashes it straight from the
page cache, so no byte is copied into the process; the windows of all threads together stay within
MAPPED_BYTES whatever the model size. Where a file system cannot map files, they are read into a
buffer of a window's size instead.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import mmap
import os
import pathlib
import stat
import typing

from modelguard.trust import digests, formats, paths, reasons

# What all hashing threads map (or buffer) at once: the memory hashing adds, whatever the model.
MAPPED_BYTES: typing.Final = 32 << 20
# Per thread: large windows mean few mmap calls; past a few MiB nothing is gained.
MAX_WINDOW_BYTES: typing.Final = 8 << 20
MIN_WINDOW_BYTES: typing.Final = 1 << 20
_MAX_WORKERS: typing.Final = MAPPED_BYTES // MIN_WINDOW_BYTES
_OPEN_FLAGS: typing.Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# mmap fails with these where a file system cannot map files (some FUSE mounts, for one).
_CANNOT_MAP: typing.Final = frozenset({errno.ENODEV, errno.EINVAL, errno.EACCES, errno.ENOTSUP})


@dataclasses.dataclass(frozen=True)
class LocalFile:
    path: str
    """POSIX path relative to the model folder."""
    size: int


def scan(
    root: pathlib.Path,
    *,
    ignore_paths: typing.Collection[str],
    signed: typing.Collection[str] = (),
    allow_symlinks: bool = False,
) -> list[LocalFile]:
    """Every regular file below `root` but the ignored ones; UnsafePath for a symlink.

    An ignore path never hides a `signed` file: what the signature lists is verified wherever it
    lies. `allow_symlinks` is what the signer recorded; either way a symlink is refused, and the
    message says why."""
    # The signed files and the directories that lead to them.
    wanted = {
        "/".join(parts[:depth])
        for parts in (name.split("/") for name in signed)
        for depth in range(1, len(parts) + 1)
    }
    found: list[LocalFile] = []
    for name, info in _entries(
        root, skip=lambda name: name not in wanted and paths.is_ignored(name, ignore_paths)
    ):
        violation = paths.check_name(name, field="file")
        if violation is not None:
            raise reasons.VerificationError.of(violation)
        if stat.S_ISLNK(info.st_mode):
            raise symlink_refused(name, allow_symlinks=allow_symlinks)
        if stat.S_ISREG(info.st_mode):
            found.append(LocalFile(name, info.st_size))
        elif not stat.S_ISDIR(info.st_mode):
            raise reasons.VerificationError(
                reasons.Reason.UNSAFE_PATH, f"{name!r} is not a regular file"
            )
    return _in_order(found)


def _entries(
    root: pathlib.Path, *, skip: typing.Callable[[str], bool] | None = None
) -> typing.Iterator[tuple[str, os.stat_result]]:
    """Every entry below `root` (its path from the root, its lstat), folders before what they
    hold, links not followed; a `skip`ped folder is not entered."""
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            entries = list(os.scandir(root / relative if relative else root))
        except OSError as error:
            raise _unreadable(relative or ".", error) from None
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            if skip is not None and skip(name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                raise _unreadable(name, error) from None
            yield name, info
            if stat.S_ISDIR(info.st_mode):
                pending.append(name)


def _in_order(files: typing.Iterable[LocalFile]) -> list[LocalFile]:
    return sorted(files, key=lambda item: pathlib.PurePosixPath(item.path).parts)


def is_file(path: pathlib.Path) -> bool:
    """Whether `path` is a file, or a link to one (which scan_file refuses), not a folder: a
    link to a folder is read as that folder, as `modelguard verify` always has."""
    try:
        return path.is_file()
    except OSError:
        return False


def scan_file(path: pathlib.Path, *, allow_symlinks: bool = False) -> LocalFile:
    """A single-file model: the file itself, named by its basename; UnsafePath for a symlink."""
    try:
        info = path.lstat()
    except OSError as error:
        raise _unreadable(path.name, error) from None
    if stat.S_ISLNK(info.st_mode):
        raise symlink_refused(path.name, allow_symlinks=allow_symlinks)
    if not stat.S_ISREG(info.st_mode):
        raise reasons.VerificationError(
            reasons.Reason.UNSAFE_PATH, f"{path.name!r} is not a regular file"
        )
    return LocalFile(path.name, info.st_size)


def symlink_refused(name: str, *, allow_symlinks: bool) -> reasons.VerificationError:
    """The refusal of a symlink in a model, saying what the statement's allow_symlinks meant."""
    if not allow_symlinks:
        why = (
            "the signature's serialization.allow_symlinks is false, so the model may hold only "
            "regular files and directories (OMS 6.1.1)"
        )
    else:
        why = (
            "the signature's serialization.allow_symlinks is true, but ModelGuard never follows "
            "symlinks: a link may point outside the model or be repointed after verification, so "
            "what is loaded would not be what was verified; replace the link with a copy of the "
            "file it points to, whose bytes the signed digest covers"
        )
    return reasons.VerificationError(reasons.Reason.UNSAFE_PATH, f"{name!r} is a symlink: {why}")


def hash_files(
    root: pathlib.Path,
    files: typing.Sequence[LocalFile],
    *,
    hash_type: str,
    shard_size: int | None,
    workers: int | None = None,
    window_bytes: int | None = None,
) -> list[digests.Resource]:
    """The model_signing resources of `files`, in manifest order, hashed in parallel.

    `workers` defaults to the cores this process may run on, `window_bytes` (how much of a file
    one thread maps at a time, a multiple of the page size) to an equal share of MAPPED_BYTES.
    """
    digests.new_hash(hash_type)  # UnsupportedHash before any thread starts
    tasks: list[tuple[LocalFile, int, int]] = []
    for item in files:
        if shard_size is None:
            tasks.append((item, 0, item.size))
        else:
            tasks.extend(
                (item, start, end) for start, end in digests.shard_ranges(item.size, shard_size)
            )
    # At most MAPPED_BYTES // MIN_WINDOW_BYTES threads, so that their windows stay within it.
    count = max(1, min(workers or available_cores(), len(tasks), _MAX_WORKERS))
    window = window_bytes or _window_for(count)
    if window <= 0 or window % mmap.ALLOCATIONGRANULARITY:
        raise ValueError(
            f"window_bytes must be a positive multiple of {mmap.ALLOCATIONGRANULARITY}"
        )
    algorithm = digests.resource_algorithm(hash_type, shard_size=shard_size)

    def run(task: tuple[LocalFile, int, int]) -> digests.Resource:
        item, start, end = task
        hasher = digests.new_hash(hash_type)
        _hash_range(root / item.path, hasher, start=start, end=end, window=window, name=item.path)
        if shard_size is None:
            return digests.Resource(item.path, algorithm, hasher.digest())
        return digests.Resource(item.path, algorithm, hasher.digest(), start=start, end=end)

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        # Largest first, so one big file started last does not leave the other cores idle.
        order = sorted(range(len(tasks)), key=lambda i: tasks[i][2] - tasks[i][1], reverse=True)
        futures = {index: pool.submit(run, tasks[index]) for index in order}
        results = [futures[index].result() for index in range(len(tasks))]
    return digests.manifest_order(results)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset sets)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _window_for(workers: int) -> int:
    share = MAPPED_BYTES // workers
    share -= share % mmap.ALLOCATIONGRANULARITY
    return max(MIN_WINDOW_BYTES, min(MAX_WINDOW_BYTES, share))


def _hash_range(
    path: pathlib.Path,
    hasher: digests.Hash,
    *,
    start: int,
    end: int,
    window: int,
    name: str,
) -> None:
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise _unreadable(name, error) from None
    try:
        offset = start
        while offset < end:
            # A mapping starts on a page boundary; a shard need not.
            base = offset - offset % mmap.ALLOCATIONGRANULARITY
            length = min(window, end - base)
            # A file that shrank since it was listed is refused before its window is mapped
            # (mmap would refuse it too, with a ValueError). One cut shorter while a window of it
            # is being hashed kills the process with SIGBUS: that fails closed, without a reason.
            if os.fstat(descriptor).st_size < base + length:
                raise _shrank(name)
            if base + length < end:
                _read_ahead(descriptor, base + length, min(window, end - base - length))
            try:
                # Not MAP_POPULATE: Python holds the GIL in mmap(), so pages read from disk there
                # would stall every other thread; faulted in while hashing, they do not.
                mapped = mmap.mmap(
                    descriptor, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=base
                )
            except ValueError:
                raise _shrank(name) from None
            except OSError as error:
                if error.errno not in _CANNOT_MAP:
                    raise
                _read_range(descriptor, hasher, start=offset, end=end, window=window, name=name)
                return
            with mapped, memoryview(mapped)[offset - base :] as view:
                hasher.update(view)
            offset = base + length
    except OSError as error:
        raise _unreadable(name, error) from None
    finally:
        os.close(descriptor)


def _read_range(
    descriptor: int, hasher: digests.Hash, *, start: int, end: int, window: int, name: str
) -> None:
    """[start, end) of the file read into a buffer and hashed: where mapping is refused."""
    buffer = bytearray(window)
    view = memoryview(buffer)
    offset = start
    while offset < end:
        read = os.preadv(descriptor, [view[: min(window, end - offset)]], offset)
        if read == 0:
            raise _shrank(name)
        hasher.update(view[:read])
        offset += read


def _read_ahead(descriptor: int, offset: int, length: int) -> None:
    # The next window is read from disk while this one is hashed, when it is not cached already.
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(descriptor, offset, length, os.POSIX_FADV_WILLNEED)


def sniff(
    root: pathlib.Path, item: LocalFile, *, model_files: typing.Iterable[str] = ()
) -> formats.Finding:
    """What one file holds (every member, for an archive) and what must be allowed to load it.
    `model_files`: every file of the model, whose names an unpickler could import; so could the
    folder of the model and every folder it lies in (from the folder above, `bert/` is a package,
    and any folder a namespace package), so their names count as the model's too."""
    importable = [*model_files, root.absolute().as_posix()]
    try:
        descriptor = os.open(root / item.path, _OPEN_FLAGS)
        with os.fdopen(descriptor, "rb") as handle:
            return formats.classify(handle, model_files=importable)
    except OSError as error:
        raise _unreadable(item.path, error) from None


def present(root: pathlib.Path) -> list[LocalFile]:
    """Every regular file below `root`, ignored and unsigned ones too: what a loader can open.
    Symlinks are not followed (scan refuses those among the model's files)."""
    return _in_order(
        LocalFile(name, info.st_size) for name, info in _entries(root) if stat.S_ISREG(info.st_mode)
    )


def sniff_model(
    root: pathlib.Path, files: typing.Sequence[LocalFile]
) -> dict[str, formats.Finding]:
    """What each file holds, and each folder Keras would load as a model (keras_folders)."""
    names = [item.path for item in files]
    found = {item.path: sniff(root, item, model_files=names) for item in files}
    for name, finding in keras_folders(root, names).items():
        if finding.code_capable or not found[name].code_capable:
            found[name] = finding
    return found


def keras_folders(root: pathlib.Path, names: typing.Iterable[str]) -> dict[str, formats.Finding]:
    """The config.json of every folder Keras 3 loads as a model (load_model of an unzipped
    .keras archive: config.json beside metadata.json or model.weights.*), judged as Keras."""
    by_folder: dict[str, set[str]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        by_folder.setdefault(folder, set()).add(base)
    found: dict[str, formats.Finding] = {}
    for folder, bases in by_folder.items():
        keras = "metadata.json" in bases or any(b.startswith("model.weights.") for b in bases)
        if "config.json" not in bases or not keras:
            continue
        config = f"{folder}/config.json" if folder else "config.json"
        limit = formats.LIMITS.keras_config_bytes
        try:
            descriptor = os.open(root / config, _OPEN_FLAGS)
            with os.fdopen(descriptor, "rb") as handle:
                content = handle.read(limit + 1)
        except OSError as error:
            raise _unreadable(config, error) from None
        finding = formats.keras_folder(content)
        if finding is not None:
            found[config] = finding
    return found


def _shrank(name: str) -> reasons.VerificationError:
    return reasons.VerificationError(
        reasons.Reason.DIGEST_MISMATCH, f"file {name!r} shrank while it was read"
    )


def _unreadable(name: str, error: OSError) -> reasons.VerificationError:
    return reasons.VerificationError(
        reasons.Reason.UNREADABLE, f"cannot read {name!r}: {error.strerror or error}"
    )
