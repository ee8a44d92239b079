"""The audit proxy in a model pod on the real node, as the Deployment builder makes it: the
ModelGuard image as the sidecar, the test model server as the server, the builder's Service and
NetworkPolicies, and a caller pod. The caller reaches the model through the Service (the proxy),
never the server's own port; the proxy's log, read with `kubectl logs`, names the caller pod and
verifies with `modelguard audit verify`.

The model volume is an emptyDir here: what fills it (the fetch-verify init container) is tested
elsewhere, and this test is about the request path.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

import images
import localnode
from modelguard.api import v1alpha1
from modelguard.builders import deployment, networkpolicy, service

CALLER_LABELS = {"role": "caller"}


@pytest.fixture(scope="module")
def node_images(
    real_node: localnode.RealNode, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(ModelGuard image, model server image) imported into the real node, by digest."""
    out = tmp_path_factory.mktemp("images")
    modelguard = images.modelguard_image(out=out / "modelguard.oci.tar")
    server = images.model_server_image(out=out / "model-server.oci.tar")
    real_node.import_image(modelguard.archive)
    real_node.import_image(server.archive)
    return modelguard.reference, server.reference


@contextlib.contextmanager
def _namespace(kubectl: harness.Kubectl) -> Iterator[str]:
    name = f"audit-proxy-{uuid.uuid4().hex[:6]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def _model(namespace: str, server_image: str) -> v1alpha1.ModelDeployment:
    return v1alpha1.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "sentiment", "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {
                "model": {
                    "name": "sentiment-bert",
                    "version": "1.0",
                    "source": {"uri": "s3://models/sentiment-bert/1.0/"},
                },
                "serving": {"image": server_image},
                "access": {
                    "ingress": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": namespace}
                            },
                            "podSelector": {"matchLabels": CALLER_LABELS},
                        }
                    ]
                },
            },
        }
    )


def _model_pod(md: v1alpha1.ModelDeployment, agent_image: str) -> harness.Manifest:
    """The pod of the builder's Deployment, without the init container, on the real node."""
    artifact = deployment.VerifiedArtifact(
        root_digest="sha256:" + "0" * 64, signature_digest="sha256:" + "0" * 64,
        agent_image=agent_image,
    )  # fmt: skip
    template = deployment.build(md, artifact=artifact)["spec"]["template"]
    spec = dict(template["spec"])
    spec.pop("initContainers")
    for container in spec["containers"]:
        container["imagePullPolicy"] = "Never"
    # The builder's ServiceAccount is not made here; the pod needs no token anyway.
    spec.pop("serviceAccountName")
    spec.update(localnode.placement())
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "model", "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


def _caller(image: str) -> harness.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "caller", "labels": CALLER_LABELS},
        "spec": {
            **localnode.placement(),
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "3600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _get(kubectl: harness.Kubectl, namespace: str, host: str, port: int) -> str:
    """What the caller pod gets for GET / at host:port ("" when it cannot connect)."""
    request = "GET / HTTP/1.1\\r\\nHost: model\\r\\nConnection: close\\r\\n\\r\\n"
    result = kubectl.run(
        *("exec", "-n", namespace, "caller", "--"),
        *("/bin/sh", "-c", f"printf '{request}' | /bin/nc -w 5 {host} {port}"),
        check=False,
        timeout=60,
    )
    return result.stdout if result.returncode == 0 else ""


def test_callers_reach_the_model_only_through_the_audit_proxy_and_are_recorded(
    kubectl: harness.Kubectl,
    probe_image: str,
    node_images: tuple[str, str],
    tmp_path: Path,
) -> None:
    agent_image, server_image = node_images
    with _namespace(kubectl) as namespace:
        md = _model(namespace, server_image)
        for manifest in [service.build(md), *networkpolicy.build(md)]:
            # Owned by no ModelDeployment here: an owner that does not exist would have the
            # garbage collector delete them.
            manifest["metadata"].pop("ownerReferences", None)
            kubectl.apply(manifest, namespace=namespace)
        for manifest in (_model_pod(md, agent_image), _caller(probe_image)):
            kubectl.apply(manifest, namespace=namespace)
        for name in ("model", "caller"):
            kubectl.run(
                *("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace),
                "--timeout=180s",
            )
        model_ip = kubectl.json("get", "pod", "model", "-n", namespace)["status"]["podIP"]
        caller_ip = kubectl.json("get", "pod", "caller", "-n", namespace)["status"]["podIP"]

        # The status line is the model server's (an HTTP/1.0 server here), passed on unchanged.
        through_service = _get(kubectl, namespace, f"sentiment.{namespace}.svc", 8080)
        assert re.match(r"HTTP/1\.[01] 200 ", through_service), through_service[:300]
        assert "rootDigest" in through_service
        # The server's own port is closed to callers: the NetworkPolicy admits the proxy's only.
        assert _get(kubectl, namespace, model_ip, 8080) == ""
        direct_to_proxy = _get(kubectl, namespace, model_ip, deployment.AUDIT_PROXY_PORT)
        assert re.match(r"HTTP/1\.[01] 200 ", direct_to_proxy), direct_to_proxy[:300]

        log = kubectl.run("logs", "-n", namespace, "model", "-c", "audit-proxy").stdout
    records = [json.loads(line) for line in log.splitlines() if '"apiVersion"' in line]
    requests = [r for r in records if r["decision"] == "InferenceRequest"]
    assert len(requests) == 2
    for record in requests:
        assert record["details"]["caller"]["address"].startswith(caller_ip + ":")
        assert record["details"]["status"] == 200
        assert record["details"]["method"] == "GET"
    started = records[0]["details"]
    assert started["origin"].startswith(f"{namespace}/model/inputs/")
    saved = tmp_path / "inputs.log"
    saved.write_text(log)
    verified = subprocess.run(
        [
            str(Path(sys.executable).with_name("modelguard")),
            *("audit", "verify", str(saved), "--checkpoints", str(saved)),
            *("--public-key", started["publicKey"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain intact" in verified.stdout
