"""Whether a model is serving, read from its Deployment (a pure decision, no I/O)."""

from __future__ import annotations

import typing

from modelguard.api import v1alpha1
from modelguard.reconcile import conditions

Manifest = dict[str, typing.Any]


def deployment_readiness(
    *, quarantined: bool, replicas: int, deployment: Manifest | None
) -> conditions.Decision:
    """The Ready decision for a model whose Deployment should run `replicas` pods."""
    if quarantined:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_QUARANTINED,
            "spec.quarantine is true: the model is scaled to zero and its network is cut; "
            "nothing was deleted. Set spec.quarantine to false to lift it.",
        )
    if deployment is None:
        return conditions.Decision(
            "False", v1alpha1.REASON_PROGRESSING, "the Deployment does not exist yet"
        )
    name = deployment["metadata"]["name"]
    status = deployment.get("status") or {}
    generation = deployment["metadata"].get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_PROGRESSING,
            f"Deployment {name}: the new revision is not observed yet",
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return conditions.Decision(
                "False",
                v1alpha1.REASON_ROLLOUT_STALLED,
                f"Deployment {name}: {condition.get('message', 'progress deadline exceeded')}",
            )
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < replicas:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_PROGRESSING,
            f"Deployment {name}: {updated} of {replicas} replicas updated",
        )
    if available < replicas or total > replicas:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_PROGRESSING,
            f"Deployment {name}: {available} of {replicas} replicas available"
            + (f", {total - replicas} old replicas terminating" if total > replicas else ""),
        )
    if replicas == 0:
        return conditions.Decision(
            "True", v1alpha1.REASON_SCALED_TO_ZERO, f"Deployment {name}: scaled to zero"
        )
    return conditions.Decision(
        "True",
        v1alpha1.REASON_AVAILABLE,
        f"Deployment {name}: {available} of {replicas} replicas available",
    )
