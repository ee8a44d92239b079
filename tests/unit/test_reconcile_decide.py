"""The pass's decision as a table over observed states: what the integration tests cover, and the
combinations they do not reach (quarantine while held, a policy unbound while serving, a child
conflict during a quarantine, what serves revoked while a new version is approved)."""

from __future__ import annotations

import dataclasses
import datetime
import typing

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import errors, trustpolicy, v1alpha1
from modelguard.builders import deployment
from modelguard.reconcile import conditions, modeldeployment, verification

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
UID = "md-uid"
AGENT = "registry.example/modelguard@sha256:" + "0" * 64
SERVING_ROOT = "sha256:" + "a" * 64
NEW_ROOT = "sha256:" + "b" * 64
KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
Manifest = dict[str, typing.Any]


def _body(**spec: typing.Any) -> Manifest:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team-a", "uid": UID, "generation": 2},
        "spec": {
            "model": {"name": "bert", "version": "1.5.0", "source": {"uri": "s3://models/m/"}},
            "serving": {"image": "registry.example/s@sha256:" + "4f" * 32, "replicas": 2},
            **spec,
        },
        "status": {"activeVersion": "1.4.0"},
    }


def _policy(*, approvals: int = 1, on_republish: str = "Refuse") -> trustpolicy.TrustPolicy:
    return trustpolicy.TrustPolicy.model_validate(
        {
            "metadata": {"name": "default", "uid": "p", "generation": 1},
            "spec": {
                "signers": [{"name": "release", "publicKey": KEY}],
                "minApprovals": approvals,
                "namespaceSelector": {},
                "onRepublish": on_republish,
            },
        },
        by_alias=True,
    )


def _verified(
    root: str,
    *,
    approvals: int = 1,
    on_republish: str = "Refuse",
    reread_at: datetime.datetime | None = None,
) -> verification.Outcome:
    policy = _policy(approvals=approvals, on_republish=on_republish)
    return verification.Outcome(
        decision=conditions.Decision("True", "SignatureVerified", f"root {root}"),
        verified=verification.Verified(
            root_digest=root,
            signature_digest="sha256:" + "c" * 64,
            signers="release",
            subject_name="bert",
            files=2,
            bytes=10,
            verified_at="2026-06-01T12:00:00Z",
            allow_formats=(),
            audit_formats=False,
            audit=(),
            policy=policy.spec,
        ),
        policy=policy,
        reread_at=reread_at,
    )


def _refused(reason: str, *, transient: bool = False) -> verification.Outcome:
    return verification.Outcome(
        decision=conditions.Decision("False", reason, f"{reason}: why"),
        verified=None,
        transient=transient,
        policy=None if reason in {"PolicyNotBound", "PolicyNotFound"} else _policy(),
    )


def _live_deployment(*, uid: str = "deploy-uid") -> Manifest:
    model = v1alpha1.parse(_body())
    built = deployment.build(
        model,
        artifact=deployment.VerifiedArtifact(
            root_digest=SERVING_ROOT,
            signature_digest="sha256:" + "d" * 64,
            agent_image=AGENT,
        ),
    )
    built["metadata"]["uid"] = uid
    return built


def _observed(
    *,
    body: Manifest | None = None,
    outcome: verification.Outcome | None = None,
    live: Manifest | None = None,
    owned: bool = True,
    revoked: conditions.Decision | None = None,
    foreign: tuple[str, str] | None = None,
) -> modeldeployment.Observed:
    body = body or _body()
    children = {("Deployment", "m"): live} if live is not None else {}
    if foreign is not None:
        # An object under a child's name, with the model's label, that the operator did not make.
        children[foreign] = {"kind": foreign[0], "metadata": {"name": foreign[1], "uid": "x"}}
    observed = modeldeployment.Observed(
        body=body,
        namespace_labels={"kubernetes.io/metadata.name": "team-a"},
        children=children,
        owned={("Deployment", "m"): live["metadata"]["uid"]} if live is not None and owned else {},
        pods=[],
        replica_sets=[],
        now=NOW,
    )
    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError:
        return dataclasses.replace(observed, invalid=("spec.serving: bad",))
    if model.spec.quarantine:
        return dataclasses.replace(observed, model=model)
    return dataclasses.replace(observed, model=model, verification=outcome, revoked=revoked)


