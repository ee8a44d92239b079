"""Reconciles one ModelDeployment: builds its children, applies what changed, writes its status.

Level-based and idempotent: every trigger (the object changed, a child changed, a resync) runs the
same function, which reads the current state and converges it. Nothing is written when nothing
changed, so the status write that an event of ours triggers ends the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import typing

from modelguard import kube
from modelguard.api import errors, v1alpha1
from modelguard.audit import records, sink
from modelguard.builders import children, labels, names
from modelguard.builders import deployment as deployment_builder
from modelguard.reconcile import (
    approval,
    auditing,
    conditions,
    drift,
    pods,
    readiness,
    verification,
)
from modelguard.trust import access, pinning

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]


class RetryLater(Exception):
    """A failure worth retrying with backoff: the API server refused or was unreachable."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What every reconcile needs from the process that runs it."""

    kube: kube.Kube
    instance: str
    """This operator replica's name, reported on the Events it posts."""
    agent_image: str
    """The image of the verifying init container: the operator's own, pinned by digest."""
    credentials_role: str
    """The ClusterRole a namespace binds to let the operator read its storage credentials."""
    audit: sink.Sink
    """Where every decision is recorded, hash-chained."""
    verification_cache: verification.Cache = dataclasses.field(default_factory=verification.Cache)
    recheck: typing.Callable[[str, str, datetime.datetime], None] = lambda *_: None
    """Asks for this model to be reconciled again at a time (when an approval expires)."""


# One reconcile at a time per object: the object's own handler and its children's handlers would
# otherwise race on the same status.
_locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
    asyncio.Lock
)


async def reconcile(context: Context, *, namespace: str, name: str) -> None:
    async with _locks[namespace, name]:
        with contextlib.suppress(_Stopped):
            await _reconcile(context, namespace=namespace, name=name)


