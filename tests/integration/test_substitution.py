"""Whoever may write to a version's URI in the store may put other validly signed files there:
another model signed by the same release key, or an older release. The signature cannot say
which version it is (OMS signs no version), so the operator binds it to the spec: the root digest
first verified for a (model, version) stays that version's, unless the spec pins another or the
TrustPolicy accepts re-publications, and then approvals must name the new root digest. Every
change is an explicit refusal or report: Verified condition, Event, audit record."""

from __future__ import annotations

import datetime
import json
import subprocess
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

import signedmodel

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]
ANNOTATION = "modelguard.dev/root-digest"


@pytest.fixture
def policy(
    kubectl: harness.Kubectl,
    namespace: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> Iterator[typing.Callable[..., str]]:
    """Makes a TrustPolicy of the test's own trusting the release key; returns its name."""
    made: list[str] = []

    def make(*, approver_key: str | None = None, **spec: typing.Any) -> str:
        body = signedmodel.trust_policy(
            name=f"p-{namespace}-{len(made)}",
            public_key=signing_key[1],
            sources=model_sources,
            approver_key=approver_key,
        )
        typing.cast(dict[str, typing.Any], body["spec"]).update(spec)
        kubectl.apply(body)
        made.append(str(typing.cast(dict[str, typing.Any], body["metadata"])["name"]))
        return made[-1]

    yield make
    for name in made:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


@pytest.fixture
def audit_log(operator: subprocess.Popen[bytes]) -> Path:
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    return Path(args[args.index("--audit-log") + 1])


def _records(audit_log: Path, uid: str, decision: str) -> list[dict[str, typing.Any]]:
    text = audit_log.read_text()
    found = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [
        r for r in found if (r.get("object") or {}).get("uid") == uid and r["decision"] == decision
    ]


def _digest(s3: typing.Any, uri: str) -> str:
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    return signedmodel.root_digest(s3.get_object(bucket, f"{prefix}model.sig"))


def _wait(
    kubectl: harness.Kubectl, namespace: str, name: str, type: str, *, status: str, reason: str
) -> dict[str, typing.Any]:
    found: dict[str, typing.Any] = {}

    def settled() -> None:
        found.clear()
        body = kubectl.get("modeldeployment", name, namespace=namespace)
        found.update(harness.condition(body, type))
        assert (found.get("status"), found.get("reason")) == (status, reason), found

    harness.eventually(settled, timeout=60)
    return found


def _pinned(kubectl: harness.Kubectl, namespace: str, name: str) -> str:
    deployment = kubectl.json("get", "deployment", name, "-n", namespace)
    return str(deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION])


def _events(kubectl: harness.Kubectl, namespace: str, name: str, reason: str) -> list[str]:
    return [
        e.get("note", "")
        for e in harness.model_events(kubectl, namespace, name)
        if e["reason"] == reason and e["type"] == "Warning"
    ]


