"""Bringing a model back from a backup, and drilling that it can be.

A restore trusts nothing it reads until it checked it: the backup manifest's signature under the
backup public keys, every file against the manifest (the index, the context, the signature
bundle, the approvals), the model's own signature under the TrustPolicy given (not the one in
the backup), its root digest against the backup's, and every model file, as it streams into the
destination, against that signature and the index. The first file that fails stops the restore,
named (`model/weights.bin (object objects/sha256/...)`), and a directory destination is emptied
again. Model files are read by the version the index pins: a newer version put under the same key
later changes nothing; the manifest and the index, named by key, are taken from the newest
version that verifies.

The approvals in the backup are checked again under the given policy; whether they still count
(unexpired, by approvers the policy still trusts) is part of the result: a restored model serves
only once its approvals count, as any other.

A drill (`drill`) restores into scratch space, verifies the restored folder as `modelguard
verify` does, and removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import pathlib
import shutil
import tempfile
import time
import typing

from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.agent import destination as agent_destination
from modelguard.agent import plan
from modelguard.api import errors as api_errors
from modelguard.api import modelapproval, trustpolicy
from modelguard.backup import layout, manifest, streams
from modelguard.backup import stores as backup_stores
from modelguard.sources import base, errors, s3objects
from modelguard.trust import approval, bundle, folder, policy, reasons, statement, verify


@dataclasses.dataclass(frozen=True)
class Opened:
    """A backup whose manifest, index and documents verified."""

    backup: str
    location: str
    files: dict[str, str]
    """SHA-256 of every file of the backup, by path, as the signed manifest lists them."""
    index: dict[str, layout.Entry]
    context: dict[str, typing.Any]
    signature: bytes
    """The model's signature bundle."""
    model_deployment: dict[str, typing.Any]
    approvals: tuple[dict[str, typing.Any], ...]
    key_id: str
    manifest: bytes = b""
    """The backup manifest as verified."""
    index_data: bytes = b""
    """index.json as verified."""


@dataclasses.dataclass(frozen=True)
class ApprovalCheck:
    """Whether the backed-up approvals still count under the policy."""

    approved: bool
    approvers: tuple[str, ...]
    message: str


@dataclasses.dataclass(frozen=True)
class Restored:
    """A model restored and verified."""

    backup: str
    root_digest: str
    files: int
    bytes: int
    seconds: float
    approvals: ApprovalCheck


async def latest(store: backup_stores.Store, *, namespace: str, name: str) -> str | None:
    """The id of the newest backup of a ModelDeployment in `store`, None when it has none."""
    found = [
        item.name.removesuffix(layout.MANIFEST_SUFFIX)
        for item in await store.list_keys(layout.model_prefix(namespace=namespace, name=name))
        if item.name.endswith(layout.MANIFEST_SUFFIX)
        and layout.is_backup_id(item.name.removesuffix(layout.MANIFEST_SUFFIX))
    ]
    return max(found, default=None)


async def open_backup(
    store: backup_stores.Store,
    *,
    namespace: str,
    name: str,
    backup: str,
    keys: typing.Sequence[ec.EllipticCurvePublicKey],
) -> Opened:
    """The backup, its manifest verified under `keys` and its documents against the manifest."""
    if not layout.is_backup_id(backup):
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"{backup!r} is not a backup id (such as 20260101T030000Z-0123456789ab)",
        )
    location = layout.manifest_key(namespace=namespace, name=name, backup=backup)
    verified, manifest_data = await _newest_that_verifies(
        store,
        location,
        max_bytes=bundle.MAX_SIGNATURE_FILE_BYTES,
        check=lambda data: manifest.verify_manifest(data, keys=keys, backup=backup),
        what=f"the manifest of backup {backup} ({location})",
    )
    index_digest = verified.files[layout.INDEX]
    index_key = layout.sha256_key(index_digest)
    _, index_data = await _newest_that_verifies(
        store,
        index_key,
        max_bytes=layout.MAX_INDEX_BYTES,
        check=lambda data: _sha256_is(data, index_digest, what=layout.INDEX),
        what=f"{layout.INDEX} (object {index_key})",
    )
    index = _checked_index(index_data, backup=backup, files=verified.files)
    documents = {}
    for path in sorted(index):
        if path.startswith(layout.MODEL_DIR):
            continue
        documents[path] = await _read_document(store, index[path])
    try:
        context = layout.parse_context(documents[layout.CONTEXT])
        model_deployment = json.loads(documents[layout.MODEL_DEPLOYMENT])
        approvals = tuple(
            json.loads(data)
            for path, data in sorted(documents.items())
            if path.startswith(layout.APPROVALS_DIR)
        )
    except (KeyError, ValueError) as error:
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"backup {backup}: a document is missing or unreadable: {error}",
        ) from None
    return Opened(
        backup=backup,
        location=location,
        files=verified.files,
        index=index,
        context=context,
        signature=documents[layout.SIGNATURE],
        model_deployment=model_deployment,
        approvals=approvals,
        key_id=verified.key_id,
        manifest=manifest_data,
        index_data=index_data,
    )


