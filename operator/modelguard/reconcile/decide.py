"""The decision of one pass over a ModelDeployment (pure: what observe read and its clock in, one
`Outcome` out; import-linter keeps the API server, the sources and the event loop out).

The outcome is Refuse, Hold, RollOut or Quarantine, with the children to write (none for a
refusal or a hold), the status as the api models, the notes that no condition shows, and when to
look again; its Events and audit records follow from the status and the notes (reports.py).
Writing the children can find what no decision could know before (the uids the API server gave,
the Deployment the writes left, someone else's object under a child's name, a refusal by an
admission policy): `conclude` folds that into the same outcome before its status is written once.

Each check sets one condition, in the order a rollout needs them: Verified (the signature, bound
to the spec's version), Isolated (network access within the policy), Approved (the gate), then
Ready, which summarises them, and Reconciling and Stalled, which say the same for kstatus
(`progress`). A new check is one function here that sets its condition from a
field of `observations.Observed`; reports.py's table says what its change tells.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import typing

from modelguard.api import placement as placement_api
from modelguard.api import times, trustpolicy, v1alpha1
from modelguard.builders import children, intent, labels, names
from modelguard.builders import deployment as deployment_builder
from modelguard.reconcile import (
    approval,
    backups,
    backupviews,
    conditions,
    observations,
    pods,
    readiness,
    reports,
    serving,
)
from modelguard.trust import access, inputaudit, pinning
from modelguard.trust import reasons as trust_reasons

Manifest = dict[str, typing.Any]

CONFLICT_RECHECK: typing.Final = datetime.timedelta(minutes=1)
"""How soon a model whose child name someone else holds is looked at again: no event of the
operator's follows the other object's removal."""


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
class Outcome:
    """The one outcome of a pass: what to write, what to tell, and when to look again."""

    action: Action
    observed: observations.Observed
    """What it was decided from."""
    status: v1alpha1.ModelDeploymentStatus
    """The status to write, once."""
    model: v1alpha1.ModelDeployment | None = None
    """The model its children are built from (spec.quarantine set when quarantined)."""
    artifact: deployment_builder.VerifiedArtifact | None = None
    """The artifact its children pin."""
    children: tuple[Manifest, ...] = ()
    """The desired children, in apply order, their intent recorded; none for a refusal or a hold."""
    notes: tuple[reports.Note, ...] = ()
    """What the pass did or found that no condition shows."""
    recheck_at: datetime.datetime | None = None
    """When to reconcile again though nothing changes (an approval expires, a bundle is read
    again, someone else's object may be gone)."""
    retry: str | None = None
    """Why to retry soon with backoff (a source was unreachable, a child was refused)."""
    backup: backupviews.Start | None = None
    """A backup or restore drill to start once the status is written."""
    held: str | None = None
    """Why the spec's version is held, when what serves is quarantined meanwhile."""

    @property
    def status_changed(self) -> bool:
        return self.status != self.observed.status

    @property
    def events(self) -> list[reports.Event]:
        return reports.events(self.observed.status, self.status, self.notes)

    @property
    def audit_records(self) -> list[reports.Record]:
        version = self.observed.model.spec.model.version if self.observed.model else None
        return reports.audit_records(self.observed.status, self.status, self.notes, version=version)


def decide(
    seen: observations.Observed,
    *,
    agent_image: str,
    placement: placement_api.Placement = placement_api.NONE,
) -> Outcome:
    """Hold, roll out, quarantine or refuse, with the status that says so; model pods placed
    as the platform says (`placement`)."""
    return with_progress(_decide(seen, agent_image=agent_image, placement=placement))


def _decide(
    seen: observations.Observed, *, agent_image: str, placement: placement_api.Placement
) -> Outcome:
    draft = _Draft(seen, placement=placement)
    model = seen.model
    if model is None:
        # The CRD schema refuses most of this at admission; what reaches here is what it cannot
        # say (or an object stored before a schema change). What serves is still judged, and
        # spec.quarantine still read: neither may depend on the rest of the spec.
        judgement = serving.judge(seen, verified=None)
        draft.status.serving_evidence = judgement.records or None
        invalid = conditions.Decision(
            "False", v1alpha1.REASON_INVALID_SPEC, "; ".join(seen.invalid)
        )
        if _quarantine_asked(seen.body) or judgement.refusal is not None:
            return _quarantine_live(draft, refusal=judgement.refusal, invalid=invalid)
        draft.set(v1alpha1.CONDITION_READY, invalid)
        return draft.outcome(Action.REFUSE)
    verdict = seen.verification
    if model.spec.quarantine or verdict is None:
        return _with_backups(_quarantine_on_request(draft, model))
    outcome = _decide_verified(draft, model, verdict=verdict, agent_image=agent_image)
    reread_at = verdict.reread_at
    if reread_at is not None and (outcome.recheck_at is None or reread_at < outcome.recheck_at):
        # Refused or not, a verified bundle is read again then: it may be replaced (or restored).
        outcome = dataclasses.replace(outcome, recheck_at=reread_at)
    return _with_backups(outcome)


def _with_backups(outcome: Outcome) -> Outcome:
    """The outcome with BackedUp, status.lastBackup and lastDrill, their notes, and the backup
    or drill to start (reconcile/backups.py)."""
    decided = backups.decide(outcome.observed, status=outcome.status)
    status = outcome.status.model_copy(deep=True)
    if decided.remove:
        if conditions.find(status.conditions, v1alpha1.CONDITION_BACKED_UP) is None:
            return outcome
        status.conditions = [c for c in status.conditions if c.type != v1alpha1.CONDITION_BACKED_UP]
        return dataclasses.replace(outcome, status=status)
    if decided.condition is not None:
        status.conditions = conditions.set_condition(
            status.conditions,
            type=v1alpha1.CONDITION_BACKED_UP,
            decision=decided.condition,
            observed_generation=outcome.observed.generation,
            now=outcome.observed.now,
        )
    status.last_backup = decided.last_backup
    status.last_drill = decided.last_drill
    recheck_at = outcome.recheck_at
    if decided.recheck_at is not None:
        recheck_at = _earliest(recheck_at, decided.recheck_at)
    return dataclasses.replace(
        outcome,
        status=status,
        notes=(*outcome.notes, *decided.notes),
        recheck_at=recheck_at,
        backup=decided.start,
    )


def conclude(outcome: Outcome, applied: observations.Applied) -> Outcome:
    """The outcome once its children are written: the uids they were given, what the writes
    found, and Ready from the Deployment they left; the backup decision stays as it was."""
    concluded = with_progress(_conclude(outcome, applied))
    if concluded.backup is outcome.backup:
        return concluded
    return dataclasses.replace(concluded, backup=outcome.backup)


def _conclude(outcome: Outcome, applied: observations.Applied) -> Outcome:
    if not outcome.children:
        return outcome
    draft = _Draft.resume(outcome)
    draft.record_children(applied.created)
    draft.record_contents(applied.contents)
    if applied.written:
        draft.notes.append(reports.applied(applied.written))
    draft.notes.extend(
        reports.drift_reverted(child=child, managers=managers)
        for child, managers in applied.reverted
    )
    model = outcome.model
    if model is None:
        # Live children quarantined while the spec does not parse: Ready, and the note of the
        # quarantine, are decided already.
        draft.notes = [
            *(note for note in outcome.notes if note not in draft.notes),
            *draft.notes,
        ]
        return draft.outcome(outcome.action, recheck_at=outcome.recheck_at, retry=outcome.retry)
    recheck_at = outcome.recheck_at
    if applied.conflicts and not model.spec.quarantine:
        draft.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision(
                "False", v1alpha1.REASON_CHILD_CONFLICT, "; ".join(applied.conflicts)
            ),
        )
        return draft.outcome(
            outcome.action, recheck_at=_earliest(recheck_at, draft.conflict_recheck)
        )
    if applied.refused is not None:
        # The API server refused the operator's own intent: what serves now keeps serving.
        draft.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision("False", v1alpha1.REASON_APPLY_FAILED, applied.refused),
        )
        return draft.outcome(outcome.action, recheck_at=recheck_at, retry=applied.refused)
    _ready_from(draft, model, deployment=applied.deployment)
    if applied.conflicts:
        # The brake stopped whatever it could; someone else's object stays as it is.
        draft.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision(
                "False",
                v1alpha1.REASON_CHILD_CONFLICT,
                "quarantined as far as the operator's own children go; "
                + "; ".join(applied.conflicts),
            ),
        )
        recheck_at = _earliest(recheck_at, draft.conflict_recheck)
    return draft.outcome(outcome.action, recheck_at=recheck_at, retry=outcome.retry)


