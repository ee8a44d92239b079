"""The approval gate: may a verified version roll out, going by the signed ModelApprovals of its
namespace and the approvers of its TrustPolicy? (pure; observe.py reads the approvals)

An approval that expires or is deleted while its version serves does not stop the traffic: the
version keeps serving, `Approved=False` says why, and the next rollout is blocked.
"""

from __future__ import annotations

import dataclasses
import datetime

from modelguard.api import modelapproval, times, v1alpha1
from modelguard.reconcile import conditions, observations
from modelguard.trust import approval, reasons


@dataclasses.dataclass(frozen=True)
class Gate:
    decision: conditions.Decision
    """The Approved condition."""
    may_roll_out: bool
    record: v1alpha1.ApprovalStatus | None
    """status.approval, when approved."""
    recheck_at: datetime.datetime | None
    """When the earliest counted approval expires: the gate must be evaluated again then."""


def decide(
    approvals: list[modelapproval.ModelApproval],
    *,
    model: v1alpha1.ModelDeployment,
    verified: observations.Verified,
    serving_digest: str | None,
    now: datetime.datetime,
) -> Gate:
    """The gate for `model`'s verified version, from the approvals of its namespace (pure)."""
    decided = approval.evaluate_approvals(
        approvals,
        policy=verified.policy,
        namespace=model.namespace,
        model=model.spec.model.name,
        version=model.spec.model.version,
        root_digest=verified.root_digest,
        now=now,
    )
    if decided.approved:
        expires = decided.expires_at
        until = f" until {times.rfc3339(expires)}" if expires else ""
        who = ", ".join(decided.approvers) or "nobody (the policy requires no approval)"
        return Gate(
            decision=conditions.Decision(
                "True", v1alpha1.REASON_APPROVED, f"approved by {who}{until}"
            ),
            may_roll_out=True,
            record=v1alpha1.ApprovalStatus(
                approvers=list(decided.approvers),
                expires_at=times.rfc3339(expires) if expires else None,
            ),
            recheck_at=expires,
        )
    violation = decided.violation
    reason = str(violation.reason if violation else reasons.Reason.APPROVAL_MISSING)
    message = violation.message if violation else "no valid approval"
    # The same bytes already serve: never kill traffic over an approval; block the next rollout.
    serving = serving_digest == verified.root_digest
    if serving:
        message += "; the version keeps serving, and the next rollout is blocked until approved"
    return Gate(
        decision=conditions.Decision("False", reason, message),
        may_roll_out=serving,
        record=None,
        recheck_at=None,
    )
