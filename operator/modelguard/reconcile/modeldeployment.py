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
import enum
import logging
import typing

from modelguard import kube
from modelguard.api import errors, modelapproval, times, v1alpha1
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
    verification_slots: verification.Slots = dataclasses.field(default_factory=verification.Slots)
    """How many signature files may be fetched and verified at once (--verify-concurrency)."""
    recheck: typing.Callable[[str, str, datetime.datetime], None] = lambda *_: None
    """Asks for this model to be reconciled again at a time (when an approval expires)."""
    created: dict[tuple[str, str], dict[tuple[str, str], str]] = dataclasses.field(
        default_factory=dict
    )
    """Children this process created whose uid the model's status may not hold yet (its write
    failed): per (namespace, model), (kind, name) -> uid. Dropped once the status holds them."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """What one pass decides from, each object read once, at its start."""

    body: Manifest
    namespace_labels: dict[str, str] | None
    """The labels of the model's namespace (None: it could not be read), for the policy binding."""
    children: dict[tuple[str, str], Manifest]
    """Live objects under the model's child names that carry its label, by (kind, name): the
    operator's own, or someone else's made to look like them."""
    owned: dict[tuple[str, str], str]
    """The uid of every child the operator created for this model, by (kind, name)."""
    pods: list[Manifest]
    """The pods carrying the model's spawned labels."""
    replica_sets: list[Manifest]
    """The ReplicaSets carrying them, read only when a pod has an agent's report to count."""
    now: datetime.datetime
    """The pass's clock: when it observed."""
    model: v1alpha1.ModelDeployment | None = None
    """The parsed object; None when it does not parse (see `invalid`)."""
    invalid: tuple[str, ...] = ()
    """What is wrong with a ModelDeployment that does not parse."""
    verification: verification.Outcome | None = None
    """The spec's version verified against its bound policy (not asked while quarantined)."""
    revoked: conditions.Decision | None = None
    """Why what serves is no longer trusted by the bound policy, if it is not."""
    approvals: tuple[modelapproval.ModelApproval, ...] = ()
    """The namespace's readable ModelApprovals (read once the version verified)."""

    def child(self, kind: str, name: str) -> Manifest | None:
        """The live child, if it is the operator's: made by it for this model."""
        live = self.children.get((kind, name))
        if live is None or self.owned.get((kind, name)) != live["metadata"].get("uid"):
            return None
        return live