class _Draft:
    """The status and notes being decided in one pass, from the status it read."""

    def __init__(
        self,
        seen: observations.Observed,
        *,
        placement: placement_api.Placement = placement_api.NONE,
    ) -> None:
        self.observed = seen
        self.placement = placement
        """Where the platform places model pods: part of every Deployment built."""
        self.generation = seen.generation
        self.now = seen.now
        self.status = seen.status.model_copy(deep=True)
        self.status.observed_generation = self.generation
        self.notes: list[reports.Note] = []
        self.model: v1alpha1.ModelDeployment | None = None
        self.artifact: deployment_builder.VerifiedArtifact | None = None
        self.children: tuple[Manifest, ...] = ()
        self.serving_refusal: conditions.Decision | None = None
        """Why what serves may not go on serving under the current policy (serving.judge)."""
        self.held: str | None = None
        """Why the spec's version is held while what serves is quarantined, for Ready."""
        # Children created by an earlier pass whose status write failed are recorded now.
        self.record_children(seen.owned)

    @classmethod
    def resume(cls, outcome: Outcome) -> _Draft:
        """A draft of `outcome`, Ready to be decided again (with the note it makes)."""
        draft = cls(outcome.observed)
        draft.status = outcome.status.model_copy(deep=True)
        draft.notes = [
            note
            for note in outcome.notes
            if note.happening
            not in {reports.Happening.QUARANTINED, reports.Happening.QUARANTINE_LIFTED}
        ]
        draft.model, draft.artifact, draft.children, draft.held = (
            outcome.model,
            outcome.artifact,
            outcome.children,
            outcome.held,
        )
        return draft

    @property
    def conflict_recheck(self) -> datetime.datetime:
        return self.now + CONFLICT_RECHECK

    def set(self, type: str, decision: conditions.Decision) -> None:
        self.status.conditions = conditions.set_condition(
            self.status.conditions,
            type=type,
            decision=decision,
            observed_generation=self.generation,
            now=self.now,
        )

    def condition(self, type: str) -> v1alpha1.Condition | None:
        return conditions.find(self.status.conditions, type)

    def record_children(self, uids: typing.Mapping[tuple[str, str], str]) -> None:
        """status.children: the operator made these objects for the model."""
        if not uids:
            return
        known = {(child.kind, child.name): child for child in self.status.children or []}
        merged = {key: child.uid for key, child in known.items()}
        merged.update(uids)
        self.status.children = [
            v1alpha1.OwnedChild(
                kind=kind,
                name=name,
                uid=uid,
                # What it does is known only of the object it was recorded for.
                content=known[kind, name].content
                if (kind, name) in known and known[kind, name].uid == uid
                else None,
            )
            for (kind, name), uid in sorted(merged.items())
        ]

    def record_contents(self, contents: typing.Mapping[tuple[str, str], str]) -> None:
        """status.children[].content: what each child does as the writes left it."""
        self.status.children = [
            child.model_copy(update={"content": contents[child.kind, child.name]})
            if (child.kind, child.name) in contents
            else child
            for child in self.status.children or []
        ] or None

    def quarantine_record(self) -> v1alpha1.QuarantineStatus | None:
        """status.quarantine if it holds for this generation of the spec; an automatic
        quarantine of an earlier spec is lifted by the change (and dropped here)."""
        record = self.status.quarantine
        if record is not None and record.generation != self.generation:
            self.status.quarantine = record = None
        return record

    def outcome(
        self,
        action: Action,
        *,
        recheck_at: datetime.datetime | None = None,
        retry: str | None = None,
    ) -> Outcome:
        return Outcome(
            action=action,
            observed=self.observed,
            status=self.status,
            model=self.model,
            artifact=self.artifact,
            children=self.children,
            notes=tuple(self.notes),
            recheck_at=recheck_at,
            retry=retry,
            held=self.held,
        )


