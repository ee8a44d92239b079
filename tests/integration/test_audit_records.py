"""Quarantine, automatic or through the spec, and its lifting leave audit records naming the
model's uid, in a chain that `modelguard audit verify` accepts and that fails, naming the line,
once one byte of a record is changed."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import harness
import pytest
from test_modeldeployment import model_deployment, source, wait_ready

import signedmodel

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

Record = dict[str, typing.Any]


@pytest.fixture
def audit_log(operator: subprocess.Popen[bytes]) -> Path:
    """The operator's --audit-log, read from its own command line."""
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    return Path(args[args.index("--audit-log") + 1])


def _snapshot(audit_log: Path, into: Path) -> Path:
    """The log's complete lines: the operator keeps appending while the test reads."""
    data = audit_log.read_bytes()
    into.write_bytes(data[: data.rfind(b"\n") + 1])
    return into


def _records_of(audit_log: Path, uid: str) -> list[Record]:
    text = audit_log.read_text()
    complete = text[: text.rfind("\n") + 1]
    found = [json.loads(line) for line in complete.splitlines()]
    return [record for record in found if (record.get("object") or {}).get("uid") == uid]


def _decisions(audit_log: Path, uid: str) -> list[str]:
    return [record["decision"] for record in _records_of(audit_log, uid)]


