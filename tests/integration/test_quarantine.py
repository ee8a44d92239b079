"""Quarantine through the spec: the model scales to zero and its network is cut, nothing is
deleted (ReplicaSets, Service, policies and events stay as evidence); lifting it is a spec
change."""

from __future__ import annotations

import harness
import pytest
from test_modeldeployment import SELECTOR, model_deployment, source, wait_ready

pytestmark = pytest.mark.usefixtures("operator")


def _policies(kubectl: harness.Kubectl, namespace: str) -> dict[str, dict[str, object]]:
    items = kubectl.json("get", "networkpolicies", "-n", namespace, "-l", f"{SELECTOR}=q")["items"]
    return {p["metadata"]["name"]: p["spec"] for p in items}


__all__ = ["source"]  # the fixture, shared with test_modeldeployment


def test_quarantine_cuts_the_model_off_and_lifting_it_restores_it(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    callers = {"access": {"ingress": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}}
    kubectl.apply(model_deployment("q", source=source, **callers), namespace=namespace)
    wait_ready(kubectl, namespace, "q")
    replica_sets = kubectl.json("get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}=q")
    assert _policies(kubectl, namespace)["q-allow-ingress"]["ingress"]

    kubectl.apply(
        model_deployment("q", source=source, quarantine=True, **callers), namespace=namespace
    )

    def quarantined() -> None:
        body = kubectl.get("modeldeployment", "q", namespace=namespace)
        ready = harness.condition(body, "Ready")
        assert (ready.get("status"), ready.get("reason")) == ("False", "Quarantined")
        assert kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=q")["items"] == []
        policies = _policies(kubectl, namespace)
        assert policies["q-allow-ingress"].get("ingress", []) == []
        assert policies["q-allow-egress"].get("egress", []) == []
        assert sorted(policies["q-default-deny"]["policyTypes"]) == ["Egress", "Ingress"]

    harness.eventually(quarantined, timeout=90)
    # Evidence stays: the ReplicaSets, the Service and the ServiceAccount are still there.
    still = kubectl.json("get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}=q")
    assert {r["metadata"]["name"] for r in still["items"]} == {
        r["metadata"]["name"] for r in replica_sets["items"]
    }
    assert kubectl.get("service", "q", namespace=namespace) is not None
    assert kubectl.get("serviceaccount", "q", namespace=namespace) is not None
    events = harness.model_events(kubectl, namespace, "q")
    assert any(e["reason"] == "Quarantined" and e["type"] == "Warning" for e in events)

    kubectl.apply(model_deployment("q", source=source, **callers), namespace=namespace)
    wait_ready(kubectl, namespace, "q")
    assert _policies(kubectl, namespace)["q-allow-ingress"]["ingress"]
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=q")["items"]
    assert len([p for p in pods if not p["metadata"].get("deletionTimestamp")]) == 2


def test_quarantine_does_not_wait_for_verification(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    """The brake of an incident works when the incident broke the source: the version that
    serves is stopped although the spec now names a source that cannot be verified."""
    kubectl.apply(model_deployment("brake", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "brake")
    unreachable = source.rstrip("/").rsplit("/", 1)[0] + "/no-such-version/"
    kubectl.apply(
        model_deployment("brake", source=unreachable, quarantine=True), namespace=namespace
    )

    def quarantined() -> None:
        body = kubectl.get("modeldeployment", "brake", namespace=namespace)
        ready = harness.condition(body, "Ready")
        assert (ready.get("status"), ready.get("reason")) == ("False", "Quarantined"), ready
        deployment = kubectl.get("deployment", "brake", namespace=namespace)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 0
        policies = kubectl.json(
            "get", "networkpolicies", "-n", namespace, "-l", f"{SELECTOR}=brake"
        )["items"]
        assert {p["metadata"]["name"]: p["spec"].get("ingress", []) for p in policies}[
            "brake-allow-ingress"
        ] == []

    harness.eventually(quarantined, timeout=90)