def _earliest(first: datetime.datetime | None, second: datetime.datetime) -> datetime.datetime:
    return second if first is None else min(first, second)


# --- Reconciling and Stalled: the summary as kstatus reads it -----------------------------------

# Why Ready is False, and the condition that says it in full.
_CAUSE: typing.Final = {
    v1alpha1.REASON_NOT_VERIFIED: v1alpha1.CONDITION_VERIFIED,
    v1alpha1.REASON_POLICY_NOT_BOUND: v1alpha1.CONDITION_VERIFIED,
    v1alpha1.REASON_NOT_APPROVED: v1alpha1.CONDITION_APPROVED,
    v1alpha1.REASON_NOT_ISOLATED: v1alpha1.CONDITION_ISOLATED,
}
# Ready reasons of a model the operator is still working towards without anyone's help: a
# rollout under way, or a version waiting for its approvals (the gate is the point; approving is
# the expected next step, not a repair). A version refused for want of a source that answers is
# one too, while the operator retries it (`retrying`).
_IN_PROGRESS: typing.Final = frozenset({v1alpha1.REASON_PROGRESSING, v1alpha1.REASON_NOT_APPROVED})
# Verified reasons of an artifact not published yet: GitOps applies a ModelDeployment whenever it
# likes, the pipeline that uploads the model and its signature may finish later, and the operator
# looks again (with backoff) until it does.
# (SourceNotFound is sources.errors.SourceNotFound.reason; this module may not import the sources.)
AWAITED: typing.Final = frozenset({str(trust_reasons.Reason.MISSING_FILE), "SourceNotFound"})


