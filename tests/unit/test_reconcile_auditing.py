"""Which decisions a reconcile records, from the status before and after it: a decision made
anew is recorded once; the same decision made again records nothing."""

from __future__ import annotations

import typing

import pytest

from modelguard.audit import records
from modelguard.reconcile import auditing, conditions

Manifest = dict[str, typing.Any]


def _status(*conds: tuple[str, str, str, int], **fields: typing.Any) -> Manifest:
    return {
        "conditions": [
            {
                "type": type,
                "status": status,
                "reason": reason,
                "message": f"{type} {reason}",
                "observedGeneration": generation,
                "lastTransitionTime": "2030-01-01T00:00:00Z",
            }
            for type, status, reason, generation in conds
        ],
        **fields,
    }


VERIFIED = ("Verified", "True", "SignatureVerified", 1)
APPROVED = ("Approved", "True", "Approved", 1)
READY = ("Ready", "True", "Available", 1)
VERIFICATION = {"version": "1.4.0", "rootDigest": "sha256:" + "ab" * 32, "signer": "ml-release"}


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param(
            {},
            _status(VERIFIED, APPROVED, ("Ready", "False", "Progressing", 1)),
            ["Verified", "Approved"],
            id="first-reconcile-verifies-and-approves",
        ),
        pytest.param(
            _status(VERIFIED, APPROVED, ("Ready", "False", "Progressing", 1)),
            _status(VERIFIED, APPROVED, READY),
            ["RolledOut"],
            id="rollout-completes",
        ),
        pytest.param(
            _status(VERIFIED, APPROVED, READY),
            _status(VERIFIED, APPROVED, READY),
            [],
            id="same-decisions-again-record-nothing",
        ),
        pytest.param(
            _status(VERIFIED, APPROVED, READY),
            _status(
                ("Verified", "True", "SignatureVerified", 2),
                ("Approved", "True", "Approved", 2),
                ("Ready", "False", "Progressing", 2),
            ),
            ["Verified", "Approved"],
            id="new-generation-decided-anew",
        ),
        pytest.param(
            _status(VERIFIED, APPROVED, READY),
            _status(
                ("Verified", "False", "UntrustedSigner", 1),
                APPROVED,
                ("Ready", "False", "Quarantined", 1),
            ),
            ["VerificationRefused"],
            id="revoked-signer-refused-quarantine-recorded-apart",
        ),
        pytest.param(
            _status(VERIFIED),
            _status(VERIFIED, ("Isolated", "False", "BroadAccessRefused", 1)),
            ["BroadAccessRefused"],
            id="broad-access-refused",
        ),
        pytest.param(
            _status(VERIFIED, ("Isolated", "False", "BroadAccessRefused", 1)),
            _status(VERIFIED, ("Isolated", "True", "WithinPolicy", 1)),
            [],
            id="access-within-policy-is-no-decision-of-its-own",
        ),
        pytest.param(
            _status(VERIFIED, APPROVED, READY),
            _status(VERIFIED, ("Approved", "False", "ApprovalExpired", 1), READY),
            ["ApprovalHeld"],
            id="approval-expired-holds-the-next-rollout",
        ),
        pytest.param(
            _status(VERIFIED, ("Approved", "False", "ApprovalMissing", 1)),
            _status(VERIFIED, ("Approved", "False", "ApprovalMissing", 1)),
            [],
            id="held-again-records-nothing",
        ),
    ],
)
def test_decisions_made_anew_are_recorded(
    previous: Manifest, current: Manifest, expected: list[str]
) -> None:
    entries = auditing.from_conditions(previous, current, version="1.4.0")
    assert [str(entry.decision) for entry in entries] == expected
    for entry in entries:
        assert entry.details["version"] == "1.4.0"


def test_details_say_what_was_verified_approved_and_rolled_out() -> None:
    approval = {"approvers": ["security"], "expiresAt": "2030-02-01T00:00:00Z"}
    current = _status(VERIFIED, APPROVED, READY, verification=VERIFICATION, approval=approval)
    verified, approved, rolled_out = auditing.from_conditions({}, current, version="1.4.0")
    assert verified.details == {
        "version": "1.4.0",
        "rootDigest": VERIFICATION["rootDigest"],
        "signer": "ml-release",
    }
    assert (verified.reason, verified.message) == (
        "SignatureVerified",
        "Verified SignatureVerified",
    )
    assert approved.details == {"version": "1.4.0", **approval}
    assert rolled_out.details == verified.details


QUARANTINED = conditions.Decision("False", "Quarantined", "scaled to zero, network cut")
AVAILABLE = conditions.Decision("True", "Available", "2 of 2 replicas available")
PROGRESSING = conditions.Decision("False", "Progressing", "1 of 2 replicas updated")


@pytest.mark.parametrize(
    ("previous", "ready", "automatic", "expected"),
    [
        pytest.param(
            _status(READY), QUARANTINED, None, ("Quarantined", "SpecQuarantine"), id="manual"
        ),
        pytest.param(
            _status(READY),
            QUARANTINED,
            {"reason": "DigestMismatch", "message": "pod m-1: model.bin differs"},
            ("Quarantined", "DigestMismatch"),
            id="tampering",
        ),
        pytest.param(
            _status(READY),
            QUARANTINED,
            {"reason": "SignerRevoked", "message": "UntrustedSigner: ..."},
            ("Quarantined", "SignerRevoked"),
            id="revoked-signer",
        ),
        pytest.param(
            _status(("Ready", "False", "Quarantined", 1)),
            QUARANTINED,
            None,
            None,
            id="still-quarantined-records-nothing",
        ),
        pytest.param(
            _status(("Ready", "False", "Quarantined", 1)),
            PROGRESSING,
            None,
            ("QuarantineLifted", "SpecChanged"),
            id="lifted",
        ),
        pytest.param(
            _status(("Ready", "False", "Progressing", 1)), AVAILABLE, None, None, id="no-quarantine"
        ),
    ],
)
def test_quarantine_and_its_lifting_are_recorded_once(
    previous: Manifest,
    ready: conditions.Decision,
    automatic: dict[str, str] | None,
    expected: tuple[str, str] | None,
) -> None:
    entry = auditing.quarantine_change(
        previous, ready=ready, automatic=automatic, generation=2, version="1.4.0"
    )
    if expected is None:
        assert entry is None
        return
    assert entry is not None
    assert (str(entry.decision), entry.reason) == expected
    assert entry.details["version"] == "1.4.0"
    if entry.decision is records.Decision.QUARANTINED:
        assert entry.message == QUARANTINED.message
        assert entry.details["trigger"] == ("automatic" if automatic else "spec.quarantine")
    else:
        assert "generation 2" in entry.message
