"""trust.approval: every approval rule as a named table case, and the k-of-n decision."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import typing

import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import errors, modelapproval, trustpolicy
from modelguard.trust import approval, reasons

Reason = reasons.Reason
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
NAMESPACE = "team-nlp"
MODEL = "sentiment-bert"
VERSION = "1.4.0"

KEYS: dict[str, ec.EllipticCurvePrivateKey] = {
    "alice": ec.generate_private_key(ec.SECP256R1()),
    "bob": ec.generate_private_key(ec.SECP384R1()),
    "carol": ec.generate_private_key(ec.SECP521R1()),
    "mallory": ec.generate_private_key(ec.SECP256R1()),
}
ROLES = {"alice": ["security"], "bob": ["model-owner"], "carol": ["security", "model-owner"]}


def _pem(name: str) -> str:
    return (
        KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _policy(min_approvals: int = 1, **spec: typing.Any) -> trustpolicy.TrustPolicySpec:
    return trustpolicy.TrustPolicySpec.model_validate(
        {
            "signers": [{"name": "release", "publicKey": _pem("alice")}],
            "approvers": [
                {"name": name, "publicKey": _pem(name), "roles": roles}
                for name, roles in ROLES.items()
            ],
            "minApprovals": min_approvals,
            **spec,
        }
    )


def _claim(approver: str = "alice", **changes: str) -> approval.Claim:
    claim = approval.Claim(
        model=MODEL,
        version=VERSION,
        root_digest=DIGEST,
        approver=approver,
        reason="evaluated: ticket SEC-1",
        expires_at="2030-02-01T00:00:00Z",
        namespace=NAMESPACE,
    )
    return dataclasses.replace(claim, **changes)


def _approval(
    approver: str = "alice", *, key: str | None = None, name: str | None = None, **changes: str
) -> modelapproval.ModelApproval:
    claim = _claim(approver, **changes)
    return approval.build(
        claim, private_key=KEYS[key or approver], name=name or f"{approver}-{VERSION}"
    )


def _edit(item: modelapproval.ModelApproval, **spec: typing.Any) -> modelapproval.ModelApproval:
    body = item.model_dump(mode="json")
    body["spec"].update(spec)
    return modelapproval.parse(body)


def _tamper(item: modelapproval.ModelApproval) -> modelapproval.ModelApproval:
    """The signed digest swapped for another, the signature left as it was."""
    statement = json.loads(base64.b64decode(item.spec.signature.payload))
    statement["subject"][0]["digest"]["sha256"] = OTHER_DIGEST.removeprefix("sha256:")
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return _edit(
        item,
        rootDigest=OTHER_DIGEST,
        signature={**item.spec.signature.model_dump(mode="json"), "payload": payload},
    )


def _in_namespace(item: modelapproval.ModelApproval, namespace: str) -> modelapproval.ModelApproval:
    body = item.model_dump(mode="json")
    body["metadata"]["namespace"] = namespace
    return modelapproval.parse(body)


def _evaluate(
    approvals: list[modelapproval.ModelApproval], policy: trustpolicy.TrustPolicySpec
) -> approval.Decision:
    return approval.evaluate_approvals(
        approvals,
        policy=policy,
        namespace=NAMESPACE,
        model=MODEL,
        version=VERSION,
        root_digest=DIGEST,
        now=NOW,
    )


# Each case: approvals, policy, then Approved, the reason (None when approved), counted approvers.
CASES = [
    pytest.param(lambda: [_approval()], _policy(), True, None, ("alice",), id="valid-single"),
    pytest.param(
        lambda: [_approval("alice"), _approval("carol")],
        _policy(2),
        True,
        None,
        ("alice", "carol"),
        id="valid-2-of-3",
    ),
    pytest.param(lambda: [], _policy(), False, Reason.APPROVAL_MISSING, (), id="missing"),
    pytest.param(
        lambda: [_approval(model="other-model", name="other")],
        _policy(),
        False,
        Reason.APPROVAL_MISSING,
        (),
        id="only-another-model",
    ),
    pytest.param(
        lambda: [_approval(expires_at="2029-12-31T23:59:59Z")],
        _policy(),
        False,
        Reason.APPROVAL_EXPIRED,
        (),
        id="expired",
    ),
    pytest.param(
        lambda: [_approval(root_digest=OTHER_DIGEST)],
        _policy(),
        False,
        Reason.APPROVAL_DIGEST_MISMATCH,
        (),
        id="wrong-digest",
    ),
    pytest.param(
        lambda: [_approval("mallory")],
        _policy(),
        False,
        Reason.APPROVAL_UNKNOWN_APPROVER,
        (),
        id="signature-by-non-approver",
    ),
    pytest.param(
        lambda: [_approval("alice", key="mallory")],
        _policy(),
        False,
        Reason.APPROVAL_UNKNOWN_APPROVER,
        (),
        id="names-an-approver-signed-by-another-key",
    ),
    pytest.param(
        lambda: [_approval("alice", key="bob")],
        _policy(),
        False,
        Reason.APPROVAL_UNKNOWN_APPROVER,
        (),
        id="one-approver-signs-as-another",
    ),
    pytest.param(
        lambda: [_approval("alice")],
        _policy(2),
        False,
        Reason.TOO_FEW_APPROVALS,
        ("alice",),
        id="k-of-n-not-met",
    ),
    pytest.param(
        lambda: [_approval("alice", name="a1"), _approval("alice", name="a2", reason="again")],
        _policy(2),
        False,
        Reason.TOO_FEW_APPROVALS,
        ("alice",),
        id="same-approver-twice",
    ),
    pytest.param(
        lambda: [_approval(namespace="team-other")],
        _policy(),
        False,
        Reason.APPROVAL_WRONG_NAMESPACE,
        (),
        id="another-namespaces-model",
    ),
    pytest.param(
        lambda: [_in_namespace(_approval(namespace="team-other"), NAMESPACE)],
        _policy(),
        False,
        Reason.APPROVAL_WRONG_NAMESPACE,
        (),
        id="copied-from-another-namespace",
    ),
    pytest.param(
        lambda: [_tamper(_approval(root_digest=DIGEST))],
        _policy(),
        False,
        Reason.APPROVAL_BAD_SIGNATURE,
        (),
        id="tampered-payload",
    ),
    pytest.param(
        lambda: [_edit(_approval(), reason="edited by hand")],
        _policy(),
        False,
        Reason.APPROVAL_FIELDS_MISMATCH,
        (),
        id="fields-mismatch",
    ),
    pytest.param(
        lambda: [
            _approval("alice"),
            _approval("alice", name="late", expires_at="2029-01-01T00:00:00Z"),
        ],
        _policy(),
        True,
        None,
        ("alice",),
        id="one-expired-one-valid",
    ),
    pytest.param(
        lambda: [_approval("alice"), _approval("carol")],
        _policy(2, minApprovalsPerRole={"model-owner": 2}),
        False,
        Reason.TOO_FEW_APPROVALS,
        ("alice", "carol"),
        id="role-minimum-not-met",
    ),
    pytest.param(
        lambda: [_approval("alice"), _approval("bob")],
        _policy(2, minApprovalsPerRole={"security": 1, "model-owner": 1}),
        True,
        None,
        ("alice", "bob"),
        id="role-minimums-met",
    ),
    pytest.param(lambda: [], _policy(0), True, None, (), id="no-approval-needed"),
]


@pytest.mark.parametrize(("approvals", "policy", "approved", "reason", "counted"), CASES)
def test_approval_rules(
    approvals: typing.Callable[[], list[modelapproval.ModelApproval]],
    policy: trustpolicy.TrustPolicySpec,
    approved: bool,
    reason: Reason | None,
    counted: tuple[str, ...],
) -> None:
    decision = _evaluate(approvals(), policy)
    assert decision.approved is approved
    assert (decision.violation.reason if decision.violation else None) == reason
    assert decision.approvers == counted
    if decision.violation is not None:
        assert decision.violation.message


def test_decision_reports_the_earliest_expiry_and_why_others_did_not_count() -> None:
    decision = _evaluate(
        [
            _approval("alice", expires_at="2030-03-01T00:00:00Z"),
            _approval("carol", expires_at="2030-01-15T00:00:00+00:00"),
            _approval("bob", key="mallory"),
        ],
        _policy(2),
    )
    assert decision.approved
    assert decision.expires_at == datetime.datetime(2030, 1, 15, tzinfo=datetime.UTC)
    assert [(item.name, item.violation.reason) for item in decision.rejected] == [
        ("bob-1.4.0", Reason.APPROVAL_UNKNOWN_APPROVER)
    ]


def test_too_few_says_why_an_approval_did_not_count() -> None:
    decision = _evaluate(
        [_approval("alice"), _approval("carol", expires_at="2029-01-01T00:00:00Z")], _policy(2)
    )
    assert decision.violation is not None
    assert decision.violation.reason is Reason.TOO_FEW_APPROVALS
    assert "ApprovalExpired" in decision.violation.message
    assert "carol-1.4.0" in decision.violation.message


def test_signed_approval_round_trips_through_the_api_model() -> None:
    item = _approval()
    parsed = modelapproval.parse(item.model_dump(mode="json"))
    assert parsed == item
    assert parsed.spec.signature.payload_type == "application/vnd.in-toto+json"
    claim = approval.read_claim(parsed.spec.signature)
    assert claim == _claim()
    statement = claim.statement()
    assert statement["predicateType"] == "https://modelguard.dev/approval/v1"
    assert statement["subject"] == [{"name": MODEL, "digest": {"sha256": "ab" * 32}}]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"not json", "not a base64 JSON statement", id="not-json"),
        pytest.param(b"{}", "_type", id="not-a-statement"),
        pytest.param(
            json.dumps({**_claim().statement(), "predicateType": "x"}).encode(),
            "predicateType",
            id="wrong-predicate",
        ),
        pytest.param(
            json.dumps({**_claim().statement(), "predicate": {}}).encode(),
            "predicate.version",
            id="fields-missing",
        ),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, message: str) -> None:
    envelope = modelapproval.Envelope(
        payload_type=approval.PAYLOAD_TYPE,
        payload=base64.b64encode(payload).decode(),
        signatures=[modelapproval.Signature(sig="AAAA")],
    )
    with pytest.raises(reasons.VerificationError, match=message) as raised:
        approval.read_claim(envelope)
    assert raised.value.reason is Reason.APPROVAL_MALFORMED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"rootDigest": "sha256:abc"}, "spec.rootDigest: must be sha256:", id="digest"),
        pytest.param({"expiresAt": "tomorrow"}, "spec.expiresAt: must be an RFC 3339", id="time"),
        pytest.param({"expiresAt": "2030-01-01T00:00:00"}, "with an offset", id="naive-time"),
        pytest.param({"model": "Bad_Name"}, "spec.model: must be a DNS-1123 label", id="model"),
    ],
)
def test_invalid_objects_are_refused_naming_the_field(change: dict[str, str], message: str) -> None:
    body = _approval().model_dump(mode="json")
    body["spec"].update(change)
    with pytest.raises(errors.InvalidObjectError, match=message):
        modelapproval.parse(body)


def test_signature_must_be_base64() -> None:
    with pytest.raises(pydantic.ValidationError, match="base64"):
        modelapproval.Signature(sig="not base64!")


def test_role_minimum_nobody_can_meet_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"minApprovalsPerRole\[auditor\] is 1"):
        _policy(minApprovalsPerRole={"auditor": 1})


def _policy_with_one_key_twice(
    min_approvals: int, **spec: typing.Any
) -> trustpolicy.TrustPolicySpec:
    """alice's key listed a second time under the name "alice2" (a copy-paste, or a person who
    wants to count twice)."""
    policy = _policy(min_approvals).model_dump(mode="json", by_alias=True)
    policy["approvers"].append(
        {"name": "alice2", "publicKey": _pem("alice"), "roles": ["security", "ops"]}
    )
    return trustpolicy.TrustPolicySpec.model_validate({**policy, **spec})


def test_one_key_under_two_approver_names_counts_once() -> None:
    decision = _evaluate(
        [_approval("alice"), _approval("alice2", key="alice")], _policy_with_one_key_twice(2)
    )
    assert not decision.approved
    assert decision.violation is not None
    assert decision.violation.reason is Reason.TOO_FEW_APPROVALS
    assert "1 distinct approver key(s)" in decision.violation.message
    assert decision.approvers == ("alice", "alice2")


def test_one_key_under_two_names_and_another_key_make_two() -> None:
    decision = _evaluate(
        [_approval("alice"), _approval("alice2", key="alice"), _approval("bob")],
        _policy_with_one_key_twice(2),
    )
    assert decision.approved


def test_a_role_minimum_counts_keys_too() -> None:
    # "alice2" (alice's key) holds security and ops: under both names it is still one key.
    decision = _evaluate(
        [_approval("alice"), _approval("alice2", key="alice")],
        _policy_with_one_key_twice(1, minApprovalsPerRole={"security": 1, "ops": 1}),
    )
    assert decision.approved
    decision = _evaluate(
        [_approval("alice"), _approval("alice2", key="alice")],
        _policy_with_one_key_twice(1, minApprovalsPerRole={"security": 2}),
    )
    assert not decision.approved