def progress(
    status: v1alpha1.ModelDeploymentStatus, *, retrying: bool
) -> tuple[conditions.Decision, conditions.Decision] | None:
    """Reconciling and Stalled for `status`, from its Ready condition (None without one).

    Ready True: neither. A rollout under way, a version waiting for its approvals, a source being
    retried, a model or signature not published yet: Reconciling. Anything else that keeps Ready
    False stops until someone changes the spec, the policy, the signature, the approvals or the
    cluster (an untrusted signer, a bad
    signature, a missing or unbound policy, broad access refused, a child name taken, a child the
    API server refuses, a rollout past its deadline, a quarantine): Stalled. Both carry the
    reason and message of the condition that says why (Verified, Approved or Isolated for a hold,
    else Ready), so that kstatus's message is the one a person needs.
    """
    ready = conditions.find(status.conditions, v1alpha1.CONDITION_READY)
    if ready is None:
        return None
    cause = ready
    if ready.status != v1alpha1.ConditionStatus.TRUE and ready.reason in _CAUSE:
        found = conditions.find(status.conditions, _CAUSE[ready.reason])
        if found is not None and found.status == v1alpha1.ConditionStatus.FALSE:
            cause = found
    reconciling: typing.Literal["True", "False"]
    stalled: typing.Literal["True", "False"]
    if ready.status == v1alpha1.ConditionStatus.TRUE:
        reconciling, stalled = "False", "False"
    elif ready.reason in _IN_PROGRESS or (
        ready.reason == v1alpha1.REASON_NOT_VERIFIED and (retrying or cause.reason in AWAITED)
    ):
        reconciling, stalled = "True", "False"
    else:
        reconciling, stalled = "False", "True"
    return (
        conditions.Decision(reconciling, cause.reason, cause.message),
        conditions.Decision(stalled, cause.reason, cause.message),
    )


def with_progress(outcome: Outcome) -> Outcome:
    """`outcome` with its status's Reconciling and Stalled set from the rest of it; a source is
    being retried when the outcome asks for a retry."""
    decided = progress(outcome.status, retrying=outcome.retry is not None)
    if decided is None:
        return outcome
    seen = outcome.observed
    status = outcome.status.model_copy(deep=True)
    for type, decision in zip(
        (v1alpha1.CONDITION_RECONCILING, v1alpha1.CONDITION_STALLED), decided, strict=True
    ):
        status.conditions = conditions.set_condition(
            status.conditions,
            type=type,
            decision=decision,
            observed_generation=seen.generation,
            now=seen.now,
        )
    return dataclasses.replace(outcome, status=status)


# --- quarantine through the spec -----------------------------------------------------------------


def _quarantine_on_request(draft: _Draft, model: v1alpha1.ModelDeployment) -> Outcome:
    """spec.quarantine: true stops what serves now, before anything else is asked.

    Quarantine is the brake of an incident: it must not wait for the artifact source, the
    TrustPolicy or an approval to answer (any of which may be what the incident broke), so the
    artifact the live Deployment already runs stays pinned while it scales to zero and the network
    is cut. Verification and approval are decided again when the quarantine is lifted.
    """
    draft.quarantine_record()
    live = draft.observed.deployment()
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if artifact is not None:
        return _with_children(draft, Action.QUARANTINE, model, artifact=artifact)
    draft.model = model
    _set_ready(
        draft,
        conditions.Decision(
            "False",
            v1alpha1.REASON_QUARANTINED,
            "quarantined through spec.quarantine before any version was rolled out; nothing runs",
        ),
        model=model,
    )
    return draft.outcome(Action.QUARANTINE)


# --- Verified, Isolated, Approved ----------------------------------------------------------------


