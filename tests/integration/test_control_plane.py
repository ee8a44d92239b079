"""The local control plane is the real thing: versions, scheduling, admission, garbage collection
and identities behave as on any conformant cluster."""

from __future__ import annotations

import typing

import harness
import pytest

import localcluster


def test_nodes_are_ready_and_report_the_pinned_version(kubectl: harness.Kubectl) -> None:
    nodes = kubectl.json("get", "nodes")["items"]
    assert nodes, "no nodes registered"
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", node["metadata"]["name"]
    server = kubectl.json("version")["serverVersion"]
    assert server["gitVersion"] == localcluster.pinned_version("kubernetes", "k8s.io/kubernetes")


def test_pods_are_scheduled_and_become_ready(kubectl: harness.Kubectl, namespace: str) -> None:
    kubectl.apply(_restricted_pod("ready-check"), namespace=namespace)
    kubectl.run(
        "wait", "--for=condition=Ready", "pod/ready-check", "-n", namespace, "--timeout=60s"
    )
    pod = kubectl.json("get", "pod", "ready-check", "-n", namespace)
    assert pod["spec"]["nodeName"].startswith("kwok-node-")


def test_pod_security_admission_refuses_a_privileged_pod(
    kubectl: harness.Kubectl, namespace: str
) -> None:
    pod = _restricted_pod("privileged")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    result = kubectl.apply(pod, namespace=namespace, check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr


def test_garbage_collector_deletes_dependents(kubectl: harness.Kubectl, namespace: str) -> None:
    owner = kubectl.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
        namespace=namespace,
    )
    assert owner.returncode == 0
    uid = kubectl.json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    kubectl.apply(dependent, namespace=namespace)
    kubectl.run("delete", "configmap", "owner", "-n", namespace)

    def gone() -> None:
        assert kubectl.get("configmap", "dependent", namespace=namespace) is None

    harness.eventually(gone, timeout=60)


def test_service_account_tokens_carry_only_their_own_rights(
    as_service_account: typing.Callable[[str], harness.Kubectl], namespace: str
) -> None:
    reader = as_service_account("nobody")
    whoami = reader.json("auth", "whoami")
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"
    denied = reader.run("get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_api_server_health(kubectl: harness.Kubectl, path: str) -> None:
    assert kubectl.run("get", "--raw", path).stdout.strip() == "ok"


def _restricted_pod(name: str) -> dict[str, typing.Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/app@sha256:" + "a" * 64,
                    "securityContext": {
                        "runAsUser": 65532,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_nodes_heartbeat_through_leases(kubectl: harness.Kubectl) -> None:
    """Without heartbeats the node controller marks nodes NotReady and evicts every pod after
    five minutes; kwok renews each node's Lease as a kubelet does."""
    nodes = [n["metadata"]["name"] for n in kubectl.json("get", "nodes")["items"]]

    def renew_times() -> dict[str, str]:
        leases = kubectl.json("get", "leases", "-n", "kube-node-lease")["items"]
        return {
            lease["metadata"]["name"]: lease["spec"]["renewTime"]
            for lease in leases
            if lease["metadata"]["name"] in nodes
        }

    first: dict[str, str] = {}

    def leased() -> None:
        first.update(renew_times())
        assert sorted(first) == sorted(nodes)

    harness.eventually(leased, timeout=30)

    def renewed() -> None:
        later = renew_times()
        assert all(later[node] != first[node] for node in nodes), (first, later)

    harness.eventually(renewed, timeout=45)
