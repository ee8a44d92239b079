"""The applied-intent hash decides whether a child needs a write at all."""

from __future__ import annotations

import typing

from modelguard import kube


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
    assert kube.intent_hash(_manifest()) == kube.intent_hash(reordered)


def test_any_change_of_intent_changes_the_hash() -> None:
    assert kube.intent_hash(_manifest(replicas=2)) != kube.intent_hash(_manifest(replicas=3))
    assert kube.intent_hash(_manifest()) != kube.intent_hash(_manifest(team="a"))


def test_the_recorded_hash_does_not_count_itself() -> None:
    recorded = kube.with_intent(_manifest())
    annotation = recorded["metadata"]["annotations"][kube.INTENT_ANNOTATION]
    assert annotation == kube.intent_hash(_manifest())
    assert kube.intent_hash(recorded) == annotation
    assert kube.with_intent(recorded) == recorded


def test_with_intent_leaves_the_input_untouched() -> None:
    original = _manifest()
    kube.with_intent(original)
    assert kube.INTENT_ANNOTATION not in original["metadata"]["annotations"]
