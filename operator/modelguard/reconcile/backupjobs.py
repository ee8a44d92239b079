"""The backups and drills of one operator process: what a pass observes of them, and starting
the one a pass decided on.

A pass never waits for a backup. `start` reads what the job needs on the operator's loop (the
BackupStore's credentials from the operator's own namespace, the model's source credentials,
the TrustPolicy), then hands the copy to the backup worker's thread (backup/worker.py), off the
loop that answers admission. When the job ends, how it ended is kept here (the last backup and
the last drill per model, with the failures in a row) and the model is reconciled again, which
turns it into status, an Event and an audit record. Store credentials are read here and passed
to the worker in memory only: they never leave the operator's namespace or process.
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import datetime
import logging
import pathlib
import tempfile
import typing

from modelguard import kube
from modelguard.api import backupstore, errors, times, trustpolicy, v1alpha1
from modelguard.audit import sink
from modelguard.backup import copy, layout, manifest, restore, streams, worker
from modelguard.backup import stores as backup_stores
from modelguard.reconcile import backupviews, conditions, verification
from modelguard.sources import credentials
from modelguard.sources import errors as source_errors
from modelguard.trust import policy as policy_rules

logger = logging.getLogger(__name__)

DEFAULT_VOLUME_ROOT: typing.Final = pathlib.Path("/var/run/modelguard/backup-volumes")
# The chart mounts an emptyDir of its own there; outside a pod, the system's temporary folder.
DEFAULT_SCRATCH: typing.Final = pathlib.Path(tempfile.gettempdir()) / "modelguard-drill-scratch"

# A source's failure, as the BackupStore's Ready reason.
_STORE_REASONS: typing.Final = {
    source_errors.SourceUnreachable.reason: backupstore.REASON_STORE_UNREACHABLE,
    source_errors.BadResponse.reason: backupstore.REASON_STORE_UNREACHABLE,
    source_errors.SourceDenied.reason: backupstore.REASON_STORE_DENIED,
    source_errors.SourceNotFound.reason: backupstore.REASON_BUCKET_NOT_FOUND,
}


@dataclasses.dataclass(frozen=True)
class Opening:
    """A store ready to be opened, in the loop that will use it (its connections belong there)."""

    open: collections.abc.Callable[[], backup_stores.Store]
    description: str


async def resolve_store(
    kube_client: kube.Kube,
    store: backupstore.BackupStore,
    *,
    operator_namespace: str | None,
    volume_root: pathlib.Path,
) -> Opening | conditions.Decision:
    """How to open `store`, or why it cannot be (a Ready=False decision)."""
    name = store.name
    if store.spec.volume is not None:
        claim = store.spec.volume.claim_name
        root = volume_root / claim
        return Opening(
            open=lambda: backup_stores.open_volume(
                root, description=f"BackupStore {name} (volume claim {claim})"
            ),
            description=f"volume claim {claim}",
        )
    spec = store.spec.s3
    assert spec is not None
    secret = spec.credentials_secret
    if not operator_namespace:
        return _refused(
            backupstore.REASON_STORE_CREDENTIALS_NOT_FOUND,
            "the operator does not know its own namespace (POD_NAMESPACE), where store "
            "credentials must be",
        )
    try:
        found = await kube_client.get_secret_data(namespace=operator_namespace, name=secret)
    except kube.ApiError as error:
        if error.status == 403:
            return _refused(
                backupstore.REASON_STORE_CREDENTIALS_FORBIDDEN,
                f'spec.s3.credentialsSecret: the operator may not read Secret "{secret}" in '
                f"namespace {operator_namespace}: list it in the chart's "
                "backup.credentialsSecrets",
            )
        raise
    if found is None:
        return _refused(
            backupstore.REASON_STORE_CREDENTIALS_NOT_FOUND,
            f'spec.s3.credentialsSecret: Secret "{secret}" does not exist in namespace '
            f"{operator_namespace} (store credentials live in the operator's namespace only)",
        )
    try:
        settings = credentials.with_private_addresses(
            credentials.bind_endpoint(
                credentials.from_secret_data(found[0]),
                endpoint=spec.endpoint,
                bound_by=f'BackupStore "{name}" spec.s3.endpoint',
            ),
            allowed=spec.allow_private_addresses,
        )
    except source_errors.SourceError as error:
        return _refused(
            backupstore.REASON_STORE_REFUSED,
            f'spec.s3.credentialsSecret "{secret}": {error.reason}: {error.message}',
        )
    status = store.status
    locked = status is not None and status.object_lock == "Enabled"
    mode = spec.object_lock.mode.s3() if locked else None
    bucket, prefix = spec.bucket, spec.prefix
    where = f"s3://{bucket}/{prefix}"
    return Opening(
        open=lambda: backup_stores.open_s3(
            bucket=bucket,
            prefix=prefix,
            settings=settings,
            mode=mode,
            description=f"BackupStore {name} ({where})",
        ),
        description=where,
    )


def store_refusal(error: source_errors.SourceError, *, volume: bool) -> conditions.Decision:
    """Why a store that was reached does not work, as its Ready reason."""
    reason = _STORE_REASONS.get(error.reason, backupstore.REASON_STORE_REFUSED)
    if volume and reason == backupstore.REASON_BUCKET_NOT_FOUND:
        reason = backupstore.REASON_VOLUME_NOT_MOUNTED
    return _refused(reason, f"{error.reason}: {error.message}")


def _refused(reason: str, message: str) -> conditions.Decision:
    return conditions.Decision("False", reason, message)


@dataclasses.dataclass
class _Model:
    running: backupviews.Kind | None = None
    backup: backupviews.Finished | None = None
    drill: backupviews.Finished | None = None


class Jobs:
    """The backup jobs of this operator process."""

    def __init__(
        self,
        *,
        kube_client: kube.Kube,
        key: manifest.BackupKey | None,
        trusted_keys: typing.Sequence[typing.Any] = (),
        operator_namespace: str | None,
        instance: str,
        audit: sink.Sink,
        volume_root: pathlib.Path = DEFAULT_VOLUME_ROOT,
        scratch: pathlib.Path = DEFAULT_SCRATCH,
        runner: worker.Worker | None = None,
        credentials_role: str = "modelguard-source-credentials",
    ) -> None:
        self.kube = kube_client
        self.key = key
        self._trusted = list(trusted_keys)
        self.operator_namespace = operator_namespace
        self._instance = instance
        self._audit = audit
        self.volume_root = volume_root
        self._scratch = scratch
        self._worker = runner or worker.Worker()
        self._credentials_role = credentials_role
        self._models: dict[tuple[str, str], _Model] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.recheck: collections.abc.Callable[[str, str, datetime.datetime], None] = lambda *_: (
            None
        )

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._worker.close()

    # -- what a pass observes ----------------------------------------------------------------

    async def observe(self, model: v1alpha1.ModelDeployment) -> backupviews.Observed:
        """The store spec.backup names, and the jobs of the model."""
        assert model.spec.backup is not None
        body = await self.kube.get_backup_store(model.spec.backup.store)
        store: backupviews.StoreView | None = None
        if body is not None:
            store = _view(body, name=model.spec.backup.store)
        state = self._models.get((model.namespace, model.name), _Model())
        return backupviews.Observed(
            store=store,
            jobs=backupviews.Jobs(
                key_id=self.key.key_id if self.key is not None else None,
                running=state.running,
                backup=state.backup,
                drill=state.drill,
            ),
        )

    # -- starting one --------------------------------------------------------------------------

    def start(self, start: backupviews.Start) -> None:
        """Starts the backup or drill in the background; a pass never waits for it."""
        key = (start.model.namespace, start.model.name)
        state = self._models.setdefault(key, _Model())
        if state.running is not None:
            return
        state.running = start.kind
        task = asyncio.get_running_loop().create_task(self._run(start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, start: backupviews.Start) -> None:
        namespace, name = start.model.namespace, start.model.name
        state = self._models.setdefault((namespace, name), _Model())
        previous = state.backup if start.kind == "backup" else state.drill
        try:
            if start.kind == "backup":
                done = await self._back_up(start)
                finished = backupviews.Finished(
                    kind="backup",
                    at=datetime.datetime.now(datetime.UTC),
                    ok=True,
                    reason=v1alpha1.REASON_BACKUP_VERIFIED,
                    message="",
                    backup=done,
                )
            else:
                drilled = await self._drill(start)
                finished = backupviews.Finished(
                    kind="drill",
                    at=datetime.datetime.now(datetime.UTC),
                    ok=True,
                    reason=v1alpha1.REASON_RESTORE_DRILL_PASSED,
                    message=drilled.message,
                    drilled=drilled.backup,
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason, message = _reason(error, kind=start.kind)
            failures = (previous.failures if previous is not None and not previous.ok else 0) + 1
            logger.warning("%s/%s: %s failed: %s: %s", namespace, name, start.kind, reason, message)
            finished = backupviews.Finished(
                kind=start.kind,
                at=datetime.datetime.now(datetime.UTC),
                ok=False,
                reason=reason,
                message=message,
                failures=failures,
                drilled=start.backup if start.kind == "drill" else None,
            )
        finally:
            state.running = None
        if finished.kind == "backup":
            state.backup = finished
        else:
            state.drill = finished
        self.recheck(namespace, name, finished.at)

    async def _opening(self, store_name: str) -> Opening:
        body = await self.kube.get_backup_store(store_name)
        if body is None:
            raise streams.BackupError(
                v1alpha1.REASON_STORE_NOT_FOUND, f'BackupStore "{store_name}" does not exist'
            )
        try:
            store = backupstore.parse(body)
        except errors.InvalidObjectError as error:
            raise streams.BackupError(v1alpha1.REASON_STORE_NOT_READY, str(error)) from None
        opening = await resolve_store(
            self.kube,
            store,
            operator_namespace=self.operator_namespace,
            volume_root=self.volume_root,
        )
        if isinstance(opening, conditions.Decision):
            raise streams.BackupError(
                v1alpha1.REASON_STORE_NOT_READY, f"{opening.reason}: {opening.message}"
            )
        return opening

    async def _back_up(self, start: backupviews.Start) -> backupviews.BackupDone:
        assert self.key is not None
        assert start.serving is not None
        assert start.verified is not None
        model = start.model
        opening = await self._opening(start.store)
        settings, _, refusal = await verification._source_settings(
            self.kube, model, credentials_role=self._credentials_role
        )
        if refusal is not None:
            raise streams.BackupError(refusal.decision.reason, refusal.decision.message)
        base = settings or credentials.from_secret_data({})
        verified = start.verified
        source = copy.Source(
            uri=start.serving.source_uri,
            signature_uri=start.serving.signature_uri,
            settings=_bound(
                base,
                uri=start.serving.source_uri,
                endpoint=verified.source_endpoint,
                private=verified.source_private_addresses,
            ),
            signature_settings=_bound(
                base,
                uri=start.serving.signature_uri,
                endpoint=verified.signature_endpoint,
                private=verified.signature_private_addresses,
            ),
            root_digest=start.serving.root_digest,
            signature_digest=start.serving.signature_digest,
        )
        request = copy.Request(
            backup=start.backup,
            namespace=model.namespace,
            name=model.name,
            source=source,
            documents=self._documents(start, store_description=opening.description),
            retain_until=start.retain_until,
            key=self.key,
        )

        async def run() -> copy.Result:
            store = opening.open()
            try:
                return await copy.back_up(store, request)
            finally:
                await store.aclose()

        result = await self._worker.submit(run)
        logger.info(
            "%s/%s: backup %s written to %s: %d files, %d bytes (%d written) in %.1fs",
            model.namespace,
            model.name,
            result.backup,
            opening.description,
            result.files,
            result.bytes,
            result.written_bytes,
            result.seconds,
        )
        return backupviews.BackupDone(
            backup=result.backup,
            store=start.store,
            location=result.location,
            version=model.spec.model.version,
            root_digest=result.root_digest,
            files=result.files,
            bytes=result.bytes,
            written_bytes=result.written_bytes,
            retain_until=start.retain_until,
        )

    def _documents(self, start: backupviews.Start, *, store_description: str) -> dict[str, bytes]:
        """The files of the backup other than the model's: approvals, the ModelDeployment, and
        the context (with where the audit trail stands now)."""
        model = start.model
        verified = start.verified
        serving = start.serving
        assert verified is not None
        assert serving is not None
        documents = {
            layout.approval_path(found.name): layout.document(_approval(found))
            for found in start.approvals
        }
        documents[layout.MODEL_DEPLOYMENT] = layout.document(_model_deployment(model))
        documents[layout.CONTEXT] = layout.document(
            {
                "apiVersion": layout.API_VERSION,
                "kind": "BackupContext",
                "backupId": start.backup,
                "createdAt": times.rfc3339(datetime.datetime.now(datetime.UTC)),
                "operator": {"instance": self._instance},
                "modelDeployment": {
                    "namespace": model.namespace,
                    "name": model.name,
                    "uid": model.uid,
                    "generation": model.metadata.get("generation"),
                },
                "model": {
                    "name": model.spec.model.name,
                    "version": model.spec.model.version,
                    "rootDigest": serving.root_digest,
                    "signatureDigest": serving.signature_digest,
                    "source": serving.source_uri,
                    "signature": serving.signature_uri,
                    "signer": verified.signers,
                    "files": verified.files,
                },
                "trustPolicy": start.policy,
                "approvals": sorted(found.name for found in start.approvals),
                "audit": self._audit.position(),
                "store": {
                    "name": start.store,
                    "location": store_description,
                    "retainUntil": times.rfc3339(start.retain_until),
                },
                "signingKey": self.key.key_id if self.key is not None else None,
            }
        )
        return documents

    async def _drill(self, start: backupviews.Start) -> restore.Drilled:
        if self.key is None:
            raise streams.BackupError(
                v1alpha1.REASON_BACKUP_KEY_MISSING, "the operator has no backup key"
            )
        model = start.model
        opening = await self._opening(start.store)
        body = await self.kube.get_trust_policy(model.spec.trust_policy)
        if body is None:
            raise streams.BackupError(
                v1alpha1.REASON_POLICY_NOT_FOUND,
                f'TrustPolicy "{model.spec.trust_policy}" does not exist',
            )
        try:
            policy = trustpolicy.parse(body)
        except errors.InvalidObjectError as error:
            raise streams.BackupError("InvalidPolicy", str(error)) from None
        rules = policy_rules.rules_of(policy.spec)
        keys = [self.key.public, *self._trusted]
        scratch = self._scratch

        async def run() -> restore.Drilled:
            store = opening.open()
            try:
                return await restore.drill(
                    store,
                    namespace=model.namespace,
                    name=model.name,
                    keys=keys,
                    rules=rules,
                    approvals_policy=policy.spec,
                    scratch=scratch,
                    now=datetime.datetime.now(datetime.UTC),
                    backup=start.backup,
                )
            finally:
                await store.aclose()

        return await self._worker.submit(run)


def _bound(
    settings: credentials.SourceSettings, *, uri: str, endpoint: str | None, private: bool
) -> credentials.SourceSettings:
    """Settings reading `uri` where the TrustPolicy binds it, as the pods' agent reads it."""
    if uri.startswith("s3://"):
        settings = credentials.bind_endpoint(
            settings, endpoint=endpoint, bound_by="the TrustPolicy"
        )
    return credentials.with_private_addresses(settings, allowed=private)


