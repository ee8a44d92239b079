"""What the model's pods report: a refusal by the fetch-verify agent (pure).

The agent exits non-zero with one `REASON: message` line, which the kubelet keeps as the init
container's termination message. Reasons that mean the bytes are not the signed ones quarantine
the model; reasons that a retry or a configuration fix can cure (an unreachable or forbidden
source) only surface.
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

    @property
    def tampering(self) -> bool:
        return self.reason in TAMPERING


def agent_refusal(pods: typing.Iterable[Manifest], *, root_digest: str) -> Refusal | None:
    """The first refusal by the agent in a pod of the verified `root_digest` (pods of an older
    version say nothing about this one)."""
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            # On its way out (a quarantine scaled it away): its report is already acted upon.
            continue
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get(deployment.ROOT_DIGEST_ANNOTATION) != root_digest:
            continue
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
                    )
    return None
