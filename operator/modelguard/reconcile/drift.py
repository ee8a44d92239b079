"""Drift: has anyone but the operator changed a child the operator made? (pure)

Found by content, not by who says they wrote it. The applied-intent hash says whether *our*
intent changed; what the child does now is compared with what the operator's last write left
(status.children[].content: a digest of its spec, labels and annotations as the API server
answered that write). Any difference is drift, whoever made it: managedFields name whatever
manager a writer chose (`--field-manager=modelguard`, or kube-controller-manager, which an
editor's HorizontalPodAutoscaler writes a scale as). The desired object is the whole truth of a
child: fields others add (an init container, a sidecar, a command, env, a volume, a scale) are
removed, and so are labels and annotations the operator did not set, since some change what the
child does (a workload identity annotation on a ServiceAccount, kube-proxy's
service-proxy-name label on a Service); only the few that Kubernetes' own controllers keep on
such objects stay (SYSTEM_METADATA).
"""

from __future__ import annotations

import hashlib
import json
import typing

from modelguard.builders import intent

Manifest = dict[str, typing.Any]

# Labels and annotations Kubernetes' own controllers keep on the children: carried over, never
# counted as drift (the deployment controller numbers a Deployment's revisions).
SYSTEM_METADATA: typing.Final = frozenset({"deployment.kubernetes.io/revision"})
# Fields of a Service the API server allocates once and keeps; a replacement carries them over.
_ALLOCATED_SERVICE_FIELDS: typing.Final = (
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
)
# What a ServiceAccount does is in top-level fields (it has no spec).
_ACCOUNT_FIELDS: typing.Final = ("automountServiceAccountToken", "imagePullSecrets", "secrets")


def writers(live: Manifest, *, own: str) -> list[str]:
    """Managers other than `own` named in managedFields, for the record of a revert: what they
    say, not what decides it (anyone may write under any name, ours included)."""
    return sorted(
        {
            str(entry.get("manager"))
            for entry in live["metadata"].get("managedFields") or []
            if entry.get("subresource") != "status" and entry.get("manager") != own
        }
    ) or [f"a writer under the operator's own field manager name ({own})"]


def content(obj: Manifest) -> str:
    """sha256 of what a child does: its spec (a ServiceAccount's token and pull-secret fields),
    its labels and annotations but SYSTEM_METADATA and the recorded intent, its
    ownerReferences."""
    metadata = obj.get("metadata") or {}

    def own(values: typing.Mapping[str, str] | None) -> dict[str, str]:
        return {
            key: value
            for key, value in (values or {}).items()
            if key not in SYSTEM_METADATA and key != intent.INTENT_ANNOTATION
        }

    essence = {
        "spec": obj.get("spec"),
        **{field: obj.get(field) for field in _ACCOUNT_FIELDS},
        "labels": own(metadata.get("labels")),
        "annotations": own(metadata.get("annotations")),
        # The intent itself: a child whose recorded intent was changed is not ours as written.
        "intent": intent.recorded(obj),
        "ownerReferences": metadata.get("ownerReferences"),
    }
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def replacement(intended: Manifest, live: Manifest) -> Manifest:
    """What replaces `live` so that it is exactly `intended`: the intended object, with the live
    object's resourceVersion (a concurrent write fails the replacement instead of being lost),
    the SYSTEM_METADATA Kubernetes keeps on it (no other label or annotation of anyone else's),
    its finalizers, and for a Service the addresses the API server allocated."""
    metadata = live["metadata"]
    wanted = intended["metadata"]

    def kept(values: typing.Mapping[str, str] | None) -> dict[str, str]:
        return {key: value for key, value in (values or {}).items() if key in SYSTEM_METADATA}

    result: Manifest = {
        **intended,
        "metadata": {
            **wanted,
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": {**kept(metadata.get("labels")), **(wanted.get("labels") or {})},
            "annotations": {
                **kept(metadata.get("annotations")),
                **(wanted.get("annotations") or {}),
            },
            **({"finalizers": metadata["finalizers"]} if metadata.get("finalizers") else {}),
        },
    }
    if intended.get("kind") == "Service":
        spec = dict(intended.get("spec") or {})
        for field in _ALLOCATED_SERVICE_FIELDS:
            if field not in spec and field in (live.get("spec") or {}):
                spec[field] = live["spec"][field]
        result["spec"] = spec
    return result


def differs(live: Manifest, dry_run: Manifest) -> bool:
    """Whether replacing the live object (as a dry run answered) would change what it does."""
    return content(live) != content(dry_run)