async def observe(context: Context, *, namespace: str, name: str) -> Observed | None:
    """Reads everything the pass needs but the verification's inputs (the policy, the bundle,
    the approvals, which have caches of their own); None when the model is gone or going."""
    body = await _call(context.kube.get_model_deployment(namespace=namespace, name=name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    namespace_labels = await _call(context.kube.get_namespace_labels(namespace))
    found: dict[tuple[str, str], Manifest] = {}
    for api_version, kind in _CHILD_KINDS:
        for live in await _call(
            context.kube.list_objects(
                api_version=api_version,
                kind=kind,
                namespace=namespace,
                selector=labels.selector(name),
            )
        ):
            found[kind, live["metadata"]["name"]] = live
    pods_now = await _call(
        context.kube.list_pods(namespace=namespace, selector=labels.spawned(name))
    )
    # Looked up only when some pod reports something, which is rare.
    replica_sets = (
        await _call(
            context.kube.list_replica_sets(namespace=namespace, selector=labels.spawned(name))
        )
        if pods.any_agent_report(pods_now)
        else []
    )
    recorded = {
        (str(child.get("kind")), str(child.get("name"))): str(child.get("uid"))
        for child in (body.get("status") or {}).get("children") or []
    }
    observed = Observed(
        body=body,
        namespace_labels=namespace_labels,
        children=found,
        owned={**recorded, **context.created.get((namespace, name), {})},
        pods=pods_now,
        replica_sets=replica_sets,
        now=datetime.datetime.now(datetime.UTC),
    )
    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError as error:
        return dataclasses.replace(observed, invalid=tuple(error.messages))
    if model.spec.quarantine:
        # The brake of an incident asks nothing that the incident may have broken (the source,
        # the policy, the approvals): only what the live Deployment already pins.
        return dataclasses.replace(observed, model=model)
    outcome = await _call(
        verification.verify_model(
            context.kube,
            model,
            cache=context.verification_cache,
            slots=context.verification_slots,
            now=observed.now,
            credentials_role=context.credentials_role,
            namespace_labels=namespace_labels,
        )
    )
    # What serves is judged by the current policy too, whatever version the spec names now.
    revoked = await _serving_revoked(
        context,
        model,
        serving=_serving_of(observed.child("Deployment", names.child_names(name).deployment)),
        outcome=outcome,
        now=observed.now,
    )
    approvals = (
        await _call(approval.observe(context.kube, namespace=namespace))
        if outcome.verified is not None
        else []
    )
    return dataclasses.replace(
        observed,
        model=model,
        verification=outcome,
        revoked=revoked,
        approvals=tuple(approvals),
    )


_CHILD_KINDS: typing.Final = (
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
)


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
    observed = await observe(context, namespace=namespace, name=name)
    if observed is None:
        # Gone or going: the garbage collector removes the children through their ownerReferences.
        return
    await write(context, decide(observed, agent_image=context.agent_image))


class Action(enum.StrEnum):
    """What a pass does, decided before anything is written."""

    REFUSE = "Refuse"
    """The object cannot be acted upon (an invalid spec): the status says why, nothing else."""
    HOLD = "Hold"
    """The spec's version may not roll out: nothing is applied, what serves keeps serving."""
    ROLL_OUT = "RollOut"
    """The children for the verified, approved version are applied."""
    QUARANTINE = "Quarantine"
    """What serves is scaled to zero with its network cut, nothing deleted."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """The one outcome of a pass's decision: what to write, and when to look again."""

    action: Action
    status: _Status
    """The status decided (conditions, records, audit entries), written once."""
    model: v1alpha1.ModelDeployment | None = None
    """The model as its children are built (spec.quarantine set when quarantined)."""
    artifact: deployment_builder.VerifiedArtifact | None = None
    """The artifact its children pin; None: no child is written."""
    recheck_at: datetime.datetime | None = None
    """When to reconcile again though nothing changes (an approval expires, a bundle is
    looked at again)."""
    retry: str | None = None
    """Why to retry soon with backoff (a source was unreachable)."""


def decide(observed: Observed, *, agent_image: str) -> Plan:
    """The pass's decision, from what it observed and its clock alone (no I/O): hold, roll out,
    quarantine or refuse, with the status that says so."""
    status = _Status(observed.body, observed=observed)
    model = observed.model
    if model is None:
        # The CRD schema refuses most of this at admission; what reaches here is what it cannot
        # say (or an object stored before a schema change).
        status.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision("False", v1alpha1.REASON_INVALID_SPEC, "; ".join(observed.invalid)),
        )
        return Plan(Action.REFUSE, status)
    if model.spec.quarantine or observed.verification is None:
        return _quarantine_on_request(model, status=status)

    plan = _decide_verification(observed, model, status=status, agent_image=agent_image)
    reread_at = observed.verification.reread_at
    if reread_at is not None and (plan.recheck_at is None or reread_at < plan.recheck_at):
        # Refused or not, a verified bundle is read again then: it may be replaced (or restored).
        plan = dataclasses.replace(plan, recheck_at=reread_at)
    return plan


def _decide_verification(
    observed: Observed,
    model: v1alpha1.ModelDeployment,
    *,
    status: _Status,
    agent_image: str,
) -> Plan:
    """The decision once the spec's version was verified (or refused) under its bound policy."""
    assert observed.verification is not None
    outcome = _bind_to_spec(status, model, outcome=observed.verification)
    status.set(v1alpha1.CONDITION_VERIFIED, outcome.decision)
    if outcome.verified is None:
        unbound = outcome.decision.reason == v1alpha1.REASON_POLICY_NOT_BOUND
        plan = _stop_short(
            model,
            status=status,
            revoked=observed.revoked,
            reason=v1alpha1.REASON_POLICY_NOT_BOUND if unbound else v1alpha1.REASON_NOT_VERIFIED,
            why=f"refused: {outcome.decision.message}"
            if unbound
            else f"not verified ({outcome.decision.reason})",
        )
        if plan.action is Action.QUARANTINE:
            return plan
        if outcome.transient:
            return dataclasses.replace(plan, retry=outcome.decision.message)
        if outcome.recheck_after is not None:
            return dataclasses.replace(plan, recheck_at=status.now + outcome.recheck_after)
        return plan
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
            "True",
            v1alpha1.REASON_WITHIN_POLICY,
            "network access within the TrustPolicy's spec.network",
        ),
    )
    if refused:
        return _stop_short(
            model,
            status=status,
            revoked=observed.revoked,
            reason=v1alpha1.REASON_NOT_ISOLATED,
            why="asking for broader access than allowed",
        )

    gate = approval.decide(
        list(observed.approvals),
        model=model,
        verified=verified,
        serving_digest=_serving_digest(status.deployment(model)),
        now=status.now,
    )
    status.set(v1alpha1.CONDITION_APPROVED, gate.decision)
    if gate.record is not None:
        status.current["approval"] = gate.record
    if not gate.may_roll_out:
        plan = _stop_short(
            model,
            status=status,
            revoked=observed.revoked,
            reason=v1alpha1.REASON_NOT_APPROVED,
            why=f"not approved ({gate.decision.reason})",
        )
        return dataclasses.replace(plan, recheck_at=gate.recheck_at)

    artifact = deployment_builder.VerifiedArtifact(
        root_digest=verified.root_digest,
        signature_digest=verified.signature_digest,
        agent_image=agent_image,
        allow_formats=verified.allow_formats,
        audit_formats=verified.audit_formats,
        max_bytes=deployment_builder.model_byte_bound(model, signed_bytes=verified.bytes),
        source_endpoint=verified.source_endpoint,
        signature_endpoint=verified.signature_endpoint,
        source_private_addresses=verified.source_private_addresses,
        signature_private_addresses=verified.signature_private_addresses,
    )
    if (status.current.get("quarantine") or {}).get("reason") == v1alpha1.REASON_SIGNER_REVOKED:
        # A version the policy verifies now, and approved, replaces the revoked bytes: that is
        # what the quarantine waited for.
        status.current.pop("quarantine", None)
    model = _quarantine_on_tampering(model, status=status, verified=verified)
    conflicts = _conflicts(observed, model)
    if conflicts and not model.spec.quarantine:
        # Nothing is applied, rather than some children: a rollout is all or nothing.
        status.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision("False", v1alpha1.REASON_CHILD_CONFLICT, "; ".join(conflicts)),
        )
        # No event of ours follows the other object's removal: look again later.
        return Plan(Action.HOLD, status, recheck_at=status.now + CONFLICT_RECHECK)
    return Plan(
        Action.QUARANTINE if model.spec.quarantine else Action.ROLL_OUT,
        status,
        model=model,
        artifact=artifact,
        recheck_at=gate.recheck_at,
    )


