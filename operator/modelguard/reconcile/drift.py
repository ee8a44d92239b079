"""Drift: has anyone but the operator changed a child the operator made? (pure)

The applied-intent hash says whether *our* intent changed; it cannot see someone else's edit (a
break-glass `kubectl edit`, a `kubectl scale` that the Ignore-mode scale webhook let through, a
write while the webhook was down). managedFields can: any manager other than ours and Kubernetes'
own controllers is a suspect, and a server-side dry run of the replacement then says whether it
would change anything. The desired object is the whole truth of a child's spec: fields others add
(an init container, a sidecar, a command, env, a volume) are removed, not only the ones we set
changed back. Only metadata others add (a label, an annotation) stays, as it changes nothing the
child does.
"""

from __future__ import annotations

import typing

Manifest = dict[str, typing.Any]

# Controllers whose writes to a child are part of its normal life, not drift.
SYSTEM_MANAGERS: typing.Final = frozenset({"kube-controller-manager"})
# Subresources others legitimately write: what the child reports, not what it does. A scale is
# what it does.
_REPORTING_SUBRESOURCES: typing.Final = frozenset({"status"})
# Fields of a Service the API server allocates once and keeps; a replacement carries them over.
_ALLOCATED_SERVICE_FIELDS: typing.Final = (
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
)


def foreign_managers(live: Manifest, *, own: str) -> list[str]:
    """Managers other than `own` and the system's that own fields of the object or its scale."""
    return sorted(
        {
            str(entry.get("manager"))
            for entry in live["metadata"].get("managedFields") or []
            if entry.get("subresource") not in _REPORTING_SUBRESOURCES
            and entry.get("manager") not in {own, *SYSTEM_MANAGERS}
        }
    )


def replacement(intended: Manifest, live: Manifest) -> Manifest:
    """What replaces `live` so that it is exactly `intended`: the intended object, with the live
    object's resourceVersion (a concurrent write fails the replacement instead of being lost),
    the labels and annotations others added next to ours, its finalizers, and for a Service the
    addresses the API server allocated."""
    metadata = live["metadata"]
    wanted = intended["metadata"]
    result: Manifest = {
        **intended,
        "metadata": {
            **wanted,
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": {**(metadata.get("labels") or {}), **(wanted.get("labels") or {})},
            "annotations": {
                **(metadata.get("annotations") or {}),
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
    """Whether replacing the live object (as a dry run answered) would change it."""

    def essence(obj: Manifest) -> tuple[typing.Any, ...]:
        metadata = obj.get("metadata") or {}
        return (
            obj.get("spec"),
            metadata.get("labels"),
            metadata.get("annotations"),
            metadata.get("ownerReferences"),
            obj.get("automountServiceAccountToken"),
            obj.get("imagePullSecrets"),
            obj.get("secrets"),
        )

    return essence(live) != essence(dry_run)
