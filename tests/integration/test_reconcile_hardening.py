"""Ways around the approval gate, the policy binding, revocation and drift protection, each closed:
children are the operator's by construction (never by the ownerReferences an object claims), a
TrustPolicy applies only where the security owner binds it, revoking a signer judges the version
that serves (not the one the spec names), and one tenant's stalled bundle endpoint delays no other
model's re-verification."""

from __future__ import annotations

import socket
import threading
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
import yaml
from test_approval_gate import _approve, _wait, decoy_deployment
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

import s3server
import signedmodel

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]


def _touch(kubectl: harness.Kubectl, namespace: str, name: str) -> None:
    """A metadata-only change: the operator reconciles the model again, and records having done
    so in its last-handled annotation, which the test waits for."""
    mark = f"example.com/touched={uuid.uuid4().hex[:8]}"
    kubectl.run("annotate", "--overwrite", "modeldeployment", name, "-n", namespace, mark)

    def handled() -> None:
        body = kubectl.json("get", "modeldeployment", name, "-n", namespace)
        assert mark.split("=")[1] in body["metadata"]["annotations"].get(
            "modelguard.dev/last-handled-configuration", ""
        )

    harness.eventually(handled, timeout=60)


def test_a_deployment_made_in_advance_claiming_the_model_as_owner_is_not_adopted(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    approver_key: tuple[Path, str],
    s3: typing.Any,
) -> None:
    # A namespace editor makes the model's Deployment with a controller ownerReference naming the
    # ModelDeployment, pinning the held version's root digest as if it served already, and a
    # sidecar of their own. Claiming an owner makes nobody the operator's child.
    uri = publish_model("1.4.0", approve=False)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    digest = signedmodel.root_digest(s3.get_object(bucket, f"{prefix}model.sig"))
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    _wait(kubectl, namespace, "m", "Approved", status="False", reason="ApprovalMissing")
    uid = kubectl.json("get", "modeldeployment", "m", "-n", namespace)["metadata"]["uid"]
    # The operator's own selector, so that a forced apply into it would succeed.
    labels = {"modelguard.dev/model-deployment": "m"}
    owner = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "m",
        "uid": uid,
        "controller": True,
    }
    # Admission lets only the operator write an object that names a ModelDeployment as its
    # owner; break-glass may, and so could anyone where the chart's policy is disabled.
    kubectl.apply(
        decoy_deployment("m", labels=labels, digest=digest, owner=owner),
        namespace=namespace,
        extra=harness.BREAK_GLASS,
    )
    _touch(kubectl, namespace, "m")
    # The gate holds: the decoy says nothing about what the model serves.
    body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
    ready = harness.condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotApproved"), ready
    assert "activeVersion" not in body["status"]
    assert harness.condition(body, "Approved")["status"] == "False"

    # Approved now, the operator still never writes into an object it did not make.
    _approve(kubectl, namespace, key=approver_key[0], version="1.4.0", uri=uri, s3=s3)
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="ChildConflict")
    assert "Deployment m already exists and is not this ModelDeployment's" in ready["message"]
    decoy = kubectl.json("get", "deployment", "m", "-n", namespace)
    assert [c["name"] for c in decoy["spec"]["template"]["spec"]["containers"]] == ["sidecar"]
    assert "app.kubernetes.io/managed-by" not in (decoy["metadata"].get("labels") or {})
    # Once it is gone, the model rolls out on its own, into a Deployment the operator made.
    kubectl.run("delete", "deployment", "m", "-n", namespace)
    wait_ready(kubectl, namespace, "m")