def _view(body: typing.Mapping[str, typing.Any], *, name: str) -> backupviews.StoreView:
    try:
        store = backupstore.parse(body)
    except errors.InvalidObjectError as error:
        return backupviews.StoreView(
            name=name,
            ready=conditions.Decision("False", backupstore.REASON_INVALID_STORE, str(error)),
            retention_days=0,
            drill_schedule=None,
        )
    ready = None
    status = store.status
    if status is not None and status.observed_generation == store.metadata.get("generation"):
        found = conditions.find(status.conditions, backupstore.CONDITION_READY)
        if found is not None:
            ready = conditions.Decision(found.status.value, found.reason, found.message)
    drill = store.spec.drill
    return backupviews.StoreView(
        name=name,
        ready=ready,
        retention_days=store.spec.s3.object_lock.retention_days if store.spec.s3 else 0,
        drill_schedule=None if drill.suspend else drill.schedule,
    )


def _approval(found: typing.Any) -> dict[str, typing.Any]:
    dumped: dict[str, typing.Any] = found.model_dump(mode="json", by_alias=True, exclude_none=True)
    metadata = dumped.get("metadata") or {}
    dumped["metadata"] = {
        key: metadata[key]
        for key in ("name", "namespace", "uid", "creationTimestamp")
        if key in metadata
    }
    dumped.pop("status", None)
    return dumped


def _model_deployment(model: v1alpha1.ModelDeployment) -> dict[str, typing.Any]:
    metadata = model.metadata
    return {
        "apiVersion": model.api_version,
        "kind": model.kind,
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "generation", "labels")
            if key in metadata
        },
        "spec": model.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _reason(error: BaseException, *, kind: backupviews.Kind) -> tuple[str, str]:
    reason, message = streams.describe(error)
    if kind == "drill":
        return reason, message
    if reason in v1alpha1.BACKED_UP_REASONS or reason == streams.READ_BACK_MISMATCH:
        return reason, message
    # The backup failed for the source's or the trust layer's reason: BackupFailed says so,
    # and the message carries that reason first.
    return v1alpha1.REASON_BACKUP_FAILED, f"{reason}: {message}"