def _decide_verified(
    draft: _Draft,
    model: v1alpha1.ModelDeployment,
    *,
    verdict: observations.Verdict,
    agent_image: str,
) -> Outcome:
    """The decision once the spec's version was verified (or refused) under its bound policy."""
    verdict = _bind_to_spec(draft, model, verdict=verdict)
    draft.set(v1alpha1.CONDITION_VERIFIED, verdict.decision)
    verified = verdict.verified
    judgement = serving.judge(draft.observed, verified=verified)
    draft.status.serving_evidence = judgement.records or None
    draft.serving_refusal = judgement.refusal
    if verified is None:
        # Whatever the verification says, someone else's NetworkPolicy opening the model is
        # reported (judged by the bound policy's limits, or by the strictest when none binds).
        bound = draft.observed.policy
        limits = bound.policy.spec if bound is not None and bound.policy is not None else None
        _isolated(
            draft,
            model,
            network=limits.network if limits is not None else trustpolicy.Network(),
            audit=limits.audit if limits is not None else trustpolicy.InputAudit(),
        )
        unbound = verdict.decision.reason == v1alpha1.REASON_POLICY_NOT_BOUND
        outcome = _stop_short(
            draft,
            model,
            reason=v1alpha1.REASON_POLICY_NOT_BOUND if unbound else v1alpha1.REASON_NOT_VERIFIED,
            why=f"refused: {verdict.decision.message}"
            if unbound
            else f"not verified ({verdict.decision.reason})",
        )
        if outcome.action is Action.QUARANTINE:
            return outcome
        if verdict.transient:
            return dataclasses.replace(outcome, retry=verdict.decision.message)
        if verdict.recheck_after is not None:
            return dataclasses.replace(outcome, recheck_at=draft.now + verdict.recheck_after)
        return outcome
    draft.status.verification = v1alpha1.VerificationStatus(
        version=model.spec.model.version,
        root_digest=verified.root_digest,
        signer=verified.signers,
        files=verified.files,
        bytes=verified.bytes,
        verified_at=verified.verified_at,
    )
    if not _isolated(draft, model, network=verified.policy.network, audit=verified.policy.audit):
        return _stop_short(
            draft,
            model,
            reason=v1alpha1.REASON_NOT_ISOLATED,
            why="asking for broader access than allowed",
        )
    gate = approval.decide(
        list(draft.observed.approvals),
        model=model,
        verified=verified,
        serving_digest=_serving_digest(draft.observed.deployment()),
        now=draft.now,
    )
    draft.set(v1alpha1.CONDITION_APPROVED, gate.decision)
    if gate.record is not None:
        draft.status.approval = gate.record
    if not gate.may_roll_out:
        outcome = _stop_short(
            draft,
            model,
            reason=v1alpha1.REASON_NOT_APPROVED,
            why=f"not approved ({gate.decision.reason})",
        )
        return dataclasses.replace(outcome, recheck_at=gate.recheck_at)

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
    record = draft.status.quarantine
    if record is not None and record.reason in v1alpha1.SERVING_QUARANTINE_REASONS:
        # A version the policy verifies now, and approved, replaces what the policy stopped:
        # that is what the quarantine waited for.
        draft.status.quarantine = None
    model = _quarantine_on_tampering(draft, model, verified=verified)
    conflicts = _conflicts(draft.observed, model)
    if conflicts and not model.spec.quarantine:
        # Nothing is applied, rather than some children: a rollout is all or nothing.
        draft.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision("False", v1alpha1.REASON_CHILD_CONFLICT, "; ".join(conflicts)),
        )
        return draft.outcome(Action.HOLD, recheck_at=draft.conflict_recheck)
    return _with_children(
        draft,
        Action.QUARANTINE if model.spec.quarantine else Action.ROLL_OUT,
        model,
        artifact=artifact,
        recheck_at=gate.recheck_at,
    )


def _bind_to_spec(
    draft: _Draft, model: v1alpha1.ModelDeployment, *, verdict: observations.Verdict
) -> observations.Verdict:
    """The verdict refused when its signature does not stand for the spec's model version
    (trust/pinning); else as verified, its root digest recorded in status.verifiedDigests and a
    re-publication that the spec or the policy accepts noted."""
    verified = verdict.verified
    if verified is None:
        return verdict
    bound = pinning.decide_digest(
        model=model.spec.model.name,
        version=model.spec.model.version,
        root_digest=verified.root_digest,
        subject_name=verified.subject_name,
        pinned=model.spec.model.root_digest,
        records=pinning.from_status(draft.status, model=model.spec.model.name),
        policy=verified.policy,
        signature_uri=model.spec.model.signature_uri(),
        now=times.rfc3339(draft.now),
    )
    if bound.violation is not None:
        refusal = conditions.Decision("False", str(bound.violation.reason), bound.violation.message)
        return dataclasses.replace(verdict, decision=refusal, verified=None)
    draft.status.verified_digests = [record.to_status() for record in bound.records]
    if bound.replaced is not None:
        draft.notes.append(
            reports.republished(
                model=model.spec.model.name,
                version=model.spec.model.version,
                replaced=bound.replaced,
                root_digest=verified.root_digest,
                accepted_by=bound.accepted_by or "",
                approvals_needed=verified.policy.min_approvals > 0
                or bool(verified.policy.min_approvals_per_role),
            )
        )
    return verdict


def _isolated(
    draft: _Draft,
    model: v1alpha1.ModelDeployment,
    *,
    network: trustpolicy.Network,
    audit: trustpolicy.InputAudit,
) -> bool:
    """Isolated: the network access the spec asks for is within the bound policy's limits (else
    the version is held), and no NetworkPolicy of someone else's opens the model's pods beyond
    them (else Isolated says which; what serves keeps serving and rollouts go on, since neither
    opened anything, and a namespace editor must not be able to hold a model's rollouts)."""
    refused = access.check_access(model.spec, network=network, policy_name=model.spec.trust_policy)
    # What the audit proxy would record is the policy's to allow, as what the pods may reach is.
    refused += inputaudit.check_inputs(model.spec, audit=audit, policy_name=model.spec.trust_policy)
    opened = _opened_by_others(draft.observed, model, network=network)
    if refused:
        decision = conditions.Decision(
            "False", str(refused[0].reason), "; ".join(v.message for v in refused)
        )
    elif opened:
        decision = conditions.Decision(
            "False",
            v1alpha1.REASON_OPENED_BY_NETWORK_POLICY,
            f"{opened}. NetworkPolicies add up: these open the model's pods beyond its "
            "TrustPolicy's spec.network; narrow their podSelector or their rules, or delete them",
        )
    else:
        decision = conditions.Decision(
            "True",
            v1alpha1.REASON_WITHIN_POLICY,
            "network access within the TrustPolicy's spec.network",
        )
    draft.set(v1alpha1.CONDITION_ISOLATED, decision)
    return not refused