def test_a_policy_not_bound_to_the_namespace_cannot_be_chosen_by_the_model_owner(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> None:
    # A permissive sandbox policy (no approvals, Audit mode, pickles allowed) that the security
    # owner bound to no namespace; the model owner names it anyway.
    name = f"sandbox-{namespace}"
    sandbox = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    sandbox["spec"].pop("namespaceSelector", None)  # type: ignore[attr-defined]
    sandbox["spec"]["enforcement"] = "Audit"  # type: ignore[index]
    sandbox["spec"]["formats"] = {"allowPickle": True}  # type: ignore[index]
    kubectl.apply(sandbox)
    try:
        uri = publish_model("1.4.0", approve=False)
        kubectl.apply(model_deployment("m", source=uri, trustPolicy=name), namespace=namespace)
        ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="PolicyNotBound")
        assert f'TrustPolicy "{name}"' in ready["message"]
        assert "spec.namespaceSelector" in ready["message"]
        verified = harness.condition(
            kubectl.json("get", "modeldeployment", "m", "-n", namespace), "Verified"
        )
        assert (verified["status"], verified["reason"]) == ("False", "PolicyNotBound")
        items = kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=m")
        assert items["items"] == []

        # Bound to this namespace by its name (a label only the API server sets), it applies.
        sandbox["spec"]["namespaceSelector"] = {  # type: ignore[index]
            "matchLabels": {"kubernetes.io/metadata.name": namespace}
        }
        kubectl.apply(sandbox)
        wait_ready(kubectl, namespace, "m")
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_revoking_a_signer_quarantines_the_version_that_serves_while_another_is_held(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    name = f"revocable-{namespace}"
    policy = signedmodel.trust_policy(
        name=name, public_key=signing_key[1], sources=model_sources, approver_key=approver_key[1]
    )
    kubectl.apply(policy)
    try:
        first = publish_model("1.4.0")
        kubectl.apply(model_deployment("m", source=first, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        # The next version is held for want of an approval (the default mode): 1.4.0 serves.
        second = publish_model("1.5.0", approve=False)
        kubectl.apply(
            model_deployment("m", source=second, version="1.5.0", trustPolicy=name),
            namespace=namespace,
        )
        _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotApproved")
        # The security owner revokes the signer of what serves.
        policy["spec"]["signers"] = [  # type: ignore[index]
            {"name": "successor", "publicKey": signedmodel.generate_key(tmp_path)[1]}
        ]
        kubectl.apply(policy)

        def quarantined() -> None:
            body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
            assert body["status"].get("quarantine", {}).get("reason") == "SignerRevoked", body[
                "status"
            ]
            ready = harness.condition(body, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "Quarantined")
            assert kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"] == 0

        harness.eventually(quarantined, timeout=60)
        # Evidence stays: nothing was deleted.
        assert kubectl.json("get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}=m")["items"]
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def _settle(kubectl: harness.Kubectl, namespace: str, name: str) -> None:
    """Until the model and its Deployment stay unchanged across three looks a second apart."""
    seen: list[tuple[str, str]] = []

    def steady() -> None:
        model = kubectl.json("get", "modeldeployment", name, "-n", namespace)
        deployment = kubectl.json("get", "deployment", name, "-n", namespace)
        seen.append(
            (model["metadata"]["resourceVersion"], deployment["metadata"]["resourceVersion"])
        )
        assert len(seen) >= 3, seen
        assert len(set(seen[-3:])) == 1, seen[-3:]

    harness.eventually(steady, timeout=60, interval=1)


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers (a tenant's slow store)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def test_a_stalled_bundle_endpoint_delays_no_other_models_revocation(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    s3: s3server.S3Server,
    stalled_endpoint: str,
    model_sources: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    name = f"shared-{namespace}"
    policy = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        # The tenant's store is a source of the policy too: its models are fetched from there
        # (and stall), rather than refused before any fetch.
        sources=[
            *model_sources,
            {"uri": f"s3://models/{namespace}/slow/", "endpoint": stalled_endpoint},
        ],
    )
    kubectl.apply(policy)
    slow = signedmodel.credentials_secret(s3, name="slow-store")
    slow["stringData"]["AWS_ENDPOINT_URL"] = stalled_endpoint  # type: ignore[index]
    kubectl.apply(slow, namespace=namespace)
    try:
        # Models of a tenant whose store never answers, under the same policy, made first.
        for index in range(3):
            stalled = model_deployment(
                f"slow-{index}", source=f"s3://models/{namespace}/slow/{index}/", trustPolicy=name
            )
            stalled["spec"]["model"]["source"]["credentialsSecret"] = "slow-store"
            kubectl.apply(stalled, namespace=namespace)
        uri = publish_model("1.4.0")
        kubectl.apply(model_deployment("m", source=uri, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        # Steady first: then only the policy's fan-out can bring the revocation to it (an event
        # of its own children would reconcile it directly).
        _settle(kubectl, namespace, "m")
        policy["spec"]["signers"] = [  # type: ignore[index]
            {"name": "successor", "publicKey": signedmodel.generate_key(tmp_path)[1]}
        ]
        kubectl.apply(policy)

        def quarantined() -> None:
            body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
            ready = harness.condition(body, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "Quarantined"), ready

        # Well before even one stalled fetch could give up on its own (its read timeout is 60s).
        harness.eventually(quarantined, timeout=45)
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_child_taken_by_someone_else_does_not_stop_a_quarantine(
    kubectl: harness.Kubectl, namespace: str, publish_model: PublishModel
) -> None:
    # Someone replaced the model's ServiceAccount (the first child applied) with their own. The
    # brake must still stop what serves: every child the operator made is quarantined.
    uri = publish_model("1.4.0")
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    decoy = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "m", "namespace": namespace, "labels": {SELECTOR: "m", "decoy": "1"}},
    }

    def replaced() -> None:
        # Deleted and made again at once; the operator, seeing the deletion, may win the race
        # and make its own first: then again.
        kubectl.run("replace", "--force", "-f", "-", input=yaml.safe_dump(decoy), check=False)
        live = kubectl.json("get", "serviceaccount", "m", "-n", namespace)
        assert live["metadata"]["labels"].get("decoy") == "1", live["metadata"]
        assert not live["metadata"].get("ownerReferences"), live["metadata"]

    harness.eventually(replaced, timeout=60, interval=1)
    kubectl.apply(model_deployment("m", source=uri, quarantine=True), namespace=namespace)

    def stopped() -> None:
        assert kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"] == 0
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        ready = harness.condition(body, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ChildConflict"), ready
        assert "ServiceAccount m already exists" in ready["message"]

    harness.eventually(stopped, timeout=60)
