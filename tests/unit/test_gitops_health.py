"""What GitOps tools make of the status the operator writes, by their own code (tests/gitopshealth,
Go): kstatus, which Flux and kpt use, says Current, InProgress or Failed where a platform engineer
would; Argo CD's Lua health checks (manifests/gitops/argocd), run by gopher-lua set up as Argo CD
sets it up, say Healthy, Progressing, Degraded or Suspended, case by case in Argo CD's
health_test.yaml layout.

The ModelDeployment test inputs are the statuses decide.py writes for the named cases of
test_reconcile_decide, kept in manifests/gitops/argocd/.../testdata and compared with what it
writes now (MODELGUARD_UPDATE_TESTDATA=1 rewrites them). tests/integration/test_gitops_readback.py
does the same with objects read back from a real API server.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import subprocess
import typing
from pathlib import Path

import pytest
import test_reconcile_decide as cases
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import gotest
from modelguard.admission import decisions
from modelguard.api import trustpolicy
from modelguard.reconcile import decide, observations
from modelguard.trust import approval

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tests" / "gitopshealth"
CHECKS = REPO / "manifests" / "gitops" / "argocd"
MODEL_DEPLOYMENT = CHECKS / "modelguard.dev" / "ModelDeployment"
Manifest = dict[str, typing.Any]


@pytest.fixture(scope="session")
def gitopshealth() -> Path:
    return gotest.build(SOURCE)


def read_objects(binary: Path, objects: list[Manifest]) -> list[Manifest]:
    """kstatus and Argo CD's health of each object."""
    done = subprocess.run(
        [str(binary), "objects", str(CHECKS)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: list[Manifest] = json.loads(done.stdout)
    return answer


# --- the status shapes decide.py writes -----------------------------------------------------------


def _outcome(seen: observations.Observed) -> decide.Outcome:
    return decide.decide(seen, agent_image=cases.AGENT)


def _steady() -> decide.Outcome:
    return _outcome(cases._steady())


def _opened() -> decide.Outcome:
    steady = cases._steady()
    return _outcome(
        dataclasses.replace(
            steady,
            network_policies=(cases._network_policy("allow-all", cases.EVERY_POD, uid="np-1"),),
        )
    )


def _untrusted() -> decide.Outcome:
    return _outcome(
        cases._observed(outcome=cases._refused("UntrustedSigner"), live=cases._live_deployment())
    )


def _case(name: str) -> typing.Callable[[], decide.Outcome]:
    return lambda: _outcome(cases.CASES[name].observed)


@dataclasses.dataclass(frozen=True)
class Shape:
    outcome: typing.Callable[[], decide.Outcome] | None
    """None: an object the operator has not reconciled yet (no status)."""
    kstatus: str
    argocd: str
    generation: int = 2


SHAPES = {
    "healthy": Shape(_steady, "Current", "Healthy"),
    "progressing-no-status": Shape(None, "Current", "Progressing"),
    "progressing-new-generation": Shape(_steady, "InProgress", "Progressing", generation=3),
    "progressing-rollout": Shape(_case("approved-rolls-out"), "InProgress", "Progressing"),
    "progressing-awaiting-approval": Shape(
        _case("unapproved-is-held"), "InProgress", "Progressing"
    ),
    "progressing-source-retried": Shape(
        _case("unreachable-source-is-held-and-retried"), "InProgress", "Progressing"
    ),
    "degraded-untrusted-signer": Shape(_untrusted, "Failed", "Degraded"),
    "degraded-bad-signature": Shape(_case("unverified-is-held"), "Failed", "Degraded"),
    "degraded-policy-not-bound": Shape(
        _case("policy-unbound-with-nothing-serving-is-refused"), "Failed", "Degraded"
    ),
    "degraded-broad-access": Shape(_case("broad-access-is-held"), "Failed", "Degraded"),
    "degraded-child-conflict": Shape(
        _case("someone-elses-object-under-a-child-name-holds-the-whole-rollout"),
        "Failed",
        "Degraded",
    ),
    "degraded-opened-by-network-policy": Shape(_opened, "Current", "Degraded"),
    "suspended-quarantined-on-request": Shape(
        _case("quarantine-on-request-pins-what-serves"), "Failed", "Suspended"
    ),
    "suspended-quarantined-for-tampering": Shape(
        _case("tampering-found-by-our-pod-quarantines"), "Failed", "Suspended"
    ),
    "suspended-quarantined-signer-revoked": Shape(
        _case("revoked-while-held-quarantines-what-serves"), "Failed", "Suspended"
    ),
}


def shape_object(name: str) -> Manifest:
    """The ModelDeployment of shape `name` as the API server would hand it out."""
    shape = SHAPES[name]
    body = cases._body()
    obj: Manifest = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "generation": shape.generation,
        },
        "spec": body["spec"],
    }
    if shape.outcome is not None:
        outcome = shape.outcome()
        obj["spec"] = outcome.observed.body["spec"]
        # servingEvidence carries signatures made afresh by every run (and nothing a health
        # check reads), so the testdata leaves it out.
        status = outcome.status.model_dump(
            mode="json", exclude_none=True, exclude={"serving_evidence"}
        )
        # The test signer's key is made afresh by every run too; messages name its fingerprint.
        obj["status"] = json.loads(
            re.sub(r"key sha256:[0-9a-f]+", "key sha256:<test signer>", json.dumps(status))
        )
    return obj


