"""Drift: a managed child changed behind the operator's back (a break-glass identity, or a write
while the webhook was down) is put back within seconds, and the revert is recorded as an Event.
Fields the operator never set stay as their author left them."""

from __future__ import annotations

import json

import harness
import pytest
from test_modeldeployment import model_deployment, source, wait_ready

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

pytestmark = pytest.mark.usefixtures("operator")


def test_edited_children_are_reverted_and_the_revert_is_recorded(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    image = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    kubectl.run(
        "set",
        "image",
        "deployment/m",
        f"model-server=registry.example/evil@sha256:{'e' * 64}",
        "-n",
        namespace,
        *harness.BREAK_GLASS,
    )
    kubectl.run(
        "patch",
        "networkpolicy",
        "m-allow-egress",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "add", "path": "/spec/egress/-", "value": {}}]),
        *harness.BREAK_GLASS,
    )
    kubectl.run(
        "label", "service", "m", "-n", namespace, "note=added-by-hand", *harness.BREAK_GLASS
    )

    def reverted() -> None:
        spec = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]
        assert spec["template"]["spec"]["containers"][0]["image"] == image
        egress = kubectl.json("get", "networkpolicy", "m-allow-egress", "-n", namespace)["spec"][
            "egress"
        ]
        assert {} not in egress
        # A label the operator never set is reverted too: some change what a child does (kube-
        # proxy's service-proxy-name), and which ones is not the model's to know.
        service = kubectl.json("get", "service", "m", "-n", namespace)
        assert "note" not in service["metadata"]["labels"]

    harness.eventually(reverted, timeout=30)

    def recorded() -> None:
        events = harness.model_events(kubectl, namespace, "m")
        notes = [e.get("note", "") for e in events if e["reason"] == "DriftReverted"]
        assert any("Deployment/m" in note for note in notes), notes
        assert any("NetworkPolicy/m-allow-egress" in note for note in notes), notes

    harness.eventually(recorded, timeout=30)


def test_fields_added_to_a_child_are_removed_and_a_scale_is_reverted(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    # The desired object is the whole truth of a child's spec: what others add (an init
    # container, a sidecar, a command, env, a volume) goes, and so does a `kubectl scale` that
    # the scale webhook let through (its failurePolicy is Ignore).
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    image = "registry.example/evil@sha256:" + "e" * 64
    patch = [
        {
            "op": "add",
            "path": "/spec/template/spec/initContainers/-",
            "value": {"name": "before", "image": image},
        },
        {
            "op": "add",
            "path": "/spec/template/spec/containers/-",
            "value": {"name": "sidecar", "image": image},
        },
        {"op": "add", "path": "/spec/template/spec/containers/0/command", "value": ["/bin/sh"]},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env",
            "value": [{"name": "EXFIL", "value": "1"}],
        },
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/-",
            "value": {"name": "extra", "emptyDir": {}},
        },
    ]
    kubectl.run(
        "patch",
        "deployment",
        "m",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps(patch),
        *harness.BREAK_GLASS,
    )
    kubectl.run("scale", "deployment", "m", "-n", namespace, "--replicas=5")

    def reverted() -> None:
        spec = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]
        pod = spec["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] == ["fetch-verify"]
        assert [c["name"] for c in pod["containers"]] == ["model-server", "audit-proxy"]
        assert "command" not in pod["containers"][0]
        assert "env" not in pod["containers"][0]
        assert "extra" not in [v["name"] for v in pod["volumes"]]
        assert spec["replicas"] == 2

    harness.eventually(reverted, timeout=30)

    def recorded() -> None:
        events = harness.model_events(kubectl, namespace, "m")
        assert any(
            e["reason"] == "DriftReverted" and "Deployment/m" in e.get("note", "") for e in events
        )

    harness.eventually(recorded, timeout=30)
