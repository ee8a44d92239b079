"""Digests exactly as model_signing computes them: per file, per shard, and the root digest.

- files serialization: one resource per file, named by its POSIX path relative to the model root,
  algorithm = the hash type ("sha256"), digest over the whole content.
- shards serialization: one resource per shard [start, end) of shard_size bytes (the last one
  shorter), named "path:start:end", algorithm "<hash type>-sharded-<shard size>"; an empty file has
  no shard and so no resource.
- root digest: SHA-256 over the concatenated raw digests of the resources in manifest order (by
  path components, then start, then end), whatever the per-resource hash type.

`FileHasher` is incremental (`update(chunk)` as the bytes arrive, `finish()` at the end), so a
download can be hashed in the same pass that writes it, in constant memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import typing

from modelguard.trust import reasons

ROOT_DIGEST_ALGORITHM: typing.Final = "sha256"


class Hash(typing.Protocol):
    """What a hashlib object offers, as far as this module needs it."""

    @property
    def digest_size(self) -> int: ...

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


# model_signing's own names for what it records in serialization.hash_type. Its "blake2" option is
# recorded as "blake2b"; blake3 would need a non-standard-library dependency, so it is refused.
_HASHES: typing.Final[dict[str, typing.Callable[[], Hash]]] = {
    "sha256": hashlib.sha256,
    "blake2b": hashlib.blake2b,
}
SUPPORTED_HASH_TYPES: typing.Final = frozenset(_HASHES)


@dataclasses.dataclass(frozen=True)
class Resource:
    """One entry of a manifest: a file, or a shard [start, end) of one, and its digest."""

    path: str
    algorithm: str
    digest: bytes
    start: int | None = None
    end: int | None = None

    @property
    def name(self) -> str:
        """The name model_signing writes: the path, or "path:start:end" for a shard."""
        if self.start is None:
            return self.path
        return f"{self.path}:{self.start}:{self.end}"

    def sort_key(self) -> tuple[tuple[str, ...], int, int]:
        """model_signing's manifest order: PurePosixPath order (by components), then offsets."""
        return (pathlib.PurePosixPath(self.path).parts, self.start or 0, self.end or 0)


def new_hash(hash_type: str) -> Hash:
    """A fresh hash object for a model_signing hash type; UnsupportedHash otherwise."""
    factory = _HASHES.get(hash_type)
    if factory is None:
        raise reasons.VerificationError(
            reasons.Reason.UNSUPPORTED_HASH,
            f"serialization.hash_type {hash_type!r} is not supported "
            f"(supported: {', '.join(sorted(_HASHES))})",
        )
    return factory()


def resource_algorithm(hash_type: str, *, shard_size: int | None) -> str:
    """The algorithm name model_signing records on each resource."""
    return hash_type if shard_size is None else f"{hash_type}-sharded-{shard_size}"


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """The [start, end) shards of a file of `size` bytes; none for an empty file."""
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def manifest_order(resources: typing.Iterable[Resource]) -> list[Resource]:
    return sorted(resources, key=Resource.sort_key)


def root_digest(resources: typing.Iterable[Resource]) -> bytes:
    """SHA-256 over the resources' raw digests, in the order given (a statement's order)."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(resource.digest)
    return hasher.digest()


class FileHasher:
    """Hashes one file incrementally into its model_signing resources (one, or one per shard).

    Feed the bytes in order with `update`, chunks of any size; `finish` returns the resources.
    Memory is constant: one hash state, whatever the file and chunk sizes.
    """

    def __init__(self, path: str, *, hash_type: str, shard_size: int | None = None) -> None:
        if shard_size is not None and shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.path = path
        self.hash_type = hash_type
        self.shard_size = shard_size
        self.size = 0
        self._algorithm = resource_algorithm(hash_type, shard_size=shard_size)
        self._current = new_hash(hash_type)
        self._current_start = 0
        self._done: list[Resource] = []
        self._finished = False

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise ValueError(f"{self.path}: update after finish")
        view = memoryview(chunk).cast("B")
        if self.shard_size is None:
            self._current.update(view)
            self.size += len(view)
            return
        while view:
            room = self._current_start + self.shard_size - self.size
            taken = view[:room]
            self._current.update(taken)
            self.size += len(taken)
            view = view[len(taken) :]
            if self.size == self._current_start + self.shard_size:
                self._close_shard()

    def finish(self) -> list[Resource]:
        """The file's resources; for shards, in offset order."""
        if not self._finished:
            self._finished = True
            if self.shard_size is None:
                self._done.append(Resource(self.path, self._algorithm, self._current.digest()))
            elif self.size > self._current_start:
                self._close_shard()
        return list(self._done)

    def _close_shard(self) -> None:
        self._done.append(
            Resource(
                self.path,
                self._algorithm,
                self._current.digest(),
                start=self._current_start,
                end=self.size,
            )
        )
        self._current = new_hash(self.hash_type)
        self._current_start = self.size