def _sha256_is(data: bytes, digest: str, *, what: str) -> bytes:
    import hashlib  # noqa: PLC0415 - only restores need it here

    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise reasons.VerificationError(
            reasons.Reason.DIGEST_MISMATCH,
            f"{what} hashes to sha256:{actual}, the manifest signs sha256:{digest}",
        )
    return data


_T = typing.TypeVar("_T")


async def _newest_that_verifies(
    store: backup_stores.Store,
    key: str,
    *,
    max_bytes: int,
    check: typing.Callable[[bytes], _T],
    what: str,
) -> tuple[_T, bytes]:
    """The newest version of `key` that passes `check`: a version put under the key later (by
    whoever may write to the bucket) does not hide the one the backup wrote."""
    first_error: BaseException | None = None
    try:
        versions = await store.versions(key)
    except errors.SourceDenied:
        # A reader without ListBucketVersions sees the newest version only.
        versions = [None]
    for version in versions:
        try:
            data = await store.read(key, version_id=version, max_bytes=max_bytes)
            return check(data), data
        except errors.MissingFile as error:
            first_error = first_error or error
        except (reasons.VerificationError, errors.TooLarge) as error:
            first_error = first_error or error
    if isinstance(first_error, errors.MissingFile) or first_error is None:
        raise streams.BackupError(streams.RESTORE_REFUSED, f"{what} is not in {store.description}")
    reason, message = streams.describe(first_error)
    raise streams.BackupError(
        streams.RESTORE_REFUSED, f"{what}: no version verifies: {reason}: {message}"
    )


def _checked_index(data: bytes, *, backup: str, files: dict[str, str]) -> dict[str, layout.Entry]:
    try:
        index = layout.parse_index(data, backup=backup)
    except layout.InvalidDocument as error:
        raise streams.BackupError(streams.RESTORE_REFUSED, str(error)) from None
    listed = set(files) - {layout.INDEX}
    if set(index) != listed:
        missing = sorted(listed - set(index)) or sorted(set(index) - listed)
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"{layout.INDEX} and the manifest disagree on the files: {missing[:3]}",
        )
    for path, entry in index.items():
        if entry.sha256 != files[path]:
            raise streams.BackupError(
                streams.RESTORE_REFUSED,
                f"{layout.INDEX} records sha256:{entry.sha256} for {path}, the manifest signs "
                f"sha256:{files[path]}",
            )
    return index


async def _read_document(store: backup_stores.Store, entry: layout.Entry) -> bytes:
    if entry.size > layout.MAX_DOCUMENT_BYTES and not entry.path == layout.SIGNATURE:
        raise streams.BackupError(
            streams.RESTORE_REFUSED, f"{entry.path}: {entry.size} bytes, more than a document"
        )
    try:
        data = await store.read(
            entry.key, version_id=entry.version_id, max_bytes=max(entry.size, 1)
        )
    except errors.MissingFile:
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"{entry.path} (object {entry.key}) is not in {store.description}",
        ) from None
    except errors.TooLarge:
        raise _changed(entry, "is larger than recorded") from None
    return _sha256_is(data, entry.sha256, what=f"{entry.path} (object {entry.key})")


def _changed(entry: layout.Entry, how: str) -> reasons.VerificationError:
    return reasons.VerificationError(
        reasons.Reason.DIGEST_MISMATCH, f"{entry.path} (object {entry.key}) {how}"
    )


# --- destinations --------------------------------------------------------------------------------