def test_another_signed_model_put_under_the_version_is_refused_until_pinned(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    policy: typing.Callable[..., str],
    s3: typing.Any,
    audit_log: Path,
) -> None:
    # No approval needed: the signature alone decides, so only the binding stands in the way.
    open_policy = policy(minApprovals=0)
    uri = publish_model("1.4.0", approve=False)
    first = _digest(s3, uri)
    kubectl.apply(model_deployment("m", source=uri, trustPolicy=open_policy), namespace=namespace)
    body = wait_ready(kubectl, namespace, "m")

    # A bucket writer puts the older release, validly signed by the release key, under 1.4.0.
    assert publish_model("1.4.0", files=signedmodel.demo_files("1.3.0"), approve=False) == uri
    other = _digest(s3, uri)
    assert other != first
    # Nothing changes in the cluster: the operator reads the bundle again on its own.
    refused = _wait(kubectl, namespace, "m", "Verified", status="False", reason="DigestChanged")
    assert first in refused["message"]
    assert other in refused["message"]
    assert f"spec.model.rootDigest: {other}" in refused["message"]
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotVerified")
    assert "1.4.0 keeps serving" in ready["message"]
    assert _pinned(kubectl, namespace, "m") == first
    recorded = kubectl.json("get", "modeldeployment", "m", "-n", namespace)["status"]
    assert [(r["version"], r["rootDigest"]) for r in recorded["verifiedDigests"]] == [
        ("1.4.0", first)
    ]
    assert any(
        first in note and other in note
        for note in _events(kubectl, namespace, "m", "DigestChanged")
    )
    uid = body["metadata"]["uid"]
    harness.eventually(
        lambda: _assert_one(_records(audit_log, uid, "VerificationRefused"), "DigestChanged"),
        timeout=30,
    )

    # The model owner accepts the new files explicitly, in the spec: reported, then rolled out.
    changed = model_deployment("m", source=uri, trustPolicy=open_policy)
    changed["spec"]["model"]["rootDigest"] = other
    kubectl.apply(changed, namespace=namespace)
    harness.eventually(lambda: _assert_pinned(kubectl, namespace, "m", other), timeout=60)
    wait_ready(kubectl, namespace, "m")
    (note,) = _events(kubectl, namespace, "m", "Republished")
    assert f"root {first} replaced by {other}, accepted by spec.model.rootDigest" in note
    harness.eventually(
        lambda: _assert_one(_records(audit_log, uid, "Republished"), "Republished"), timeout=30
    )
    (record,) = _records(audit_log, uid, "Republished")
    assert record["details"] == {
        "version": "1.4.0",
        "previousRootDigest": first,
        "rootDigest": other,
        "acceptedBy": "spec.model.rootDigest",
    }


def _assert_one(records: list[dict[str, typing.Any]], reason: str) -> None:
    assert [r["reason"] for r in records] == [reason]


def _assert_pinned(kubectl: harness.Kubectl, namespace: str, name: str, digest: str) -> None:
    assert _pinned(kubectl, namespace, name) == digest