async def _reconcile(context: Context, *, namespace: str, name: str) -> None:
    body = await _call(context.kube.get_model_deployment(namespace=namespace, name=name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        # Gone or going: the garbage collector removes the children through their ownerReferences.
        return
    status = _Status(body)

    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError as error:
        # The CRD schema refuses most of this at admission; what reaches here is what it cannot
        # say (or an object stored before a schema change).
        status.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision("False", "InvalidSpec", "; ".join(error.messages)),
        )
        await _finish(context, body=body, status=status)
        return

    if model.spec.quarantine:
        await _quarantine_on_request(context, model, body=body, status=status)
        return

    outcome = await _call(
        verification.verify_model(
            context.kube,
            model,
            cache=context.verification_cache,
            now=status.now,
            credentials_role=context.credentials_role,
        )
    )
    outcome = _bind_to_spec(context, status, model, outcome=outcome)
    status.set(v1alpha1.CONDITION_VERIFIED, outcome.decision)
    if outcome.verified is None:
        if await _quarantine_revoked(
            context, model, body=body, status=status, decision=outcome.decision
        ):
            return
        _hold(status, model, reason="NotVerified", why=f"not verified ({outcome.decision.reason})")
        await _finish(context, body=body, status=status)
        if outcome.transient:
            raise RetryLater(outcome.decision.message)
        if outcome.recheck_after is not None:
            context.recheck(namespace, name, status.now + outcome.recheck_after)
        return
    verified = outcome.verified
    status.current["verification"] = {
        key: value
        for key, value in {
            "version": model.spec.model.version,
            "rootDigest": verified.root_digest,
            "signer": verified.signers,
            "files": verified.files,
            "bytes": verified.bytes,
            "verifiedAt": verified.verified_at,
        }.items()
        if value is not None
    }
    refused = access.check_access(
        model.spec, network=verified.policy.network, policy_name=model.spec.trust_policy
    )
    status.set(
        v1alpha1.CONDITION_ISOLATED,
        conditions.Decision("False", str(refused[0].reason), "; ".join(v.message for v in refused))
        if refused
        else conditions.Decision(
            "True", "WithinPolicy", "network access within the TrustPolicy's spec.network"
        ),
    )
    if refused:
        _hold(status, model, reason="NotIsolated", why="asking for broader access than allowed")
        await _finish(context, body=body, status=status)
        return

    gate = await _call(
        approval.evaluate(
            context.kube,
            model,
            verified=verified,
            serving_digest=await _serving_digest(context, model),
            now=status.now,
        )
    )
    status.set(v1alpha1.CONDITION_APPROVED, gate.decision)
    if gate.record is not None:
        status.current["approval"] = gate.record
    if gate.recheck_at is not None:
        context.recheck(namespace, name, gate.recheck_at)
    if not gate.may_roll_out:
        _hold(status, model, reason="NotApproved", why=f"not approved ({gate.decision.reason})")
        await _finish(context, body=body, status=status)
        return

    artifact = deployment_builder.VerifiedArtifact(
        root_digest=verified.root_digest,
        signature_digest=verified.signature_digest,
        agent_image=context.agent_image,
        allow_formats=verified.allow_formats,
        audit_formats=verified.audit_formats,
        max_bytes=deployment_builder.model_byte_bound(model, signed_bytes=verified.bytes),
        source_endpoint=verified.source_endpoint,
        signature_endpoint=verified.signature_endpoint,
        source_private_addresses=verified.source_private_addresses,
        signature_private_addresses=verified.signature_private_addresses,
    )
    model = await _quarantine_on_tampering(context, model, status=status, verified=verified)
    await _roll_out(context, body=body, status=status, model=model, artifact=artifact)


def _bind_to_spec(
    context: Context,
    status: _Status,
    model: v1alpha1.ModelDeployment,
    *,
    outcome: verification.Outcome,
) -> verification.Outcome:
    """The outcome refused when its signature does not stand for the spec's model version
    (trust/pinning); else as verified, its root digest recorded in status.verifiedDigests and a
    re-publication that the spec or the policy accepts reported."""
    verified = outcome.verified
    if verified is None:
        return outcome
    if outcome.reread_at is not None:
        # Refused here or not, the bundle is read again then: it may be replaced (or restored).
        context.recheck(model.namespace, model.name, outcome.reread_at)
    bound = pinning.decide_digest(
        model=model.spec.model.name,
        version=model.spec.model.version,
        root_digest=verified.root_digest,
        subject_name=verified.subject_name,
        pinned=model.spec.model.root_digest,
        records=pinning.from_status(status.current, model=model.spec.model.name),
        policy=verified.policy,
        signature_uri=model.spec.model.signature_uri(),
        now=conditions.rfc3339(status.now),
    )
    if bound.violation is not None:
        refusal = conditions.Decision("False", str(bound.violation.reason), bound.violation.message)
        return dataclasses.replace(outcome, decision=refusal, verified=None)
    status.current["verifiedDigests"] = [record.to_status() for record in bound.records]
    if bound.replaced is not None:
        entry = auditing.republished(
            model=model.spec.model.name,
            version=model.spec.model.version,
            replaced=bound.replaced,
            root_digest=verified.root_digest,
            accepted_by=bound.accepted_by or "",
            approvals_needed=verified.policy.min_approvals > 0
            or bool(verified.policy.min_approvals_per_role),
        )
        status.audit.append(entry)
        status.events.append(entry)
    return outcome


async def _roll_out(
    context: Context,
    *,
    body: Manifest,
    status: _Status,
    model: v1alpha1.ModelDeployment,
    artifact: deployment_builder.VerifiedArtifact,
) -> None:
    """Applies the children for `artifact` and reports Ready from the Deployment."""
    deployment = await _apply_children(
        context, body=body, status=status, model=model, artifact=artifact
    )
    decision = readiness.deployment_readiness(
        quarantined=model.spec.quarantine,
        replicas=model.spec.serving.replicas,
        deployment=deployment,
    )
    if record := status.current.get("quarantine"):
        decision = conditions.Decision(
            "False",
            "Quarantined",
            f"quarantined automatically: {record['reason']}: {record['message']}; nothing was "
            "deleted. Any change of the spec (a new version, or spec.quarantine) lifts it.",
        )
    _set_ready(status, decision, model=model)
    if decision.status == "True":
        status.current["activeVersion"] = model.spec.model.version
    await _finish(context, body=body, status=status)


def _set_ready(
    status: _Status, decision: conditions.Decision, *, model: v1alpha1.ModelDeployment
) -> None:
    """Ready after a rollout (or a quarantine), and the audit record when it quarantines the
    model or lifts its quarantine."""
    status.set(v1alpha1.CONDITION_READY, decision)
    change = auditing.quarantine_change(
        status.previous,
        ready=decision,
        automatic=status.current.get("quarantine"),
        generation=status.generation,
        version=model.spec.model.version,
    )
    if change is not None:
        status.audit.append(change)


async def _quarantine_on_request(
    context: Context, model: v1alpha1.ModelDeployment, *, body: Manifest, status: _Status
) -> None:
    """spec.quarantine: true stops what serves now, before anything else is asked.

    Quarantine is the brake of an incident: it must not wait for the artifact source, the
    TrustPolicy or an approval to answer (any of which may be what the incident broke), so the
    artifact the live Deployment already runs stays pinned while it scales to zero and the network
    is cut. Verification and approval are decided again when the quarantine is lifted.
    """
    if (status.current.get("quarantine") or {}).get("generation") != status.generation:
        status.current.pop("quarantine", None)  # an automatic one of an earlier spec
    live = await _live_deployment(context, model)
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if artifact is not None:
        await _roll_out(context, body=body, status=status, model=model, artifact=artifact)
        return
    decision = conditions.Decision(
        "False",
        auditing.QUARANTINED_REASON,
        "quarantined through spec.quarantine before any version was rolled out; nothing runs",
    )
    _set_ready(status, decision, model=model)
    await _finish(context, body=body, status=status)


# A signature that verified before and no longer does because of the policy, not the bytes.
_REVOKED: typing.Final = frozenset({"UntrustedSigner", "TooFewSigners", "CertificateExpired"})


async def _quarantine_revoked(
    context: Context,
    model: v1alpha1.ModelDeployment,
    *,
    body: Manifest,
    status: _Status,
    decision: conditions.Decision,
) -> bool:
    """Quarantines the version that serves when its signer is no longer trusted (revoked from
    the TrustPolicy); True when it did. An unverified *new* version is merely held instead."""
    previous = status.previous.get("verification") or {}
    if decision.reason not in _REVOKED or previous.get("version") != model.spec.model.version:
        return False
    live = await _live_deployment(context, model)
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if artifact is None or artifact.root_digest != previous.get("rootDigest"):
        return False
    if (status.current.get("quarantine") or {}).get("generation") != status.generation:
        status.current["quarantine"] = {
            "reason": "SignerRevoked",
            "message": f"{decision.reason}: {decision.message}",
            "generation": status.generation,
            "since": conditions.rfc3339(status.now),
        }
        logger.warning("%s/%s: quarantined: signer revoked", model.namespace, model.name)
    quarantined = model.model_copy(
        update={"spec": model.spec.model_copy(update={"quarantine": True})}
    )
    await _roll_out(context, body=body, status=status, model=quarantined, artifact=artifact)
    return True


async def _quarantine_on_tampering(
    context: Context,
    model: v1alpha1.ModelDeployment,
    *,
    status: _Status,
    verified: verification.Verified,
) -> v1alpha1.ModelDeployment:
    """The model as it must be rolled out: quarantined when a pod's agent found bytes that are not
    the signed ones (now, or earlier for this same generation of the spec).

    Lifting it is a change of the spec (a new version, or quarantine toggled): the record names
    the generation it was made for.
    """
    record = status.current.get("quarantine") or {}
    if record.get("generation") != status.generation:
        status.current.pop("quarantine", None)
        record = {}
    pods_now = await _call(
        context.kube.list_pods(namespace=model.namespace, selector=labels.spawned(model.name))
    )
    refusals = pods.agent_refusals(pods_now, root_digest=verified.root_digest)
    admissions = pods.agent_admissions(pods_now, root_digest=verified.root_digest)
    # Looked up only when some pod reports something, which is rare.
    ours = await _replica_sets_of(context, model) if refusals or admissions else set()
    refusal = next((found for found in refusals if found.controller in ours), None)
    admitted = [found for found in admissions if found.controller in ours]
    if refusal is None and admitted:
        _report_admitted(status, admitted)
    if refusal is not None:
        message = f"pod {refusal.pod}: {refusal.message}"
        status.set(
            v1alpha1.CONDITION_VERIFIED, conditions.Decision("False", refusal.reason, message)
        )
        if refusal.tampering and not record:
            record = {
                "reason": refusal.reason,
                "message": message,
                "generation": status.generation,
                "since": conditions.rfc3339(status.now),
            }
            status.current["quarantine"] = record
            logger.warning("%s/%s: quarantined: %s", model.namespace, model.name, message)
    if not record:
        return model
    if refusal is None:
        # The refusing pods are gone (scaled to zero), but what they found still stands: the bytes
        # in the source are not the signed ones, whatever the signature bundle says on its own.
        status.set(
            v1alpha1.CONDITION_VERIFIED,
            conditions.Decision("False", str(record["reason"]), str(record["message"])),
        )
    return model.model_copy(update={"spec": model.spec.model_copy(update={"quarantine": True})})


def _report_admitted(status: _Status, admitted: list[pods.Admitted]) -> None:
    """Verified stays True, with reason AuditViolations and what the pods' agents admitted
    (pickle-based files under a TrustPolicy in Audit mode): recorded and reported, as Audit
    promises, not refused."""
    verified: typing.Mapping[str, typing.Any] = next(
        (
            c
            for c in status.current.get("conditions") or []
            if c["type"] == v1alpha1.CONDITION_VERIFIED
        ),
        {},
    )
    found = sorted({line for admission in admitted for line in admission.lines})
    status.set(
        v1alpha1.CONDITION_VERIFIED,
        conditions.Decision(
            "True",
            conditions.AUDIT_VIOLATIONS,
            f"{verified.get('message', '')}; admitted under Audit by the agent in pod "
            f"{admitted[0].pod}: {'; '.join(found)}",
        ),
    )


async def _replica_sets_of(context: Context, model: v1alpha1.ModelDeployment) -> set[str]:
    """The uids of the ReplicaSets that the model's own Deployment controls."""
    live = await _live_deployment(context, model)
    if live is None:
        return set()
    replica_sets = await _call(
        context.kube.list_replica_sets(
            namespace=model.namespace, selector=labels.spawned(model.name)
        )
    )
    return pods.controlled_by(replica_sets, deployment_uid=live["metadata"]["uid"])


def _hold(status: _Status, model: v1alpha1.ModelDeployment, *, reason: str, why: str) -> None:
    """Ready=False for a version that may not roll out; nothing is applied, what serves serves."""
    held = f"version {model.spec.model.version} is {why}"
    record = status.current.get("quarantine") or {}
    if record.get("generation") == status.generation:
        # Still quarantined (nothing is applied while held): that is what Ready must go on saying.
        status.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision(
                "False",
                auditing.QUARANTINED_REASON,
                f"quarantined automatically: {record['reason']}: {record['message']}; and {held}",
            ),
        )
        return
    active = status.current.get("activeVersion")
    status.set(
        v1alpha1.CONDITION_READY,
        conditions.Decision(
            "False",
            reason,
            held + (f"; {active} keeps serving" if active else "; nothing was rolled out"),
        ),
    )