# At most this many widening rules are named in the condition; the rest are counted.
_MAX_OPENINGS_NAMED: typing.Final = 10


def _opened_by_others(
    seen: observations.Observed, model: v1alpha1.ModelDeployment, *, network: trustpolicy.Network
) -> str:
    """What NetworkPolicies the operator did not make for this model allow its pods beyond
    `network` (trust.access.check_network_policy), judged by the labels its pods carry and will
    carry; "" when none does."""
    own = set(seen.owned.values())
    pod_labels = [labels.of(model)]
    for pod in seen.pods:
        found = dict(pod["metadata"].get("labels") or {})
        if found not in pod_labels:
            pod_labels.append(found)
    # Callers of a model that records its inputs reach its audit proxy's port alone (0026).
    audited = (
        access.AuditedPort(names.PORT_NAME, deployment_builder.proxy_port(model))
        if deployment_builder.audited(model)
        else None
    )
    openings: dict[str, None] = {}
    for policy in seen.network_policies:
        if policy["metadata"].get("uid") in own:
            continue
        for found in pod_labels:
            for violation in access.check_network_policy(
                policy,
                pod_labels=found,
                network=network,
                policy_name=model.spec.trust_policy,
                audited_port=audited,
            ):
                openings[violation.message] = None
    named = list(openings)[:_MAX_OPENINGS_NAMED]
    more = len(openings) - len(named)
    return "; ".join(named) + (f"; and {more} more" if more else "")


# --- what the pods found -------------------------------------------------------------------------


def _quarantine_on_tampering(
    draft: _Draft, model: v1alpha1.ModelDeployment, *, verified: observations.Verified
) -> v1alpha1.ModelDeployment:
    """The model as it must be rolled out: quarantined when a pod's agent found bytes that are not
    the signed ones (now, or earlier for this same generation of the spec).

    Lifting it is a change of the spec (a new version, or quarantine toggled): the record names
    the generation it was made for.
    """
    record = draft.quarantine_record()
    seen = draft.observed
    refusals = pods.agent_refusals(seen.pods, root_digest=verified.root_digest)
    admissions = pods.agent_admissions(seen.pods, root_digest=verified.root_digest)
    ours = _replica_sets_of(draft)
    refusal = next((found for found in refusals if found.controller in ours), None)
    admitted = [found for found in admissions if found.controller in ours]
    if refusal is None and admitted:
        _report_admitted(draft, admitted)
    if refusal is not None:
        message = f"pod {refusal.pod}: {refusal.message}"
        draft.set(
            v1alpha1.CONDITION_VERIFIED, conditions.Decision("False", refusal.reason, message)
        )
        if refusal.tampering and record is None:
            record = v1alpha1.QuarantineStatus(
                reason=refusal.reason,
                message=message,
                generation=draft.generation,
                since=times.rfc3339(draft.now),
            )
            draft.status.quarantine = record
    if record is None:
        return model
    if refusal is None:
        # The refusing pods are gone (scaled to zero), but what they found still stands: the bytes
        # in the source are not the signed ones, whatever the signature bundle says on its own.
        draft.set(
            v1alpha1.CONDITION_VERIFIED,
            conditions.Decision("False", str(record.reason), str(record.message)),
        )
    return _quarantined(model)


def _report_admitted(draft: _Draft, admitted: list[pods.Admitted]) -> None:
    """Verified stays True, with reason AuditViolations and what the pods' agents admitted
    (pickle-based files under a TrustPolicy in Audit mode): recorded and reported, as Audit
    promises, not refused."""
    verified = draft.condition(v1alpha1.CONDITION_VERIFIED)
    found = sorted({line for admission in admitted for line in admission.lines})
    draft.set(
        v1alpha1.CONDITION_VERIFIED,
        conditions.Decision(
            "True",
            v1alpha1.REASON_AUDIT_VIOLATIONS,
            f"{verified.message if verified else ''}; admitted under Audit by the agent in pod "
            f"{admitted[0].pod}: {'; '.join(found)}",
        ),
    )


