"""What a pass tells, from the status before and after it and its notes: a decision made anew is
recorded once, a flip posts one Event, the same decision made again tells nothing; Events and
audit records come from one table."""

from __future__ import annotations

import typing

import pytest

from modelguard.api import v1alpha1
from modelguard.audit import records
from modelguard.reconcile import conditions, reports

Manifest = dict[str, typing.Any]
Status = v1alpha1.ModelDeploymentStatus


def _status(*conds: tuple[str, str, str, int], **fields: typing.Any) -> Status:
    return _typed(
        {
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
    )


def _typed(raw: Manifest) -> Status:
    return v1alpha1.ModelDeploymentStatus.model_validate(raw)


VERIFIED = ("Verified", "True", "SignatureVerified", 1)
APPROVED = ("Approved", "True", "Approved", 1)
READY = ("Ready", "True", "Available", 1)
VERIFICATION = {"version": "1.4.0", "rootDigest": "sha256:" + "ab" * 32, "signer": "ml-release"}


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param(
            _status(),
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
    previous: Status, current: Status, expected: list[str]
) -> None:
    entries = reports.audit_records(previous, current, [], version="1.4.0")
    assert [str(entry.decision) for entry in entries] == expected
    for entry in entries:
        assert entry.details["version"] == "1.4.0"


def test_details_say_what_was_verified_approved_and_rolled_out() -> None:
    approval = {"approvers": ["security"], "expiresAt": "2030-02-01T00:00:00Z"}
    current = _status(VERIFIED, APPROVED, READY, verification=VERIFICATION, approval=approval)
    verified, approved, rolled_out = reports.audit_records(_status(), current, [], version="1.4.0")
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
            v1alpha1.QuarantineStatus(
                reason="DigestMismatch", message="pod m-1: model.bin differs"
            ),
            ("Quarantined", "DigestMismatch"),
            id="tampering",
        ),
        pytest.param(
            _status(READY),
            QUARANTINED,
            v1alpha1.QuarantineStatus(reason="SignerRevoked", message="UntrustedSigner: ..."),
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
    previous: Status,
    ready: conditions.Decision,
    automatic: v1alpha1.QuarantineStatus | None,
    expected: tuple[str, str] | None,
) -> None:
    note = reports.quarantine_change(
        previous, ready=ready, automatic=automatic, generation=2, version="1.4.0"
    )
    if expected is None:
        assert note is None
        return
    assert note is not None
    # A note tells its record; Ready's flip is its Event.
    assert reports.events(previous, previous, [note]) == []
    (entry,) = reports.audit_records(previous, previous, [note], version="1.4.0")
    assert (str(entry.decision), entry.reason) == expected
    assert entry.details["version"] == "1.4.0"
    if entry.decision is records.Decision.QUARANTINED:
        assert entry.message == QUARANTINED.message
        assert entry.details["trigger"] == ("automatic" if automatic else "spec.quarantine")
    else:
        assert "generation 2" in entry.message


# --- one table: an Event and a record of the same change come from the same row -------------------

FLIPS = {
    "verified": (("Verified", "True", "SignatureVerified", 1), "Normal", "Verify", "Verified"),
    "audit-violations-warn": (
        ("Verified", "True", "AuditViolations", 1),
        "Warning",
        "Verify",
        "Verified",
    ),
    "refused": (
        ("Verified", "False", "UntrustedSigner", 1),
        "Warning",
        "Verify",
        "VerificationRefused",
    ),
    "approved": (("Approved", "True", "Approved", 1), "Normal", "Approve", "Approved"),
    "held": (("Approved", "False", "ApprovalMissing", 1), "Warning", "Approve", "ApprovalHeld"),
    "broad-access": (
        ("Isolated", "False", "BroadAccessRefused", 1),
        "Warning",
        "Isolate",
        "BroadAccessRefused",
    ),
    "within-policy": (("Isolated", "True", "WithinPolicy", 1), "Normal", "Isolate", None),
    "rolled-out": (("Ready", "True", "Available", 1), "Normal", "Rollout", "RolledOut"),
    "not-ready": (("Ready", "False", "NotApproved", 1), "Warning", "Rollout", None),
}


@pytest.mark.parametrize(("condition", "type", "action", "decision"), FLIPS.values(), ids=FLIPS)
def test_a_new_condition_tells_as_its_row_says(
    condition: tuple[str, str, str, int], type: str, action: str, decision: str | None
) -> None:
    current = _status(condition)
    (event,) = reports.events(_status(), current, [])
    assert (event.type, event.reason, event.action) == (type, condition[2], action)
    assert event.note == f"{condition[0]} {condition[2]}"
    told = reports.audit_records(_status(), current, [], version="1.4.0")
    assert [str(record.decision) for record in told] == ([decision] if decision else [])


def test_a_reason_that_changes_without_a_flip_is_recorded_and_posts_its_event() -> None:
    previous = _status(("Approved", "False", "ApprovalMissing", 1))
    current = _status(("Approved", "False", "ApprovalExpired", 1))
    (event,) = reports.events(previous, current, [])
    assert (event.type, event.reason, event.action) == ("Warning", "ApprovalExpired", "Approve")
    assert [r.reason for r in reports.audit_records(previous, current, [], version="1")] == [
        "ApprovalExpired"
    ]


def test_a_message_that_changes_alone_posts_no_event() -> None:
    previous = _status(("Ready", "False", "Progressing", 1))
    current = _status(("Ready", "False", "Progressing", 1))
    current.conditions[0].message = "Deployment m: 1 of 2 replicas available"
    assert reports.events(previous, current, []) == []


