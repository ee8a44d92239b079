"""Status conditions follow Kubernetes conventions: lastTransitionTime moves only on a flip."""

from __future__ import annotations

import datetime

import pytest

from modelguard.api import times, v1alpha1
from modelguard.reconcile import conditions

EARLIER = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
LATER = EARLIER + datetime.timedelta(minutes=5)
READY = conditions.Decision("True", "Available", "2 of 2 replicas available")
NOT_READY = conditions.Decision("False", "Progressing", "0 of 2 replicas available")


def _set(existing: list[v1alpha1.Condition], decision: conditions.Decision) -> v1alpha1.Condition:
    updated = conditions.set_condition(
        existing, type="Ready", decision=decision, observed_generation=3, now=LATER
    )
    found = conditions.find(updated, "Ready")
    assert found is not None
    return found


def _first(decision: conditions.Decision) -> list[v1alpha1.Condition]:
    return conditions.set_condition(
        [], type="Ready", decision=decision, observed_generation=2, now=EARLIER
    )


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [
        pytest.param(NOT_READY, READY, True, id="flip-false-to-true-moves-time"),
        pytest.param(READY, NOT_READY, True, id="flip-true-to-false-moves-time"),
        pytest.param(
            READY,
            conditions.Decision("True", "ScaledToZero", "scaled"),
            False,
            id="same-status-new-reason-keeps-time",
        ),
        pytest.param(NOT_READY, NOT_READY, False, id="unchanged-keeps-time"),
    ],
)
def test_transition_time_moves_only_on_flip(
    before: conditions.Decision, after: conditions.Decision, moved: bool
) -> None:
    condition = _set(_first(before), after)
    assert condition.last_transition_time == times.rfc3339(LATER if moved else EARLIER)
    assert (condition.status, condition.reason, condition.message) == (
        after.status,
        after.reason,
        after.message,
    )
    assert condition.observed_generation == 3


def test_other_conditions_are_kept_in_order() -> None:
    existing = [
        v1alpha1.Condition(
            type="Verified", status="True", reason="Signed", message="", last_transition_time="x"
        ),
        *_first(NOT_READY),
        v1alpha1.Condition(
            type="Isolated", status="True", reason="Applied", message="", last_transition_time="y"
        ),
    ]
    updated = conditions.set_condition(
        existing, type="Ready", decision=READY, observed_generation=3, now=LATER
    )
    assert [c.type for c in updated] == ["Verified", "Ready", "Isolated"]
    assert updated[0] is existing[0]
    assert updated[2] is existing[2]


def test_new_condition_is_appended_with_now() -> None:
    updated = _first(READY)
    assert [c.model_dump(mode="json") for c in updated] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Available",
            "message": READY.message,
            "lastTransitionTime": "2026-01-01T12:00:00Z",
            "observedGeneration": 2,
        }
    ]


def test_a_message_longer_than_the_schema_stores_is_cut() -> None:
    long = conditions.Decision("False", "ChildConflict", "x" * (v1alpha1.MAX_CONDITION_MESSAGE + 5))
    (condition,) = _first(long)
    assert len(condition.message) == v1alpha1.MAX_CONDITION_MESSAGE
    assert condition.message.endswith("...")