def _replica_sets_of(draft: _Draft) -> set[str]:
    """The uids of the ReplicaSets that the model's own Deployment controls."""
    live = draft.observed.deployment()
    if live is None:
        return set()
    return pods.controlled_by(draft.observed.replica_sets, deployment_uid=live["metadata"]["uid"])


# --- holds and quarantines of what serves --------------------------------------------------------


def _stop_short(
    draft: _Draft, model: v1alpha1.ModelDeployment, *, reason: str, why: str
) -> Outcome:
    """The spec's version may not roll out: held, and what serves keeps serving; unless the
    current policy no longer accepts what serves, and then it is quarantined (while the new
    version is held)."""
    revoked = draft.serving_refusal
    if revoked is not None:
        # Ready says both: why what serves stopped, and why the spec's version is held.
        draft.held = f"version {model.spec.model.version} is {why}"
        return _quarantine_revoked(draft, model, revoked=revoked)
    _hold(draft, model, reason=reason, why=why)
    return draft.outcome(Action.HOLD)


def _hold(draft: _Draft, model: v1alpha1.ModelDeployment, *, reason: str, why: str) -> None:
    """Ready=False for a version that may not roll out; nothing is applied, what serves serves."""
    held = f"version {model.spec.model.version} is {why}"
    record = draft.status.quarantine
    if record is not None and record.generation == draft.generation:
        # Still quarantined (nothing is applied while held): that is what Ready must go on saying.
        draft.set(
            v1alpha1.CONDITION_READY,
            conditions.Decision(
                "False",
                v1alpha1.REASON_QUARANTINED,
                f"quarantined automatically: {record.reason}: {record.message}; and {held}",
            ),
        )
        return
    active = draft.status.active_version
    draft.set(
        v1alpha1.CONDITION_READY,
        conditions.Decision(
            "False",
            reason,
            held + (f"; {active} keeps serving" if active else "; nothing was rolled out"),
        ),
    )


def _quarantine_revoked(
    draft: _Draft, model: v1alpha1.ModelDeployment, *, revoked: conditions.Decision
) -> Outcome:
    """Quarantines what serves, which the bound policy no longer accepts (serving.judge says
    why): whether the spec names that version or a new one that is held, it stops serving."""
    live = draft.observed.deployment()
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    _record_serving_quarantine(draft, revoked)
    if artifact is None:
        # Nothing of the operator's serves (what was judged is gone): nothing to stop.
        draft.model = _quarantined(model)
        return draft.outcome(Action.QUARANTINE)
    return _with_children(draft, Action.QUARANTINE, _quarantined(model), artifact=artifact)


def _record_serving_quarantine(draft: _Draft, refusal: conditions.Decision) -> None:
    if draft.quarantine_record() is None:
        draft.status.quarantine = v1alpha1.QuarantineStatus(
            reason=refusal.reason,
            message=refusal.message,
            generation=draft.generation,
            since=times.rfc3339(draft.now),
        )


def _quarantine_asked(body: Manifest) -> bool:
    """spec.quarantine: true, read from the object as written (its spec may not parse)."""
    spec = body.get("spec")
    return isinstance(spec, dict) and spec.get("quarantine") is True


def _quarantine_live(
    draft: _Draft, *, refusal: conditions.Decision | None, invalid: conditions.Decision
) -> Outcome:
    """Quarantines what the model's own live children serve when its spec does not parse (so
    nothing can be built from it): its Deployment scaled to zero, the rules of its allow
    NetworkPolicies emptied, the rest kept as it is."""
    seen = draft.observed
    if refusal is not None:
        _record_serving_quarantine(draft, refusal)
    record = draft.quarantine_record()
    child_names = names.child_names(seen.body["metadata"]["name"])
    wanted: list[Manifest] = []
    for name in (child_names.allow_ingress, child_names.allow_egress, child_names.allow_source):
        own = seen.child("NetworkPolicy", name)
        if own is not None:
            spec = dict(own.get("spec") or {})
            for rules in ("ingress", "egress"):
                if rules in spec:
                    spec[rules] = []
            wanted.append(
                _as_desired(
                    own, api_version="networking.k8s.io/v1", kind="NetworkPolicy", spec=spec
                )
            )
    live = seen.deployment()
    if live is not None:
        wanted.append(
            _as_desired(
                live,
                api_version="apps/v1",
                kind="Deployment",
                spec={**(live.get("spec") or {}), "replicas": 0},
            )
        )
    draft.children = tuple(intent.with_intent(manifest) for manifest in wanted)
    why = (
        f"quarantined automatically: {record.reason}: {record.message}"
        if record is not None
        else "quarantined through spec.quarantine"
    )
    decision = conditions.Decision(
        "False",
        v1alpha1.REASON_QUARANTINED,
        f"{why}; "
        + (
            "what serves is scaled to zero with its network cut"
            if live is not None
            else "nothing was rolled out"
        )
        + f", though the spec does not parse ({invalid.message})",
    )
    draft.set(v1alpha1.CONDITION_READY, decision)
    version = ((live or {}).get("metadata", {}).get("labels") or {}).get(labels.VERSION, "")
    change = reports.quarantine_change(
        seen.status,
        ready=decision,
        automatic=draft.status.quarantine,
        generation=draft.generation,
        version=str(version),
    )
    if change is not None:
        draft.notes.append(change)
    return draft.outcome(Action.QUARANTINE)