REVOKED = conditions.Decision("False", "UntrustedSigner", "signed by ml-release, not trusted")


@dataclasses.dataclass(frozen=True)
class Case:
    observed: modeldeployment.Observed
    action: modeldeployment.Action
    ready: tuple[str, str]
    pinned: str | None = None
    """The root digest the children pin, when children are written."""
    quarantined: bool = False
    record: str | None = None
    """status.quarantine.reason after the pass."""
    ready_says: str = ""
    retry: bool = False


CASES = {
    "invalid-spec-is-refused": Case(
        _observed(body=_body(serving={"image": "x"})),
        modeldeployment.Action.REFUSE,
        ("False", "InvalidSpec"),
    ),
    "quarantine-on-request-pins-what-serves": Case(
        _observed(body=_body(quarantine=True), live=_live_deployment()),
        modeldeployment.Action.QUARANTINE,
        ("", ""),
        pinned=SERVING_ROOT,
        quarantined=True,
    ),
    "quarantine-on-request-with-nothing-rolled-out": Case(
        _observed(body=_body(quarantine=True)),
        modeldeployment.Action.QUARANTINE,
        ("False", "Quarantined"),
        ready_says="before any version was rolled out",
    ),
    "child-conflict-during-a-quarantine-pins-nothing-of-theirs": Case(
        _observed(body=_body(quarantine=True), live=_live_deployment(), owned=False),
        modeldeployment.Action.QUARANTINE,
        ("False", "Quarantined"),
        ready_says="nothing runs",
    ),
    "unverified-is-held": Case(
        _observed(outcome=_refused("BadSignature"), live=_live_deployment()),
        modeldeployment.Action.HOLD,
        ("False", "NotVerified"),
        ready_says="1.4.0 keeps serving",
    ),
    "unreachable-source-is-held-and-retried": Case(
        _observed(outcome=_refused("SourceUnreachable", transient=True)),
        modeldeployment.Action.HOLD,
        ("False", "NotVerified"),
        retry=True,
    ),
    "policy-unbound-while-serving-keeps-serving": Case(
        _observed(outcome=_refused("PolicyNotBound"), live=_live_deployment()),
        modeldeployment.Action.HOLD,
        ("False", "PolicyNotBound"),
        ready_says="1.4.0 keeps serving",
    ),
    "unapproved-is-held": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment()),
        modeldeployment.Action.HOLD,
        ("False", "NotApproved"),
        ready_says="1.4.0 keeps serving",
    ),
    "approval-gone-while-the-same-bytes-serve-keeps-them": Case(
        _observed(outcome=_verified(SERVING_ROOT), live=_live_deployment()),
        modeldeployment.Action.ROLL_OUT,
        ("", ""),
        pinned=SERVING_ROOT,
    ),
    "a-deployment-someone-else-made-opens-no-gate": Case(
        _observed(outcome=_verified(SERVING_ROOT), live=_live_deployment(), owned=False),
        modeldeployment.Action.HOLD,
        ("False", "NotApproved"),
    ),
    "approved-rolls-out": Case(
        _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
        modeldeployment.Action.ROLL_OUT,
        ("", ""),
        pinned=NEW_ROOT,
    ),
    "revoked-while-held-quarantines-what-serves": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(), revoked=REVOKED),
        modeldeployment.Action.QUARANTINE,
        ("", ""),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="SignerRevoked",
    ),
    "revoked-and-unverified-quarantines-what-serves": Case(
        _observed(outcome=_refused("UntrustedSigner"), live=_live_deployment(), revoked=REVOKED),
        modeldeployment.Action.QUARANTINE,
        ("", ""),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="SignerRevoked",
    ),
    "revoked-but-an-approved-version-replaces-it": Case(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment(), revoked=REVOKED
        ),
        modeldeployment.Action.ROLL_OUT,
        ("", ""),
        pinned=NEW_ROOT,
    ),
    "someone-elses-object-under-a-child-name-holds-the-whole-rollout": Case(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0),
            live=_live_deployment(),
            foreign=("Service", "m"),
        ),
        modeldeployment.Action.HOLD,
        ("False", "ChildConflict"),
        ready_says="Service m already exists and is not this ModelDeployment's",
    ),
    "child-conflict-during-a-quarantine-still-stops-what-serves": Case(
        _observed(
            body=_body(quarantine=True), live=_live_deployment(), foreign=("ServiceAccount", "m")
        ),
        modeldeployment.Action.QUARANTINE,
        ("", ""),
        pinned=SERVING_ROOT,
        quarantined=True,
    ),
    "broad-access-is-held": Case(
        _observed(
            body=_body(
                access={"ingress": [{"namespaceSelector": {}}]},
            ),
            outcome=_verified(NEW_ROOT, approvals=0),
        ),
        modeldeployment.Action.HOLD,
        ("False", "NotIsolated"),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    plan = modeldeployment.decide(case.observed, agent_image=AGENT)
    assert plan.action is case.action
    ready = conditions.find(plan.status.current.get("conditions") or [], "Ready") or {}
    assert (ready.get("status", ""), ready.get("reason", "")) == case.ready
    assert case.ready_says in ready.get("message", "")
    if case.pinned is None:
        assert plan.artifact is None
    else:
        assert plan.artifact is not None
        assert plan.artifact.root_digest == case.pinned
        assert plan.model is not None
        assert plan.model.spec.quarantine is case.quarantined
    assert (plan.status.current.get("quarantine") or {}).get("reason") == case.record
    assert (plan.retry is not None) is case.retry


def test_decide_reads_no_clock_but_the_observed_one() -> None:
    plan = modeldeployment.decide(_observed(outcome=_refused("BadSignature")), agent_image=AGENT)
    (ready,) = [c for c in plan.status.current["conditions"] if c["type"] == "Ready"]
    assert ready["lastTransitionTime"] == "2026-06-01T12:00:00Z"


# 1.5.0 was verified before with other files than those its signature signs now.
FIRST_SEEN = {"model": "bert", "version": "1.5.0", "rootDigest": SERVING_ROOT, "since": "x"}
REREAD_AT = NOW + datetime.timedelta(minutes=5)


def _with_digests(*records: dict[str, str]) -> Manifest:
    body = _body()
    body["status"]["verifiedDigests"] = list(records)
    return body


def test_a_first_verification_records_the_versions_digest() -> None:
    plan = modeldeployment.decide(
        _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
        agent_image=AGENT,
    )
    assert plan.action is modeldeployment.Action.ROLL_OUT
    assert [(r["version"], r["rootDigest"]) for r in plan.status.current["verifiedDigests"]] == [
        ("1.5.0", NEW_ROOT)
    ]


def test_a_version_signing_other_files_is_refused_and_what_serves_keeps_serving() -> None:
    body = _with_digests(FIRST_SEEN)
    plan = modeldeployment.decide(
        _observed(
            body=body,
            outcome=_verified(NEW_ROOT, approvals=0, reread_at=REREAD_AT),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert plan.action is modeldeployment.Action.HOLD
    assert plan.artifact is None
    verified = conditions.find(plan.status.current["conditions"], "Verified") or {}
    assert (verified.get("status"), verified.get("reason")) == ("False", "DigestChanged")
    assert SERVING_ROOT in verified["message"]
    assert NEW_ROOT in verified["message"]
    assert plan.status.current["verifiedDigests"] == [FIRST_SEEN]
    assert "verification" not in plan.status.current
    # Refused or not, the bundle is read again: it may be restored.
    assert plan.recheck_at == REREAD_AT


def test_a_republication_the_policy_accepts_is_reported_by_the_plan() -> None:
    body = _with_digests(FIRST_SEEN)
    plan = modeldeployment.decide(
        _observed(
            body=body,
            outcome=_verified(NEW_ROOT, approvals=0, on_republish="Reapprove"),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert plan.action is modeldeployment.Action.ROLL_OUT
    assert plan.artifact is not None
    assert plan.artifact.root_digest == NEW_ROOT
    # Decided, not written: the audit record and the Event go out with the status write.
    assert [entry.reason for entry in plan.status.audit] == ["Republished"]
    assert [entry.reason for entry in plan.status.events] == ["Republished"]
    assert SERVING_ROOT in plan.status.events[0].message


def test_a_verified_bundle_is_read_again_when_the_plan_says() -> None:
    plan = modeldeployment.decide(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0, reread_at=REREAD_AT),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert plan.recheck_at == REREAD_AT
