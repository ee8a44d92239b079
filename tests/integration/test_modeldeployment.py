"""The walking operator on the real control plane: `modelguard run`, under the chart's own
ServiceAccount, turns a ModelDeployment into restricted, owned children and reports Ready."""

from __future__ import annotations

import subprocess
import typing

import harness
import pytest

SELECTOR = "modelguard.dev/model-deployment"
DIGEST = "sha256:" + "4f" * 32
CHILD_KINDS = "serviceaccounts,deployments,services,networkpolicies"

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def source(
    publish_model: typing.Callable[..., str], source_credentials: str, trust_policy: str
) -> str:
    """A model signed by the trusted key, published to the test's prefix in the S3 server."""
    del source_credentials, trust_policy
    return publish_model("1.4.0")


def model_deployment(
    name: str, *, source: str, version: str = "1.4.0", **spec: typing.Any
) -> dict[str, typing.Any]:
    body: dict[str, typing.Any] = {
        "model": {
            "name": "sentiment-bert",
            "version": version,
            "source": {"uri": source, "credentialsSecret": "models-readonly"},
        },
        "serving": {"image": f"registry.example/model-server@{DIGEST}", "replicas": 2},
    }
    body.update(spec)
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def children(kubectl: harness.Kubectl, namespace: str, name: str) -> list[dict[str, typing.Any]]:
    items: list[dict[str, typing.Any]] = kubectl.json(
        "get", CHILD_KINDS, "-n", namespace, "-l", f"{SELECTOR}={name}", "--show-managed-fields"
    )["items"]
    return items


def wait_ready(kubectl: harness.Kubectl, namespace: str, name: str) -> dict[str, typing.Any]:
    kubectl.run(
        "wait", "--for=condition=Ready", f"modeldeployment/{name}", "-n", namespace, "--timeout=90s"
    )
    return kubectl.json("get", "modeldeployment", name, "-n", namespace)


