"""The runbooks' procedures (docs/runbooks/) carried out on a real API server as they are written:
a signer rotated with nothing stopping, the signer then revoked quarantining only what it still
vouches for, and a quarantine lifted with the commands the runbook gives."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from test_modeldeployment import model_deployment, wait_ready

import s3server
import signedmodel

pytestmark = pytest.mark.usefixtures("operator", "source_credentials")

NEW_SIGNER = "ml-release-2027"


@pytest.fixture
def policy(
    kubectl: harness.Kubectl,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> Iterator[dict[str, typing.Any]]:
    """A TrustPolicy of the test's own (the session's `default` stays as it is): the session's
    signer and approver."""
    body = signedmodel.trust_policy(
        name=f"runbook-{uuid.uuid4().hex[:8]}",
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    kubectl.apply(body)
    try:
        yield body
    finally:
        kubectl.run("delete", "trustpolicy", body["metadata"]["name"], "--wait=false", check=False)


def _signer(kubectl: harness.Kubectl, namespace: str, name: str) -> str:
    body = kubectl.json("get", "modeldeployment", name, "-n", namespace)
    return str(((body.get("status") or {}).get("verification") or {}).get("signer", ""))


def test_a_signer_is_rotated_without_stopping_a_model_then_revoked(
    kubectl: harness.Kubectl,
    namespace: str,
    policy: dict[str, typing.Any],
    publish_model: typing.Callable[..., str],
    s3: s3server.S3Server,
    model_bucket: str,
    tmp_path: Path,
) -> None:
    name = policy["metadata"]["name"]
    rotated = publish_model("1.4.0")
    stale = publish_model("1.3.0")
    kubectl.apply(
        model_deployment("rotated", source=rotated, trustPolicy=name), namespace=namespace
    )
    kubectl.apply(
        model_deployment("stale", source=stale, version="1.3.0", trustPolicy=name),
        namespace=namespace,
    )
    wait_ready(kubectl, namespace, "rotated")
    wait_ready(kubectl, namespace, "stale")
    assert _signer(kubectl, namespace, "rotated") == "ml-release"

    # 1. The new key is trusted beside the old one.
    new_key, new_public = signedmodel.generate_key(tmp_path, name=NEW_SIGNER)
    old_signers = list(policy["spec"]["signers"])
    policy["spec"]["signers"] = [*old_signers, {"name": NEW_SIGNER, "publicKey": new_public}]
    kubectl.apply(policy)

    # 3. The same files signed with the new key replace model.sig at the source; the operator
    # reads the signature again by itself and rolls out pods pinned to it.
    files = signedmodel.demo_files("1.4.0")
    model = signedmodel.write_model(tmp_path / "resigned" / "m", files)
    signature = signedmodel.sign(model, private_key=new_key, signature=tmp_path / "model.sig")
    signedmodel.publish(
        s3,
        bucket=model_bucket,
        prefix=f"{namespace}/sentiment-bert/1.4.0",
        files=files,
        signature=signature,
    )

    def resigned() -> None:
        assert _signer(kubectl, namespace, "rotated") == NEW_SIGNER

    harness.eventually(resigned, timeout=90, interval=1)
    wait_ready(kubectl, namespace, "rotated")

    # 4. The old signer goes: what it still vouches for is quarantined, the rest serves on.
    policy["spec"]["signers"] = [{"name": NEW_SIGNER, "publicKey": new_public}]
    kubectl.apply(policy)

    def revoked() -> None:
        body = kubectl.json("get", "modeldeployment", "stale", "-n", namespace)
        assert (body["status"].get("quarantine") or {}).get("reason") == "SignerRevoked", body[
            "status"
        ]

    harness.eventually(revoked, timeout=60, interval=0.5)
    # The listing signer-revocation.md watches with.
    listed = kubectl.run(
        "get", "modeldeployments", "-n", namespace, "-o",
        "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,"
        'READY:.status.conditions[?(@.type=="Ready")].reason,QUARANTINE:.status.quarantine.reason',
    ).stdout  # fmt: skip
    rows = {line.split()[1]: line.split()[2:] for line in listed.strip().splitlines()[1:]}
    assert rows == {"rotated": ["Available", "<none>"], "stale": ["Quarantined", "SignerRevoked"]}
    body = kubectl.json("get", "modeldeployment", "rotated", "-n", namespace)
    assert harness.condition(body, "Ready")["status"] == "True", body["status"]
    assert body["status"].get("quarantine") is None
    assert harness.condition(body, "Stalled")["status"] == "False"


def test_a_quarantine_is_lifted_as_the_runbook_says(
    kubectl: harness.Kubectl,
    namespace: str,
    policy: dict[str, typing.Any],
    publish_model: typing.Callable[..., str],
) -> None:
    """docs/runbooks/quarantine.md: quarantine, wait for Stalled, lift through the spec."""
    source = publish_model("1.4.0")
    kubectl.apply(
        model_deployment("m", source=source, trustPolicy=policy["metadata"]["name"]),
        namespace=namespace,
    )
    wait_ready(kubectl, namespace, "m")
    for quarantine in ("true", "false"):
        kubectl.run(
            "patch", "modeldeployment", "m", "-n", namespace, "--type", "merge",
            "-p", f'{{"spec":{{"quarantine":{quarantine}}}}}',
        )  # fmt: skip
        if quarantine == "true":
            kubectl.run(
                "wait", "--for=condition=Stalled", "modeldeployment/m", "-n", namespace,
                "--timeout=60s",
            )  # fmt: skip
            deployment = kubectl.json("get", "deployment", "m", "-n", namespace)
            assert deployment["spec"]["replicas"] == 0
            events = kubectl.run("events", "-n", namespace, "--for", "modeldeployment/m").stdout
            assert "Quarantined" in events, events
    kubectl.run(
        "wait", "--for=condition=Ready", "modeldeployment/m", "-n", namespace, "--timeout=120s"
    )
    listed = kubectl.run(
        "get", "modeldeployments", "-n", namespace, "-o",
        "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,"
        "QUARANTINE:.status.quarantine.reason,SINCE:.status.quarantine.since",
    ).stdout  # fmt: skip
    assert listed.split("\n")[0].split() == ["NAMESPACE", "NAME", "QUARANTINE", "SINCE"]
