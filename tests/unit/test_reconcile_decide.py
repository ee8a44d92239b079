"""The pass's decision as tables over observed states: every path the integration tests cover, and
the combinations they do not reach (a quarantine while a version is held, a policy unbound while
serving, an approval expiring during a hold, a child conflict during a quarantine, what serves
revoked while a new version is approved); then what writing the children finds (`conclude`)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import typing

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from modelguard.api import errors, modelapproval, placement, times, trustpolicy, v1alpha1
from modelguard.builders import deployment, intent
from modelguard.reconcile import conditions, decide, observations, reports, serving, vocabulary
from modelguard.sources import errors as source_errors
from modelguard.trust import approval, bundle, evidence, signatures

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
UID = "md-uid"
DEPLOYMENT_UID = "deploy-uid"
AGENT = "registry.example/modelguard@sha256:" + "0" * 64
SERVING_ROOT = "sha256:" + "a" * 64
NEW_ROOT = "sha256:" + "b" * 64
SIGNER_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
APPROVER_KEY = ec.generate_private_key(ec.SECP256R1())
Manifest = dict[str, typing.Any]
Action = decide.Action


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _body(status: Manifest | None = None, **spec: typing.Any) -> Manifest:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team-a", "uid": UID, "generation": 2},
        "spec": {
            "model": {"name": "bert", "version": "1.5.0", "source": {"uri": "s3://models/m/"}},
            "serving": {"image": "registry.example/s@sha256:" + "4f" * 32, "replicas": 2},
            **spec,
        },
        "status": {"activeVersion": "1.4.0"} if status is None else status,
    }


def _policy(
    *,
    approvals: int = 1,
    on_republish: str = "Refuse",
    signer: ec.EllipticCurvePrivateKey = SIGNER_KEY,
    formats: tuple[str, ...] = (),
) -> trustpolicy.TrustPolicy:
    return trustpolicy.TrustPolicy.model_validate(
        {
            "metadata": {
                "name": "default",
                "uid": "p",
                "generation": 1 if signer is SIGNER_KEY else 2,
            },
            "spec": {
                "formats": {"allow": list(formats)},
                "sources": [{"uri": "s3://models/"}],
                "signers": [{"name": "release", "publicKey": _pem(signer)}],
                "approvers": [{"name": "security", "publicKey": _pem(APPROVER_KEY)}],
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
) -> observations.Verdict:
    policy = _policy(approvals=approvals, on_republish=on_republish)
    return observations.Verdict(
        decision=conditions.Decision("True", "SignatureVerified", f"root {root}"),
        verified=observations.Verified(
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


def _refused(reason: str, *, transient: bool = False) -> observations.Verdict:
    return observations.Verdict(
        decision=conditions.Decision("False", reason, f"{reason}: why"),
        verified=None,
        transient=transient,
        recheck_after=None if transient else datetime.timedelta(seconds=10),
        policy=None if reason in {"PolicyNotBound", "PolicyNotFound"} else _policy(),
    )


def _approval(root: str, *, expires: datetime.datetime) -> modelapproval.ModelApproval:
    return approval.build(
        approval.Claim(
            model="bert",
            version="1.5.0",
            root_digest=root,
            approver="security",
            reason="reviewed",
            expires_at=times.rfc3339(expires),
            namespace="team-a",
        ),
        private_key=APPROVER_KEY,
        name="bert-1.5.0-security",
    )


def _evidence(root: str) -> v1alpha1.ServingEvidence:
    """What verifying a signature file of `root`, signed with SIGNER_KEY, established."""
    payload = b'{"subject": "' + root.encode() + b'"}'
    payload_type = "application/vnd.in-toto+json"
    digest = hashlib.sha256(signatures.pae(payload_type, payload)).digest()
    signed = bundle.Bundle(
        label="bundle",
        payload_type=payload_type,
        payload=payload,
        signature=SIGNER_KEY.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))),
        key_hint=signatures.key_hint(SIGNER_KEY.public_key()),
        certificates=(),
        keyless=False,
    )
    return serving.to_status(
        evidence.record(
            [signed],
            payload=payload,
            root_digest=root,
            signature_digest="sha256:" + "c" * 64,
            hash_algorithm="sha256",
            source_uri="s3://models/m/",
            signature_uri="s3://models/m/model.sig",
            verified_at=NOW - datetime.timedelta(days=1),
        ),
        judged_under=None,
    )


def _live_deployment(
    root: str = SERVING_ROOT,
    *,
    available: int | None = None,
    current: bool = False,
    allow_formats: tuple[str, ...] = (),
) -> Manifest:
    """The model's Deployment pinning `root`; `current`: as the operator last wrote it (its
    intent recorded), `available`: that many replicas of it available."""
    model = v1alpha1.parse(_body())
    built = deployment.build(
        model,
        artifact=deployment.VerifiedArtifact(
            root_digest=root,
            signature_digest="sha256:" + "c" * 64,
            agent_image=AGENT,
            allow_formats=allow_formats,
            # What decide pins for a verified version of 10 bytes.
            max_bytes=deployment.model_byte_bound(model, signed_bytes=10),
        ),
    )
    if current:
        built = intent.with_intent(built)
    built["metadata"] = {**built["metadata"], "uid": DEPLOYMENT_UID, "generation": 1}
    if available is not None:
        built["status"] = {
            "observedGeneration": 1,
            "replicas": available,
            "updatedReplicas": available,
            "availableReplicas": available,
        }
    return built


def _agent_pod(root: str, *, exit_code: int, message: str, replica_set: str = "rs-uid") -> Manifest:
    """A pod of `root` whose verifying agent ended as given, controlled by `replica_set`."""
    return {
        "metadata": {
            "name": "m-1",
            "annotations": {deployment.ROOT_DIGEST_ANNOTATION: root},
            "ownerReferences": [{"kind": "ReplicaSet", "uid": replica_set, "controller": True}],
        },
        "status": {
            "initContainerStatuses": [
                {
                    "name": deployment.AGENT_CONTAINER,
                    "state": {"terminated": {"exitCode": exit_code, "message": message}},
                }
            ]
        },
    }


OUR_REPLICA_SET = {
    "metadata": {
        "uid": "rs-uid",
        "ownerReferences": [{"kind": "Deployment", "uid": DEPLOYMENT_UID, "controller": True}],
    }
}


def _observed(
    *,
    body: Manifest | None = None,
    outcome: observations.Verdict | None = None,
    live: Manifest | None = None,
    owned: bool = True,
    revoked: bool = False,
    recorded: bool = True,
    policy: trustpolicy.TrustPolicy | None = None,
    network_policies: tuple[Manifest, ...] = (),
    foreign: tuple[str, str] | None = None,
    approvals: tuple[modelapproval.ModelApproval, ...] = (),
    pods: tuple[Manifest, ...] = (),
) -> observations.Observed:
    body = body or _body()
    children = {("Deployment", "m"): live} if live is not None else {}
    if foreign is not None:
        # An object under a child's name, with the model's label, that the operator did not make.
        children[foreign] = {"kind": foreign[0], "metadata": {"name": foreign[1], "uid": "x"}}
    status = observations.parse_status(body.get("status"))
    artifact = deployment.artifact_of(live) if live is not None else None
    if artifact is not None and recorded and owned and not status.serving_evidence:
        # What the operator recorded when it verified what serves.
        status = status.model_copy(update={"serving_evidence": [_evidence(artifact.root_digest)]})
    if outcome is not None and outcome.policy is None:
        bound = observations.BoundPolicy("default", None, outcome.decision)
    else:
        bound = observations.BoundPolicy(
            "default", policy or _policy(signer=OTHER_KEY if revoked else SIGNER_KEY)
        )
    observed = observations.Observed(
        body=body,
        status=status,
        policy=bound,
        network_policies=network_policies,
        namespace_labels={"kubernetes.io/metadata.name": "team-a"},
        children=children,
        owned={("Deployment", "m"): live["metadata"]["uid"]} if live is not None and owned else {},
        pods=list(pods),
        replica_sets=[OUR_REPLICA_SET] if pods else [],
        now=NOW,
    )
    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError:
        return dataclasses.replace(observed, invalid=("spec.serving: bad",))
    if model.spec.quarantine:
        return dataclasses.replace(observed, model=model)
    return dataclasses.replace(observed, model=model, verification=outcome, approvals=approvals)


REVOKED = True
"""The policy now trusts another key than the one that signed what serves."""
TAMPERED = {
    "reason": "DigestMismatch",
    "message": "pod m-1: model.bin differs",
    "generation": 2,
    "since": "2026-06-01T11:00:00Z",
}


@dataclasses.dataclass(frozen=True)
class Case:
    observed: observations.Observed
    action: decide.Action
    ready: tuple[str, str]
    pinned: str | None = None
    """The root digest the children pin, when children are written."""
    quarantined: bool = False
    record: str | None = None
    """status.quarantine.reason after the pass."""
    ready_says: str = ""
    retry: bool = False
    verified: tuple[str, str] | None = None
    approved: tuple[str, str] | None = None
    recheck_at: datetime.datetime | None = None


CASES = {
    "invalid-spec-is-refused": Case(
        _observed(body=_body(serving={"image": "x"})), Action.REFUSE, ("False", "InvalidSpec")
    ),
    "quarantine-on-request-pins-what-serves": Case(
        _observed(body=_body(quarantine=True), live=_live_deployment()),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        ready_says="spec.quarantine is true",
    ),
    "quarantine-on-request-with-nothing-rolled-out": Case(
        _observed(body=_body(quarantine=True)),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        ready_says="before any version was rolled out",
    ),
    "child-conflict-during-a-quarantine-pins-nothing-of-theirs": Case(
        _observed(body=_body(quarantine=True), live=_live_deployment(), owned=False),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        ready_says="nothing runs",
    ),
    "child-conflict-during-a-quarantine-still-stops-what-serves": Case(
        _observed(
            body=_body(quarantine=True), live=_live_deployment(), foreign=("ServiceAccount", "m")
        ),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
    ),
    "unverified-is-held": Case(
        _observed(outcome=_refused("BadSignature"), live=_live_deployment()),
        Action.HOLD,
        ("False", "NotVerified"),
        ready_says="1.4.0 keeps serving",
        verified=("False", "BadSignature"),
        recheck_at=NOW + datetime.timedelta(seconds=10),
    ),
    "unreachable-source-is-held-and-retried": Case(
        _observed(outcome=_refused("SourceUnreachable", transient=True)),
        Action.HOLD,
        ("False", "NotVerified"),
        retry=True,
    ),
    "policy-unbound-while-serving-stops-it": Case(
        _observed(
            body=_body(
                status={
                    "activeVersion": "1.4.0",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Available",
                            "message": "2 of 2",
                            "lastTransitionTime": "2026-05-01T00:00:00Z",
                        }
                    ],
                }
            ),
            outcome=_refused("PolicyNotBound"),
            live=_live_deployment(available=2, current=True),
        ),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="PolicyWithdrawn",
        ready_says="no TrustPolicy judges what serves",
        verified=("False", "PolicyNotBound"),
    ),
    "policy-unbound-with-nothing-serving-is-refused": Case(
        _observed(outcome=_refused("PolicyNotBound")),
        Action.HOLD,
        ("False", "PolicyNotBound"),
        ready_says="is refused: PolicyNotBound",
        verified=("False", "PolicyNotBound"),
    ),
    "invalid-spec-still-trusted-keeps-serving": Case(
        _observed(body=_body(serving={"image": "x"}), live=_live_deployment()),
        Action.REFUSE,
        ("False", "InvalidSpec"),
    ),
    "nothing-recorded-of-what-serves-stops-it-while-held": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(), recorded=False),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="ServingUnverifiable",
    ),
    "a-format-allowance-withdrawn-while-held-stops-what-serves": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(allow_formats=("Pickle",))),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="OutsidePolicy",
        ready_says="admits Pickle files",
    ),
    "a-format-still-allowed-keeps-serving-while-held": Case(
        _observed(
            outcome=_verified(NEW_ROOT),
            live=_live_deployment(allow_formats=("Pickle",)),
            policy=_policy(formats=("Pickle",)),
        ),
        Action.HOLD,
        ("False", "NotApproved"),
        ready_says="1.4.0 keeps serving",
    ),
    "unapproved-is-held": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment()),
        Action.HOLD,
        ("False", "NotApproved"),
        ready_says="1.4.0 keeps serving",
        approved=("False", "ApprovalMissing"),
    ),
    "approval-gone-while-the-same-bytes-serve-keeps-them": Case(
        _observed(outcome=_verified(SERVING_ROOT), live=_live_deployment()),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=SERVING_ROOT,
        approved=("False", "ApprovalMissing"),
    ),
    "approved-rolls-out-and-looks-again-when-the-approval-expires": Case(
        _observed(
            outcome=_verified(NEW_ROOT),
            live=_live_deployment(),
            approvals=(_approval(NEW_ROOT, expires=NOW + datetime.timedelta(hours=1)),),
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=NEW_ROOT,
        ready_says="version 1.5.0 is being applied",
        approved=("True", "Approved"),
        recheck_at=NOW + datetime.timedelta(hours=1),
    ),
    "approval-expired-during-the-hold-keeps-it-held": Case(
        _observed(
            outcome=_verified(NEW_ROOT),
            live=_live_deployment(),
            approvals=(_approval(NEW_ROOT, expires=NOW - datetime.timedelta(minutes=1)),),
        ),
        Action.HOLD,
        ("False", "NotApproved"),
        ready_says="not approved (ApprovalExpired); 1.4.0 keeps serving",
        approved=("False", "ApprovalExpired"),
    ),
    "approval-expired-while-its-bytes-serve-keeps-them-serving": Case(
        _observed(
            outcome=_verified(SERVING_ROOT),
            live=_live_deployment(available=2, current=True),
            approvals=(_approval(SERVING_ROOT, expires=NOW - datetime.timedelta(minutes=1)),),
        ),
        Action.ROLL_OUT,
        ("True", "Available"),
        pinned=SERVING_ROOT,
        approved=("False", "ApprovalExpired"),
    ),
    "a-deployment-someone-else-made-opens-no-gate": Case(
        _observed(outcome=_verified(SERVING_ROOT), live=_live_deployment(), owned=False),
        Action.HOLD,
        ("False", "NotApproved"),
    ),
    "approved-rolls-out": Case(
        _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=NEW_ROOT,
        approved=("True", "Approved"),
    ),
    "revoked-while-held-quarantines-what-serves": Case(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(), revoked=REVOKED),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="SignerRevoked",
        ready_says="; and version 1.5.0 is not approved (ApprovalMissing)",
    ),
    "revoked-and-unverified-quarantines-what-serves": Case(
        _observed(outcome=_refused("UntrustedSigner"), live=_live_deployment(), revoked=REVOKED),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="SignerRevoked",
    ),
    "revoked-but-an-approved-version-replaces-it": Case(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment(), revoked=REVOKED
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=NEW_ROOT,
    ),
    "someone-elses-object-under-a-child-name-holds-the-whole-rollout": Case(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0),
            live=_live_deployment(),
            foreign=("Service", "m"),
        ),
        Action.HOLD,
        ("False", "ChildConflict"),
        ready_says="Service m already exists and is not this ModelDeployment's",
        recheck_at=NOW + decide.CONFLICT_RECHECK,
    ),
    "broad-access-is-held": Case(
        _observed(
            body=_body(access={"ingress": [{"namespaceSelector": {}}]}),
            outcome=_verified(NEW_ROOT, approvals=0),
        ),
        Action.HOLD,
        ("False", "NotIsolated"),
        ready_says="version 1.5.0 is asking for broader access than allowed",
    ),
    "tampering-found-by-our-pod-quarantines": Case(
        _observed(
            outcome=_verified(SERVING_ROOT, approvals=0),
            live=_live_deployment(),
            pods=(_agent_pod(SERVING_ROOT, exit_code=1, message="DigestMismatch: model.bin"),),
        ),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="DigestMismatch",
        verified=("False", "DigestMismatch"),
    ),
    "tampering-claimed-by-a-pod-of-someone-elses-replica-set-counts-for-nothing": Case(
        _observed(
            outcome=_verified(SERVING_ROOT, approvals=0),
            live=_live_deployment(),
            pods=(
                _agent_pod(
                    SERVING_ROOT, exit_code=1, message="DigestMismatch: x", replica_set="forged"
                ),
            ),
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=SERVING_ROOT,
        verified=("True", "SignatureVerified"),
    ),
    "a-crashing-agent-is-reported-not-taken-for-tampering": Case(
        _observed(
            outcome=_verified(SERVING_ROOT, approvals=0),
            live=_live_deployment(),
            pods=(_agent_pod(SERVING_ROOT, exit_code=1, message="Traceback (most recent): boom"),),
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=SERVING_ROOT,
        verified=("False", "AgentFailed"),
    ),
    "what-audit-mode-admitted-is-reported": Case(
        _observed(
            outcome=_verified(SERVING_ROOT, approvals=0),
            live=_live_deployment(),
            pods=(_agent_pod(SERVING_ROOT, exit_code=0, message="audit UnsafeFormat: a.pkl"),),
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=SERVING_ROOT,
        verified=("True", "AuditViolations"),
    ),
    "automatic-quarantine-goes-on-while-the-next-version-is-held": Case(
        _observed(
            body=_body(status={"activeVersion": "1.4.0", "quarantine": TAMPERED}),
            outcome=_verified(NEW_ROOT),
            live=_live_deployment(),
        ),
        Action.HOLD,
        ("False", "Quarantined"),
        record="DigestMismatch",
        ready_says="quarantined automatically: DigestMismatch: pod m-1: model.bin differs; and "
        "version 1.5.0 is not approved",
    ),
    "quarantine-on-request-while-a-version-is-held-asks-nothing-of-it": Case(
        _observed(
            body=_body(quarantine=True, status={"activeVersion": "1.4.0", "quarantine": TAMPERED}),
            live=_live_deployment(),
        ),
        Action.QUARANTINE,
        ("False", "Quarantined"),
        pinned=SERVING_ROOT,
        quarantined=True,
        record="DigestMismatch",
    ),
    "an-automatic-quarantine-of-an-earlier-spec-is-lifted-by-the-change": Case(
        _observed(
            body=_body(status={"quarantine": {**TAMPERED, "generation": 1}}),
            outcome=_verified(NEW_ROOT, approvals=0),
            live=_live_deployment(),
        ),
        Action.ROLL_OUT,
        ("False", "Progressing"),
        pinned=NEW_ROOT,
    ),
}


def _condition(outcome: decide.Outcome, type: str) -> tuple[str, str] | None:
    found = conditions.find(outcome.status.conditions, type)
    return (found.status.value, found.reason) if found is not None else None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    outcome = decide.decide(case.observed, agent_image=AGENT)
    assert outcome.action is case.action
    ready = conditions.find(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status.value, ready.reason) == case.ready
    assert case.ready_says in ready.message
    if case.pinned is None:
        assert outcome.artifact is None
        assert outcome.children == ()
    else:
        assert outcome.artifact is not None
        assert outcome.artifact.root_digest == case.pinned
        assert outcome.model is not None
        assert outcome.model.spec.quarantine is case.quarantined
        (built,) = [child for child in outcome.children if child["kind"] == "Deployment"]
        pinned = deployment.artifact_of(built)
        assert pinned is not None
        assert pinned.root_digest == case.pinned
        assert built["spec"]["replicas"] == (0 if case.quarantined else 2)
    quarantine = outcome.status.quarantine
    assert (quarantine.reason if quarantine else None) == case.record
    assert (outcome.retry is not None) is case.retry
    if case.verified is not None:
        assert _condition(outcome, "Verified") == case.verified
    if case.approved is not None:
        assert _condition(outcome, "Approved") == case.approved
    if case.recheck_at is not None:
        assert outcome.recheck_at == case.recheck_at
    # The status is the api model, and it is what the API server would store.
    assert isinstance(outcome.status, v1alpha1.ModelDeploymentStatus)
    written = outcome.status.model_dump(mode="json", exclude_none=True)
    assert observations.parse_status(written) == outcome.status
    assert outcome.status.observed_generation == 2


# What kstatus (Flux, kpt) reads from each outcome: Current (neither), InProgress (Reconciling) or
# Failed (Stalled), and the reason both conditions carry (the cause's).
IN_PROGRESS, FAILED, CURRENT = "InProgress", "Failed", "Current"
KSTATUS = {
    "invalid-spec-is-refused": (FAILED, "InvalidSpec"),
    "quarantine-on-request-pins-what-serves": (FAILED, "Quarantined"),
    "quarantine-on-request-with-nothing-rolled-out": (FAILED, "Quarantined"),
    "child-conflict-during-a-quarantine-pins-nothing-of-theirs": (FAILED, "Quarantined"),
    "child-conflict-during-a-quarantine-still-stops-what-serves": (FAILED, "Quarantined"),
    "unverified-is-held": (FAILED, "BadSignature"),
    "unreachable-source-is-held-and-retried": (IN_PROGRESS, "SourceUnreachable"),
    "policy-unbound-while-serving-stops-it": (FAILED, "Quarantined"),
    "policy-unbound-with-nothing-serving-is-refused": (FAILED, "PolicyNotBound"),
    "a-format-allowance-withdrawn-while-held-stops-what-serves": (FAILED, "Quarantined"),
    "a-format-still-allowed-keeps-serving-while-held": (IN_PROGRESS, "ApprovalMissing"),
    "invalid-spec-still-trusted-keeps-serving": (FAILED, "InvalidSpec"),
    "nothing-recorded-of-what-serves-stops-it-while-held": (FAILED, "Quarantined"),
    "unapproved-is-held": (IN_PROGRESS, "ApprovalMissing"),
    "approval-gone-while-the-same-bytes-serve-keeps-them": (IN_PROGRESS, "Progressing"),
    "approved-rolls-out-and-looks-again-when-the-approval-expires": (IN_PROGRESS, "Progressing"),
    "approval-expired-during-the-hold-keeps-it-held": (IN_PROGRESS, "ApprovalExpired"),
    "approval-expired-while-its-bytes-serve-keeps-them-serving": (CURRENT, "Available"),
    "a-deployment-someone-else-made-opens-no-gate": (IN_PROGRESS, "ApprovalMissing"),
    "approved-rolls-out": (IN_PROGRESS, "Progressing"),
    "revoked-while-held-quarantines-what-serves": (FAILED, "Quarantined"),
    "revoked-and-unverified-quarantines-what-serves": (FAILED, "Quarantined"),
    "revoked-but-an-approved-version-replaces-it": (IN_PROGRESS, "Progressing"),
    "someone-elses-object-under-a-child-name-holds-the-whole-rollout": (FAILED, "ChildConflict"),
    "broad-access-is-held": (FAILED, "BroadAccessRefused"),
    "tampering-found-by-our-pod-quarantines": (FAILED, "Quarantined"),
    "tampering-claimed-by-a-pod-of-someone-elses-replica-set-counts-for-nothing": (
        IN_PROGRESS,
        "Progressing",
    ),
    "a-crashing-agent-is-reported-not-taken-for-tampering": (IN_PROGRESS, "Progressing"),
    "what-audit-mode-admitted-is-reported": (IN_PROGRESS, "Progressing"),
    "automatic-quarantine-goes-on-while-the-next-version-is-held": (FAILED, "Quarantined"),
    "quarantine-on-request-while-a-version-is-held-asks-nothing-of-it": (FAILED, "Quarantined"),
    "an-automatic-quarantine-of-an-earlier-spec-is-lifted-by-the-change": (
        IN_PROGRESS,
        "Progressing",
    ),
}


def test_every_case_says_what_kstatus_reads() -> None:
    assert set(KSTATUS) == set(CASES)


@pytest.mark.parametrize(("name", "expected"), KSTATUS.items(), ids=KSTATUS.keys())
def test_reconciling_and_stalled_say_what_kstatus_reads(
    name: str, expected: tuple[str, str]
) -> None:
    outcome = decide.decide(CASES[name].observed, agent_image=AGENT)
    kstatus, reason = expected
    reconciling = conditions.find(outcome.status.conditions, "Reconciling")
    stalled = conditions.find(outcome.status.conditions, "Stalled")
    assert reconciling is not None
    assert stalled is not None
    assert (reconciling.status.value, stalled.status.value) == {
        IN_PROGRESS: ("True", "False"),
        FAILED: ("False", "True"),
        CURRENT: ("False", "False"),
    }[kstatus]
    assert reconciling.reason == stalled.reason == reason
    assert reconciling.observed_generation == stalled.observed_generation == 2
    # The message is the cause's, so that kstatus says what a person needs to know.
    # Verified, Approved or Isolated when one holds the rollout with that reason, else Ready.
    held_by = [
        c
        for c in outcome.status.conditions
        if c.reason == reason and c.type in {"Verified", "Approved", "Isolated"}
    ]
    cause = held_by[0] if held_by else conditions.find(outcome.status.conditions, "Ready")
    assert cause is not None
    assert reconciling.message == stalled.message == cause.message


@pytest.mark.parametrize("reason", sorted(decide.AWAITED))
def test_a_model_not_published_yet_is_awaited_not_stalled(reason: str) -> None:
    """GitOps may apply the ModelDeployment before the pipeline uploads the model and its
    signature; the operator looks again until it does."""
    outcome = decide.decide(_observed(outcome=_refused(reason)), agent_image=AGENT)
    assert _condition(outcome, "Reconciling") == ("True", reason)
    assert _condition(outcome, "Stalled") == ("False", reason)
    assert reason in vocabulary.reasons()
    assert source_errors.SourceNotFound.reason in decide.AWAITED


def test_the_writes_decide_stalled_again() -> None:
    """A conflict found only while writing (someone else's object appeared under a child name)
    turns a rollout Reconciling into Stalled before the status is written."""
    outcome = _rollout()
    assert _condition(outcome, "Reconciling") == ("True", "Progressing")
    concluded = decide.conclude(
        outcome, observations.Applied(conflicts=(decide.conflict_message("Service", "m"),))
    )
    assert _condition(concluded, "Stalled") == ("True", "ChildConflict")
    assert _condition(concluded, "Reconciling") == ("False", "ChildConflict")
    refused = decide.conclude(outcome, observations.Applied(refused="Deployment m: quota"))
    assert _condition(refused, "Stalled") == ("True", "ApplyFailed")


@pytest.mark.parametrize(
    ("observed", "record", "says"),
    [
        pytest.param(
            _observed(body=_body(serving={"image": "x"}), live=_live_deployment(), revoked=True),
            "SignerRevoked",
            "quarantined automatically: SignerRevoked",
            id="its-signer-revoked",
        ),
        pytest.param(
            _observed(body=_body(serving={"image": "x"}, quarantine=True), live=_live_deployment()),
            None,
            "quarantined through spec.quarantine",
            id="spec-quarantine",
        ),
    ],
)
def test_a_spec_that_does_not_parse_still_stops_what_serves(
    observed: observations.Observed, record: str | None, says: str
) -> None:
    # Nothing can be built from such a spec: the live children are scaled to zero and closed as
    # they are, still pinning what they pin.
    outcome = decide.decide(observed, agent_image=AGENT)
    assert outcome.action is Action.QUARANTINE
    assert _condition(outcome, "Ready") == ("False", "Quarantined")
    ready = conditions.find(outcome.status.conditions, "Ready")
    assert ready is not None
    assert says in ready.message
    assert "does not parse" in ready.message
    assert (outcome.status.quarantine.reason if outcome.status.quarantine else None) == record
    (built,) = outcome.children
    assert built["spec"]["replicas"] == 0
    assert intent.recorded(built) == intent.intent_hash(built)
    pinned = deployment.artifact_of(built)
    assert pinned is not None
    assert pinned.root_digest == SERVING_ROOT


def test_a_network_policy_opening_the_model_is_reported_while_its_version_is_unverified() -> None:
    opening = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": "team-a", "uid": "np"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
    }
    for verdict in (_refused("MissingFile"), _refused("PolicyNotBound")):
        outcome = decide.decide(
            _observed(outcome=verdict, network_policies=(opening,)), agent_image=AGENT
        )
        assert _condition(outcome, "Isolated") == ("False", "OpenedByNetworkPolicy")


def test_decide_reads_no_clock_but_the_observed_one() -> None:
    outcome = decide.decide(_observed(outcome=_refused("BadSignature")), agent_image=AGENT)
    ready = conditions.find(outcome.status.conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == "2026-06-01T12:00:00Z"


# --- what a pass tells ----------------------------------------------------------------------------


def _steady() -> observations.Observed:
    """A model whose version serves, approved, its children as the operator wrote them, after the
    pass that saw the rollout complete."""
    live = _live_deployment(SERVING_ROOT, available=2, current=True)
    first = _observed(outcome=_verified(SERVING_ROOT, approvals=0), live=live)
    done = decide.conclude(
        decide.decide(first, agent_image=AGENT), observations.Applied(deployment=live)
    )
    assert _condition(done, "Ready") == ("True", "Available")
    written = done.status.model_dump(mode="json", exclude_none=True)
    return _observed(
        body=_body(status=written), outcome=_verified(SERVING_ROOT, approvals=0), live=live
    )


def test_a_steady_model_is_decided_the_same_and_nothing_is_written_or_told() -> None:
    outcome = decide.decide(_steady(), agent_image=AGENT)
    assert outcome.action is Action.ROLL_OUT
    assert not outcome.status_changed
    assert outcome.events == []
    assert outcome.audit_records == []


def test_a_rollout_tells_each_decision_once_through_the_one_table() -> None:
    live = _live_deployment(SERVING_ROOT)
    outcome = decide.decide(
        _observed(body=_body(status={}), outcome=_verified(NEW_ROOT, approvals=0), live=live),
        agent_image=AGENT,
    )
    assert [(e.type, e.reason, e.action) for e in outcome.events] == [
        ("Normal", "SignatureVerified", "Verify"),
        ("Normal", "WithinPolicy", "Isolate"),
        ("Normal", "Approved", "Approve"),
        ("Warning", "Progressing", "Rollout"),
    ]
    assert [str(r.decision) for r in outcome.audit_records] == ["Verified", "Approved"]
    assert outcome.audit_records[0].details == {
        "version": "1.5.0",
        "rootDigest": NEW_ROOT,
        "signer": "release",
    }


def test_quarantine_while_held_is_recorded_once_and_only_with_a_rollout() -> None:
    # Revoked while 1.5.0 is held: what serves is quarantined, recorded with its trigger.
    outcome = decide.decide(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(), revoked=REVOKED),
        agent_image=AGENT,
    )
    assert [(str(r.decision), r.reason) for r in outcome.audit_records] == [
        ("Verified", "SignatureVerified"),
        ("ApprovalHeld", "ApprovalMissing"),
        ("Quarantined", "SignerRevoked"),
    ]
    assert outcome.audit_records[-1].details == {"version": "1.5.0", "trigger": "automatic"}


# 1.5.0 was verified before with other files than those its signature signs now.
FIRST_SEEN = {"model": "bert", "version": "1.5.0", "rootDigest": SERVING_ROOT, "since": "x"}
REREAD_AT = NOW + datetime.timedelta(minutes=5)


def _with_digests(*records: dict[str, str]) -> Manifest:
    return _body(status={"activeVersion": "1.4.0", "verifiedDigests": list(records)})


def test_a_first_verification_records_the_versions_digest() -> None:
    outcome = decide.decide(
        _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
        agent_image=AGENT,
    )
    assert outcome.action is Action.ROLL_OUT
    assert [(r.version, r.root_digest) for r in outcome.status.verified_digests or []] == [
        ("1.5.0", NEW_ROOT)
    ]


def test_a_version_signing_other_files_is_refused_and_what_serves_keeps_serving() -> None:
    outcome = decide.decide(
        _observed(
            body=_with_digests(FIRST_SEEN),
            outcome=_verified(NEW_ROOT, approvals=0, reread_at=REREAD_AT),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert outcome.action is Action.HOLD
    assert outcome.artifact is None
    verified = conditions.find(outcome.status.conditions, "Verified")
    assert verified is not None
    assert (verified.status, verified.reason) == ("False", "DigestChanged")
    assert SERVING_ROOT in verified.message
    assert NEW_ROOT in verified.message
    assert [r.model_dump() for r in outcome.status.verified_digests or []] == [FIRST_SEEN]
    assert outcome.status.verification is None
    # Refused or not, the bundle is read again: it may be restored.
    assert outcome.recheck_at == REREAD_AT


def test_a_republication_the_policy_accepts_is_told_with_the_status() -> None:
    outcome = decide.decide(
        _observed(
            body=_with_digests(FIRST_SEEN),
            outcome=_verified(NEW_ROOT, approvals=0, on_republish="Reapprove"),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert outcome.action is Action.ROLL_OUT
    assert outcome.artifact is not None
    assert outcome.artifact.root_digest == NEW_ROOT
    # Decided, not written: the audit record and the Event go out with the status write.
    assert [r.reason for r in outcome.audit_records if str(r.decision) == "Republished"] == [
        "Republished"
    ]
    (event,) = [e for e in outcome.events if e.reason == "Republished"]
    assert (event.type, event.action) == ("Warning", "Verify")
    assert SERVING_ROOT in event.note


def test_a_verified_bundle_is_read_again_when_the_outcome_says() -> None:
    outcome = decide.decide(
        _observed(
            outcome=_verified(NEW_ROOT, approvals=0, reread_at=REREAD_AT),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    assert outcome.recheck_at == REREAD_AT


def test_children_made_by_a_pass_whose_status_write_failed_are_recorded_now() -> None:
    # The operator created the ServiceAccount, then failed to write the status; this pass holds.
    observed = dataclasses.replace(
        _observed(outcome=_verified(NEW_ROOT), live=_live_deployment()),
        owned={("Deployment", "m"): DEPLOYMENT_UID, ("ServiceAccount", "m"): "sa-uid"},
    )
    outcome = decide.decide(observed, agent_image=AGENT)
    assert outcome.action is Action.HOLD
    assert [(c.kind, c.name, c.uid) for c in outcome.status.children or []] == [
        ("Deployment", "m", DEPLOYMENT_UID),
        ("ServiceAccount", "m", "sa-uid"),
    ]


# --- what writing the children found --------------------------------------------------------------


def _rollout() -> decide.Outcome:
    return decide.decide(
        _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
        agent_image=AGENT,
    )


def test_ready_follows_the_deployment_the_writes_left_and_new_uids_are_recorded() -> None:
    written = _live_deployment(NEW_ROOT, available=2, current=True)
    outcome = decide.conclude(
        _rollout(),
        observations.Applied(
            created={("Service", "m"): "svc-uid"},
            written=("Service/m", "Deployment/m"),
            deployment=written,
        ),
    )
    assert _condition(outcome, "Ready") == ("True", "Available")
    assert outcome.status.active_version == "1.5.0"
    assert ("Service", "m", "svc-uid") in [
        (c.kind, c.name, c.uid) for c in outcome.status.children or []
    ]
    assert ("Normal", "Applied", "applied Service/m, Deployment/m") in [
        (e.type, e.reason, e.note) for e in outcome.events
    ]
    assert "RolledOut" in [str(r.decision) for r in outcome.audit_records]


def test_a_revert_is_told_and_marked_as_done_by_the_writes() -> None:
    outcome = decide.conclude(
        _rollout(),
        observations.Applied(
            written=("Deployment/m",),
            reverted=(("Deployment/m", ("kubectl-scale",)),),
            deployment=_live_deployment(NEW_ROOT, current=True),
        ),
    )
    (record,) = [r for r in outcome.audit_records if str(r.decision) == "DriftReverted"]
    assert record.written
    assert record.message == "Deployment/m: reverted what kubectl-scale changed"
    (event,) = [e for e in outcome.events if e.reason == "DriftReverted"]
    assert (event.type, event.action, event.written) == ("Warning", "Revert", True)


def test_a_child_taken_while_writing_holds_the_rollout_and_looks_again() -> None:
    outcome = decide.conclude(
        _rollout(), observations.Applied(conflicts=("Service m already exists",))
    )
    ready = conditions.find(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "ChildConflict",
        "Service m already exists",
    )
    assert outcome.recheck_at == NOW + decide.CONFLICT_RECHECK
    assert outcome.retry is None


def test_a_child_taken_during_a_quarantine_stops_what_it_can_and_says_so() -> None:
    quarantine = decide.decide(
        _observed(body=_body(quarantine=True), live=_live_deployment()), agent_image=AGENT
    )
    outcome = decide.conclude(
        quarantine,
        observations.Applied(
            written=("Deployment/m",),
            conflicts=("ServiceAccount m already exists",),
            deployment=_live_deployment(current=True),
        ),
    )
    ready = conditions.find(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "ChildConflict")
    assert ready.message.startswith("quarantined as far as the operator's own children go")
    assert outcome.recheck_at == NOW + decide.CONFLICT_RECHECK
    # The quarantine itself is recorded, whatever else the writes found.
    assert [str(r.decision) for r in outcome.audit_records] == ["Quarantined"]


def test_a_child_the_api_server_refuses_is_apply_failed_and_retried() -> None:
    outcome = decide.conclude(
        _rollout(), observations.Applied(refused="Deployment m: denied by policy")
    )
    assert _condition(outcome, "Ready") == ("False", "ApplyFailed")
    assert outcome.retry == "Deployment m: denied by policy"


def test_lifting_a_quarantine_is_recorded_once_from_what_the_writes_left() -> None:
    status = {
        "activeVersion": "1.4.0",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Quarantined",
                "message": "spec.quarantine is true",
                "lastTransitionTime": "2026-05-01T00:00:00Z",
            }
        ],
    }
    held = decide.decide(
        _observed(
            body=_body(status=status),
            outcome=_verified(NEW_ROOT, approvals=0),
            live=_live_deployment(),
        ),
        agent_image=AGENT,
    )
    outcome = decide.conclude(
        held, observations.Applied(deployment=_live_deployment(NEW_ROOT, available=2))
    )
    lifted = [r for r in outcome.audit_records if str(r.decision) == "QuarantineLifted"]
    assert len(lifted) == 1
    assert lifted[0].reason == "SpecChanged"


# --- NetworkPolicies of someone else's --------------------------------------------------------


def _network_policy(name: str, pods: Manifest, *, uid: str, cidr: str = "0.0.0.0/0") -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "team-a", "uid": uid},
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        },
    }


EVERY_POD: Manifest = {}
THE_SERVING_PODS = {"matchLabels": {"app.kubernetes.io/version": "1.4.0"}}
SERVING_POD = {
    "metadata": {
        "name": "m-1",
        "labels": {"modelguard.dev/model-deployment": "m", "app.kubernetes.io/version": "1.4.0"},
    }
}


@dataclasses.dataclass(frozen=True)
class OpeningCase:
    policies: tuple[Manifest, ...]
    isolated: tuple[str, str]
    owned: tuple[tuple[str, str], ...] = ()
    """(name, uid) of NetworkPolicies the operator made for this model."""
    access: Manifest | None = None
    action: decide.Action = Action.ROLL_OUT


OPENING_CASES = {
    "someone-elses-opens-every-pod": OpeningCase(
        (_network_policy("allow-all", EVERY_POD, uid="np-1"),),
        ("False", "OpenedByNetworkPolicy"),
    ),
    "someone-elses-opens-the-pods-that-serve-an-older-version": OpeningCase(
        (_network_policy("old-pods", THE_SERVING_PODS, uid="np-1"),),
        ("False", "OpenedByNetworkPolicy"),
    ),
    "the-operators-own-is-judged-with-the-spec": OpeningCase(
        (_network_policy("m-allow", EVERY_POD, uid="np-own"),),
        ("True", "WithinPolicy"),
        owned=(("m-allow", "np-own"),),
    ),
    "someone-elses-around-other-pods": OpeningCase(
        (_network_policy("web", {"matchLabels": {"app": "web"}}, uid="np-1"),),
        ("True", "WithinPolicy"),
    ),
    "someone-elses-range-the-policy-does-not-list": OpeningCase(
        (_network_policy("lan", EVERY_POD, uid="np-1", cidr="10.0.0.0/8"),),
        ("False", "OpenedByNetworkPolicy"),
    ),
    "someone-elses-callers-by-namespace-name-are-within-the-policy": OpeningCase(
        (
            {
                **_network_policy("frontend", EVERY_POD, uid="np-1"),
                "spec": {
                    "podSelector": EVERY_POD,
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchLabels": {"kubernetes.io/metadata.name": "web"}
                                    }
                                }
                            ],
                            # The audit proxy's port: the only one open to callers (0026).
                            "ports": [{"port": "http", "protocol": "TCP"}],
                        }
                    ],
                },
            },
        ),
        ("True", "WithinPolicy"),
    ),
    "someone-elses-callers-to-the-model-servers-own-port-are-reported": OpeningCase(
        (
            {
                **_network_policy("debug-direct", EVERY_POD, uid="np-1"),
                "spec": {
                    "podSelector": EVERY_POD,
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}],
                            "ports": [{"port": "model", "protocol": "TCP"}],
                        }
                    ],
                },
            },
        ),
        ("False", "OpenedByNetworkPolicy"),
    ),
    "the-specs-own-request-is-refused-first-and-holds": OpeningCase(
        (_network_policy("allow-all", EVERY_POD, uid="np-1"),),
        ("False", "BroadAccessRefused"),
        access={"ingress": [{"namespaceSelector": {}}]},
        action=Action.HOLD,
    ),
}


@pytest.mark.parametrize("case", OPENING_CASES.values(), ids=OPENING_CASES.keys())
def test_a_network_policy_of_someone_elses_that_opens_the_model_is_reported(
    case: OpeningCase,
) -> None:
    spec = {"access": case.access} if case.access else {}
    seen = _observed(
        body=_body(**spec),
        outcome=_verified(NEW_ROOT, approvals=0),
        live=_live_deployment(),
        pods=(SERVING_POD,),
    )
    seen = dataclasses.replace(
        seen,
        network_policies=case.policies,
        owned={**seen.owned, **{("NetworkPolicy", name): uid for name, uid in case.owned}},
        replica_sets=[],
    )
    outcome = decide.decide(seen, agent_image=AGENT)
    assert _condition(outcome, "Isolated") == case.isolated
    # What serves keeps serving, and rollouts go on: the model did not open anything.
    assert outcome.action is case.action


def test_the_report_names_the_network_policy_and_is_told_once_by_the_table() -> None:
    steady = _steady()
    opened = dataclasses.replace(
        steady, network_policies=(_network_policy("allow-all", EVERY_POD, uid="np-1"),)
    )
    outcome = decide.decide(opened, agent_image=AGENT)
    isolated = next(c for c in outcome.status.conditions if c.type == "Isolated")
    assert isolated.message.startswith(
        "NetworkPolicy team-a/allow-all: spec.ingress[0].from[0].ipBlock.cidr: 0.0.0.0/0 is not "
        'inside the ranges TrustPolicy "default" allows in spec.network.ingressCIDRs (none)'
    ), isolated.message
    assert [(e.type, e.reason, e.action) for e in outcome.events] == [
        ("Warning", "OpenedByNetworkPolicy", "Isolate")
    ]
    assert [(str(r.decision), r.reason) for r in outcome.audit_records] == [
        ("OpenedByNetworkPolicy", "OpenedByNetworkPolicy")
    ]
    assert "NetworkPolicy team-a/allow-all" in outcome.audit_records[0].message
    assert _condition(outcome, "Ready") == ("True", "Available")


def test_live_children_quarantined_while_the_spec_does_not_parse_record_what_they_do() -> None:
    # What the writes leave is recorded, or the next pass would take the quarantine it wrote for
    # drift and write it again, for ever.
    observed = _observed(
        body=_body(serving={"image": "x"}, quarantine=True), live=_live_deployment()
    )
    outcome = decide.decide(observed, agent_image=AGENT)
    (built,) = outcome.children
    written = {**built, "metadata": {**built["metadata"], "uid": DEPLOYMENT_UID}}
    done = decide.conclude(
        outcome,
        observations.Applied(
            written=("Deployment/m",),
            deployment=written,
            contents={("Deployment", "m"): "sha256:" + "e" * 64},
        ),
    )
    (child,) = done.status.children or []
    assert (child.kind, child.name, child.content) == ("Deployment", "m", "sha256:" + "e" * 64)
    assert [note.happening for note in done.notes] == [
        reports.Happening.QUARANTINED,
        reports.Happening.APPLIED,
    ]


def test_payload_audit_the_policy_does_not_allow_holds_the_rollout() -> None:
    seen = _observed(
        body=_body(audit={"inputs": "Payload"}),
        outcome=_verified(NEW_ROOT, approvals=0),
        live=_live_deployment(),
        pods=(SERVING_POD,),
    )
    outcome = decide.decide(dataclasses.replace(seen, replica_sets=[]), agent_image=AGENT)
    assert _condition(outcome, "Isolated") == ("False", "PayloadAuditNotAllowed")
    assert outcome.action is Action.HOLD


def test_payload_audit_refused_is_recorded_as_such() -> None:
    seen = _observed(
        body=_body(audit={"inputs": "Payload"}),
        outcome=_verified(NEW_ROOT, approvals=0),
        live=_live_deployment(),
        pods=(SERVING_POD,),
    )
    outcome = decide.decide(dataclasses.replace(seen, replica_sets=[]), agent_image=AGENT)
    told = [(str(record.decision), record.reason) for record in outcome.audit_records]
    assert ("PayloadAuditRefused", "PayloadAuditNotAllowed") in told
    assert all(decision != "BroadAccessRefused" for decision, _ in told)


# --- placement: the platform's, on every Deployment a pass writes --------------------------------

PLACED = placement.Placement.model_validate(
    {
        "nodeSelector": {"modelguard.dev/node": "real"},
        "tolerations": [{"key": "modelguard.dev/node", "value": "real", "effect": "NoSchedule"}],
    }
)


@pytest.mark.parametrize(
    "observed",
    [
        pytest.param(
            _observed(outcome=_verified(NEW_ROOT, approvals=0), live=_live_deployment()),
            id="rollout",
        ),
        pytest.param(
            _observed(body=_body(quarantine=True), live=_live_deployment()), id="quarantine"
        ),
        pytest.param(
            _observed(outcome=_verified(NEW_ROOT), live=_live_deployment(), revoked=REVOKED),
            id="revoked-quarantine",
        ),
    ],
)
def test_every_deployment_written_carries_the_platforms_placement(
    observed: observations.Observed,
) -> None:
    outcome = decide.decide(observed, agent_image=AGENT, placement=PLACED)
    (built,) = [child for child in outcome.children if child["kind"] == "Deployment"]
    pod = built["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"modelguard.dev/node": "real"}
    assert pod["tolerations"] == [
        {"key": "modelguard.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}
    ]
    unplaced = decide.decide(observed, agent_image=AGENT)
    (before,) = [child for child in unplaced.children if child["kind"] == "Deployment"]
    assert "nodeSelector" not in before["spec"]["template"]["spec"]
    # A placement the live Deployment does not have yet is a new intent: it is written.
    assert intent.recorded(built) != intent.recorded(before)
