"""The envelope every child shares: apiVersion, kind, and metadata owned by the ModelDeployment."""

import typing

from modelguard.api import v1alpha1
from modelguard.builders import labels

Manifest = dict[str, typing.Any]


def owner_reference(md: v1alpha1.ModelDeployment) -> dict[str, typing.Any]:
    """The controller reference to `md`: deleting it garbage-collects the children."""
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child(md: v1alpha1.ModelDeployment, *, api_version: str, kind: str, name: str) -> Manifest:
    """A manifest for a child of `md` with everything but its body."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": md.namespace,
            "labels": labels.of(md),
            "ownerReferences": [owner_reference(md)],
        },
    }
