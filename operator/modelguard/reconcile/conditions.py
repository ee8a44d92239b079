"""Status conditions as Kubernetes conventions want them: one per type, and a lastTransitionTime
that moves only when the status flips (pure functions, no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import typing

from modelguard.api import times

Condition = dict[str, typing.Any]


# The reason of a Verified=True that a TrustPolicy in Audit mode admitted despite violations.
AUDIT_VIOLATIONS: typing.Final = "AuditViolations"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one check: a condition status with a machine-readable reason and a message."""

    status: typing.Literal["True", "False", "Unknown"]
    reason: str
    message: str


def set_condition(
    conditions: typing.Sequence[Condition],
    *,
    type: str,
    decision: Decision,
    observed_generation: int,
    now: datetime.datetime,
) -> list[Condition]:
    """The conditions with `type` set to `decision`; other types are kept in their order."""
    previous = next((c for c in conditions if c.get("type") == type), None)
    transition = (
        previous["lastTransitionTime"]
        if previous is not None
        and previous.get("status") == decision.status
        and previous.get("lastTransitionTime")
        else times.rfc3339(now)
    )
    updated: Condition = {
        "type": type,
        "status": decision.status,
        "reason": decision.reason,
        "message": decision.message,
        "lastTransitionTime": transition,
        "observedGeneration": observed_generation,
    }
    result = [c if c.get("type") != type else updated for c in conditions]
    if previous is None:
        result.append(updated)
    return result


def find(conditions: typing.Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type), None)
