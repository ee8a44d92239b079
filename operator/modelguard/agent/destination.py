"""The model volume the agent fills: files created safely, sealed read-only, or all removed.

Every path is opened relative to its parent directory's descriptor with O_NOFOLLOW, files with
O_EXCL, so nothing the agent writes can land outside DEST through a symlink, and no existing file
is overwritten. The volume belongs to the agent: what a previous run left (a restarted init
container finds its emptyDir as it was) is removed first; on failure everything written is removed
again, so the model server never sees a half-filled volume. Blocking calls: run them in threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from modelguard.agent import failures
from modelguard.trust import digests, paths

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# While writing: only the agent may touch a file. Sealed: everyone may read, nobody write.
_WRITING_MODE = 0o600
FILE_MODE = 0o444
DIR_MODE = 0o555
_WORK_DIR_MODE = 0o755


class OutputFile:
    """One file being written and hashed in the same pass."""

    def __init__(self, fd: int, hasher: digests.FileHasher) -> None:
        self._fd = fd
        self._hasher = hasher
        # A close waits for a write in progress: a closed descriptor's number is soon reused by
        # another file, which a late write would corrupt.
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._hasher.size

    def write(self, chunks: Iterable[bytes]) -> None:
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self._hasher.path}: write after close")
            self._write(chunks)

    def _write(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            # Hashed before written: both read the same bytes object, which nothing else holds.
            self._hasher.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]

    def finish(self) -> list[digests.Resource]:
        """The file's resources; the file is closed and read-only from here."""
        try:
            os.fchmod(self._fd, FILE_MODE)
        finally:
            self.close()
        return self._hasher.finish()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)


class Destination:
    """DEST: prepared empty, filled through `create`, then `seal`ed or `clear`ed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: set[str] = set()
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Creates DEST if needed and empties it (its contents are the agent's own)."""
        try:
            self.root.mkdir(mode=_WORK_DIR_MODE, parents=True, exist_ok=True)
            info = self.root.lstat()
            if not stat.S_ISDIR(info.st_mode):
                raise failures.AgentError(
                    failures.DESTINATION_ERROR, f"--dest {str(self.root)!r} is not a directory"
                )
            self._set_root_mode(_WORK_DIR_MODE)
        except OSError as error:
            raise _error(f"--dest {str(self.root)!r}", error) from None
        self.clear()

    def create(self, name: str, *, hash_type: str, shard_size: int | None) -> OutputFile:
        """A new, empty file `name` (a signed, checked path) with its parent directories."""
        violation = paths.check_name(name)
        if violation is not None:
            raise failures.AgentError(str(violation.reason), violation.message)
        *parents, leaf = name.split("/")
        fd = self._open_root()
        try:
            for depth, segment in enumerate(parents):
                parent, fd = fd, -1
                fd = self._enter(parent, segment, relative="/".join(parents[: depth + 1]))
            out = os.open(leaf, _FILE_FLAGS, _WRITING_MODE, dir_fd=fd)
        except OSError as error:
            raise _error(f"file {name!r}", error) from None
        finally:
            if fd >= 0:
                os.close(fd)
        return OutputFile(out, digests.FileHasher(name, hash_type=hash_type, shard_size=shard_size))

    def seal(self) -> None:
        """Directories read-only, deepest first, DEST last (files were sealed when finished)."""
        try:
            for relative in sorted(self._dirs, key=lambda path: -path.count("/")):
                (self.root / relative).chmod(DIR_MODE)
            self._set_root_mode(DIR_MODE)
        except OSError as error:
            raise _error(f"--dest {str(self.root)!r}", error) from None

    def clear(self) -> None:
        """Removes everything below DEST (never DEST itself, which may be a mount point)."""
        try:
            self._set_root_mode(_WORK_DIR_MODE)
            with os.scandir(self.root) as entries:
                listed = list(entries)
            for entry in listed:
                if entry.is_dir(follow_symlinks=False):
                    _make_writable(Path(entry.path))
                    shutil.rmtree(entry.path)
                else:
                    Path(entry.path).unlink()
        except OSError as error:
            raise _error(f"clearing --dest {str(self.root)!r}", error) from None
        self._dirs.clear()

    def _set_root_mode(self, mode: int) -> None:
        """DEST's own mode, where the agent owns DEST. A volume's mount point belongs to whoever
        made it: an emptyDir's to the kubelet (root, group the pod's fsGroup, mode 2777), whose
        mode the agent, a non-root user, may not change (EPERM). What it holds is the agent's
        either way, and the model server mounts the volume read-only."""
        if self.root.lstat().st_uid == os.geteuid():
            self.root.chmod(mode)

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except OSError as error:
            raise _error(f"--dest {str(self.root)!r}", error) from None

    def _enter(self, fd: int, segment: str, *, relative: str) -> int:
        """The directory `segment` below `fd`, made if missing; closes `fd`."""
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(segment, _WORK_DIR_MODE, dir_fd=fd)
            child = os.open(segment, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        with self._lock:
            self._dirs.add(relative)
        return child


def _make_writable(top: Path) -> None:
    # Sealed directories (0555) refuse the unlinks rmtree needs; walk never follows symlinks.
    for directory, _, _ in os.walk(top):
        Path(directory).chmod(_WORK_DIR_MODE)


def _error(what: str, error: OSError) -> failures.AgentError:
    return failures.AgentError(failures.DESTINATION_ERROR, f"{what}: {error.strerror or error}")
