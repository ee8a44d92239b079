"""Which audit records a reconcile makes, read from the status before and after it (pure).

A record is made when a decision is made anew: a followed condition changes its status, reason
or message, or is decided for a new generation of the spec. A reconcile that makes the same
decision again (a resync, an event of a child) records nothing, so the log grows with decisions,
not with reconciles.
"""

from __future__ import annotations

import dataclasses
import typing

from modelguard.api import v1alpha1
from modelguard.audit import records
from modelguard.reconcile import conditions

Manifest = dict[str, typing.Any]

# The Ready reason of a quarantined model, manual (readiness) or automatic (the reconcile).
QUARANTINED_REASON: typing.Final = v1alpha1.REASON_QUARANTINED


@dataclasses.dataclass(frozen=True)
class Entry:
    """One record to write, before the chain gives it its place."""

    decision: records.Decision
    reason: str
    message: str
    details: dict[str, typing.Any] = dataclasses.field(default_factory=dict)


# Conditions whose outcome is a decision of its own. Ready=False is left out: the hold it
# reports is recorded by the condition that caused it, and a quarantine by quarantine_change.
_FOLLOWED: typing.Final = {
    (v1alpha1.CONDITION_VERIFIED, "True"): records.Decision.VERIFIED,
    (v1alpha1.CONDITION_VERIFIED, "False"): records.Decision.VERIFICATION_REFUSED,
    (v1alpha1.CONDITION_APPROVED, "True"): records.Decision.APPROVED,
    (v1alpha1.CONDITION_APPROVED, "False"): records.Decision.APPROVAL_HELD,
    (v1alpha1.CONDITION_ISOLATED, "False"): records.Decision.BROAD_ACCESS_REFUSED,
    (v1alpha1.CONDITION_READY, "True"): records.Decision.ROLLED_OUT,
}


def from_conditions(previous: Manifest, current: Manifest, *, version: str | None) -> list[Entry]:
    """Records for the followed conditions decided anew, in the order of the conditions."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    entries = []
    for condition in current.get("conditions") or []:
        decision = _FOLLOWED.get((condition.get("type"), condition.get("status")))
        if decision is None or _decided(before.get(condition.get("type"))) == _decided(condition):
            continue
        entries.append(
            Entry(
                decision=decision,
                reason=str(condition.get("reason", "")),
                message=str(condition.get("message", "")),
                details=_details(decision, current, version=version),
            )
        )
    return entries


def quarantine_change(
    previous: Manifest,
    *,
    ready: conditions.Decision,
    automatic: typing.Mapping[str, typing.Any] | None,
    generation: int,
    version: str,
) -> Entry | None:
    """The record for a rollout that quarantines the model or lifts its quarantine, if it does.

    `ready` is the Ready decision of the rollout; `automatic` is status.quarantine, set when
    the operator quarantined on its own.
    """
    prior = conditions.find(previous.get("conditions") or [], v1alpha1.CONDITION_READY)
    was = prior is not None and prior.get("reason") == QUARANTINED_REASON
    now = ready.reason == QUARANTINED_REASON
    if now and not was:
        return Entry(
            decision=records.Decision.QUARANTINED,
            reason=str(automatic["reason"]) if automatic else "SpecQuarantine",
            message=ready.message,
            details={
                "version": version,
                "trigger": "automatic" if automatic else "spec.quarantine",
            },
        )
    if was and not now:
        return Entry(
            decision=records.Decision.QUARANTINE_LIFTED,
            reason="SpecChanged",
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
) -> Entry:
    """The record of a model version whose signature now signs other files, accepted."""
    return Entry(
        decision=records.Decision.REPUBLISHED,
        reason="Republished",
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


def drift_reverted(*, child: str, managers: typing.Sequence[str], message: str) -> Entry:
    return Entry(
        decision=records.Decision.DRIFT_REVERTED,
        reason="ChangedByAnotherManager",
        message=message,
        details={"child": child, "managers": list(managers)},
    )


def _decided(condition: conditions.Condition | None) -> tuple[typing.Any, ...] | None:
    if condition is None:
        return None
    return tuple(
        condition.get(key) for key in ("status", "reason", "message", "observedGeneration")
    )


def _details(
    decision: records.Decision, current: Manifest, *, version: str | None
) -> dict[str, typing.Any]:
    details: dict[str, typing.Any] = {"version": version} if version else {}
    verification = current.get("verification") or {}
    if decision in {records.Decision.VERIFIED, records.Decision.ROLLED_OUT}:
        details.update(
            {
                key: verification[key]
                for key in ("rootDigest", "signer")
                if verification.get(key) is not None
            }
        )
    if decision is records.Decision.APPROVED:
        details.update(current.get("approval") or {})
    return details