def _audit_verify(
    path: Path, operator: subprocess.Popen[bytes]
) -> subprocess.CompletedProcess[str]:
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    key = args[args.index("--audit-key-file") + 1]
    return subprocess.run(
        [sys.executable, "-m", "modelguard.cli", "audit", "verify", str(path), "--key-file", key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_quarantine_through_the_spec_and_its_lifting_are_audited(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    audit_log: Path,
    tmp_path: Path,
    operator: subprocess.Popen[bytes],
) -> None:
    kubectl.apply(model_deployment("a", source=source), namespace=namespace)
    uid = wait_ready(kubectl, namespace, "a")["metadata"]["uid"]

    def rolled_out() -> None:
        assert _decisions(audit_log, uid) == ["Verified", "Approved", "RolledOut"]

    harness.eventually(rolled_out, timeout=30)

    kubectl.apply(model_deployment("a", source=source, quarantine=True), namespace=namespace)

    def quarantined() -> None:
        found = [r for r in _records_of(audit_log, uid) if r["decision"] == "Quarantined"]
        assert len(found) == 1
        record = found[0]
        assert record["reason"] == "SpecQuarantine"
        assert record["details"] == {"version": "1.4.0", "trigger": "spec.quarantine"}
        assert record["object"] == {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "namespace": namespace,
            "name": "a",
            "uid": uid,
            "generation": 2,
        }

    harness.eventually(quarantined, timeout=60)

    kubectl.apply(model_deployment("a", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "a")

    def lifted() -> None:
        decisions = _decisions(audit_log, uid)
        after = decisions[decisions.index("Quarantined") + 1 :]
        assert "QuarantineLifted" in after
        assert "RolledOut" in after[after.index("QuarantineLifted") :]
        found = [r for r in _records_of(audit_log, uid) if r["decision"] == "QuarantineLifted"]
        assert [r["object"]["generation"] for r in found] == [3]

    harness.eventually(lifted, timeout=60)

    intact = _snapshot(audit_log, tmp_path / "audit.jsonl")
    checked = _audit_verify(intact, operator)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.endswith("chain intact\n")
    assert checked.stdout.split()[0] == str(len(intact.read_text().splitlines()))

    # One byte of the Quarantined record changed: verify fails and names that line.
    lines = intact.read_bytes().splitlines(keepends=True)
    number = next(
        n
        for n, line in enumerate(lines, start=1)
        if b'"decision":"Quarantined"' in line and uid.encode() in line
    )
    at = lines[number - 1].index(b'"SpecQuarantine"') + 1
    lines[number - 1] = lines[number - 1][:at] + b"N" + lines[number - 1][at + 1 :]
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(lines))
    refused = _audit_verify(edited, operator)
    assert refused.returncode == 1
    seq = json.loads(lines[number - 1])["seq"]
    assert refused.stderr == (
        f"line {number}: seq {seq} was edited: its hash does not match its content\n"
    )


def test_a_revoked_signer_quarantine_is_audited_with_its_reason(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
    audit_log: Path,
    tmp_path: Path,
) -> None:
    name = f"audited-{namespace}"
    policy = signedmodel.trust_policy(
        name=name, public_key=signing_key[1], sources=model_sources, approver_key=approver_key[1]
    )
    kubectl.apply(policy)
    try:
        kubectl.apply(model_deployment("r", source=source, trustPolicy=name), namespace=namespace)
        uid = wait_ready(kubectl, namespace, "r")["metadata"]["uid"]
        policy["spec"]["signers"] = [  # type: ignore[index]
            {"name": "successor", "publicKey": signedmodel.generate_key(tmp_path)[1]}
        ]
        kubectl.apply(policy)

        def quarantined() -> None:
            records = _records_of(audit_log, uid)
            assert len(records) >= 2
            refused, quarantine = records[-2:]
            assert (refused["decision"], refused["reason"]) == (
                "VerificationRefused",
                "UntrustedSigner",
            )
            assert (quarantine["decision"], quarantine["reason"]) == (
                "Quarantined",
                "SignerRevoked",
            )
            assert quarantine["details"]["trigger"] == "automatic"
            # The same generation: the policy changed, not the spec.
            assert quarantine["object"]["generation"] == 1

        harness.eventually(quarantined, timeout=60)
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_reverted_drift_is_audited_naming_the_child_and_who_changed_it(
    kubectl: harness.Kubectl, namespace: str, source: str, audit_log: Path
) -> None:
    kubectl.apply(model_deployment("d", source=source), namespace=namespace)
    uid = wait_ready(kubectl, namespace, "d")["metadata"]["uid"]
    kubectl.run(
        "set",
        "image",
        "deployment/d",
        f"model-server=registry.example/evil@sha256:{'e' * 64}",
        "-n",
        namespace,
        *harness.BREAK_GLASS,
    )

    def recorded() -> None:
        found = [r for r in _records_of(audit_log, uid) if r["decision"] == "DriftReverted"]
        assert [r["details"] for r in found] == [
            {"child": "Deployment/d", "managers": ["kubectl-set"]}
        ]

    harness.eventually(recorded, timeout=30)


def test_a_lone_surrogate_in_a_key_hint_drops_no_status_event_or_record(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    s3: typing.Any,
    audit_log: Path,
    tmp_path: Path,
    operator: subprocess.Popen[bytes],
) -> None:
    # The signature file is the tenant's: its key hint may be any JSON string, a lone
    # surrogate included, which UTF-8 (and so the API server and the audit log) cannot carry.
    bucket, prefix = source.removeprefix("s3://").split("/", 1)
    document = json.loads(s3.get_object(bucket, f"{prefix}model.sig"))
    document["verificationMaterial"]["publicKey"]["hint"] = "\udc80\n{forged}"
    s3.put_object(bucket, f"{prefix}model.sig", json.dumps(document).encode())

    kubectl.apply(model_deployment("hint", source=source), namespace=namespace)

    def refused() -> None:
        body = kubectl.get("modeldeployment", "hint", namespace=namespace)
        verified = harness.condition(body, "Verified")
        assert (verified.get("status"), verified.get("reason")) == ("False", "UntrustedSigner")
        # Both escaped: the surrogate UTF-8 cannot carry, and the line break `kubectl describe`
        # would print as a row of its own.
        assert "sha256:\\udc80\\n{forged}" in verified["message"]
        assert "\n" not in verified["message"]
        uid = body["metadata"]["uid"] if body else ""
        assert "VerificationRefused" in _decisions(audit_log, uid)
        assert any(
            e["reason"] == "UntrustedSigner"
            for e in harness.model_events(kubectl, namespace, "hint")
        )

    harness.eventually(refused, timeout=60)
    checked = _audit_verify(_snapshot(audit_log, tmp_path / "audit.jsonl"), operator)
    assert checked.returncode == 0, checked.stderr