def test_create_builds_owned_children_and_becomes_ready(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("sentiment", source=source), namespace=namespace)
    body = wait_ready(kubectl, namespace, "sentiment")

    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["activeVersion"] == "1.4.0"
    # Deleting a model must never depend on the operator being up.
    assert not body["metadata"].get("finalizers")
    kinds = sorted(child["kind"] for child in children(kubectl, namespace, "sentiment"))
    assert kinds.count("ServiceAccount") == 1
    assert kinds.count("Deployment") == 1
    assert kinds.count("Service") == 1
    assert kinds.count("NetworkPolicy") >= 1
    for child in children(kubectl, namespace, "sentiment"):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ModelDeployment",
            "sentiment",
            body["metadata"]["uid"],
            True,
        )
        managers = {entry["manager"] for entry in child["metadata"]["managedFields"]}
        assert "modelguard" in managers

    account = kubectl.json("get", "serviceaccounts", "-n", namespace, "-l", f"{SELECTOR}=sentiment")
    assert account["items"][0]["automountServiceAccountToken"] is False
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=sentiment")["items"]
    assert len(pods) == 2
    assert all(pod["spec"]["automountServiceAccountToken"] is False for pod in pods)

    policies = kubectl.json(
        "get", "networkpolicies", "-n", namespace, "-l", f"{SELECTOR}=sentiment"
    )["items"]
    assert any(
        sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no default-deny NetworkPolicy"


def test_spec_change_updates_children_and_no_change_writes_nothing(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")

    kubectl.apply(
        model_deployment(
            "m",
            source=source,
            serving={
                "image": f"registry.example/model-server@{DIGEST}",
                "replicas": 3,
                "port": 9000,
            },
        ),
        namespace=namespace,
    )

    def updated() -> None:
        deployment = kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=m")
        spec = deployment["items"][0]["spec"]
        assert spec["replicas"] == 3
        ports = spec["template"]["spec"]["containers"][0]["ports"]
        assert [p["containerPort"] for p in ports] == [9000]
        service = kubectl.json("get", "services", "-n", namespace, "-l", f"{SELECTOR}=m")
        assert [p["targetPort"] for p in service["items"][0]["spec"]["ports"]] in (
            [9000],
            ["http"],
        )

    harness.eventually(updated, timeout=60)
    body = wait_ready(kubectl, namespace, "m")
    harness.eventually(
        lambda: _assert_observed(kubectl, namespace, "m", body["metadata"]["generation"]),
        timeout=60,
    )

    before = {
        c["kind"]: c["metadata"]["resourceVersion"]
        for c in children(kubectl, namespace, "m")
        if c["kind"] != "Deployment"
    }
    deployment_before = _deployment_generation(kubectl, namespace, "m")
    # A metadata-only change makes the operator reconcile again with an unchanged intent.
    kubectl.run("annotate", "modeldeployment", "m", "-n", namespace, "example.com/touched=1")

    def reconciled_again() -> None:
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        handled = body["metadata"]["annotations"].get(
            "modelguard.dev/last-handled-configuration", ""
        )
        assert "example.com/touched" in handled

    harness.eventually(reconciled_again, timeout=60)
    after = {
        c["kind"]: c["metadata"]["resourceVersion"]
        for c in children(kubectl, namespace, "m")
        if c["kind"] != "Deployment"
    }
    assert after == before, "children were written although nothing changed"
    assert _deployment_generation(kubectl, namespace, "m") == deployment_before


def test_delete_garbage_collects_children(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("gone", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "gone")
    kubectl.run("delete", "modeldeployment", "gone", "-n", namespace, "--wait=true")

    def collected() -> None:
        assert children(kubectl, namespace, "gone") == []
        assert kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}=gone")["items"] == []

    harness.eventually(collected, timeout=90)


def test_restricted_namespace_admits_every_child_without_warnings(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    labels = kubectl.json("get", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl.apply(model_deployment("strict", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "strict")
    for child in children(kubectl, namespace, "strict"):
        manifest = {
            "apiVersion": child["apiVersion"],
            "kind": child["kind"],
            "metadata": {"name": f"{child['metadata']['name']}-copy"},
            "spec": child.get("spec"),
        }
        if child["kind"] == "ServiceAccount":
            manifest.pop("spec")
        if child["kind"] == "Service":
            manifest["spec"] = {
                k: v for k, v in child["spec"].items() if k not in {"clusterIP", "clusterIPs"}
            }
        result = kubectl.apply(manifest, namespace=namespace, extra=("--dry-run=server",))
        assert "Warning" not in result.stderr, f"{child['kind']}: {result.stderr}"
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector=reason=FailedCreate")
    assert events["items"] == []


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("registry.example/model-server:1.0", id="tag"),
        pytest.param("registry.example/model-server", id="no-tag-no-digest"),
        pytest.param("registry.example/model-server@sha256:abc", id="short-digest"),
    ],
)
def test_image_not_pinned_by_digest_is_refused_naming_the_field(
    kubectl: harness.Kubectl, namespace: str, image: str
) -> None:
    result = kubectl.apply(
        model_deployment("tagged", source="s3://models/x/", serving={"image": image}),
        namespace=namespace,
        check=False,
    )
    assert result.returncode != 0
    assert "spec.serving.image" in result.stderr
    assert kubectl.get("modeldeployment", "tagged", namespace=namespace) is None


def test_events_tell_what_was_applied(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("told", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "told")

    def posted() -> None:
        events = harness.model_events(kubectl, namespace, "told")
        reasons = {event["reason"] for event in events}
        assert {"Applied", "Available"} <= reasons, reasons
        others = [e for e in events if e["reportingController"] != "modelguard.dev/operator"]
        assert not others, [(e["reportingController"], e["reason"], e.get("note")) for e in others]

    harness.eventually(posted, timeout=30)


def _assert_observed(kubectl: harness.Kubectl, namespace: str, name: str, generation: int) -> None:
    body = kubectl.json("get", "modeldeployment", name, "-n", namespace)
    assert body["status"]["observedGeneration"] == generation
    ready = harness.condition(body, "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] == generation


def _deployment_generation(kubectl: harness.Kubectl, namespace: str, name: str) -> int:
    items = kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}={name}")["items"]
    return int(items[0]["metadata"]["generation"])


def test_operator_is_running(operator: subprocess.Popen[bytes]) -> None:
    assert operator.poll() is None
