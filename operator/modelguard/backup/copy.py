"""Taking one backup: the serving model's files copied from its source into a store, re-hashed
while copying against its signed manifest, with its signature, approvals, spec and context, then
every object read back and verified, then the signed backup manifest written and read back.

Each model file goes to the object named by its signed content: one the store already holds
(an earlier backup of the same files) is not written again, only read back, verified and locked
for as long as this backup needs it. A file is streamed from the source to the store in one
pass with bounded memory (at most `parallel` files at once, a few MiB each); the last bytes of an
upload are sent only once the whole file matched its signature, so the store never completes a
wrong object, and for files the signature gives as one SHA-256 the store checks the digest too
(signed payload). Nothing is deleted or overwritten, ever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import time
import typing

from modelguard import sources
from modelguard.agent import plan
from modelguard.backup import layout, manifest, streams
from modelguard.backup import stores as backup_stores
from modelguard.sources import base, credentials, errors, locations
from modelguard.trust import bundle, folder, statement

DEFAULT_PARALLEL: typing.Final = 4


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the serving model's files and signature are read, and what was verified there."""

    uri: str
    signature_uri: str
    settings: credentials.SourceSettings
    """Bound to the TrustPolicy's endpoint and address rules for the source."""
    signature_settings: credentials.SourceSettings
    root_digest: str
    """sha256:<hex>, as verified and pinned into the serving pods."""
    signature_digest: str
    """sha256:<hex> of the signature file verified: the bundle read must be that one."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One backup to take."""

    backup: str
    namespace: str
    name: str
    """The ModelDeployment's namespace and name."""
    source: Source
    documents: typing.Mapping[str, bytes]
    """The other files of the backup, by path: approvals, the ModelDeployment, the context."""
    retain_until: datetime.datetime
    key: manifest.BackupKey
    parallel: int = DEFAULT_PARALLEL


@dataclasses.dataclass(frozen=True)
class Result:
    """A backup written, read back and verified."""

    backup: str
    location: str
    """The manifest's key in the store."""
    root_digest: str
    files: int
    bytes: int
    written_bytes: int
    reused: int
    """Files an earlier backup had stored already."""
    seconds: float


async def back_up(store: backup_stores.Store, request: Request) -> Result:
    """Takes the backup; raises (a SourceError, VerificationError or streams.BackupError, each
    with a reason) when any file cannot be copied or does not verify."""
    started = time.monotonic()
    if request.parallel < 1:
        raise ValueError("parallel must be at least 1")
    signature, signed = await _read_signature(request.source)
    todo = await _plan(request.source, signed)
    hashing = streams.Hashing(min(request.parallel, folder.available_cores()))
    settings = request.source.settings
    # One connection per file in flight, and one to spare.
    transport_settings = dataclasses.replace(
        settings.transport,
        max_connections=max(settings.transport.max_connections, request.parallel + 1),
    )
    model_source = sources.open_source(
        request.source.uri, s3_settings=settings.s3, transport_settings=transport_settings
    )
    copier = _Copier(store, request, hashing=hashing, signed=signed, source=model_source)
    try:
        model_entries = await copier.copy_all(todo)
        entries = list(model_entries)
        entries.append(await copier.put_document(layout.SIGNATURE, signature))
        for path, data in sorted(request.documents.items()):
            entries.append(await copier.put_document(path, data))
        index = await copier.put_document(
            layout.INDEX, layout.index_document(backup=request.backup, entries=entries)
        )
        files = [manifest.File(path=entry.path, sha256=entry.sha256) for entry in entries]
        files.append(manifest.File(path=index.path, sha256=index.sha256))
        signed_manifest = manifest.sign(
            manifest.statement_of(backup=request.backup, files=files), key=request.key
        )
        location = layout.manifest_key(
            namespace=request.namespace, name=request.name, backup=request.backup
        )
        await copier.put_manifest(location, signed_manifest)
    finally:
        await model_source.aclose()
        hashing.close()
    return Result(
        backup=request.backup,
        location=location,
        root_digest=request.source.root_digest,
        files=len(entries) + 1,
        bytes=sum(entry.size for entry in entries) + index.size,
        written_bytes=copier.written,
        reused=copier.reused,
        seconds=time.monotonic() - started,
    )


