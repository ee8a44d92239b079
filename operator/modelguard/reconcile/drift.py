"""Drift: has anyone but the operator changed what the operator owns in a child? (pure)

The applied-intent hash says whether *our* intent changed; it cannot see someone else's edit of a
field we own (a break-glass `kubectl edit`, a write while the webhook was down). managedFields
can: any manager other than ours and Kubernetes' own controllers is a suspect, and a server-side
dry run of our intent then says whether it would change anything we own. Fields others added and
we never set (a rollout-restart annotation, an extra label) are theirs and stay.
"""

from __future__ import annotations

import typing

Manifest = dict[str, typing.Any]

# Controllers whose writes to a child are part of its normal life, not drift.
SYSTEM_MANAGERS: typing.Final = frozenset({"kube-controller-manager"})


def foreign_managers(live: Manifest, *, own: str) -> list[str]:
    """Managers other than `own` and the system's that own fields of the object itself (status
    and other subresources are not ours to guard)."""
    return sorted(
        {
            str(entry.get("manager"))
            for entry in live["metadata"].get("managedFields") or []
            if not entry.get("subresource") and entry.get("manager") not in {own, *SYSTEM_MANAGERS}
        }
    )


def differs(live: Manifest, dry_run: Manifest) -> bool:
    """Whether applying our intent (as a dry run answered) would change the live object."""

    def essence(obj: Manifest) -> tuple[typing.Any, ...]:
        metadata = obj.get("metadata") or {}
        return (
            obj.get("spec"),
            metadata.get("labels"),
            metadata.get("annotations"),
            obj.get("automountServiceAccountToken"),
        )

    return essence(live) != essence(dry_run)
