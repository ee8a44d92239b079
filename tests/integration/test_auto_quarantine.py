"""A pod's verifying agent that finds files other than the signed ones quarantines the model:
scaled to zero, network cut, nothing deleted, Ready=False/Quarantined with the agent's words;
any change of the spec lifts it.

kwok runs no containers, so the test plays the kubelet: it reports, through the pod's status
subresource, the init container's exit and termination message exactly as a kubelet would after
`modelguard agent fetch-verify` refused (its own tests run it against a real S3 server).
"""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path

import harness
import pytest
from test_modeldeployment import SELECTOR, model_deployment, source, wait_ready

import signedmodel

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

pytestmark = pytest.mark.usefixtures("operator")


REFUSAL = "DigestMismatch: model.safetensors: sha256 differs from the signed digest"


def _report_refusal(
    kubectl: harness.Kubectl,
    namespace: str,
    pod: dict[str, typing.Any],
    *,
    exit_code: int = 1,
    message: str = REFUSAL,
) -> None:
    """Reports the agent's exit as the kubelet would: by default, a refusal."""
    (agent,) = pod["spec"]["initContainers"]
    status = {
        "initContainerStatuses": [
            {
                "name": agent["name"],
                "image": agent["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 1,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error" if exit_code else "Completed",
                        "message": message,
                    }
                },
            }
        ]
    }
    kubectl.run(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_tampered_files_in_a_pod_quarantine_the_model_until_the_spec_changes(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    (pod, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
    _report_refusal(kubectl, namespace, pod)

    def quarantined() -> None:
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        verified = harness.condition(body, "Verified")
        assert (verified["status"], verified["reason"]) == ("False", "DigestMismatch")
        assert pod["metadata"]["name"] in verified["message"]
        ready = harness.condition(body, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Quarantined")
        assert body["status"]["quarantine"]["reason"] == "DigestMismatch"
        spec = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]
        assert spec["replicas"] == 0
        egress = kubectl.json("get", "networkpolicy", "m-allow-egress", "-n", namespace)["spec"]
        assert egress.get("egress", []) == []

    harness.eventually(quarantined, timeout=60)

    # The refusing pods go with the scale to zero (each deletion reconciles the model), but what
    # they found still stands: Verified stays False while the quarantine holds.
    def pods_gone() -> None:
        assert kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=m")["items"] == []

    harness.eventually(pods_gone, timeout=60)
    time.sleep(5)
    body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
    verified = harness.condition(body, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "DigestMismatch")
    # Evidence stays: nothing was deleted.
    assert kubectl.json("get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
    assert kubectl.get("service", "m", namespace=namespace) is not None

    # Any change of the spec is the explicit decision that lifts it.
    kubectl.apply(
        model_deployment(
            "m",
            source=source,
            serving={"image": "registry.example/model-server@sha256:" + "4f" * 32, "replicas": 1},
        ),
        namespace=namespace,
    )
    body = wait_ready(kubectl, namespace, "m")
    assert "quarantine" not in body["status"]
    assert harness.condition(body, "Verified")["status"] == "True"


def test_a_pod_made_by_hand_cannot_quarantine_the_model(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    # Anyone who may create pods in the namespace can copy a model pod's labels, its root digest
    # and an init container named like the agent. Its report must count for nothing: only pods
    # of the ReplicaSets that the model's own Deployment controls speak for the model.
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    replicas = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"]
    (real, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
    labels = {
        key: value
        for key, value in real["metadata"]["labels"].items()
        if key != "pod-template-hash"  # else the ReplicaSet would adopt it, and delete it
    }
    forged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "m-forged",
            "labels": labels,
            "annotations": real["metadata"]["annotations"],
        },
        "spec": real["spec"],
    }
    kubectl.apply(forged, namespace=namespace)
    _report_refusal(kubectl, namespace, kubectl.json("get", "pod", "m-forged", "-n", namespace))
    time.sleep(5)
    body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
    assert "quarantine" not in body["status"]
    assert harness.condition(body, "Verified")["status"] == "True"
    assert harness.condition(body, "Ready")["status"] == "True"
    assert kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"] == replicas


def test_pickle_admitted_under_an_audit_policy_is_reported_not_quarantined(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
) -> None:
    # Audit mode admits a pickle-based file but records and reports it: the agent says so on
    # success, in its termination message, and the operator must not take it for tampering.
    policy = signedmodel.trust_policy(
        name=f"audit-{namespace}",
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    policy["spec"]["enforcement"] = "Audit"  # type: ignore[index]
    kubectl.apply(policy)
    try:
        kubectl.apply(
            model_deployment("m", source=source, trustPolicy=f"audit-{namespace}"),
            namespace=namespace,
        )
        wait_ready(kubectl, namespace, "m")
        template = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["template"]
        (agent,) = template["spec"]["initContainers"]
        assert "--audit-formats" in agent["args"]
        (pod, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
        admitted = (
            "UnsafeFormat: file 'weights/model.bin' is a PyTorch pickle: loading it runs code; "
            "admitted because the TrustPolicy's enforcement is Audit"
        )
        _report_refusal(kubectl, namespace, pod, exit_code=0, message=f"audit {admitted}")

        def reported() -> None:
            body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
            verified = harness.condition(body, "Verified")
            assert (verified["status"], verified["reason"]) == ("True", "AuditViolations")
            assert admitted in verified["message"]
            assert pod["metadata"]["name"] in verified["message"]
            assert harness.condition(body, "Ready")["status"] == "True"
            assert "quarantine" not in body["status"]
            events = harness.model_events(kubectl, namespace, "m")
            assert any(
                e["reason"] == "AuditViolations" and e["type"] == "Warning" for e in events
            ), [(e["reason"], e["type"]) for e in events]

        harness.eventually(reported, timeout=60)
        assert kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"] > 0
    finally:
        kubectl.run("delete", "trustpolicy", f"audit-{namespace}", "--wait=false", check=False)


def test_a_revoked_signer_quarantines_the_version_it_signed(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
    tmp_path: Path,
) -> None:
    name = f"revocable-{namespace}"
    policy = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    kubectl.apply(policy)
    try:
        kubectl.apply(model_deployment("m", source=source, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        # The security owner revokes the signer: the policy now trusts another key only.
        policy["spec"]["signers"] = [  # type: ignore[index]
            {"name": "successor", "publicKey": signedmodel.generate_key(tmp_path)[1]}
        ]
        kubectl.apply(policy)

        def quarantined() -> None:
            body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
            assert harness.condition(body, "Verified")["reason"] == "UntrustedSigner"
            ready = harness.condition(body, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "Quarantined")
            assert body["status"]["quarantine"]["reason"] == "SignerRevoked"
            assert kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"] == 0

        harness.eventually(quarantined, timeout=60)
        assert kubectl.json("get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_quarantine_stays_reported_while_the_version_cannot_be_verified(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
) -> None:
    name = f"held-{namespace}"
    policy = signedmodel.trust_policy(
        name=name, public_key=signing_key[1], sources=model_sources, approver_key=approver_key[1]
    )
    kubectl.apply(policy)
    try:
        kubectl.apply(
            model_deployment("held", source=source, trustPolicy=name), namespace=namespace
        )
        wait_ready(kubectl, namespace, "held")
        (pod, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=held")["items"]
        _report_refusal(kubectl, namespace, pod)

        def quarantined() -> None:
            body = kubectl.json("get", "modeldeployment", "held", "-n", namespace)
            assert harness.condition(body, "Ready")["reason"] == "Quarantined"

        harness.eventually(quarantined, timeout=60)
        # The policy stops allowing the source: the version is now held as unverified as well.
        policy["spec"]["sources"] = [{**model_sources[0], "uri": "s3://elsewhere/"}]  # type: ignore[index]
        kubectl.apply(policy)

        def still_quarantined() -> None:
            body = kubectl.json("get", "modeldeployment", "held", "-n", namespace)
            assert harness.condition(body, "Verified")["reason"] != "DigestMismatch"
            ready = harness.condition(body, "Ready")
            assert ready["reason"] == "Quarantined", ready
            assert "and version 1.4.0 is not verified" in ready["message"], ready

        harness.eventually(still_quarantined, timeout=60)
        deployment = kubectl.json("get", "deployment", "held", "-n", namespace)
        assert deployment["spec"]["replicas"] == 0
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)
