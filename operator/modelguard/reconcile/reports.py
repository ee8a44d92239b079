"""What a pass tells about its decisions: Events for whoever runs `kubectl describe`, and records
for the audit log, both read from one table (pure, no I/O).

A condition tells when it changes: an Event when its status or its reason changes (with that
reason; one Event per reason in a pass, since Reconciling and Stalled carry the reason of the
condition that causes them), an audit record when it is decided anew (its status, reason, message
or generation changed), so that the log grows with decisions, not with reconciles. What no
condition shows (children applied, a revert, an accepted re-publication, a quarantine and its
lifting) is a `Note` of the pass, told as its row says.
"""

from __future__ import annotations

import dataclasses
import enum
import typing

from modelguard.api import backupstore, v1alpha1
from modelguard.audit import records
from modelguard.reconcile import conditions
from modelguard.trust import reasons

EventType = typing.Literal["Normal", "Warning"]


@dataclasses.dataclass(frozen=True)
class Row:
    """How one kind of decision is told."""

    action: str
    """The Event's action: what the operator did."""
    event: EventType | None
    """The Event's type; None: no Event of its own (a condition's Event says it)."""
    audit: records.Decision | None
    """The audit record's decision; None: not a decision of its own (its cause is recorded)."""


class Happening(enum.StrEnum):
    """What a pass can do or find that no condition shows; the value is the Event's reason."""

    APPLIED = v1alpha1.REASON_APPLIED
    DRIFT_REVERTED = v1alpha1.REASON_DRIFT_REVERTED
    REPUBLISHED = v1alpha1.REASON_REPUBLISHED
    QUARANTINED = records.Decision.QUARANTINED.value
    QUARANTINE_LIFTED = records.Decision.QUARANTINE_LIFTED.value
    BACKED_UP = v1alpha1.REASON_BACKED_UP
    RESTORE_DRILL_PASSED = v1alpha1.REASON_RESTORE_DRILL_PASSED
    RESTORE_DRILL_FAILED = v1alpha1.REASON_RESTORE_DRILL_FAILED


