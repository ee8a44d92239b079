"""Quarantine, automatic or through the spec, and its lifting leave audit records naming the
model's uid, in a log that `modelguard audit verify` proves against the checkpoints the operator
stored in the API server, and that fails, naming the line, once one byte of a record is changed
or its tail is cut. The checkpoints are immutable ConfigMaps the operator cannot rewrite, and a
stopped operator closes its segment with a last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing
import uuid
from pathlib import Path

import harness
import pytest
from test_modeldeployment import model_deployment, source, wait_ready

import signedmodel
from modelguard.reconcile import checkpoints as publishing

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

Record = dict[str, typing.Any]
# As tests/integration/conftest.py installs the chart and runs the operator.
OPERATOR_NAMESPACE = "modelguard-system"
RELEASE = "modelguard"
AGENT_IMAGE = f"{harness.IMAGE_REPOSITORY}@{harness.IMAGE_DIGEST}"
PREFIX = f"{RELEASE}-audit"
LOG_LABEL = publishing.LOG_LABEL


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


def _option(operator: subprocess.Popen[bytes], name: str) -> str:
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    return args[args.index(name) + 1]


def _public_key(operator: subprocess.Popen[bytes]) -> str:
    """The log's verifier key, as a platform team takes it from the key at install."""
    return _cli(
        "audit",
        "public-key",
        "--key-file",
        _option(operator, "--audit-key-file"),
        "--log-name",
        _option(operator, "--audit-log-name"),
    ).stdout.strip()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _checkpoints(kubectl: harness.Kubectl, into: Path) -> Path:
    """The checkpoints as a verifier fetches them: `kubectl get configmaps -l ... -o json`."""
    # The checkpoints only, not the head: another test's operator may have moved it on to a
    # segment that is not in this log.
    selector = f"{LOG_LABEL}={PREFIX},{publishing.SEGMENT_LABEL}"
    listed = kubectl.run(
        "get", "configmaps", "-n", OPERATOR_NAMESPACE, "-l", selector, "-o", "json"
    )
    into.write_text(listed.stdout)
    return into


def _started(audit_log: Path) -> str:
    """When the operator's segment of this session started: earlier sessions' segments (a
    cluster that outlived them) are not in this log."""
    with audit_log.open() as lines:
        first = json.loads(next(lines))
    return str(first["time"])[:19] + "Z"


def _audit_verify(
    path: Path,
    operator: subprocess.Popen[bytes],
    kubectl: harness.Kubectl,
    *,
    checkpoints: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    # The checkpoints are fetched before the log is read: a checkpoint covers records written
    # before it, so the log read after holds them all.
    source = checkpoints or _checkpoints(kubectl, path.with_name(path.name + ".checkpoints.json"))
    return _cli(
        "audit",
        "verify",
        str(path),
        "--public-key",
        _public_key(operator),
        "--checkpoints",
        str(source),
        "--since",
        _started(path),
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

    checkpoints = _checkpoints(kubectl, tmp_path / "checkpoints.json")
    intact = _snapshot(audit_log, tmp_path / "audit.jsonl")
    checked = _audit_verify(intact, operator, kubectl, checkpoints=checkpoints)
    assert checked.returncode == 0, checked.stderr
    assert " chain intact; " in checked.stdout
    assert "checkpoints proven" in checked.stdout
    assert checked.stdout.split()[0] == str(len(intact.read_text().splitlines()))

    # One byte of the Quarantined record changed: verify fails and names that line.
    lines = intact.read_bytes().splitlines(keepends=True)
    number = next(
        n
        for n, line in enumerate(lines, start=1)
        if b'"decision":"Quarantined"' in line and uid.encode() in line
    )
    at = lines[number - 1].index(b'"SpecQuarantine"') + 1
    edited_lines = [*lines]
    edited_lines[number - 1] = lines[number - 1][:at] + b"N" + lines[number - 1][at + 1 :]
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(edited_lines))
    refused = _audit_verify(edited, operator, kubectl, checkpoints=checkpoints)
    assert refused.returncode == 1
    seq = json.loads(lines[number - 1])["seq"]
    assert refused.stderr == (
        f"line {number}: seq {seq} was edited: its hash does not match its content\n"
    )


def test_a_cut_tail_of_the_log_shows_against_the_stored_checkpoints(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    audit_log: Path,
    tmp_path: Path,
    operator: subprocess.Popen[bytes],
) -> None:
    kubectl.apply(model_deployment("t", source=source), namespace=namespace)
    uid = wait_ready(kubectl, namespace, "t")["metadata"]["uid"]
    harness.eventually(lambda: _rolled_out(audit_log, uid), timeout=30)
    # Wait for a checkpoint that covers the RolledOut record, then cut the log before it.
    covered: list[Path] = []

    def checkpointed() -> None:
        checkpoints = _checkpoints(kubectl, tmp_path / "checkpoints.json")
        log = _snapshot(audit_log, tmp_path / "audit.jsonl")
        result = _audit_verify(log, operator, kubectl, checkpoints=checkpoints)
        assert result.returncode == 0, result.stderr
        assert "not yet proven" not in result.stdout, result.stdout
        covered[:] = [log, checkpoints]

    harness.eventually(checkpointed, timeout=30)
    log, checkpoints = covered
    lines = log.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]))
    # The chain alone cannot see it: nothing follows the cut.
    assert (
        _cli(
            "audit", "verify", str(cut), "--public-key", _public_key(operator), "--no-checkpoints"
        ).returncode
        == 0
    )
    refused = _audit_verify(cut, operator, kubectl, checkpoints=checkpoints)
    assert refused.returncode == 1
    assert f"ends at seq {len(lines) - 2}, but checkpoint " in refused.stderr
    assert refused.stderr.endswith(f"the last record (seq {len(lines) - 1}) is missing\n")