async def _apply_children(
    context: Context,
    *,
    body: Manifest,
    status: _Status,
    model: v1alpha1.ModelDeployment,
    artifact: deployment_builder.VerifiedArtifact,
) -> Manifest | None:
    """Applies every child whose intent changed; returns the live Deployment."""
    applied: list[str] = []
    deployment: Manifest | None = None
    for manifest in children.build_children(model, artifact=artifact):
        child = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            live, reverted = await _apply_if_changed(context, manifest)
        except ChildConflict as conflict:
            status.set(
                v1alpha1.CONDITION_READY,
                conditions.Decision("False", "ChildConflict", str(conflict)),
            )
            await _finish(context, body=body, status=status)
            # No event of ours follows the other object's removal: look again later.
            context.recheck(model.namespace, model.name, status.now + CONFLICT_RECHECK)
            raise _Stopped from conflict
        except kube.ApiError as error:
            if error.status in _TRANSIENT:
                raise RetryLater(f"API server: {error.reason}: {error.message}") from error
            # The API server refused our own intent (an admission policy, a quota...): say which
            # child and why, keep what serves now, and try again on the next trigger.
            message = f"{manifest['kind']} {manifest['metadata']['name']}: {error.message}"
            status.set(
                v1alpha1.CONDITION_READY, conditions.Decision("False", "ApplyFailed", message)
            )
            await _finish(context, body=body, status=status)
            raise RetryLater(message) from error
        if reverted is not None:
            applied.append(child)
        if reverted:
            message = f"{child}: reverted what {', '.join(reverted)} changed in fields it manages"
            logger.warning("%s: %s", model.namespace, message)
            await _event(
                context, body, type="Warning", reason="DriftReverted", action="Revert", note=message
            )
            # Recorded now, not with the status: a revert changes no condition to derive it from.
            _audit(
                context,
                body,
                auditing.drift_reverted(child=child, managers=reverted, message=message),
            )
        if manifest["kind"] == "Deployment":
            deployment = live
    if applied:
        logger.info("%s: applied %s", model.namespace, ", ".join(applied))
        await _event(
            context,
            body,
            type="Normal",
            reason="Applied",
            action="Apply",
            note="applied " + ", ".join(applied),
        )
    return deployment


