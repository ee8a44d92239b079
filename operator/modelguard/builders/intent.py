"""The applied-intent annotation: a digest of a desired child, recorded in it, so that a child whose
recorded intent is the desired one is not written again."""

from __future__ import annotations

import hashlib
import json
import typing

from modelguard.api import v1alpha1

INTENT_ANNOTATION: typing.Final = f"{v1alpha1.GROUP}/applied-intent"
"""sha256 of the manifest last applied; equal to the desired one means there is nothing to write."""

Manifest = dict[str, typing.Any]


def intent_hash(manifest: Manifest) -> str:
    """A stable digest of a desired manifest, excluding the annotation that carries it."""
    metadata = dict(manifest.get("metadata", {}))
    annotations = {
        k: v for k, v in metadata.get("annotations", {}).items() if k != INTENT_ANNOTATION
    }
    metadata["annotations"] = annotations
    canonical = json.dumps(
        {**manifest, "metadata": metadata}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_intent(manifest: Manifest) -> Manifest:
    """The manifest with its own intent hash recorded in an annotation."""
    metadata = dict(manifest.get("metadata", {}))
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        INTENT_ANNOTATION: intent_hash(manifest),
    }
    return {**manifest, "metadata": metadata}


def recorded(live: Manifest) -> str | None:
    """The intent a live child was last written with (None: never by the operator)."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(INTENT_ANNOTATION)
    return str(value) if value is not None else None
