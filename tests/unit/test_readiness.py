"""The Ready decision read from a model's Deployment, as named table cases."""

from __future__ import annotations

import typing

import pytest

from modelguard.reconcile import readiness


def _deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    updated: int = 2,
    available: int = 2,
    stalled: bool = False,
) -> dict[str, typing.Any]:
    status: dict[str, typing.Any] = {
        "observedGeneration": observed,
        "replicas": replicas,
        "updatedReplicas": updated,
        "availableReplicas": available,
    }
    if stalled:
        status["conditions"] = [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "m-1" has timed out progressing.',
            }
        ]
    return {"metadata": {"name": "m", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("quarantined", "replicas", "deployment", "status", "reason"),
    [
        pytest.param(False, 2, _deployment(), "True", "Available", id="all-replicas-available"),
        pytest.param(
            True, 2, _deployment(), "False", "Quarantined", id="quarantine-wins-over-availability"
        ),
        pytest.param(False, 2, None, "False", "Progressing", id="deployment-missing"),
        pytest.param(
            False,
            2,
            _deployment(observed=1),
            "False",
            "Progressing",
            id="new-generation-not-observed",
        ),
        pytest.param(
            False, 2, _deployment(updated=1), "False", "Progressing", id="rollout-half-way"
        ),
        pytest.param(
            False, 2, _deployment(available=1), "False", "Progressing", id="one-replica-unavailable"
        ),
        pytest.param(
            False,
            2,
            _deployment(replicas=3),
            "False",
            "Progressing",
            id="old-replica-still-terminating",
        ),
        pytest.param(
            False,
            2,
            _deployment(stalled=True, available=0),
            "False",
            "RolloutStalled",
            id="progress-deadline-exceeded",
        ),
        pytest.param(
            False,
            0,
            _deployment(replicas=0, updated=0, available=0),
            "True",
            "ScaledToZero",
            id="scaled-to-zero-on-purpose",
        ),
    ],
)
def test_deployment_readiness(
    quarantined: bool,
    replicas: int,
    deployment: dict[str, typing.Any] | None,
    status: str,
    reason: str,
) -> None:
    decision = readiness.deployment_readiness(
        quarantined=quarantined, replicas=replicas, deployment=deployment
    )
    assert (decision.status, decision.reason) == (status, reason)
    assert decision.message


def test_stalled_rollout_message_carries_the_deployment_controller_words() -> None:
    decision = readiness.deployment_readiness(
        quarantined=False, replicas=2, deployment=_deployment(stalled=True, available=0)
    )
    assert "has timed out progressing" in decision.message


def test_quarantine_message_says_how_to_lift_it() -> None:
    decision = readiness.deployment_readiness(quarantined=True, replicas=2, deployment=None)
    assert "spec.quarantine" in decision.message