async def _live_deployment(context: Context, model: v1alpha1.ModelDeployment) -> Manifest | None:
    """The model's Deployment, if it is the model's: one made by someone else under its name says
    nothing about what the model serves (and pinning a root digest in it must not open the
    approval gate)."""
    live = await _call(
        context.kube.get(
            api_version="apps/v1",
            kind="Deployment",
            namespace=model.namespace,
            name=names.child_names(model.name).deployment,
        )
    )
    if live is None or pods.controller_uid(live) != model.uid:
        return None
    return live


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


class _Stopped(Exception):
    """The reconcile has reported why it cannot go on, and the status is written."""


CONFLICT_RECHECK: typing.Final = datetime.timedelta(minutes=1)


async def _serving_digest(context: Context, model: v1alpha1.ModelDeployment) -> str | None:
    """The root digest the model's pods run now, as pinned in the live Deployment."""
    live = await _live_deployment(context, model)
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    return artifact.root_digest if artifact is not None else None


class _Status:
    """The status being decided in one reconcile, next to the one read at its start."""

    def __init__(self, body: Manifest) -> None:
        self.previous: Manifest = body.get("status") or {}
        self.generation: int = body["metadata"].get("generation", 0)
        self.now = datetime.datetime.now(datetime.UTC)
        self.current: Manifest = {**self.previous, "observedGeneration": self.generation}
        self.audit: list[auditing.Entry] = []
        """Records of decisions no condition shows on its own (a quarantine, or its lifting)."""
        self.events: list[auditing.Entry] = []
        """Warnings of decisions no condition flip shows (a re-publication accepted)."""

    def set(self, type: str, decision: conditions.Decision) -> None:
        self.current["conditions"] = conditions.set_condition(
            self.current.get("conditions") or [],
            type=type,
            decision=decision,
            observed_generation=self.generation,
            now=self.now,
        )

    def flips(self) -> list[conditions.Condition]:
        """Conditions whose status differs from the one read at the start (or that are new), and
        those that turned to AuditViolations: what Audit mode admits is reported as it happens."""
        before = {c["type"]: c for c in self.previous.get("conditions") or []}
        return [
            c
            for c in self.current.get("conditions") or []
            if (before.get(c["type"]) or {}).get("status") != c["status"]
            or (
                c["reason"] == conditions.AUDIT_VIOLATIONS
                and (before.get(c["type"]) or {}).get("message") != c["message"]
            )
        ]


