"""What the model's pods report: a refusal by the fetch-verify agent (pure).

The agent exits non-zero with one `REASON: message` line, which the kubelet keeps as the init
container's termination message. Reasons that mean the bytes are not the signed ones quarantine
the model; reasons that a retry or a configuration fix can cure (an unreachable or forbidden
source) only surface. A report counts only from a pod that a ReplicaSet of the model's own
Deployment controls: anyone who may create pods in the namespace could otherwise make one with
the model's label and a failing container of the agent's name, quarantine the model and put a
false tampering record in the audit log.
"""

from __future__ import annotations

import dataclasses
import typing

from modelguard.builders import deployment

Manifest = dict[str, typing.Any]

# The artifact differs from what was signed and verified: never retried into service.
TAMPERING: typing.Final = frozenset(
    {
        "DigestMismatch",
        "MissingFile",
        "UnexpectedFile",
        "UnsafePath",
        "UnsafeFormat",
        "RootDigestMismatch",
        "SignatureChanged",
        "MalformedBundle",
        "MalformedStatement",
        "WrongPayloadType",
    }
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    pod: str
    reason: str
    message: str
    controller: str | None = None
    """uid of the ReplicaSet that controls the pod, by the pod's own ownerReferences."""

    @property
    def tampering(self) -> bool:
        return self.reason in TAMPERING


def agent_refusals(pods: typing.Iterable[Manifest], *, root_digest: str) -> list[Refusal]:
    """The agent's refusal in each pod of the verified `root_digest` (pods of an older version say
    nothing about this one), whoever made the pod: see `controlled_by`."""
    found: list[Refusal] = []
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            # On its way out (a quarantine scaled it away): its report is already acted upon.
            continue
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get(deployment.ROOT_DIGEST_ANNOTATION) != root_digest:
            continue
        refusal = _refusal_in(pod)
        if refusal is not None:
            found.append(refusal)
    return found


def controlled_by(replica_sets: typing.Iterable[Manifest], *, deployment_uid: str) -> set[str]:
    """The uids of the ReplicaSets that the Deployment `deployment_uid` controls."""
    return {
        replica_set["metadata"]["uid"]
        for replica_set in replica_sets
        if _controller(replica_set, kind="Deployment") == deployment_uid
    }


def _refusal_in(pod: Manifest) -> Refusal | None:
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != deployment.AGENT_CONTAINER:
            continue
        for state in (status.get("state"), status.get("lastState")):
            terminated = (state or {}).get("terminated") or {}
            if terminated.get("exitCode", 0) != 0:
                reason, _, message = str(terminated.get("message") or "").partition(":")
                return Refusal(
                    pod=pod["metadata"]["name"],
                    reason=reason.strip() or "AgentFailed",
                    message=message.strip() or f"exit code {terminated['exitCode']}",
                    controller=_controller(pod, kind="ReplicaSet"),
                )
    return None


def _controller(obj: Manifest, *, kind: str) -> str | None:
    for owner in obj["metadata"].get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == kind:
            return str(owner.get("uid", ""))
    return None