def _bind_to_spec(
    status: _Status,
    model: v1alpha1.ModelDeployment,
    *,
    outcome: verification.Outcome,
) -> verification.Outcome:
    """The outcome refused when its signature does not stand for the spec's model version
    (trust/pinning); else as verified, its root digest recorded in status.verifiedDigests and a
    re-publication that the spec or the policy accepts reported (an audit entry and an Event of
    the plan's status, written after it). Pure: the reread is asked for by the plan."""
    verified = outcome.verified
    if verified is None:
        return outcome
    bound = pinning.decide_digest(
        model=model.spec.model.name,
        version=model.spec.model.version,
        root_digest=verified.root_digest,
        subject_name=verified.subject_name,
        pinned=model.spec.model.root_digest,
        records=pinning.from_status(status.current, model=model.spec.model.name),
        policy=verified.policy,
        signature_uri=model.spec.model.signature_uri(),
        now=times.rfc3339(status.now),
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


async def write(context: Context, plan: Plan) -> None:
    """Children (when the plan has an artifact), then the status once, then Events and audit
    records; then when to look again."""
    status = plan.status
    body = status.observed.body
    metadata = body["metadata"]
    if plan.recheck_at is not None:
        context.recheck(metadata["namespace"], metadata["name"], plan.recheck_at)
    if plan.artifact is not None and plan.model is not None:
        deployment, skipped = await _apply_children(
            context, body=body, status=status, model=plan.model, artifact=plan.artifact
        )
        _ready_from(status, model=plan.model, deployment=deployment)
        if skipped:
            status.set(
                v1alpha1.CONDITION_READY,
                conditions.Decision(
                    "False",
                    v1alpha1.REASON_CHILD_CONFLICT,
                    "quarantined as far as the operator's own children go; " + "; ".join(skipped),
                ),
            )
            context.recheck(metadata["namespace"], metadata["name"], status.now + CONFLICT_RECHECK)
    await _finish(context, body=body, status=status)
    if plan.retry is not None:
        raise RetryLater(plan.retry)


def _conflicts(observed: Observed, model: v1alpha1.ModelDeployment) -> list[str]:
    """Why each child name taken by an object the operator did not make for `model` is not
    written to."""
    return [
        _conflict_message(kind, name)
        for kind, name in children.child_keys(model)
        if (kind, name) in observed.children and observed.child(kind, name) is None
    ]


def _conflict_message(kind: str, name: str) -> str:
    return (
        f"{kind} {name} already exists and is not this ModelDeployment's (the operator did not "
        "create it for this model, whatever its ownerReferences say); nothing was applied to "
        "it: delete it, or name the model differently"
    )


def _stop_short(
    model: v1alpha1.ModelDeployment,
    *,
    status: _Status,
    revoked: conditions.Decision | None,
    reason: str,
    why: str,
) -> Plan:
    """The spec's version may not roll out: held, and what serves keeps serving; unless its
    signer is revoked, and then what serves is quarantined (while the new version is held)."""
    if revoked is not None:
        return _quarantine_revoked(model, status=status, revoked=revoked)
    _hold(status, model, reason=reason, why=why)
    return Plan(Action.HOLD, status)


def _serving_digest(live: Manifest | None) -> str | None:
    """The root digest the model's own live Deployment pins: what its pods run now."""
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    return artifact.root_digest if artifact is not None else None


def _serving_of(live: Manifest | None) -> verification.Serving | None:
    """The artifact the model's own live Deployment pins, and where its agent reads it."""
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    source = deployment_builder.source_of(live) if live is not None else None
    if artifact is None or source is None:
        return None
    return verification.Serving(
        source_uri=source[0],
        signature_uri=source[1],
        signature_digest=artifact.signature_digest,
        root_digest=artifact.root_digest,
        signature_endpoint=artifact.signature_endpoint,
    )


# A signature that verified before and no longer does because of the policy, not the bytes.
_REVOKED: typing.Final = frozenset({"UntrustedSigner", "TooFewSigners", "CertificateExpired"})


async def _serving_revoked(
    context: Context,
    model: v1alpha1.ModelDeployment,
    *,
    serving: verification.Serving | None,
    outcome: verification.Outcome,
    now: datetime.datetime,
) -> conditions.Decision | None:
    """Why the artifact that serves is no longer trusted by the bound policy (its signer revoked),
    or None. Judged on every pass (a verdict is cached per bundle and policy generation, so only a
    policy change costs a fetch), independent of the version the spec names: a held rollout must
    not shelter what serves."""
    if serving is None or outcome.policy is None:
        # Nothing serves, or no bound policy to judge it by (the hold reports that).
        return None
    verified = outcome.verified
    if (
        verified is not None
        and verified.root_digest == serving.root_digest
        and verified.signature_digest == serving.signature_digest
    ):
        return None  # what serves is what was just verified
    judged = await _call(
        verification.verify_serving(
            context.kube,
            model,
            serving=serving,
            policy=outcome.policy,
            cache=context.verification_cache,
            slots=context.verification_slots,
            now=now,
            credentials_role=context.credentials_role,
        )
    )
    if judged.verified is not None or judged.decision.reason not in _REVOKED:
        if judged.transient:
            logger.warning(
                "%s/%s: what serves could not be judged again: %s",
                model.namespace,
                model.name,
                judged.decision.message,
            )
        return None
    return judged.decision


def _ready_from(
    status: _Status, *, model: v1alpha1.ModelDeployment, deployment: Manifest | None
) -> None:
    """Ready once the children are applied, from the Deployment they left."""
    decision = readiness.deployment_readiness(
        quarantined=model.spec.quarantine,
        replicas=model.spec.serving.replicas,
        deployment=deployment,
    )
    if record := status.current.get("quarantine"):
        decision = conditions.Decision(
            "False",
            auditing.QUARANTINED_REASON,
            f"quarantined automatically: {record['reason']}: {record['message']}; nothing was "
            "deleted. Any change of the spec (a new version, or spec.quarantine) lifts it.",
        )
    _set_ready(status, decision, model=model)
    if decision.status == "True":
        status.current["activeVersion"] = model.spec.model.version


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


def _quarantine_on_request(model: v1alpha1.ModelDeployment, *, status: _Status) -> Plan:
    """spec.quarantine: true stops what serves now, before anything else is asked.

    Quarantine is the brake of an incident: it must not wait for the artifact source, the
    TrustPolicy or an approval to answer (any of which may be what the incident broke), so the
    artifact the live Deployment already runs stays pinned while it scales to zero and the network
    is cut. Verification and approval are decided again when the quarantine is lifted.
    """
    if (status.current.get("quarantine") or {}).get("generation") != status.generation:
        status.current.pop("quarantine", None)  # an automatic one of an earlier spec
    live = status.deployment(model)
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if artifact is not None:
        return Plan(Action.QUARANTINE, status, model=model, artifact=artifact)
    decision = conditions.Decision(
        "False",
        auditing.QUARANTINED_REASON,
        "quarantined through spec.quarantine before any version was rolled out; nothing runs",
    )
    _set_ready(status, decision, model=model)
    return Plan(Action.QUARANTINE, status, model=model)


def _quarantine_revoked(
    model: v1alpha1.ModelDeployment, *, status: _Status, revoked: conditions.Decision
) -> Plan:
    """Quarantines what serves, whose signer the bound policy no longer trusts: whether the spec
    names that version or a new one that is held, the revoked bytes stop serving."""
    live = status.deployment(model)
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if (status.current.get("quarantine") or {}).get("generation") != status.generation:
        status.current["quarantine"] = {
            "reason": v1alpha1.REASON_SIGNER_REVOKED,
            "message": f"the version that serves: {revoked.reason}: {revoked.message}",
            "generation": status.generation,
            "since": times.rfc3339(status.now),
        }
        logger.warning("%s/%s: quarantined: signer revoked", model.namespace, model.name)
    quarantined = model.model_copy(
        update={"spec": model.spec.model_copy(update={"quarantine": True})}
    )
    return Plan(Action.QUARANTINE, status, model=quarantined, artifact=artifact)


def _quarantine_on_tampering(
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
    observed = status.observed
    refusals = pods.agent_refusals(observed.pods, root_digest=verified.root_digest)
    admissions = pods.agent_admissions(observed.pods, root_digest=verified.root_digest)
    ours = _replica_sets_of(status, model)
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
                "since": times.rfc3339(status.now),
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


def _replica_sets_of(status: _Status, model: v1alpha1.ModelDeployment) -> set[str]:
    """The uids of the ReplicaSets that the model's own Deployment controls."""
    live = status.deployment(model)
    if live is None:
        return set()
    return pods.controlled_by(status.observed.replica_sets, deployment_uid=live["metadata"]["uid"])


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
) -> tuple[Manifest | None, list[str]]:
    """Writes every child whose intent changed or that someone else changed; returns the live
    Deployment, and the children a quarantine could not write (someone else's)."""
    applied: list[str] = []
    skipped: list[str] = []
    deployment: Manifest | None = None
    for manifest in children.build_children(model, artifact=artifact):
        child = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            live, reverted = await _write_child(context, manifest, status=status, model=model)
        except ChildConflict as conflict:
            if model.spec.quarantine:
                # The brake stops whatever it can: one child taken by someone else must not
                # keep the Deployment running.
                skipped.append(str(conflict))
                continue
            status.set(
                v1alpha1.CONDITION_READY,
                conditions.Decision("False", v1alpha1.REASON_CHILD_CONFLICT, str(conflict)),
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
                v1alpha1.CONDITION_READY,
                conditions.Decision("False", v1alpha1.REASON_APPLY_FAILED, message),
            )
            await _finish(context, body=body, status=status)
            raise RetryLater(message) from error
        if reverted is not None:
            applied.append(child)
        if reverted:
            message = f"{child}: reverted what {', '.join(reverted)} changed"
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
    return deployment, skipped


class ChildConflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


class _Stopped(Exception):
    """The reconcile has reported why it cannot go on, and the status is written."""


CONFLICT_RECHECK: typing.Final = datetime.timedelta(minutes=1)


class _Status:
    """The status being decided in one reconcile, next to the one read at its start."""

    def __init__(self, body: Manifest, *, observed: Observed) -> None:
        self.observed = observed
        self.previous: Manifest = body.get("status") or {}
        self.generation: int = body["metadata"].get("generation", 0)
        self.now = observed.now
        self.current: Manifest = {**self.previous, "observedGeneration": self.generation}
        self.audit: list[auditing.Entry] = []
        """Records of decisions no condition shows on its own (a quarantine, or its lifting)."""
        self.events: list[auditing.Entry] = []
        """Warnings of decisions no condition flip shows (a re-publication accepted)."""

    def deployment(self, model: v1alpha1.ModelDeployment) -> Manifest | None:
        """The model's own live Deployment: one made by someone else under its name says nothing
        about what the model serves (and pinning a root digest in it must not open the gate)."""
        return self.observed.child("Deployment", names.child_names(model.name).deployment)

    def record_child(self, live: Manifest) -> None:
        """status.children: the operator made `live` for this model."""
        key = (str(live["kind"]), str(live["metadata"]["name"]))
        children = [
            child
            for child in self.current.get("children") or []
            if (child.get("kind"), child.get("name")) != key
        ]
        children.append({"kind": key[0], "name": key[1], "uid": live["metadata"]["uid"]})
        self.current["children"] = sorted(children, key=lambda c: (c["kind"], c["name"]))

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
        # The status holds the uids of the children created in this pass now.
        context.created.pop((metadata["namespace"], metadata["name"]), None)
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


async def _write_child(
    context: Context, manifest: Manifest, *, status: _Status, model: v1alpha1.ModelDeployment
) -> tuple[Manifest | None, list[str] | None]:
    """Makes the live child exactly `manifest`, unless it already is.

    Returns the live object and None when nothing was written, else the written object and the
    managers whose changes the write reverted ([] for a plain change of our own intent).
    """
    intended = kube.with_intent(manifest)
    metadata = manifest["metadata"]
    key = (manifest["kind"], metadata["name"])
    live = status.observed.children.get(key)
    conflict = _conflict_message(manifest["kind"], metadata["name"])
    if live is None:
        try:
            created = await context.kube.create(intended)
        except kube.ApiError as error:
            if error.status != 409:
                raise
            # The name is taken by an object without the model's label: ours, if its uid says
            # so (someone took the label away), else someone else's.
            live = await context.kube.get(
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                namespace=metadata["namespace"],
                name=metadata["name"],
            )
            if live is None or status.observed.owned.get(key) != live["metadata"].get("uid"):
                raise ChildConflict(conflict) from error
        else:
            # Remembered at once, so that a failed status write cannot orphan what we just made.
            uid = created["metadata"]["uid"]
            context.created.setdefault((model.namespace, model.name), {})[key] = uid
            status.record_child(created)
            return created, []
    elif status.observed.child(*key) is None:
        # Never adopted, never written to: a forced write would merge our intent into someone
        # else's object and keep what we do not set (a sidecar, a volume), as Helm and
        # cert-manager refuse to do too.
        raise ChildConflict(conflict)
    status.record_child(live)
    replacement = drift.replacement(intended, live)
    wanted = intended["metadata"]["annotations"][kube.INTENT_ANNOTATION]
    if live["metadata"].get("annotations", {}).get(kube.INTENT_ANNOTATION) != wanted:
        return await context.kube.replace(replacement), []
    suspects = drift.foreign_managers(live, own=kube.FIELD_MANAGER)
    if not suspects:
        return live, None
    # Someone else wrote to this child: only the API server can say whether replacing it with our
    # intent would change anything (it defaults what we leave out), so ask, storing nothing.
    if not drift.differs(live, await context.kube.replace(replacement, dry_run=True)):
        return live, None
    return await context.kube.replace(replacement), suspects


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