# The one table. Conditions by (type, status, reason), a reason of None standing for any other;
# Ready=False records nothing of its own (the hold it reports is recorded by the condition that
# caused it, a quarantine by its note), nor does Isolated=True (access within the policy).
CONDITIONS: typing.Final[typing.Mapping[tuple[str, str, str | None], Row]] = {
    (v1alpha1.CONDITION_VERIFIED, "True", None): Row("Verify", "Normal", records.Decision.VERIFIED),
    (v1alpha1.CONDITION_VERIFIED, "True", v1alpha1.REASON_AUDIT_VIOLATIONS): Row(
        "Verify", "Warning", records.Decision.VERIFIED
    ),
    (v1alpha1.CONDITION_VERIFIED, "False", None): Row(
        "Verify", "Warning", records.Decision.VERIFICATION_REFUSED
    ),
    (v1alpha1.CONDITION_APPROVED, "True", None): Row(
        "Approve", "Normal", records.Decision.APPROVED
    ),
    (v1alpha1.CONDITION_APPROVED, "False", None): Row(
        "Approve", "Warning", records.Decision.APPROVAL_HELD
    ),
    (v1alpha1.CONDITION_ISOLATED, "True", None): Row("Isolate", "Normal", None),
    (v1alpha1.CONDITION_ISOLATED, "False", None): Row(
        "Isolate", "Warning", records.Decision.BROAD_ACCESS_REFUSED
    ),
    (v1alpha1.CONDITION_ISOLATED, "False", reasons.Reason.PAYLOAD_AUDIT_NOT_ALLOWED.value): Row(
        "Isolate", "Warning", records.Decision.PAYLOAD_AUDIT_REFUSED
    ),
    (v1alpha1.CONDITION_ISOLATED, "False", v1alpha1.REASON_OPENED_BY_NETWORK_POLICY): Row(
        "Isolate", "Warning", records.Decision.OPENED_BY_NETWORK_POLICY
    ),
    (v1alpha1.CONDITION_READY, "True", None): Row("Rollout", "Normal", records.Decision.ROLLED_OUT),
    (v1alpha1.CONDITION_READY, "False", None): Row("Rollout", "Warning", None),
    # Summaries of the others (for kstatus): their causes are recorded, and told by the same
    # reason, so these rarely tell anything of their own.
    (v1alpha1.CONDITION_RECONCILING, "True", None): Row("Reconcile", "Normal", None),
    (v1alpha1.CONDITION_RECONCILING, "False", None): Row("Reconcile", "Normal", None),
    (v1alpha1.CONDITION_STALLED, "True", None): Row("Reconcile", "Warning", None),
    (v1alpha1.CONDITION_STALLED, "False", None): Row("Reconcile", "Normal", None),
    # Every backup taken is a BackedUp note (an Event and a record each time) and a failed drill
    # a RestoreDrillFailed one; the condition's own changes are told like any other condition's
    # (an Event each, with its reason), and recorded only for a failed backup, which no note
    # records.
    (v1alpha1.CONDITION_BACKED_UP, "True", None): Row("Backup", "Normal", None),
    (v1alpha1.CONDITION_BACKED_UP, "False", None): Row(
        "Backup", "Warning", records.Decision.BACKUP_FAILED
    ),
    (v1alpha1.CONDITION_BACKED_UP, "False", v1alpha1.REASON_NOTHING_TO_BACK_UP): Row(
        "Backup", "Normal", None
    ),
    (v1alpha1.CONDITION_BACKED_UP, "False", v1alpha1.REASON_DRILL_FAILED): Row(
        "RestoreDrill", "Warning", None
    ),
}
HAPPENINGS: typing.Final[typing.Mapping[Happening, Row]] = {
    Happening.APPLIED: Row("Apply", "Normal", None),
    Happening.DRIFT_REVERTED: Row("Revert", "Warning", records.Decision.DRIFT_REVERTED),
    Happening.REPUBLISHED: Row("Verify", "Warning", records.Decision.REPUBLISHED),
    # Ready's flip to Quarantined (or from it) is the Event; the record says why and by whom.
    Happening.QUARANTINED: Row("Quarantine", None, records.Decision.QUARANTINED),
    Happening.QUARANTINE_LIFTED: Row("Quarantine", None, records.Decision.QUARANTINE_LIFTED),
    Happening.BACKED_UP: Row("Backup", "Normal", records.Decision.BACKED_UP),
    Happening.RESTORE_DRILL_PASSED: Row(
        "RestoreDrill", "Normal", records.Decision.RESTORE_DRILL_PASSED
    ),
    Happening.RESTORE_DRILL_FAILED: Row(
        "RestoreDrill", "Warning", records.Decision.RESTORE_DRILL_FAILED
    ),
}
# The BackupStore's Ready condition, by (status, reason), a reason of None standing for any
# other: an Event when it flips, a record when it is decided anew. A store accepted without
# immutability is told as a Warning, every time it is decided.
STORE_CONDITIONS: typing.Final[typing.Mapping[tuple[str, str | None], Row]] = {
    ("True", None): Row("Check", "Normal", records.Decision.BACKUP_STORE_READY),
    ("True", backupstore.REASON_DOWNGRADE_ACCEPTED): Row(
        "Check", "Warning", records.Decision.BACKUP_STORE_READY
    ),
    ("True", backupstore.REASON_MUTABLE_VOLUME): Row(
        "Check", "Warning", records.Decision.BACKUP_STORE_READY
    ),
    ("False", None): Row("Check", "Warning", records.Decision.BACKUP_STORE_REFUSED),
}
# The BackupStore's AuditCheckpoints condition, by status: an Event when its status or reason
# changes, a Warning when checkpoints the store asked for are not kept there, Normal when they are
# (again); Unknown (none written yet) tells nothing. Not a decision of the operator: no record.
CHECKPOINT_CONDITIONS: typing.Final[typing.Mapping[str, Row]] = {
    "True": Row("StoreCheckpoint", "Normal", None),
    "False": Row("StoreCheckpoint", "Warning", None),
    "Unknown": Row("StoreCheckpoint", None, None),
}
# Done by the writes themselves: no later pass would see them again, so they are told even when
# the status write fails.
WRITTEN: typing.Final = frozenset({Happening.APPLIED, Happening.DRIFT_REVERTED})


