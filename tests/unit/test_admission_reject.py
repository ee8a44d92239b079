"""Reject mode at admission: an unapproved version is refused at apply time (named cases)."""

from __future__ import annotations

import datetime
import typing

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.admission import decisions
from modelguard.api import modelapproval, trustpolicy
from modelguard.trust import approval

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
POLICY = trustpolicy.TrustPolicySpec.model_validate(
    {
        "signers": [
            {
                "name": "ml",
                "publicKey": KEY.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode(),
            }
        ],
        "approvers": [
            {
                "name": "security",
                "publicKey": KEY.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode(),
            }
        ],
    }
)


def _approval(version: str, *, expires: datetime.datetime) -> modelapproval.ModelApproval:
    claim = approval.Claim(
        model="m",
        version=version,
        root_digest="sha256:" + "ab" * 32,
        approver="security",
        reason="ok",
        expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        namespace="team",
    )
    return approval.build(claim, private_key=KEY, name=f"m-{version}")


def _spec(
    version: str, *, mode: str = "Reject", quarantine: bool = False, pinned: str | None = None
) -> dict[str, typing.Any]:
    return {
        "spec": {
            "model": {
                "name": "m",
                "version": version,
                **({"rootDigest": pinned} if pinned else {}),
            },
            "rollout": {"onUnapproved": mode},
            "quarantine": quarantine,
        }
    }


def _request(
    *,
    operation: str = "CREATE",
    mode: str = "Reject",
    quarantine: bool = False,
    old_version: str | None = None,
    old_quarantine: bool = False,
    pinned: str | None = None,
) -> dict[str, typing.Any]:
    return {
        "operation": operation,
        "namespace": "team",
        "object": _spec("1.0", mode=mode, quarantine=quarantine, pinned=pinned),
        "oldObject": _spec(old_version, quarantine=old_quarantine) if old_version else None,
    }


LATER = NOW + datetime.timedelta(days=1)
EARLIER = NOW - datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("request_", "policy", "approvals", "allowed", "said"),
    [
        pytest.param(_request(mode="Hold"), POLICY, [], True, "", id="hold-mode-waits-instead"),
        pytest.param(_request(), None, [], True, "", id="policy-not-cached-reconcile-decides"),
        pytest.param(
            _request(operation="DELETE"), POLICY, [], True, "", id="delete-always-allowed"
        ),
        pytest.param(_request(), POLICY, [], False, "ApprovalMissing", id="no-approval-refused"),
        pytest.param(
            _request(),
            POLICY,
            [_approval("1.0", expires=EARLIER)],
            False,
            "ApprovalExpired",
            id="expired-approval-refused",
        ),
        pytest.param(
            _request(),
            POLICY,
            [_approval("0.9", expires=LATER)],
            False,
            "ApprovalMissing",
            id="approval-of-another-version-refused",
        ),
        pytest.param(
            _request(),
            POLICY,
            [_approval("1.0", expires=LATER)],
            True,
            "",
            id="valid-approval-admitted",
        ),
        pytest.param(
            _request(pinned="sha256:" + "cd" * 32),
            POLICY,
            [_approval("1.0", expires=LATER)],
            False,
            "ApprovalDigestMismatch",
            id="approval-of-other-bytes-than-the-pinned-root-digest-refused",
        ),
        pytest.param(
            _request(pinned="sha256:" + "ab" * 32),
            POLICY,
            [_approval("1.0", expires=LATER)],
            True,
            "",
            id="approval-of-the-pinned-root-digest-admitted",
        ),
        pytest.param(
            _request(operation="UPDATE", old_version="0.9"),
            POLICY,
            [_approval("1.0", expires=EARLIER)],
            False,
            "ApprovalExpired",
            id="update-to-a-version-whose-approval-expired-refused",
        ),
        pytest.param(
            _request(operation="UPDATE", old_version="1.0", quarantine=True),
            POLICY,
            [_approval("1.0", expires=EARLIER)],
            True,
            "",
            id="quarantining-a-version-whose-approval-expired-admitted",
        ),
        pytest.param(
            _request(operation="UPDATE", old_version="1.0"),
            POLICY,
            [],
            True,
            "",
            id="unrelated-edit-of-the-serving-version-admitted",
        ),
        pytest.param(
            _request(quarantine=True),
            POLICY,
            [],
            True,
            "",
            id="created-quarantined-rolls-nothing-out",
        ),
        pytest.param(
            _request(operation="UPDATE", old_version="1.0", old_quarantine=True),
            POLICY,
            [],
            False,
            "ApprovalMissing",
            id="lifting-a-quarantine-judges-the-version-written-while-quarantined",
        ),
    ],
)
def test_unapproved_rejected(
    request_: dict[str, typing.Any],
    policy: trustpolicy.TrustPolicySpec | None,
    approvals: list[modelapproval.ModelApproval],
    allowed: bool,
    said: str,
) -> None:
    decision = decisions.unapproved_rejected(request_, policy=policy, approvals=approvals, now=NOW)
    assert decision.allowed is allowed
    assert said in decision.message
    if not allowed:
        assert "spec.rollout.onUnapproved" in decision.message