async def _read_signature(source: Source) -> tuple[bytes, statement.Statement]:
    """The verified signature bundle (the very file the operator verified) and its statement."""
    opened, name = sources.open_file(
        source.signature_uri,
        s3_settings=source.signature_settings.s3,
        transport_settings=source.signature_settings.transport,
    )
    async with opened:
        data = await opened.read_small(name, max_bytes=bundle.MAX_SIGNATURE_FILE_BYTES)
    plan.check_signature_digest(
        data, bytes.fromhex(source.signature_digest.removeprefix("sha256:"))
    )
    return data, plan.pinned_statement(
        data, bytes.fromhex(source.root_digest.removeprefix("sha256:"))
    )


async def _plan(source: Source, signed: statement.Statement) -> list[plan.FileToFetch]:
    """The signed files with their sizes: from the listing, or from the signature's shards."""
    if source.uri.startswith("pvc://"):
        raise streams.BackupError(
            streams.UNSUPPORTED,
            f"{source.uri}: a claim in the model's namespace is not mounted into the operator; "
            "copy the model to an S3 source to back it up",
        )
    opened = sources.open_source(
        source.uri, s3_settings=source.settings.s3, transport_settings=source.settings.transport
    )
    async with opened:
        listing = await opened.list_files() if opened.can_list else None
    inside = plan.signature_name(
        source_folder=str(locations.parse(source.uri)),
        signature_folder=str(locations.parse_file(source.signature_uri)[0]),
        name=locations.parse_file(source.signature_uri)[1],
    )
    todo = plan.files_to_fetch(
        signed, listing=listing, also_ignored=() if inside is None else (inside,)
    )
    unknown = [item.path for item in todo if item.size is None]
    if unknown:
        raise streams.BackupError(
            streams.UNSUPPORTED,
            f"{source.uri} cannot list its files and the signature gives no sizes (files "
            f"serialization): the size of {unknown[0]!r} is not known before it is copied; sign "
            "with shards, or serve the model from S3",
        )
    return todo