_ACTIONS: typing.Final = {
    v1alpha1.CONDITION_VERIFIED: "Verify",
    v1alpha1.CONDITION_APPROVED: "Approve",
    v1alpha1.CONDITION_ISOLATED: "Isolate",
    v1alpha1.CONDITION_READY: "Rollout",
}


async def _finish(context: Context, *, body: Manifest, status: _Status) -> None:
    """Writes the status if it changed, records the decisions made anew, and posts an Event for
    every condition that flipped."""
    if status.current != status.previous:
        metadata = body["metadata"]
        await _call(
            context.kube.apply_model_deployment_status(
                namespace=metadata["namespace"], name=metadata["name"], status=status.current
            )
        )
    # After the status write: when it fails, the retry derives the same records from the same
    # previous status, so each decision is recorded once.
    version = ((body.get("spec") or {}).get("model") or {}).get("version")
    for entry in [
        *auditing.from_conditions(status.previous, status.current, version=version),
        *status.audit,
    ]:
        _audit(context, body, entry)
    for entry in status.events:
        await _event(
            context,
            body,
            type="Warning",
            reason=entry.reason,
            action="Verify",
            note=entry.message,
        )
    for flipped in status.flips():
        await _event(
            context,
            body,
            type="Normal"
            if flipped["status"] == "True" and flipped["reason"] != conditions.AUDIT_VIOLATIONS
            else "Warning",
            reason=flipped["reason"],
            action=_ACTIONS.get(flipped["type"], "Reconcile"),
            note=flipped["message"],
        )


