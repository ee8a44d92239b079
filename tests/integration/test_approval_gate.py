"""The approval gate on the real control plane: signed ModelApprovals decide whether a verified
version rolls out; the operator watches approvals, and an expiring approval never kills traffic."""

from __future__ import annotations

import datetime
import typing
import uuid
from pathlib import Path

import harness
import pytest
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

import signedmodel


def decoy_deployment(
    name: str,
    *,
    labels: dict[str, str],
    digest: str,
    owner: dict[str, typing.Any] | None = None,
) -> dict[str, typing.Any]:
    """A Deployment someone else makes in advance under a model's child name: it claims to serve
    `digest` with a fetch-verify init container of its own and an extra sidecar (and, with
    `owner`, a controller ownerReference naming the ModelDeployment)."""
    metadata: dict[str, typing.Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"modelguard.dev/root-digest": digest},
                },
                "spec": {
                    "initContainers": [
                        {
                            "name": "fetch-verify",
                            "image": "registry.example/x@sha256:" + "1" * 64,
                            "args": ["--signature-digest", "sha256:" + "2" * 64],
                        }
                    ],
                    "containers": [
                        {"name": "sidecar", "image": "registry.example/y@sha256:" + "3" * 64}
                    ],
                },
            },
        },
    }


pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]


def _approve(
    kubectl: harness.Kubectl,
    namespace: str,
    *,
    key: Path,
    version: str,
    uri: str,
    s3: typing.Any,
    expires_in: datetime.timedelta = datetime.timedelta(days=1),
) -> None:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    digest = signedmodel.root_digest(s3.get_object(bucket, f"{prefix}model.sig"))
    kubectl.apply(
        signedmodel.approval(
            private_key=key,
            namespace=namespace,
            model="sentiment-bert",
            version=version,
            digest=digest,
            expires=datetime.datetime.now(datetime.UTC) + expires_in,
            name=f"approval-{uuid.uuid4().hex[:8]}",
        ),
        namespace=namespace,
    )


def _condition(
    kubectl: harness.Kubectl, namespace: str, name: str, type: str
) -> dict[str, typing.Any]:
    return harness.condition(kubectl.get("modeldeployment", name, namespace=namespace), type)


def _wait(
    kubectl: harness.Kubectl,
    namespace: str,
    name: str,
    type: str,
    *,
    status: str,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, typing.Any]:
    found: dict[str, typing.Any] = {}

    def settled() -> None:
        found.clear()
        found.update(_condition(kubectl, namespace, name, type))
        assert found.get("status") == status, found
        if reason:
            assert found.get("reason") == reason, found

    harness.eventually(settled, timeout=timeout)
    return found


def test_unapproved_version_is_held_until_an_approval_appears(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    approver_key: tuple[Path, str],
    s3: typing.Any,
) -> None:
    uri = publish_model("1.4.0", approve=False)
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    _wait(kubectl, namespace, "m", "Approved", status="False", reason="ApprovalMissing")
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotApproved")
    assert "nothing was rolled out" in ready["message"]
    assert kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=m")["items"] == []

    # The approval alone, no other change, lets the rollout proceed.
    _approve(kubectl, namespace, key=approver_key[0], version="1.4.0", uri=uri, s3=s3)
    body = wait_ready(kubectl, namespace, "m")
    approved = harness.condition(body, "Approved")
    assert (approved["status"], approved["reason"]) == ("True", "Approved")
    assert body["status"]["approval"]["approvers"] == ["security"]