class Destination(typing.Protocol):
    """Where the model's files go: written as they verify, all or nothing."""

    description: str

    async def prepare(self) -> None: ...

    async def write(self, path: str, checked: streams.Checked, *, size: int) -> None:
        """Writes the file `path` (relative to the model) from the checked stream."""
        ...

    async def write_signature(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...

    async def abort(self) -> None: ...


class DirectoryDestination:
    """A local folder (the agent's model volume rules: created safely, never through a symlink,
    sealed read-only; emptied on failure). The signature goes inside it as model.sig, as beside
    the files of an S3 source, or where it is told."""

    def __init__(self, root: pathlib.Path, *, signature: pathlib.Path | None = None) -> None:
        self.root = root
        self.signature = signature if signature is not None else root / layout.SIGNATURE
        self.description = str(root)
        self._dest = agent_destination.Destination(root)

    async def prepare(self) -> None:
        await _thread(self._dest.prepare)

    async def write(self, path: str, checked: streams.Checked, *, size: int) -> None:
        out = await _thread(lambda: self._dest.create(path, hash_type="sha256", shard_size=None))
        try:
            async for chunk in checked:
                await _thread(functools.partial(out.write, [chunk]))
            await _thread(out.finish)
        finally:
            out.close()

    async def write_signature(self, data: bytes) -> None:
        def write() -> None:
            self.signature.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.signature.unlink()
            self.signature.write_bytes(data)

        await _thread(write)

    async def finish(self) -> None:
        await _thread(self._dest.seal)

    async def abort(self) -> None:
        await _thread(self._dest.clear)


class S3Destination:
    """A folder of an S3 bucket: a model's own source, after its files were lost. Each object is
    put once it verified (its last bytes held back until then), so a refused restore leaves no
    wrong object behind; files restored before the refusal stay (they verified)."""

    def __init__(
        self, bucket: s3objects.S3Bucket, *, prefix: str, signature_key: str | None = None
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._signature_key = signature_key or f"{self._prefix}model.sig"
        self.description = f"s3://{bucket.bucket}/{self._prefix}"

    async def prepare(self) -> None:
        """Nothing to prepare: objects are put one by one."""

    async def write(self, path: str, checked: streams.Checked, *, size: int) -> None:
        try:
            await self._bucket.put(
                self._prefix + path,
                checked.__aiter__,
                size=size,
                sha256=None,
                retention=None,
                create_only=False,
            )
        except errors.SourceError:
            if checked.failure is not None:
                raise checked.failure from None
            raise

    async def write_signature(self, data: bytes) -> None:
        import hashlib  # noqa: PLC0415

        await self._bucket.put(
            self._signature_key,
            data,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            retention=None,
            create_only=False,
        )

    async def finish(self) -> None:
        """Every object is complete once put."""

    async def abort(self) -> None:
        """Nothing wrong was stored: a refused file's upload never completed."""

    async def aclose(self) -> None:
        await self._bucket.aclose()


async def _thread(work: typing.Callable[[], _T]) -> _T:
    return await asyncio.to_thread(work)


def _first(group_error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that stopped the restore, not the cancellations it caused."""
    for error in group_error.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group_error


# --- restoring -----------------------------------------------------------------------------------


async def restore(
    store: backup_stores.Store,
    opened: Opened,
    *,
    rules: policy.Rules,
    destination: Destination,
    approvals_policy: trustpolicy.TrustPolicySpec | None,
    now: datetime.datetime,
    workers: int | None = None,
    parallel: int = 4,
) -> Restored:
    """Restores the model of `opened` into `destination`, every byte verified (see the module)."""
    started = time.monotonic()
    signed = _model_statement(opened, rules=rules, now=now)
    todo = _model_files(opened, signed)
    workers = workers or min(parallel, folder.available_cores())
    hashing = streams.Hashing(workers)
    slots = asyncio.Semaphore(parallel)

    async def one(item: plan.FileToFetch, entry: layout.Entry) -> int:
        async with slots:
            expected = streams.Expected(
                name=f"{entry.path} (object {entry.key})",
                path=item.path,
                resources=item.resources,
                size=entry.size,
                sha256=entry.sha256,
                hash_type=signed.serialization.hash_type,
                shard_size=signed.serialization.shard_size,
            )
            checked = streams.Checked(
                _read_pinned(store, entry), streams.FileCheck(expected), hashing
            )
            await destination.write(item.path, checked, size=entry.size)
            return entry.size

    await destination.prepare()
    try:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(item, entry)) for item, entry in todo]
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        total = sum(task.result() for task in tasks)
        await destination.write_signature(opened.signature)
        await destination.finish()
    except BaseException:
        with contextlib.suppress(Exception):
            await destination.abort()
        raise
    finally:
        hashing.close()
    return Restored(
        backup=opened.backup,
        root_digest=f"sha256:{signed.root_digest.hex()}",
        files=len(todo),
        bytes=total,
        seconds=time.monotonic() - started,
        approvals=check_approvals(opened, policy=approvals_policy, now=now),
    )


async def _read_pinned(
    store: backup_stores.Store, entry: layout.Entry
) -> typing.AsyncGenerator[bytes, None]:
    """The object's bytes at the version the index pins; a missing one is named."""
    try:
        async with contextlib.aclosing(
            store.stream(entry.key, version_id=entry.version_id)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
    except errors.MissingFile:
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"{entry.path} (object {entry.key}"
            + (f" version {entry.version_id}" if entry.version_id else "")
            + f") is not in {store.description}",
        ) from None


def _model_statement(
    opened: Opened, *, rules: policy.Rules, now: datetime.datetime
) -> statement.Statement:
    """The model's statement, its signature verified under `rules` (today's policy), and its
    root digest the one the backup recorded."""
    signed = verify.verify_signatures(opened.signature, rules, at=now)
    root = f"sha256:{signed.statement.root_digest.hex()}"
    recorded = str((opened.context.get("model") or {}).get("rootDigest", ""))
    if root != recorded:
        raise reasons.VerificationError(
            reasons.Reason.ROOT_DIGEST_MISMATCH,
            f"backup {opened.backup}: {layout.SIGNATURE} signs {root}, the backup recorded "
            f"{recorded}",
        )
    return signed.statement


def _model_files(
    opened: Opened, signed: statement.Statement
) -> list[tuple[plan.FileToFetch, layout.Entry]]:
    """Every signed file with its entry in the index; refused when one is missing or extra."""
    listing = [
        base.ObjectInfo(name=path.removeprefix(layout.MODEL_DIR), size=entry.size)
        for path, entry in opened.index.items()
        if path.startswith(layout.MODEL_DIR)
    ]
    try:
        todo = plan.files_to_fetch(signed, listing=listing)
    except reasons.VerificationError as error:
        raise reasons.VerificationError(
            error.reason, f"backup {opened.backup}: {error.message}"
        ) from None
    return [(item, opened.index[layout.MODEL_DIR + item.path]) for item in todo]


def check_approvals(
    opened: Opened, *, policy: trustpolicy.TrustPolicySpec | None, now: datetime.datetime
) -> ApprovalCheck:
    """The backed-up approvals judged again under `policy` (None: not checked)."""
    if policy is None:
        return ApprovalCheck(
            approved=False, approvers=(), message="approvals not checked (no TrustPolicy given)"
        )
    model = opened.context.get("model") or {}
    identity = opened.context.get("modelDeployment") or {}
    parsed = []
    for body in opened.approvals:
        try:
            parsed.append(modelapproval.parse(body))
        except api_errors.InvalidObjectError:
            continue
    decision = approval.evaluate_approvals(
        parsed,
        policy=policy,
        namespace=str(identity.get("namespace", "")),
        model=str(model.get("name", "")),
        version=str(model.get("version", "")),
        root_digest=str(model.get("rootDigest", "")),
        now=now,
    )
    if decision.approved:
        approvers = ", ".join(decision.approvers) or "none needed"
        return ApprovalCheck(
            approved=True,
            approvers=decision.approvers,
            message=f"approvals still count under the policy ({approvers})",
        )
    assert decision.violation is not None
    return ApprovalCheck(
        approved=False,
        approvers=decision.approvers,
        message=f"re-approval required: {decision.violation.reason}: {decision.violation.message}",
    )


# --- drills --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Drilled:
    backup: str
    root_digest: str
    files: int
    bytes: int
    seconds: float
    message: str


async def drill(
    store: backup_stores.Store,
    *,
    namespace: str,
    name: str,
    keys: typing.Sequence[ec.EllipticCurvePublicKey],
    rules: policy.Rules,
    approvals_policy: trustpolicy.TrustPolicySpec | None,
    scratch: pathlib.Path,
    now: datetime.datetime,
    backup: str | None = None,
) -> Drilled:
    """Restores the latest backup (or `backup`) into a folder under `scratch`, verifies that
    folder as `modelguard verify` does, and removes it; raises naming what failed."""
    chosen = backup or await latest(store, namespace=namespace, name=name)
    if chosen is None:
        raise streams.BackupError(
            streams.RESTORE_REFUSED, f"{store.description} holds no backup of {namespace}/{name}"
        )
    opened = await open_backup(store, namespace=namespace, name=name, backup=chosen, keys=keys)
    needed = sum(entry.size for entry in opened.index.values())
    work = await _thread(lambda: _scratch_folder(scratch, backup=chosen, needed=needed))
    try:
        target = DirectoryDestination(work / "model", signature=work / layout.SIGNATURE)
        restored = await restore(
            store,
            opened,
            rules=rules,
            destination=target,
            approvals_policy=approvals_policy,
            now=now,
        )
        result = await _thread(
            lambda: verify.verify_folder(
                target.root, opened.signature, rules, at=now, workers=folder.available_cores()
            )
        )
    finally:
        await _thread(lambda: _remove(work))
    return Drilled(
        backup=chosen,
        root_digest=restored.root_digest,
        files=restored.files,
        bytes=restored.bytes,
        seconds=restored.seconds,
        message=f"backup {chosen} restored into scratch space and verified: {result.summary()}; "
        f"{restored.approvals.message}",
    )


def _scratch_folder(scratch: pathlib.Path, *, backup: str, needed: int) -> pathlib.Path:
    scratch.mkdir(parents=True, exist_ok=True)
    _check_room(scratch, needed=needed)
    return pathlib.Path(tempfile.mkdtemp(prefix=f"drill-{backup}-", dir=scratch))


def _check_room(scratch: pathlib.Path, *, needed: int) -> None:
    free = shutil.disk_usage(scratch).free
    if free < needed:
        raise streams.BackupError(
            streams.RESTORE_REFUSED,
            f"the drill's scratch space {scratch} has {free} bytes free, the backup needs "
            f"{needed}: give the operator more (the chart's backup.drill.scratchSizeLimit)",
        )


def _remove(work: pathlib.Path) -> None:
    # Sealed folders are read-only: made writable again to be removed.
    for path in [work, *work.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.chmod(0o755)
    shutil.rmtree(work, ignore_errors=True)


# --- export --------------------------------------------------------------------------------------


async def export(
    store: backup_stores.Store,
    opened: Opened,
    *,
    folder_path: pathlib.Path,
    manifest_path: pathlib.Path,
) -> int:
    """Writes the whole backup as a folder (every file checked against the manifest as it is
    written) and its manifest beside it, for `modelguard verify` or `model_signing verify`;
    returns the bytes written."""
    target = agent_destination.Destination(folder_path)
    await _thread(target.prepare)
    hashing = streams.Hashing(1)
    total = 0
    try:
        for path, entry in sorted(opened.index.items()):
            expected = streams.Expected(
                name=f"{path} (object {entry.key})",
                path=path,
                resources=None,
                size=entry.size,
                sha256=entry.sha256,
            )
            checked = streams.Checked(
                _read_pinned(store, entry), streams.FileCheck(expected), hashing
            )
            out = await _thread(
                functools.partial(target.create, path, hash_type="sha256", shard_size=None)
            )
            try:
                async for chunk in checked:
                    await _thread(functools.partial(out.write, [chunk]))
                await _thread(out.finish)
            finally:
                out.close()
            total += entry.size
        index_data = opened.index_data
        out = await _thread(
            functools.partial(target.create, layout.INDEX, hash_type="sha256", shard_size=None)
        )
        try:
            await _thread(functools.partial(out.write, [index_data]))
            await _thread(out.finish)
        finally:
            out.close()
        await _thread(lambda: manifest_path.write_bytes(opened.manifest))
        await _thread(target.seal)
    except BaseException:
        with contextlib.suppress(Exception):
            await _thread(target.clear)
        raise
    finally:
        hashing.close()
    return total