def _rolled_out(audit_log: Path, uid: str) -> None:
    assert "RolledOut" in _decisions(audit_log, uid)


def test_checkpoints_are_immutable_configmaps_the_operator_cannot_rewrite(
    kubectl: harness.Kubectl, operator: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    listed = json.loads(_checkpoints(kubectl, tmp_path / "checkpoints.json").read_text())
    stored = [item for item in listed["items"] if item["metadata"]["name"] != f"{PREFIX}-head"]
    assert stored, "the operator stored no checkpoint"
    assert all(item["immutable"] is True for item in stored)
    name = stored[0]["metadata"]["name"]
    identity = f"system:serviceaccount:{OPERATOR_NAMESPACE}:modelguard"

    def can(verb: str, resource: str) -> bool:
        found = kubectl.run(
            "auth",
            "can-i",
            verb,
            resource,
            f"--as={identity}",
            "-n",
            OPERATOR_NAMESPACE,
            check=False,
        )
        return found.stdout.strip() == "yes"

    assert can("create", "configmaps")
    assert not can("update", f"configmaps/{name}")
    assert not can("patch", f"configmaps/{name}")
    assert not can("delete", f"configmaps/{name}")
    assert not can("list", "configmaps")
    assert can("update", f"configmaps/{PREFIX}-head")
    # Immutable: not even the cluster's admin can change one; only delete it.
    changed = {**stored[0], "data": {**stored[0]["data"], "checkpoint": "forged"}}
    refused = kubectl.run("replace", "-f", "-", input=json.dumps(changed), check=False)
    assert refused.returncode != 0
    assert "field is immutable when `immutable` is set" in refused.stderr
    # What the operator's identity may create is bounded by the admission policy: a mutable
    # ConfigMap, or one that is not this log's, is refused by the API server.
    metadata = {"name": f"{PREFIX}-x", "labels": stored[0]["metadata"]["labels"]}
    for manifest in (
        {**stored[0], "metadata": metadata, "immutable": False},
        {**stored[0], "metadata": {**metadata, "labels": {}}},
        {**stored[0], "metadata": metadata, "data": {"checkpoint": "x", "script.sh": "curl evil"}},
    ):
        attempt = kubectl.run(
            "create",
            "--dry-run=server",
            f"--as={identity}",
            "-n",
            OPERATOR_NAMESPACE,
            "-f",
            "-",
            input=json.dumps(manifest),
            check=False,
        )
        assert attempt.returncode != 0, manifest
        assert "operator-configmaps" in attempt.stderr, attempt.stderr
    # Each note verifies under the log's key.
    checked = _cli(
        "audit",
        "verify",
        str(_snapshot(Path(_option(operator, "--audit-log")), tmp_path / "audit.jsonl")),
        "--public-key",
        _public_key(operator),
        "--checkpoints",
        str(tmp_path / "checkpoints.json"),
        "--since",
        _started(Path(_option(operator, "--audit-log"))),
    )
    assert checked.returncode == 0, checked.stderr


def test_a_stopped_operator_closes_its_segment_with_a_last_checkpoint(
    kubectl: harness.Kubectl,
    operator: subprocess.Popen[bytes],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # A second operator of the same installation, watching an empty namespace, so that it
    # decides nothing the session's operator decides: its segment is its start and its stop.
    empty = f"empty-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", empty)
    identity = harness.token_kubeconfig(
        kubectl,
        namespace=OPERATOR_NAMESPACE,
        service_account="modelguard",
        path=tmp_path / "second.kubeconfig",
    )
    # What the head names now: the new segment's first record must name the same segment (the
    # session operator only moves it on within its own segment meanwhile).
    head = kubectl.get("configmap", f"{PREFIX}-head", namespace=OPERATOR_NAMESPACE)
    head_note = ((head or {}).get("data") or {}).get("checkpoint", "")
    head_origin = head_note.split("\n", 1)[0]
    log = tmp_path / "second.jsonl"
    args = [
        *("--audit-key-file", _option(operator, "--audit-key-file")),
        *("--audit-log-name", _option(operator, "--audit-log-name")),
        *("--audit-checkpoints-namespace", OPERATOR_NAMESPACE),
        *("--audit-checkpoints-prefix", PREFIX),
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(identity.kubeconfig),
        "POD_NAME": "modelguard-second",
        "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
    }
    with (tmp_path / "second.log").open("wb") as output:
        second = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelguard.cli",
                "run",
                "-n",
                empty,
                "--audit-log",
                str(log),
                *args,
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        harness.eventually(lambda: _has_lines(log, 1), timeout=30)
        time.sleep(2)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        assert second.wait(timeout=30) == 0, (tmp_path / "second.log").read_text()
        kubectl.run("delete", "namespace", empty, "--wait=false", check=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    segment = records[0]["details"]["origin"].rsplit("/", 1)[1]
    request.addfinalizer(
        # Its segment is not in the session operator's log, which other tests verify: an admin
        # removes its checkpoints (the operator could not).
        lambda: kubectl.run(
            "delete",
            "configmaps",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            f"{publishing.SEGMENT_LABEL}={segment}",
        )
    )
    assert [r["decision"] for r in records] == ["AuditChainStarted", "AuditChainClosed"]
    started = records[0]["details"]
    checkpoints = _checkpoints(kubectl, tmp_path / "checkpoints.json")
    if head_origin.startswith(_option(operator, "--audit-log-name") + "/"):
        # It found the newest checkpoint of this log in the head and named it: one that is
        # stored, with the same root.
        previous = started["previous"]
        assert previous["origin"] == head_origin
        stored = {
            tuple(item["data"]["checkpoint"].split("\n")[:3])
            for item in json.loads(checkpoints.read_text())["items"]
        }
        assert (previous["origin"], str(previous["size"]), previous["root"]) in stored
    # The last checkpoint covers the closing record: nothing is left unproven.
    checked = _cli(
        "audit",
        "verify",
        str(log),
        "--public-key",
        _public_key(operator),
        "--checkpoints",
        str(checkpoints),
        "--since",
        _started(log),
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("2 records in 1 segment, chain intact; ")
    assert "not yet proven" not in checked.stdout


def _has_lines(path: Path, count: int) -> None:
    assert path.exists()
    assert len(path.read_text().splitlines()) >= count


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
    checkpoints = _checkpoints(kubectl, tmp_path / "checkpoints.json")
    checked = _audit_verify(
        _snapshot(audit_log, tmp_path / "audit.jsonl"), operator, kubectl, checkpoints=checkpoints
    )
    assert checked.returncode == 0, checked.stderr
