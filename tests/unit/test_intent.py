"""The applied-intent hash decides whether a child needs a write at all."""

from __future__ import annotations

import typing

from modelguard.builders import intent


def _manifest(replicas: int = 2, **annotations: str) -> dict[str, typing.Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "annotations": dict(annotations)},
        "spec": {"replicas": replicas},
    }


def test_same_intent_same_hash_whatever_the_key_order() -> None:
    reordered = {
        "spec": {"replicas": 2},
        "metadata": _manifest()["metadata"],
        "kind": "Deployment",
        "apiVersion": "apps/v1",
    }
    assert intent.intent_hash(_manifest()) == intent.intent_hash(reordered)


def test_any_change_of_intent_changes_the_hash() -> None:
    assert intent.intent_hash(_manifest(replicas=2)) != intent.intent_hash(_manifest(replicas=3))
    assert intent.intent_hash(_manifest()) != intent.intent_hash(_manifest(team="a"))


def test_the_recorded_hash_does_not_count_itself() -> None:
    recorded = intent.with_intent(_manifest())
    annotation = recorded["metadata"]["annotations"][intent.INTENT_ANNOTATION]
    assert annotation == intent.intent_hash(_manifest())
    assert intent.intent_hash(recorded) == annotation
    assert intent.with_intent(recorded) == recorded


def test_with_intent_leaves_the_input_untouched() -> None:
    original = _manifest()
    intent.with_intent(original)
    assert intent.INTENT_ANNOTATION not in original["metadata"]["annotations"]