def test_a_pinned_root_digest_refuses_any_other_signed_files(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    policy: typing.Callable[..., str],
    s3: typing.Any,
) -> None:
    open_policy = policy(minApprovals=0)
    uri = publish_model("1.4.0", approve=False)
    signed = _digest(s3, uri)
    expected = "sha256:" + "0" * 64
    body = model_deployment("m", source=uri, trustPolicy=open_policy)
    body["spec"]["model"]["rootDigest"] = expected
    kubectl.apply(body, namespace=namespace)
    refused = _wait(
        kubectl, namespace, "m", "Verified", status="False", reason="RootDigestPinMismatch"
    )
    assert refused["message"].startswith(
        f"spec.model.rootDigest pins {expected} but {uri}model.sig signs {signed}"
    ), refused["message"]
    assert kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=m")["items"] == []
    # Not a digest: the API server refuses it, naming the field.
    body["spec"]["model"]["rootDigest"] = "sha256:abc"
    result = kubectl.apply(body, namespace=namespace, check=False)
    assert result.returncode != 0
    assert "spec.model.rootDigest" in result.stderr

    body["spec"]["model"]["rootDigest"] = signed
    kubectl.apply(body, namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    assert _pinned(kubectl, namespace, "m") == signed


def test_going_back_to_a_version_re_reads_its_bundle(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    s3: typing.Any,
) -> None:
    # Under the default policy (approvals needed): the approval of 1.4.0's first files must not
    # be carried over to files put under 1.4.0 while 1.5.0 served.
    first_uri = publish_model("1.4.0")
    first = _digest(s3, first_uri)
    second_uri = publish_model("1.5.0")
    kubectl.apply(model_deployment("m", source=first_uri), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    kubectl.apply(model_deployment("m", source=second_uri, version="1.5.0"), namespace=namespace)
    harness.eventually(
        lambda: _assert_pinned(kubectl, namespace, "m", _digest(s3, second_uri)), timeout=60
    )

    def serving_second() -> None:
        # Rolled out, not only pinned: until its pods are ready 1.4.0 is what serves.
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        assert body["status"].get("activeVersion") == "1.5.0", body["status"]

    harness.eventually(serving_second, timeout=60)

    publish_model("1.4.0", files=signedmodel.demo_files("0.9.0"))  # approved, even
    other = _digest(s3, first_uri)
    kubectl.apply(model_deployment("m", source=first_uri), namespace=namespace)
    refused = _wait(kubectl, namespace, "m", "Verified", status="False", reason="DigestChanged")
    assert first in refused["message"]
    assert other in refused["message"]
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotVerified")
    assert "1.5.0 keeps serving" in ready["message"]
    assert _pinned(kubectl, namespace, "m") == _digest(s3, second_uri)


def test_a_republication_is_verified_again_and_needs_approvals_of_its_own(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    policy: typing.Callable[..., str],
    approver_key: tuple[Path, str],
    s3: typing.Any,
    audit_log: Path,
) -> None:
    republishing = policy(approver_key=approver_key[1], onRepublish="Reapprove")
    uri = publish_model("1.4.0")
    first = _digest(s3, uri)
    kubectl.apply(model_deployment("m", source=uri, trustPolicy=republishing), namespace=namespace)
    uid = wait_ready(kubectl, namespace, "m")["metadata"]["uid"]

    # The release pipeline re-publishes 1.4.0 with new files; nobody approved them yet.
    publish_model("1.4.0", files=signedmodel.demo_files("1.4.0-fixed"), approve=False)
    new = _digest(s3, uri)
    changed = model_deployment("m", source=uri, trustPolicy=republishing)
    changed["spec"]["serving"]["replicas"] = 3
    kubectl.apply(changed, namespace=namespace)
    held = _wait(
        kubectl, namespace, "m", "Approved", status="False", reason="ApprovalDigestMismatch"
    )
    assert f"approves root digest {first}, but version 1.4.0 verified as {new}" in held["message"]
    verified = _wait(kubectl, namespace, "m", "Verified", status="True", reason="SignatureVerified")
    assert new in verified["message"]
    ready = _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotApproved")
    assert "1.4.0 keeps serving" in ready["message"]
    assert _pinned(kubectl, namespace, "m") == first
    (note,) = _events(kubectl, namespace, "m", "Republished")
    assert f"root {first} replaced by {new}, accepted by the TrustPolicy's onRepublish" in note
    assert "once approved for the new root digest" in note
    harness.eventually(
        lambda: _assert_one(_records(audit_log, uid, "Republished"), "Republished"), timeout=30
    )

    # An approval of the new root digest alone lets the new files roll out.
    kubectl.apply(
        signedmodel.approval(
            private_key=approver_key[0],
            namespace=namespace,
            model="sentiment-bert",
            version="1.4.0",
            digest=new,
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            name=f"again-{uuid.uuid4().hex[:8]}",
        ),
        namespace=namespace,
    )
    harness.eventually(lambda: _assert_pinned(kubectl, namespace, "m", new), timeout=60)
    body = wait_ready(kubectl, namespace, "m")
    assert body["status"]["verification"]["rootDigest"] == new
    assert body["status"]["verifiedDigests"][0]["rootDigest"] == new


def test_a_required_subject_name_binds_the_signature_to_the_model(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    policy: typing.Callable[..., str],
) -> None:
    # The test pipeline signs a folder named "m": model_signing names the subject after it.
    strict = policy(minApprovals=0, requireSubjectName=True)
    uri = publish_model("1.4.0", approve=False)
    kubectl.apply(model_deployment("m", source=uri, trustPolicy=strict), namespace=namespace)
    refused = _wait(
        kubectl, namespace, "m", "Verified", status="False", reason="SubjectNameMismatch"
    )
    assert "signs a model named 'm', not spec.model.name 'sentiment-bert'" in refused["message"]