def test_a_deployment_made_in_advance_opens_no_gate_and_is_not_adopted(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    approver_key: tuple[Path, str],
    s3: typing.Any,
) -> None:
    # Someone who may create Deployments makes one under the model's child name, pinning the
    # version's root digest (readable from model.sig) as if it served already, plus a sidecar.
    uri = publish_model("1.4.0", approve=False)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    digest = signedmodel.root_digest(s3.get_object(bucket, f"{prefix}model.sig"))
    kubectl.apply(
        decoy_deployment("m", labels={"app": "decoy"}, digest=digest), namespace=namespace
    )
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    # The gate holds: the decoy says nothing about what the model serves.
    _wait(kubectl, namespace, "m", "Approved", status="False", reason="ApprovalMissing")
    _approve(kubectl, namespace, key=approver_key[0], version="1.4.0", uri=uri, s3=s3)
    # Approved now, the operator still never writes into someone else's Deployment.
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="ChildConflict")
    assert "Deployment m already exists and is not this ModelDeployment's" in ready["message"]
    decoy = kubectl.json("get", "deployment", "m", "-n", namespace)
    assert "ownerReferences" not in decoy["metadata"]
    assert [c["name"] for c in decoy["spec"]["template"]["spec"]["containers"]] == ["sidecar"]
    # Once it is gone, the model rolls out on its own.
    kubectl.run("delete", "deployment", "m", "-n", namespace)
    wait_ready(kubectl, namespace, "m")


def test_approval_by_someone_the_policy_does_not_name_counts_for_nothing(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    tmp_path: Path,
    s3: typing.Any,
) -> None:
    uri = publish_model("1.4.0", approve=False)
    stranger = signedmodel.generate_key(tmp_path, name="stranger")[0]
    _approve(kubectl, namespace, key=stranger, version="1.4.0", uri=uri, s3=s3)
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    condition = _wait(kubectl, namespace, "m", "Approved", status="False")
    assert condition["reason"] in {"ApprovalUnknownApprover", "ApprovalBadSignature"}
    assert kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=m")["items"] == []


def test_expiring_approval_keeps_traffic_and_blocks_the_next_rollout(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    approver_key: tuple[Path, str],
    s3: typing.Any,
) -> None:
    uri = publish_model("1.4.0", approve=False)
    _approve(
        kubectl,
        namespace,
        key=approver_key[0],
        version="1.4.0",
        uri=uri,
        s3=s3,
        expires_in=datetime.timedelta(seconds=20),
    )
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    before = kubectl.json("get", "deployment", "m", "-n", namespace)

    # The operator re-evaluates at expiry by itself: no event is needed.
    expired = _wait(
        kubectl, namespace, "m", "Approved", status="False", reason="ApprovalExpired", timeout=60
    )
    assert "keeps serving" in expired["message"]
    after = kubectl.json("get", "deployment", "m", "-n", namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"]["availableReplicas"] == 2

    # The next version, unapproved, is blocked; 1.4.0 keeps serving.
    next_uri = publish_model("1.5.0", approve=False)
    kubectl.apply(model_deployment("m", source=next_uri, version="1.5.0"), namespace=namespace)
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotApproved")
    assert "1.4.0 keeps serving" in ready["message"]
    held = kubectl.json("get", "deployment", "m", "-n", namespace)
    assert held["metadata"]["generation"] == before["metadata"]["generation"]


def test_rollback_to_an_approved_version_is_immediate(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
) -> None:
    first = publish_model("1.4.0")
    second = publish_model("1.5.0")
    kubectl.apply(model_deployment("m", source=first), namespace=namespace)
    digest_first = wait_ready(kubectl, namespace, "m")["status"]["verification"]["rootDigest"]
    kubectl.apply(model_deployment("m", source=second, version="1.5.0"), namespace=namespace)

    def on(version: str) -> None:
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        assert body["status"].get("activeVersion") == version
        assert harness.condition(body, "Ready")["status"] == "True"

    harness.eventually(lambda: on("1.5.0"), timeout=90)
    kubectl.apply(model_deployment("m", source=first), namespace=namespace)
    harness.eventually(lambda: on("1.4.0"), timeout=90)
    template = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["template"]
    assert template["metadata"]["annotations"]["modelguard.dev/root-digest"] == digest_first