def _testdata(name: str) -> Path:
    return MODEL_DEPLOYMENT / "testdata" / f"{name}.yaml"


def test_the_testdata_is_what_decide_writes() -> None:
    update = os.environ.get("MODELGUARD_UPDATE_TESTDATA") == "1"
    for name in SHAPES:
        text = yaml.safe_dump(shape_object(name), sort_keys=False, width=100)
        if update:
            _testdata(name).write_text(text)
        assert yaml.safe_load(_testdata(name).read_text()) == shape_object(name), name
    tests = yaml.safe_load((MODEL_DEPLOYMENT / "health_test.yaml").read_text())["tests"]
    assert sorted(Path(test["inputPath"]).stem for test in tests) == sorted(SHAPES)


def test_argo_cds_health_tests_pass_in_gopher_lua(gitopshealth: Path) -> None:
    done = subprocess.run(
        [str(gitopshealth), "health-tests", str(CHECKS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    results = json.loads(done.stdout) if done.stdout else []
    failed = [result for result in results if not result["ok"]]
    assert not failed, failed
    assert done.returncode == 0, done.stderr
    tested = {result["test"].split("/")[1] for result in results}
    assert tested == {"ModelDeployment", "TrustPolicy", "ModelApproval"}


@pytest.mark.parametrize("name", SHAPES, ids=SHAPES)
def test_kstatus_and_argo_cd_read_each_shape_as_a_platform_engineer_would(
    gitopshealth: Path, name: str
) -> None:
    (read,) = read_objects(gitopshealth, [shape_object(name)])
    shape = SHAPES[name]
    assert read["kstatus"]["status"] == shape.kstatus, read
    assert read["argocd"]["status"] == shape.argocd, read
    assert read["argocd"] == read["argocdOpenLibs"]
    if shape.kstatus == "Failed":
        # kstatus says what Stalled says: the reason a person must act on.
        stalled = next(c for c in read_status(name) if c["type"] == "Stalled")
        assert read["kstatus"]["message"] == stalled["message"]


def read_status(name: str) -> list[Manifest]:
    conditions: list[Manifest] = shape_object(name)["status"]["conditions"]
    return conditions


def test_a_check_that_fails_to_run_is_unknown_as_in_argo_cd(gitopshealth: Path) -> None:
    """The runner is not lenient: a check that errors (here: a TrustPolicy whose spec is a
    string, which the Lua indexes) reads as Argo CD reads it."""
    broken = {"apiVersion": "modelguard.dev/v1alpha1", "kind": "TrustPolicy", "spec": "x"}
    (read,) = read_objects(gitopshealth, [{**broken, "metadata": {"name": "p"}}])
    assert read["argocd"]["status"] == "Unknown"
    assert read["argocd"]["error"]


def test_an_approvals_offset_is_read_not_dropped(gitopshealth: Path) -> None:
    """Expired half an hour ago, written at +02:00: its clock digits are 90 minutes ahead of UTC,
    so a check that dropped the offset would call it still valid."""
    approval = yaml.safe_load(
        (CHECKS / "modelguard.dev" / "ModelApproval" / "testdata" / "healthy.yaml").read_text()
    )
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=30)
    approval["spec"]["expiresAt"] = moment.astimezone(
        datetime.timezone(datetime.timedelta(hours=2))
    ).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    later = {**approval, "spec": {**approval["spec"]}}
    later["spec"]["expiresAt"] = (moment + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    expired, valid = read_objects(gitopshealth, [approval, later])
    assert expired["argocdOpenLibs"]["status"] == "Degraded", expired
    assert valid["argocdOpenLibs"]["status"] == "Healthy", valid
    # Without the string library the expiry is not judged, and the message says so.
    assert expired["argocd"]["status"] == "Healthy"
    assert "expiry not judged" in expired["argocd"]["message"]


# --- TrustPolicy and ModelApproval: objects the API server stores -------------------------------


def _inputs(kind: str) -> dict[str, Manifest]:
    tests = yaml.safe_load((CHECKS / "modelguard.dev" / kind / "health_test.yaml").read_text())
    folder = CHECKS / "modelguard.dev" / kind
    return {
        test["inputPath"]: yaml.safe_load((folder / test["inputPath"]).read_text())
        for test in tests["tests"]
    }


def _review(operation: str, body: Manifest) -> Manifest:
    """An AdmissionReview's request for `body`, as the webhooks read it."""
    return {
        "operation": operation,
        "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "namespace": body["metadata"].get("namespace"),
        "name": body["metadata"]["name"],
        "object": body,
    }


def test_every_trust_policy_input_is_one_the_webhook_admits() -> None:
    """The TrustPolicy checks are tested on policies that can exist: an input the webhook would
    refuse tests a state Argo CD never sees."""
    inputs = _inputs("TrustPolicy")
    assert len(inputs) >= 3
    for path, body in inputs.items():
        decision = decisions.trust_policy(_review("CREATE", body))
        assert decision.allowed, (path, decision.message)


# The approvals the ModelApproval inputs hold: (file, version, expiresAt as written).
APPROVALS: typing.Final = (
    ("healthy", "1.4.0", "2099-01-01T00:00:00Z"),
    ("degraded-expired", "1.3.0", "2021-01-01T00:00:00Z"),
    ("degraded-expired-with-offset", "1.3.1", "2021-01-01T02:00:00+02:00"),
)


def _sign_approval_inputs() -> None:
    """MODELGUARD_UPDATE_TESTDATA=1: the ModelApproval inputs signed anew with a fresh approver
    key, whose public half replaces the approver's in every TrustPolicy input."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    folder = CHECKS / "modelguard.dev" / "ModelApproval" / "testdata"
    for name, version, expires in APPROVALS:
        claim = approval.Claim(
            model="sentiment-bert",
            version=version,
            root_digest="sha256:" + "ab" * 32,
            approver="security",
            reason="release review",
            expires_at=expires,
            namespace="team-nlp",
        )
        signed = approval.build(
            claim, private_key=key, name=f"sentiment-bert-{version}-security"
        ).model_dump(mode="json", exclude_none=True)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(signed, sort_keys=False, width=100))
    for path in (CHECKS / "modelguard.dev" / "TrustPolicy" / "testdata").glob("*.yaml"):
        policy = yaml.safe_load(path.read_text())
        for approver in policy["spec"].get("approvers", []):
            approver["publicKey"] = public
        path.write_text(yaml.safe_dump(policy, sort_keys=False, width=100))


def test_every_model_approval_input_is_one_the_webhook_keeps() -> None:
    """Signed by the approver the policies name, saying in its plain fields what it signed; the
    expired ones stay stored (an approval that expires is the record of a decision), and are
    refused only when created already expired."""
    (policy,) = (
        body
        for path, body in _inputs("TrustPolicy").items()
        if path.endswith("healthy-enforced.yaml")
    )
    if os.environ.get("MODELGUARD_UPDATE_TESTDATA") == "1":
        _sign_approval_inputs()
    assert {Path(path).stem for path in _inputs("ModelApproval")} == {a[0] for a in APPROVALS}
    policies = {"default": trustpolicy.parse(policy).spec}
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for path, body in _inputs("ModelApproval").items():
        decision = decisions.model_approval(_review("UPDATE", body), policies=policies, now=now)
        assert decision.allowed, (path, decision)
        assert not decision.warnings, (path, decision)
        created = decisions.model_approval(_review("CREATE", body), policies=policies, now=now)
        assert created.allowed is ("expired" not in path), (path, created)