def row(condition: v1alpha1.Condition) -> Row:
    """The row that tells a change of `condition`."""
    found = CONDITIONS.get((condition.type, condition.status.value, condition.reason))
    return found or CONDITIONS.get(
        (condition.type, condition.status.value, None), Row("Reconcile", "Warning", None)
    )


@dataclasses.dataclass(frozen=True)
class Note:
    """Something a pass did or found that no condition shows."""

    happening: Happening
    reason: str
    """The audit record's reason (the Event's reason is the happening)."""
    message: str
    details: dict[str, typing.Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Event:
    """One Event to post about the model."""

    type: EventType
    reason: str
    action: str
    note: str
    written: bool = False
    """Told even when the status write fails (see WRITTEN)."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One audit record to write, before the chain gives it its place."""

    decision: records.Decision
    reason: str
    message: str
    details: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    written: bool = False
    """Recorded even when the status write fails (see WRITTEN)."""


def events(
    previous: v1alpha1.ModelDeploymentStatus,
    current: v1alpha1.ModelDeploymentStatus,
    notes: typing.Sequence[Note],
) -> list[Event]:
    """The pass's notes, then every condition whose status or reason changed (or that reports,
    anew, what Audit mode admitted), in the order of the conditions; a reason already told in
    this pass is not told again (Stalled=True/UntrustedSigner says what Verified=False/
    UntrustedSigner has just said)."""
    told = [
        Event(
            type=event,
            reason=str(note.happening),
            action=HAPPENINGS[note.happening].action,
            note=note.message,
            written=note.happening in WRITTEN,
        )
        for note in notes
        if (event := HAPPENINGS[note.happening].event) is not None
    ]
    before = {c.type: c for c in previous.conditions}
    for condition in current.conditions:
        prior = before.get(condition.type)
        changed = prior is None or (prior.status, prior.reason) != (
            condition.status,
            condition.reason,
        )
        newly_admitted = condition.reason == v1alpha1.REASON_AUDIT_VIOLATIONS and (
            prior is None or prior.message != condition.message
        )
        told_by = row(condition)
        if any(event.reason == condition.reason for event in told):
            continue
        if (changed or newly_admitted) and told_by.event is not None:
            told.append(
                Event(
                    type=told_by.event,
                    reason=condition.reason,
                    action=told_by.action,
                    note=condition.message,
                )
            )
    return told


def audit_records(
    previous: v1alpha1.ModelDeploymentStatus,
    current: v1alpha1.ModelDeploymentStatus,
    notes: typing.Sequence[Note],
    *,
    version: str | None,
) -> list[Record]:
    """Records of the conditions decided anew, in the order of the conditions, then of the
    pass's notes."""
    before = {c.type: c for c in previous.conditions}
    found = []
    for condition in current.conditions:
        decision = row(condition).audit
        if decision is None or _decided(before.get(condition.type)) == _decided(condition):
            continue
        found.append(
            Record(
                decision=decision,
                reason=condition.reason,
                message=condition.message,
                details=_details(decision, current, version=version),
            )
        )
    for note in notes:
        decision = HAPPENINGS[note.happening].audit
        if decision is not None:
            found.append(
                Record(
                    decision=decision,
                    reason=note.reason,
                    message=note.message,
                    details=note.details,
                    written=note.happening in WRITTEN,
                )
            )
    return found


def quarantine_change(
    previous: v1alpha1.ModelDeploymentStatus,
    *,
    ready: conditions.Decision,
    automatic: v1alpha1.QuarantineStatus | None,
    generation: int,
    version: str,
) -> Note | None:
    """The note of a rollout that quarantines the model or lifts its quarantine, if it does.

    `ready` is the Ready decision of the rollout; `automatic` is status.quarantine, set when the
    operator quarantined on its own.
    """
    prior = conditions.find(previous.conditions, v1alpha1.CONDITION_READY)
    was = prior is not None and prior.reason == v1alpha1.REASON_QUARANTINED
    now = ready.reason == v1alpha1.REASON_QUARANTINED
    if now and not was:
        return Note(
            Happening.QUARANTINED,
            reason=str(automatic.reason)
            if automatic is not None
            else v1alpha1.REASON_SPEC_QUARANTINE,
            message=ready.message,
            details={
                "version": version,
                "trigger": "automatic" if automatic is not None else "spec.quarantine",
            },
        )
    if was and not now:
        return Note(
            Happening.QUARANTINE_LIFTED,
            reason=v1alpha1.REASON_SPEC_CHANGED,
            message=f"generation {generation} of the spec lifts the quarantine; version "
            f"{version} is rolled out again",
            details={"version": version},
        )
    return None


def republished(
    *,
    model: str,
    version: str,
    replaced: str,
    root_digest: str,
    accepted_by: str,
    approvals_needed: bool,
) -> Note:
    """A model version whose signature now signs other files, accepted."""
    return Note(
        Happening.REPUBLISHED,
        reason=v1alpha1.REASON_REPUBLISHED,
        message=f"{model} {version} was re-published: root {replaced} replaced by "
        f"{root_digest}, accepted by {accepted_by}"
        + ("; it rolls out once approved for the new root digest" if approvals_needed else ""),
        details={
            "version": version,
            "previousRootDigest": replaced,
            "rootDigest": root_digest,
            "acceptedBy": accepted_by,
        },
    )


def drift_reverted(*, child: str, managers: typing.Sequence[str]) -> Note:
    """A child someone else changed, made the operator's intent again."""
    return Note(
        Happening.DRIFT_REVERTED,
        reason=v1alpha1.REASON_CHANGED_BY_ANOTHER_MANAGER,
        message=f"{child}: reverted what {', '.join(managers)} changed",
        details={"child": child, "managers": list(managers)},
    )


def applied(children: typing.Sequence[str]) -> Note:
    """Children created or replaced with the operator's intent."""
    return Note(
        Happening.APPLIED, reason=v1alpha1.REASON_APPLIED, message="applied " + ", ".join(children)
    )


def _decided(condition: v1alpha1.Condition | None) -> tuple[typing.Any, ...] | None:
    if condition is None:
        return None
    return (condition.status, condition.reason, condition.message, condition.observed_generation)


def _details(
    decision: records.Decision, current: v1alpha1.ModelDeploymentStatus, *, version: str | None
) -> dict[str, typing.Any]:
    details: dict[str, typing.Any] = {"version": version} if version else {}
    verification = current.verification
    if decision in {records.Decision.VERIFIED, records.Decision.ROLLED_OUT} and verification:
        details.update(
            verification.model_dump(include={"root_digest", "signer"}, exclude_none=True)
        )
    if decision is records.Decision.APPROVED and current.approval is not None:
        details.update(current.approval.model_dump(exclude_none=True))
    return details


def store_row(condition: v1alpha1.Condition) -> Row:
    """The row that tells a change of a BackupStore's Ready condition."""
    return (
        STORE_CONDITIONS.get((condition.status.value, condition.reason))
        or STORE_CONDITIONS[
            (condition.status.value if condition.status.value == "True" else "False", None)
        ]
    )


def store_events(previous: v1alpha1.Condition | None, current: v1alpha1.Condition) -> list[Event]:
    """The Event of a BackupStore's Ready condition: when it flips, and every time a store is
    accepted anew without immutability (a downgrade is never told only once)."""
    told = store_row(current)
    if told.event is None:
        return []
    flipped = previous is None or previous.status != current.status
    weaker = told.event == "Warning" and current.status.value == "True"
    if not (flipped or (weaker and _decided(previous) != _decided(current))):
        return []
    return [Event(type=told.event, reason=current.reason, action=told.action, note=current.message)]


def store_records(previous: v1alpha1.Condition | None, current: v1alpha1.Condition) -> list[Record]:
    """The audit record of a BackupStore's Ready condition decided anew."""
    decision = store_row(current).audit
    if decision is None or _decided(previous) == _decided(current):
        return []
    return [Record(decision=decision, reason=current.reason, message=current.message)]


def checkpoint_events(
    previous: v1alpha1.Condition | None, current: v1alpha1.Condition | None
) -> list[Event]:
    """The Event of a BackupStore's AuditCheckpoints condition, when its status or reason
    changes (None: the store does not ask for checkpoints)."""
    if current is None:
        return []
    told = CHECKPOINT_CONDITIONS[current.status.value]
    if told.event is None:
        return []
    if previous is not None and (previous.status, previous.reason) == (
        current.status,
        current.reason,
    ):
        return []
    return [Event(type=told.event, reason=current.reason, action=told.action, note=current.message)]