def test_every_condition_change_posts_an_event_with_its_reason() -> None:
    """Every (type, status) row of the table posts an Event, so that no change of any condition
    goes untold: on its own, each change posts exactly one, with the condition's reason."""
    for type, status, reason in reports.CONDITIONS:
        assert reports.CONDITIONS[type, status, reason].event is not None, (type, status)
        before = _status((type, "Unknown", "Before", 1))
        after = _status((type, status, reason or "Something", 1))
        (event,) = reports.events(before, after, [])
        assert event.reason == (reason or "Something")


def test_reconciling_and_stalled_tell_a_reason_once_per_pass() -> None:
    previous = _status(
        ("Verified", "True", "SignatureVerified", 1),
        ("Ready", "True", "Available", 1),
        ("Reconciling", "False", "Available", 1),
        ("Stalled", "False", "Available", 1),
    )
    current = _status(
        ("Verified", "False", "UntrustedSigner", 2),
        ("Ready", "False", "NotVerified", 2),
        ("Reconciling", "False", "UntrustedSigner", 2),
        ("Stalled", "True", "UntrustedSigner", 2),
    )
    told = [(event.reason, event.action) for event in reports.events(previous, current, [])]
    assert told == [("UntrustedSigner", "Verify"), ("NotVerified", "Rollout")]
    # A stall whose cause did not change in this pass is told by Stalled itself.
    again = _status(*[(c.type, c.status.value, c.reason, 2) for c in previous.conditions[:3]])
    again.conditions.append(current.conditions[3])
    (event,) = reports.events(previous, again, [])
    assert (event.type, event.reason, event.action) == ("Warning", "UntrustedSigner", "Reconcile")


def test_notes_tell_as_their_rows_say_and_what_the_writes_did_is_marked() -> None:
    notes = [
        reports.applied(["Deployment/m", "Service/m"]),
        reports.drift_reverted(child="Deployment/m", managers=["kubectl-edit"]),
        reports.republished(
            model="bert",
            version="1",
            replaced="sha256:a",
            root_digest="sha256:b",
            accepted_by="spec.model.rootDigest",
            approvals_needed=False,
        ),
    ]
    events = reports.events(_status(), _status(), notes)
    assert [(e.type, e.reason, e.action, e.written) for e in events] == [
        ("Normal", "Applied", "Apply", True),
        ("Warning", "DriftReverted", "Revert", True),
        ("Warning", "Republished", "Verify", False),
    ]
    told = reports.audit_records(_status(), _status(), notes, version="1")
    assert [(str(r.decision), r.reason, r.written) for r in told] == [
        ("DriftReverted", "ChangedByAnotherManager", True),
        ("Republished", "Republished", False),
    ]
    assert told[0].details == {"child": "Deployment/m", "managers": ["kubectl-edit"]}


def test_every_decision_the_operator_records_has_a_row() -> None:
    rows = [
        *reports.CONDITIONS.values(),
        *reports.HAPPENINGS.values(),
        *reports.STORE_CONDITIONS.values(),
    ]
    tabled = {row.audit for row in rows}
    made_elsewhere = {
        records.Decision.AUDIT_CHAIN_STARTED,
        records.Decision.AUDIT_CHAIN_CLOSED,
        records.Decision.RECORD_FAILED,
        # The audit proxy's, in its own log.
        records.Decision.INFERENCE_REQUEST,
        records.Decision.INPUT_RECORDS_DROPPED,
    }
    assert set(records.Decision) - made_elsewhere <= tabled
    assert set(reports.Happening) == set(reports.HAPPENINGS)
    assert {str(h) for h in reports.Happening} >= set(v1alpha1.EVENT_REASONS)


def _checkpoints(status: str, reason: str, message: str = "as decided") -> v1alpha1.Condition:
    return v1alpha1.Condition(
        type="AuditCheckpoints",
        status=v1alpha1.ConditionStatus(status),
        reason=reason,
        message=message,
        last_transition_time="2026-05-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param(None, None, [], id="a store that does not ask"),
        pytest.param(None, ("Unknown", "NoCheckpointYet"), [], id="none written yet"),
        pytest.param(
            ("True", "CheckpointsStored"),
            ("False", "CheckpointWriteFailed"),
            [("Warning", "CheckpointWriteFailed")],
            id="a refused write is a warning",
        ),
        pytest.param(
            None,
            ("False", "CheckpointStoreNotReady"),
            [("Warning", "CheckpointStoreNotReady")],
            id="a store that cannot keep them from the start",
        ),
        pytest.param(
            ("False", "CheckpointStoreNotReady"),
            ("False", "CheckpointWriteFailed"),
            [("Warning", "CheckpointWriteFailed")],
            id="another reason is told",
        ),
        pytest.param(
            ("False", "CheckpointWriteFailed"),
            ("False", "CheckpointWriteFailed"),
            [],
            id="the same failure again is not",
        ),
        pytest.param(
            ("False", "CheckpointWriteFailed"),
            ("True", "CheckpointsStored"),
            [("Normal", "CheckpointsStored")],
            id="cleared",
        ),
        pytest.param(
            ("True", "CheckpointsStored"), ("True", "CheckpointsStored"), [], id="each stored one"
        ),
    ],
)
def test_a_store_that_does_not_keep_the_checkpoints_it_asks_for_is_a_warning(
    previous: tuple[str, str] | None,
    current: tuple[str, str] | None,
    expected: list[tuple[str, str]],
) -> None:
    told = reports.checkpoint_events(
        _checkpoints(*previous) if previous is not None else None,
        _checkpoints(*current, message="why") if current is not None else None,
    )
    assert [(event.type, event.reason) for event in told] == expected
    assert all(event.note == "why" and event.action == "StoreCheckpoint" for event in told)