class _Copier:
    def __init__(
        self,
        store: backup_stores.Store,
        request: Request,
        *,
        hashing: streams.Hashing,
        signed: statement.Statement,
        source: base.Source,
    ) -> None:
        self._store = store
        self._source = source
        self._request = request
        self._hashing = hashing
        self._serialization = signed.serialization
        self._slots = asyncio.Semaphore(request.parallel)
        self.written = 0
        self.reused = 0

    async def copy_all(self, todo: list[plan.FileToFetch]) -> list[layout.Entry]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._copy(item)) for item in todo]
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        return [task.result() for task in tasks]

    def _expected(self, item: plan.FileToFetch, key: str, *, what: str) -> streams.Expected:
        return streams.Expected(
            name=f"{layout.MODEL_DIR}{item.path} ({what} {key})",
            path=item.path,
            resources=item.resources,
            size=item.size,
            sha256=None,
            hash_type=self._serialization.hash_type,
            shard_size=self._serialization.shard_size,
        )

    async def _copy(self, item: plan.FileToFetch) -> layout.Entry:
        async with self._slots:
            key = layout.model_file_key(item.resources)
            found = await self._store.head(key)
            if found is None:
                try:
                    version = await self._upload(item, key)
                except errors.ObjectExists:
                    # Written meanwhile (another backup of the same files): verified below.
                    found = await self._store.head(key)
                else:
                    assert item.size is not None
                    self.written += item.size
                    return await self._read_back(item, key, version_id=version, reused=False)
            if found is None:
                raise streams.BackupError(
                    streams.FAILED, f"{self._store.description}: {key} vanished while written"
                )
            self.reused += 1
            return await self._reuse(item, key, first=found.version_id)

    async def _reuse(self, item: plan.FileToFetch, key: str, *, first: str | None) -> layout.Entry:
        """The object an earlier backup stored, read back and verified: its newest version that
        holds the signed bytes (a version put on top of it later is no reason to fail)."""
        try:
            versions = await self._store.versions(key)
        except errors.SourceDenied:
            versions = [first]
        failure: streams.BackupError | None = None
        for version in [first, *[v for v in versions if v != first]]:
            try:
                return await self._read_back(item, key, version_id=version, reused=True)
            except streams.BackupError as error:
                if error.reason != streams.READ_BACK_MISMATCH:
                    raise
                failure = failure or error
        assert failure is not None
        raise streams.BackupError(
            streams.READ_BACK_MISMATCH,
            f"{self._store.description}: no version of {key} holds the signed bytes of "
            f"{layout.MODEL_DIR}{item.path} (it was changed after it was written, and is never "
            f"overwritten): {failure.message}",
        )

    async def _upload(self, item: plan.FileToFetch, key: str) -> str | None:
        assert item.size is not None
        checked = streams.Checked(
            self._source.stream(item.path),
            streams.FileCheck(self._expected(item, self._source.uri, what="from")),
            self._hashing,
        )
        try:
            # Unsigned: the check above holds back the last bytes until the file verified, so the
            # store never completes a wrong object; a signed payload would make the store hash
            # every byte once more, CPU the copy shares with it.
            return await self._store.put(
                key,
                checked.__aiter__,
                size=item.size,
                sha256=None,
                retain_until=self._request.retain_until,
            )
        except errors.ObjectExists:
            raise
        except Exception:
            # The upload reports that its body broke off; the check says why.
            if checked.failure is not None:
                raise checked.failure from None
            raise

    async def _read_back(
        self, item: plan.FileToFetch, key: str, *, version_id: str | None, reused: bool
    ) -> layout.Entry:
        checked = streams.Checked(
            self._store.stream(key, version_id=version_id),
            streams.FileCheck(self._expected(item, key, what="object")),
            self._hashing,
        )
        try:
            sha256 = await streams.drain(checked)
        except errors.MissingFile as error:
            raise streams.BackupError(
                streams.READ_BACK_MISMATCH, f"{layout.MODEL_DIR}{item.path}: {error.message}"
            ) from None
        except streams.BackupError:
            raise
        except Exception as error:
            if _is_mismatch(error):
                reason, message = streams.describe(error)
                raise streams.BackupError(
                    streams.READ_BACK_MISMATCH,
                    f"read back from {self._store.description}: {reason}: {message}",
                ) from None
            raise
        if reused:
            await self._store.extend(
                key, version_id=version_id, retain_until=self._request.retain_until
            )
        assert item.size is not None
        return layout.Entry(
            path=f"{layout.MODEL_DIR}{item.path}",
            key=key,
            size=item.size,
            sha256=sha256,
            version_id=version_id,
        )

    async def put_document(self, path: str, data: bytes) -> layout.Entry:
        """A small file of the backup, stored by its SHA-256 and read back."""
        digest = hashlib.sha256(data).hexdigest()
        key = layout.sha256_key(digest)
        try:
            version = await self._store.put(
                key, data, size=len(data), sha256=digest, retain_until=self._request.retain_until
            )
            self.written += len(data)
        except errors.ObjectExists:
            found = await self._store.head(key)
            version = found.version_id if found is not None else None
            self.reused += 1
        back = await self._store.read(key, version_id=version, max_bytes=len(data))
        if hashlib.sha256(back).hexdigest() != digest:
            raise streams.BackupError(
                streams.READ_BACK_MISMATCH,
                f"{path} (object {key}) read back from {self._store.description} is not what "
                "was written",
            )
        await self._store.extend(key, version_id=version, retain_until=self._request.retain_until)
        return layout.Entry(path=path, key=key, size=len(data), sha256=digest, version_id=version)

    async def put_manifest(self, location: str, data: bytes) -> None:
        try:
            version = await self._store.put(
                location,
                data,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                retain_until=self._request.retain_until,
            )
        except errors.ObjectExists:
            raise streams.BackupError(
                streams.FAILED,
                f"{self._store.description}: backup {self._request.backup} exists already "
                f"({location}); a backup is never overwritten",
            ) from None
        self.written += len(data)
        back = await self._store.read(location, version_id=version, max_bytes=len(data))
        if back != data:
            raise streams.BackupError(
                streams.READ_BACK_MISMATCH,
                f"the manifest {location} read back from {self._store.description} is not what "
                "was written",
            )


def _is_mismatch(error: BaseException) -> bool:
    reason, _ = streams.describe(error)
    return reason in {"DigestMismatch", "MissingFile", streams.READ_BACK_MISMATCH}


def _first(group_error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that stopped the copies, not the cancellations it caused."""
    for error in group_error.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group_error
