"""Status conditions as Kubernetes conventions want them: one per type, a lastTransitionTime that
moves only when the status flips, and the generation they were decided for (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import typing

from modelguard.api import text, times, v1alpha1


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one check: a condition status with a machine-readable reason and a message."""

    status: typing.Literal["True", "False", "Unknown"]
    reason: str
    message: str


def set_condition(
    conditions: typing.Sequence[v1alpha1.Condition],
    *,
    type: str,
    decision: Decision,
    observed_generation: int,
    now: datetime.datetime,
) -> list[v1alpha1.Condition]:
    """The conditions with `type` set to `decision`; other types are kept in their order."""
    previous = find(conditions, type)
    status = v1alpha1.ConditionStatus(decision.status)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else times.rfc3339(now)
    )
    updated = v1alpha1.Condition(
        type=type,
        status=status,
        reason=decision.reason,
        message=_fit(decision.message),
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    result = [c if c.type != type else updated for c in conditions]
    if previous is None:
        result.append(updated)
    return result


def find(conditions: typing.Sequence[v1alpha1.Condition], type: str) -> v1alpha1.Condition | None:
    return next((c for c in conditions if c.type == type), None)


def _fit(message: str) -> str:
    """`message` escaped (it quotes outside text, which `kubectl describe` prints as it is) and
    cut to what the schema stores: joined refusals of many children can be longer."""
    message = text.escape(message)
    limit = v1alpha1.MAX_CONDITION_MESSAGE
    return message if len(message) <= limit else message[: limit - 3] + "..."
