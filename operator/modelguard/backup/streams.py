"""Bytes checked as they pass: every file a backup copies, reads back or restores is hashed in the
same pass, as its signature says (its resources: sha256 or blake2b, whole or in shards) and as the
backup's index says (its size and SHA-256), and refused naming the file.

`checked` passes a stream on to a writer (an upload, a file) one chunk behind, and lets the last
chunk through only once the whole file has verified: a writer that needs every byte to complete
(an S3 PUT of a known length) then never completes a wrong file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from modelguard.agent import plan
from modelguard.sources import errors
from modelguard.trust import digests, reasons

# Chunks are gathered to about this size before a worker thread hashes them: fewer hand-offs,
# and hashlib releases the GIL for the whole batch.
BATCH_BYTES: typing.Final = 4 << 20


class BackupError(Exception):
    """A failure of a backup, restore or drill that neither a source nor the trust layer raised."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


READ_BACK_MISMATCH: typing.Final = "ReadBackMismatch"
UNSUPPORTED: typing.Final = "BackupUnsupported"
FAILED: typing.Final = "BackupFailed"
RESTORE_REFUSED: typing.Final = "RestoreRefused"


def describe(error: BaseException) -> tuple[str, str]:
    """(reason, message) of any failure a backup, restore or drill reports."""
    if isinstance(error, BackupError | reasons.VerificationError):
        return str(error.reason), error.message
    if isinstance(error, errors.SourceError):
        return error.reason, error.message
    reason = getattr(error, "reason", None)
    message = getattr(error, "message", None)
    if isinstance(reason, str) and isinstance(message, str):
        return reason, message
    return FAILED, f"{type(error).__name__}: {error}"


@dataclasses.dataclass(frozen=True)
class Expected:
    """What one file must be: its signed resources (None: not a model file), and the size and
    SHA-256 a backup's index holds for it (None where not known yet)."""

    name: str
    """How messages name it, e.g. "model/weights.safetensors (object objects/sha256/...)"."""
    path: str
    """Its name in the model (what its signature's resources are named by)."""
    resources: tuple[digests.Resource, ...] | None
    size: int | None
    sha256: str | None
    hash_type: str = "sha256"
    shard_size: int | None = None


class FileCheck:
    """Hashes one file as it passes; `finish` says whether it is what `expected` says."""

    def __init__(self, expected: Expected) -> None:
        self.expected = expected
        self._model = (
            digests.FileHasher(
                expected.path, hash_type=expected.hash_type, shard_size=expected.shard_size
            )
            if expected.resources is not None
            else None
        )
        # A file signed as one SHA-256 needs no second hash: its resource is that digest.
        same = expected.resources is not None and _signed_sha256(expected.resources) is not None
        self._sha256 = None if same else hashlib.sha256()
        self.received = 0

    def count(self, size: int) -> None:
        """Counts bytes as they arrive, refusing a file that grows past its size."""
        self.received += size
        limit = self.expected.size
        if limit is not None and self.received > limit:
            raise BackupError(
                READ_BACK_MISMATCH,
                f"{self.expected.name} is longer than the {limit} bytes expected",
            )

    def update(self, chunks: typing.Sequence[bytes]) -> None:
        """Hashes the chunks (in a worker thread: hashlib releases the GIL)."""
        for chunk in chunks:
            if self._model is not None:
                self._model.update(chunk)
            if self._sha256 is not None:
                self._sha256.update(chunk)

    def finish(self) -> str:
        """The file's hex SHA-256 once it verifies; VerificationError (DigestMismatch,
        MissingFile) or BackupError (ReadBackMismatch) naming the file otherwise."""
        expected = self.expected
        if expected.size is not None and self.received != expected.size:
            raise BackupError(
                READ_BACK_MISMATCH,
                f"{expected.name} is {self.received} bytes, expected {expected.size}",
            )
        sha256 = self._sha256.hexdigest() if self._sha256 is not None else None
        if self._model is not None and expected.resources is not None:
            actual = self._model.finish()
            item = plan.FileToFetch(
                path=expected.path, resources=expected.resources, size=expected.size
            )
            try:
                plan.check_file(item, actual)
            except reasons.VerificationError as error:
                raise reasons.VerificationError(
                    error.reason, f"{expected.name}: {error.message}"
                ) from None
            if sha256 is None:
                sha256 = actual[0].digest.hex()
        assert sha256 is not None
        if expected.sha256 is not None and sha256 != expected.sha256:
            raise reasons.VerificationError(
                reasons.Reason.DIGEST_MISMATCH,
                f"{expected.name} hashes to sha256:{sha256}, the backup recorded "
                f"sha256:{expected.sha256}",
            )
        return sha256


def _signed_sha256(resources: typing.Sequence[digests.Resource]) -> str | None:
    if len(resources) == 1 and resources[0].algorithm == "sha256" and resources[0].start is None:
        return resources[0].digest.hex()
    return None


class Hashing:
    """The worker threads that hash, one per core at most: threads beyond the cores only take
    turns with the event loop that moves the bytes."""

    def __init__(self, workers: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="backup-hash"
        )

    async def run(self, work: Callable[[], typing.Any]) -> typing.Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Checked:
    """A stream passed on through a FileCheck. `failure` keeps why it was refused: an HTTP client
    sending it reports only that the body broke off."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], check: FileCheck, hashing: Hashing):
        self._chunks = chunks
        self.check = check
        self._hashing = hashing
        self.failure: BaseException | None = None
        self.sha256: str | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._verified():
                yield chunk
        except BaseException as error:
            self.failure = error
            raise

    async def _verified(self) -> AsyncIterator[bytes]:
        # Chunks are passed on as they arrive, one behind: the last one waits for the verdict on
        # the whole file. Hashing runs in a worker thread a batch at a time, at most one batch
        # behind the bytes passed on, so the network never waits for it (bounded memory: one
        # batch hashing, one gathering).
        held: bytes | None = None
        batch: list[bytes] = []
        batched = 0
        pending: asyncio.Future[typing.Any] | None = None
        try:
            async with contextlib.aclosing(self._chunks) as chunks:
                async for chunk in chunks:
                    self.check.count(len(chunk))
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= BATCH_BYTES:
                        if pending is not None:
                            await pending
                        pending = asyncio.ensure_future(
                            self._hashing.run(functools.partial(self.check.update, batch))
                        )
                        batch, batched = [], 0
                    if held is not None:
                        yield held
                    held = chunk
            if pending is not None:
                await pending
                pending = None
            if batch:
                await self._hashing.run(functools.partial(self.check.update, batch))
            self.sha256 = await self._hashing.run(self.check.finish)
        finally:
            if pending is not None:
                # The thread hashes on regardless: wait for it, so the hasher is not touched twice.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
        if held is not None:
            yield held


async def drain(checked: Checked) -> str:
    """Reads a checked stream to its end (a read-back); the file's SHA-256."""
    async for _ in checked:
        pass
    assert checked.sha256 is not None
    return checked.sha256