def _as_desired(live: Manifest, *, api_version: str, kind: str, spec: Manifest) -> Manifest:
    """A live child of the operator's as a desired object with `spec`: what the API server and
    others keep in it (status, managedFields, the recorded intent) left out."""
    metadata = live.get("metadata") or {}
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key != intent.INTENT_ANNOTATION
    }
    wanted: Manifest = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "labels", "ownerReferences")
            if key in metadata
        },
        "spec": spec,
    }
    wanted["metadata"]["annotations"] = annotations
    return wanted


def _quarantined(model: v1alpha1.ModelDeployment) -> v1alpha1.ModelDeployment:
    return model.model_copy(update={"spec": model.spec.model_copy(update={"quarantine": True})})


# --- children and Ready --------------------------------------------------------------------------


def _with_children(
    draft: _Draft,
    action: Action,
    model: v1alpha1.ModelDeployment,
    *,
    artifact: deployment_builder.VerifiedArtifact,
    recheck_at: datetime.datetime | None = None,
) -> Outcome:
    """The outcome that writes `model`'s children pinning `artifact`, with Ready as the live
    Deployment says it now (`conclude` says it again from the one the writes leave)."""
    draft.model, draft.artifact = model, artifact
    draft.children = tuple(
        intent.with_intent(manifest)
        for manifest in children.build_children(model, artifact=artifact, placement=draft.placement)
    )
    wanted = next(child for child in draft.children if child["kind"] == "Deployment")
    live = draft.observed.deployment()
    current = live is not None and intent.recorded(live) == intent.recorded(wanted)
    _ready_from(
        draft,
        model,
        deployment=live,
        pending=None
        if current
        else f"Deployment {wanted['metadata']['name']}: version {model.spec.model.version} is "
        "being applied",
    )
    return draft.outcome(action, recheck_at=recheck_at)


def _ready_from(
    draft: _Draft,
    model: v1alpha1.ModelDeployment,
    *,
    deployment: Manifest | None,
    pending: str | None = None,
) -> None:
    """Ready from the model's Deployment; `pending` says why it is not the desired one yet (it is
    about to be written)."""
    decision = readiness.deployment_readiness(
        quarantined=model.spec.quarantine,
        replicas=model.spec.serving.replicas,
        deployment=deployment,
    )
    if pending is not None and not model.spec.quarantine:
        decision = conditions.Decision("False", v1alpha1.REASON_PROGRESSING, pending)
    if (record := draft.status.quarantine) is not None:
        decision = conditions.Decision(
            "False",
            v1alpha1.REASON_QUARANTINED,
            f"quarantined automatically: {record.reason}: {record.message}"
            + (f"; and {draft.held}" if draft.held else "")
            + "; nothing was deleted. Any change of the spec (a new version, or spec.quarantine) "
            "lifts it.",
        )
    _set_ready(draft, decision, model=model)
    if decision.status == "True":
        draft.status.active_version = model.spec.model.version


def _set_ready(
    draft: _Draft, decision: conditions.Decision, *, model: v1alpha1.ModelDeployment
) -> None:
    """Ready after a rollout (or a quarantine), and the note when it quarantines the model or
    lifts its quarantine."""
    draft.set(v1alpha1.CONDITION_READY, decision)
    change = reports.quarantine_change(
        draft.observed.status,
        ready=decision,
        automatic=draft.status.quarantine,
        generation=draft.generation,
        version=model.spec.model.version,
    )
    if change is not None:
        draft.notes.append(change)


def _conflicts(seen: observations.Observed, model: v1alpha1.ModelDeployment) -> list[str]:
    """Why each child name taken by an object the operator did not make for `model` is not
    written to."""
    return [
        conflict_message(kind, name)
        for kind, name in children.child_keys(model)
        if (kind, name) in seen.children and seen.child(kind, name) is None
    ]


def conflict_message(kind: str, name: str) -> str:
    """Why a child name taken by someone else's object is not written to."""
    return (
        f"{kind} {name} already exists and is not this ModelDeployment's (the operator did not "
        "create it for this model, whatever its ownerReferences say); nothing was applied to "
        "it: delete it, or name the model differently"
    )


def _serving_digest(live: Manifest | None) -> str | None:
    """The root digest the model's own live Deployment pins: what its pods run now."""
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    return artifact.root_digest if artifact is not None else None