async def _apply_if_changed(
    context: Context, manifest: Manifest
) -> tuple[Manifest | None, list[str] | None]:
    """Applies `manifest` unless the live object already carries this exact intent, untouched.

    Returns the live object and None when nothing was written, else the applied object and the
    managers whose changes the apply reverted ([] for a plain change of our own intent).
    """
    intended = kube.with_intent(manifest)
    metadata = manifest["metadata"]
    live = await context.kube.get(
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        namespace=metadata["namespace"],
        name=metadata["name"],
    )
    if live is None:
        return await context.kube.apply(intended), []
    if pods.controller_uid(live) != pods.controller_uid(intended):
        # Applied with force, our intent would merge into someone else's object and keep what
        # we do not set (a sidecar, a volume): never adopt, as Helm and cert-manager do not.
        owner = pods.controller_uid(live)
        raise ChildConflict(
            f"{manifest['kind']} {metadata['name']} already exists and is not this "
            f"ModelDeployment's ({f'controller uid {owner}' if owner else 'no controller'}); "
            "nothing was applied to it: delete it, or name the model differently"
        )
    wanted = intended["metadata"]["annotations"][kube.INTENT_ANNOTATION]
    if live["metadata"].get("annotations", {}).get(kube.INTENT_ANNOTATION) != wanted:
        return await context.kube.apply(intended), []
    suspects = drift.foreign_managers(live, own=kube.FIELD_MANAGER)
    if not suspects:
        return live, None
    # Someone else wrote to this child: only the API server can say whether they changed a
    # field we own, so ask it what our intent would change, without storing anything.
    if not drift.differs(live, await context.kube.apply(intended, dry_run=True)):
        return live, None
    return await context.kube.apply(intended), suspects


async def _event(
    context: Context,
    body: Manifest,
    *,
    type: typing.Literal["Normal", "Warning"],
    reason: str,
    action: str,
    note: str,
) -> None:
    try:
        await context.kube.post_event(
            regarding=body,
            type=type,
            reason=reason,
            action=action,
            note=note,
            reporting_instance=context.instance,
        )
    except kube.ApiError as error:
        # An Event is a courtesy; failing to post one must not fail the reconcile.
        logger.warning("could not post event %s: %s", reason, error.message)


def _audit(context: Context, body: Manifest, entry: auditing.Entry) -> None:
    context.audit.record(
        entry.decision,
        reason=entry.reason,
        message=entry.message,
        subject=records.Subject.of(body),
        details=entry.details,
    )


# Conflicts, throttling and server-side failures pass; anything else is a refusal of our intent.
_TRANSIENT = frozenset({409, 429, 500, 502, 503, 504})

_T = typing.TypeVar("_T")


async def _call(awaitable: typing.Awaitable[_T]) -> _T:
    try:
        return await awaitable
    except kube.ApiError as error:
        raise RetryLater(f"API server refused: {error.reason}: {error.message}") from error
