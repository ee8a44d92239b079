"""Signature verification in the control plane, end to end: a model signed with model_signing in
a real S3 server, the operator under its chart identity, a TrustPolicy in the cluster.

kwok runs no containers, so the in-pod half (the fetch-verify agent) is proven by its own tests
against the same S3 server; here the pod template must carry it, pinned to the verified digest.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import harness
import pytest
import test_sources_binding
from test_modeldeployment import SELECTOR, model_deployment, source, wait_ready

import s3server
import signedmodel

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")


def _verified(kubectl: harness.Kubectl, namespace: str, name: str) -> dict[str, typing.Any]:
    body = kubectl.get("modeldeployment", name, namespace=namespace)
    condition = harness.condition(body, "Verified")
    assert condition, "no Verified condition yet"
    return condition


def _wait_verified(
    kubectl: harness.Kubectl, namespace: str, name: str, *, status: str, reason: str | None = None
) -> dict[str, typing.Any]:
    found: dict[str, typing.Any] = {}

    def settled() -> None:
        found.update(_verified(kubectl, namespace, name))
        assert found["status"] == status, found
        if reason:
            assert found["reason"] == reason, found

    harness.eventually(settled, timeout=60)
    return found


def test_signed_model_is_verified_and_pinned_into_the_pod(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    body = wait_ready(kubectl, namespace, "m")
    verified = harness.condition(body, "Verified")
    assert (verified["status"], verified["reason"]) == ("True", "SignatureVerified")
    record = body["status"]["verification"]
    assert record["version"] == "1.4.0"
    assert record["rootDigest"].startswith("sha256:")
    assert record["signer"] == "ml-release"
    assert record["files"] == 3
    template = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["template"]
    assert template["metadata"]["annotations"]["modelguard.dev/root-digest"] == record["rootDigest"]
    (agent,) = template["spec"]["initContainers"]
    assert agent["args"][agent["args"].index("--root-digest") + 1] == record["rootDigest"]
    assert agent["args"][agent["args"].index("--source") + 1] == source


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param("untrusted-key", "UntrustedSigner", id="signed-with-an-untrusted-key"),
        pytest.param("garbled-bundle", "MalformedBundle", id="garbled-bundle"),
        pytest.param("truncated-bundle", "MalformedBundle", id="truncated-bundle"),
        pytest.param("wrong-payload-type", "WrongPayloadType", id="wrong-payload-type"),
        pytest.param("no-bundle", "MissingFile", id="signature-missing"),
        pytest.param("source-not-allowed", "SourceNotAllowed", id="source-outside-the-policy"),
    ],
)
def test_unverifiable_model_is_never_rolled_out(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: typing.Callable[..., str],
    tmp_path: Path,
    s3: typing.Any,
    damage: str,
    reason: str,
) -> None:
    uri = publish_model(
        "1.4.0", key=signedmodel.generate_key(tmp_path)[0] if damage == "untrusted-key" else None
    )
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    key = f"{prefix}model.sig"
    bundle = s3.get_object(bucket, key)
    if damage == "garbled-bundle":
        s3.put_object(bucket, key, bundle.replace(b'"', b"'", 3))
    elif damage == "truncated-bundle":
        s3.put_object(bucket, key, bundle[: len(bundle) // 2])
    elif damage == "wrong-payload-type":
        document = json.loads(bundle)
        document["dsseEnvelope"]["payloadType"] = "application/json"
        s3.put_object(bucket, key, json.dumps(document).encode())
    elif damage == "no-bundle":
        s3.delete_object(bucket, key)
    elif damage == "source-not-allowed":
        # The same signed model, copied to a bucket the policy does not list.
        s3.create_bucket(f"elsewhere-{namespace}")
        for name, data in signedmodel.demo_files("1.4.0").items():
            s3.put_object(f"elsewhere-{namespace}", f"m/{name}", data)
        s3.put_object(f"elsewhere-{namespace}", "m/model.sig", bundle)
        uri = f"s3://elsewhere-{namespace}/m/"

    kubectl.apply(model_deployment("bad", source=uri), namespace=namespace)
    condition = _wait_verified(kubectl, namespace, "bad", status="False", reason=reason)
    assert condition["message"]
    body = kubectl.get("modeldeployment", "bad", namespace=namespace)
    ready = harness.condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotVerified")
    assert "nothing was rolled out" in ready["message"]
    assert (
        kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=bad")["items"] == []
    )
    events = harness.model_events(kubectl, namespace, "bad")
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in events)


def test_a_signature_uploaded_after_the_model_deployment_is_picked_up(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: typing.Callable[..., str],
    s3: typing.Any,
) -> None:
    # GitOps applies the ModelDeployment whenever it likes; the pipeline that uploads model.sig
    # may finish later. Nothing in the cluster changes when it does: the operator looks again.
    uri = publish_model("1.4.0")
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    signature = s3.get_object(bucket, f"{prefix}model.sig")
    s3.delete_object(bucket, f"{prefix}model.sig")
    kubectl.apply(model_deployment("late", source=uri), namespace=namespace)
    _wait_verified(kubectl, namespace, "late", status="False", reason="MissingFile")
    generation = kubectl.get("modeldeployment", "late", namespace=namespace)["metadata"][
        "generation"
    ]
    s3.put_object(bucket, f"{prefix}model.sig", signature)
    _wait_verified(kubectl, namespace, "late", status="True", reason="SignatureVerified")
    body = wait_ready(kubectl, namespace, "late")
    assert body["metadata"]["generation"] == generation


def test_a_signature_outside_the_policy_sources_is_not_fetched(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    # The operator would otherwise read whatever URL a spec names, from inside the cluster.
    body = model_deployment("sig-elsewhere", source=source)
    body["spec"]["model"]["signature"] = {"uri": "https://metadata.internal/model.sig"}
    kubectl.apply(body, namespace=namespace)
    condition = _wait_verified(
        kubectl, namespace, "sig-elsewhere", status="False", reason="SourceNotAllowed"
    )
    assert condition["message"].startswith(
        "spec.model.signature: source 'https://metadata.internal/model.sig' matches none of "
        "spec.sources"
    ), condition["message"]


def test_verified_version_keeps_serving_while_an_unverifiable_update_is_held(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    publish_model: typing.Callable[..., str],
    tmp_path: Path,
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    serving = wait_ready(kubectl, namespace, "m")
    before = kubectl.json("get", "deployment", "m", "-n", namespace)

    rogue = publish_model("1.5.0", key=signedmodel.generate_key(tmp_path)[0])
    kubectl.apply(model_deployment("m", source=rogue, version="1.5.0"), namespace=namespace)
    _wait_verified(kubectl, namespace, "m", status="False", reason="UntrustedSigner")

    body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
    ready = harness.condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotVerified")
    assert "1.4.0 keeps serving" in ready["message"]
    assert body["status"]["activeVersion"] == "1.4.0"
    assert body["status"]["verification"] == serving["status"]["verification"]
    after = kubectl.json("get", "deployment", "m", "-n", namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"]["availableReplicas"] == 2


def test_policy_change_re_verifies(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> None:
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    policy = signedmodel.trust_policy(
        name=f"narrow-{namespace}",
        public_key=signing_key[1],
        sources=[{**model_sources[0], "uri": "s3://somewhere-else/"}],
    )
    kubectl.apply(policy)
    try:
        kubectl.apply(
            model_deployment("m", source=source, trustPolicy=f"narrow-{namespace}"),
            namespace=namespace,
        )
        _wait_verified(kubectl, namespace, "m", status="False", reason="SourceNotAllowed")
        # The security owner widens the policy: the operator notices the policy change alone.
        policy["spec"]["sources"] = model_sources  # type: ignore[index]
        kubectl.apply(policy)
        _wait_verified(kubectl, namespace, "m", status="True")
    finally:
        kubectl.run("delete", "trustpolicy", f"narrow-{namespace}", "--wait=false", check=False)


def test_missing_policy_and_credentials_are_named(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.apply(
        model_deployment("nopolicy", source=source, trustPolicy="does-not-exist"),
        namespace=namespace,
    )
    condition = _wait_verified(
        kubectl, namespace, "nopolicy", status="False", reason="PolicyNotFound"
    )
    assert "spec.trustPolicy" in condition["message"]
    assert '"does-not-exist"' in condition["message"]

    body = model_deployment("nocreds", source=source)
    body["spec"]["model"]["source"]["credentialsSecret"] = "no-such-secret"
    kubectl.apply(body, namespace=namespace)
    condition = _wait_verified(
        kubectl, namespace, "nocreds", status="False", reason="CredentialsNotFound"
    )
    assert "spec.model.source.credentialsSecret" in condition["message"]


def test_credentials_of_a_namespace_that_granted_nothing_are_not_read(
    kubectl: harness.Kubectl, namespace: str, source: str
) -> None:
    kubectl.run("delete", "rolebinding", "modelguard-source-credentials", "-n", namespace)
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    condition = _wait_verified(
        kubectl, namespace, "m", status="False", reason="CredentialsForbidden"
    )
    assert "RoleBinding" in condition["message"]
    assert "ClusterRole modelguard-test-source-credentials" in condition["message"]


def _with_policy(
    kubectl: harness.Kubectl, name: str, *, signing_key: tuple[Path, str], sources: list[typing.Any]
) -> None:
    kubectl.apply(signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=sources))


def test_the_s3_endpoint_is_the_policys_not_the_secrets(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    s3: s3server.S3Server,
) -> None:
    # The tenant's Secret points at a server (here the test's own); a policy that names no
    # endpoint means AWS S3 alone, so the operator refuses instead of fetching from there.
    name = f"aws-only-{namespace}"
    _with_policy(kubectl, name, signing_key=signing_key, sources=[{"uri": "s3://models/"}])
    try:
        kubectl.apply(model_deployment("m", source=source, trustPolicy=name), namespace=namespace)
        condition = _wait_verified(
            kubectl, namespace, "m", status="False", reason="SourceEndpointNotAllowed"
        )
        assert condition["message"].startswith(
            'spec.model.signature: Secret "models-readonly" key AWS_ENDPOINT_URL names the S3 '
            f"endpoint '{s3.endpoint}'"
        ), condition["message"]
        assert "spec.sources[0].endpoint is AWS S3" in condition["message"]
        found = kubectl.run("get", "deployment", "m", "-n", namespace, check=False)
        assert found.returncode != 0, "nothing is rolled out"
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_loopback_endpoint_is_reached_only_by_its_address(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    s3: s3server.S3Server,
) -> None:
    # The same server named by a name that resolves to loopback: refused before any request.
    by_name = s3.endpoint.replace("127.0.0.1", "localhost")
    secret = signedmodel.credentials_secret(s3, name="by-name")
    secret["stringData"]["AWS_ENDPOINT_URL"] = by_name  # type: ignore[index]
    kubectl.apply(secret, namespace=namespace)
    name = f"by-name-{namespace}"
    _with_policy(
        kubectl,
        name,
        signing_key=signing_key,
        sources=[{"uri": "s3://models/", "endpoint": by_name}],
    )
    try:
        body = model_deployment("m", source=source, trustPolicy=name)
        body["spec"]["model"]["source"]["credentialsSecret"] = "by-name"
        kubectl.apply(body, namespace=namespace)
        condition = _wait_verified(
            kubectl, namespace, "m", status="False", reason="SourceAddressRefused"
        )
        assert "resolves to" in condition["message"]
        assert "loopback" in condition["message"]
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_claim_of_another_namespace_is_not_admitted(
    kubectl: harness.Kubectl, namespace: str, signing_key: tuple[Path, str], trust_policy: str
) -> None:
    del trust_policy
    name = f"claims-{namespace}"
    _with_policy(
        kubectl,
        name,
        signing_key=signing_key,
        sources=[{"uri": "pvc://model-store/", "namespace": "ml-store"}],
    )
    try:
        body = model_deployment("m", source="pvc://model-store/bert/", trustPolicy=name)
        del body["spec"]["model"]["source"]["credentialsSecret"]
        kubectl.apply(body, namespace=namespace)
        condition = _wait_verified(
            kubectl, namespace, "m", status="False", reason="SourceNotAllowed"
        )
        assert f"is a claim of namespace {namespace}" in condition["message"]
        assert "in namespace ml-store" in condition["message"]
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_what_a_source_says_reaches_the_status_bounded_and_quoted(
    kubectl: harness.Kubectl, namespace: str, signing_key: tuple[Path, str], s3: s3server.S3Server
) -> None:
    # An S3 endpoint the policy names (on loopback, by address) answers with a crafted error.
    body_text = (
        "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>no\nReady=True "
        + "A" * 50_000
        + "</Message></Error>"
    ).encode()
    with test_sources_binding.serving(test_sources_binding.Server()) as server:
        server.errors["/models/m/model.sig"] = (403, body_text)
        secret = signedmodel.credentials_secret(s3, name="crafted")
        secret["stringData"]["AWS_ENDPOINT_URL"] = server.base  # type: ignore[index]
        kubectl.apply(secret, namespace=namespace)
        name = f"crafted-{namespace}"
        _with_policy(
            kubectl,
            name,
            signing_key=signing_key,
            sources=[{"uri": "s3://models/", "endpoint": server.base}],
        )
        try:
            body = model_deployment("m", source="s3://models/m/", trustPolicy=name)
            body["spec"]["model"]["source"]["credentialsSecret"] = "crafted"
            kubectl.apply(body, namespace=namespace)
            condition = _wait_verified(
                kubectl, namespace, "m", status="False", reason="SourceDenied"
            )
        finally:
            kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)
    message = condition["message"]
    assert "HTTP 403, the source answered: 'AccessDenied: no\\nReady=True AAA" in message
    assert "\n" not in message
    assert len(message) < 1000
