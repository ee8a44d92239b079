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
import re
import typing

from modelguard.api import times, v1alpha1
from modelguard.builders import deployment
from modelguard.trust import reasons

Manifest = dict[str, typing.Any]

# A condition reason as the schema accepts it, and short: the agent writes CamelCase words.
_REASON: typing.Final = re.compile(v1alpha1.CONDITION_REASON_PATTERN)
_MAX_REASON: typing.Final = 64
# How the agent starts each violation it admitted under Audit (fetchverify.run).
_AUDIT_PREFIX: typing.Final = "audit "
# The artifact differs from what was signed and verified: never retried into service.
TAMPERING: typing.Final = frozenset(
    str(reason)
    for reason in (
        reasons.Reason.DIGEST_MISMATCH,
        reasons.Reason.MISSING_FILE,
        reasons.Reason.UNEXPECTED_FILE,
        reasons.Reason.UNSAFE_PATH,
        reasons.Reason.UNSAFE_FORMAT,
        reasons.Reason.ROOT_DIGEST_MISMATCH,
        reasons.Reason.SIGNATURE_CHANGED,
        reasons.Reason.MALFORMED_BUNDLE,
        reasons.Reason.MALFORMED_STATEMENT,
        reasons.Reason.WRONG_PAYLOAD_TYPE,
    )
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
    for pod, terminated in _agent_exits(pods, root_digest=root_digest):
        if terminated.get("exitCode", 0) != 0:
            text = str(terminated.get("message") or "")
            reason, _, message = text.partition(":")
            if len(reason) > _MAX_REASON or not _REASON.fullmatch(reason.strip()):
                # Not the agent's `REASON: message` line (a crash, say): all of it is the message.
                reason, message = v1alpha1.REASON_AGENT_FAILED, text
            found.append(
                Refusal(
                    pod=pod["metadata"]["name"],
                    reason=reason.strip(),
                    message=message.strip() or f"exit code {terminated['exitCode']}",
                    controller=controller_uid(pod, kind="ReplicaSet"),
                )
            )
    return found


@dataclasses.dataclass(frozen=True)
class Admitted:
    """What the agent of one pod admitted under a TrustPolicy in Audit mode."""

    pod: str
    lines: tuple[str, ...]
    """Its `REASON: message` lines, one per violation."""
    controller: str | None = None


def agent_admissions(pods: typing.Iterable[Manifest], *, root_digest: str) -> list[Admitted]:
    """Per pod of the verified `root_digest`, the violations its agent admitted under Audit: the
    `audit ` lines of a successful agent's termination message."""
    found: list[Admitted] = []
    for pod, terminated in _agent_exits(pods, root_digest=root_digest):
        if terminated.get("exitCode", 0) != 0:
            continue
        message = str(terminated.get("message") or "")
        lines = tuple(
            line.removeprefix(_AUDIT_PREFIX).strip()
            for line in message.splitlines()
            if line.startswith(_AUDIT_PREFIX)
        )
        if lines:
            found.append(
                Admitted(
                    pod=pod["metadata"]["name"],
                    lines=lines,
                    controller=controller_uid(pod, kind="ReplicaSet"),
                )
            )
    return found


@dataclasses.dataclass(frozen=True)
class AgentRun:
    """One ended run of a pod's fetch-verify agent, as its metrics count it."""

    key: tuple[str, ...]
    """The pod's uid, the container's id and when it finished: the same run read again by a
    later pass has the same key."""
    verified: bool
    reason: str
    """The refusal's reason; "" when verified."""
    bytes: int
    """Bytes fetched and verified, from the agent's summary line; 0 when refused."""
    seconds: float | None
    """How long it ran: the agent's own figure, else the kubelet's start and finish times."""


# The agent's summary line (fetchverify.Summary.line), which it leaves as its termination message.
_SUMMARY: typing.Final = re.compile(
    r"^fetched and verified root \S+ files \d+ bytes (?P<bytes>\d+) seconds (?P<seconds>[0-9.]+)",
    re.MULTILINE,
)


def agent_runs(pods: typing.Iterable[Manifest]) -> list[AgentRun]:
    """Every ended run of the agent in `pods` (the latest and the one before, per pod), whatever
    root digest it verified; a run that the kubelet reports without a reason of the agent's is
    AgentFailed."""
    found: list[AgentRun] = []
    for pod in pods:
        uid = str(pod["metadata"].get("uid", ""))
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if status.get("name") != deployment.AGENT_CONTAINER:
                continue
            for state in (status.get("state"), status.get("lastState")):
                terminated = (state or {}).get("terminated")
                if not terminated:
                    continue
                message = str(terminated.get("message") or "")
                verified = terminated.get("exitCode", 0) == 0
                reason = ""
                if not verified:
                    reason = message.partition(":")[0].strip()
                    if len(reason) > _MAX_REASON or not _REASON.fullmatch(reason):
                        reason = v1alpha1.REASON_AGENT_FAILED
                summary = _SUMMARY.search(message) if verified else None
                found.append(
                    AgentRun(
                        key=(
                            uid,
                            str(terminated.get("containerID", "")),
                            str(terminated.get("finishedAt", "")),
                        ),
                        verified=verified,
                        reason=reason,
                        bytes=int(summary["bytes"]) if summary else 0,
                        seconds=float(summary["seconds"]) if summary else _ran_for(terminated),
                    )
                )
    return found


def _ran_for(terminated: Manifest) -> float | None:
    try:
        started = times.parse(str(terminated["startedAt"]))
        finished = times.parse(str(terminated["finishedAt"]))
    except (KeyError, ValueError):
        return None
    return max(0.0, (finished - started).total_seconds())


def any_agent_report(pods: typing.Iterable[Manifest]) -> bool:
    """Whether any pod has something from the agent to count (a refusal, or what it admitted
    under Audit), of any root digest: only then does a reconcile need to know which ReplicaSets
    are the model's. A clean exit says nothing."""
    for pod in pods:
        root = (pod["metadata"].get("annotations") or {}).get(deployment.ROOT_DIGEST_ANNOTATION)
        for _, terminated in _agent_exits([pod], root_digest=str(root)):
            message = str(terminated.get("message") or "")
            if terminated.get("exitCode", 0) != 0 or _AUDIT_PREFIX in message:
                return True
    return False


def controlled_by(replica_sets: typing.Iterable[Manifest], *, deployment_uid: str) -> set[str]:
    """The uids of the ReplicaSets that the Deployment `deployment_uid` controls."""
    return {
        replica_set["metadata"]["uid"]
        for replica_set in replica_sets
        if controller_uid(replica_set, kind="Deployment") == deployment_uid
    }


def _agent_exits(
    pods: typing.Iterable[Manifest], *, root_digest: str
) -> typing.Iterator[tuple[Manifest, Manifest]]:
    """(pod, the agent's `terminated` state) for each run of the agent that has ended in a pod of
    `root_digest`: the latest, then the one before (an earlier refusal still counts)."""
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
                terminated = (state or {}).get("terminated")
                if terminated:
                    yield pod, terminated


def controller_uid(obj: Manifest, *, kind: str | None = None) -> str | None:
    """The uid of the object's controller by its ownerReferences (of `kind`, when given)."""
    for owner in obj["metadata"].get("ownerReferences") or []:
        if owner.get("controller") and kind in (None, owner.get("kind")):
            return str(owner.get("uid", ""))
    return None
