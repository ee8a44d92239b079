"""Whether a validly signed root digest may stand for the spec's model version: the spec's pin,
the digest first verified for the version, the policy's onRepublish and requireSubjectName."""

from __future__ import annotations

import typing

import pytest

from modelguard.api import trustpolicy, v1alpha1
from modelguard.reconcile import observations
from modelguard.trust import pinning, reasons

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
SIG = "s3://models/sentiment-bert/1.4.0/model.sig"
NOW = "2030-01-02T00:00:00Z"
EARLIER = "2030-01-01T00:00:00Z"
KEY = "-----BEGIN PUBLIC KEY-----"


def _policy(**fields: typing.Any) -> trustpolicy.TrustPolicySpec:
    return trustpolicy.TrustPolicySpec.model_construct(
        **{
            "on_republish": trustpolicy.OnRepublish.REFUSE,
            "require_subject_name": False,
            **fields,
        }
    )


def _record(
    version: str = "1.4.0", digest: str = A, model: str = "sentiment-bert"
) -> pinning.Record:
    return pinning.Record(model, version, digest, EARLIER)


def _decide(
    *,
    digest: str = A,
    pinned: str | None = None,
    records: tuple[pinning.Record, ...] = (),
    subject: str = "sentiment-bert",
    **policy: typing.Any,
) -> pinning.Decision:
    return pinning.decide_digest(
        model="sentiment-bert",
        version="1.4.0",
        root_digest=digest,
        subject_name=subject,
        pinned=pinned,
        records=records,
        policy=_policy(**policy),
        signature_uri=SIG,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("decide", "reason", "records", "replaced"),
    [
        pytest.param(
            _decide,
            None,
            [("1.4.0", A, NOW)],
            None,
            id="first-verification-is-recorded",
        ),
        pytest.param(
            lambda: _decide(records=(_record(),)),
            None,
            [("1.4.0", A, EARLIER)],
            None,
            id="the-same-digest-again-keeps-its-record",
        ),
        pytest.param(
            lambda: _decide(digest=B, records=(_record(),)),
            reasons.Reason.DIGEST_CHANGED,
            [("1.4.0", A, EARLIER)],
            None,
            id="another-digest-for-the-version-is-refused-by-default",
        ),
        pytest.param(
            lambda: _decide(
                digest=B, records=(_record(),), on_republish=trustpolicy.OnRepublish.REAPPROVE
            ),
            None,
            [("1.4.0", B, NOW)],
            A,
            id="reapprove-accepts-a-republication-and-reports-it",
        ),
        pytest.param(
            lambda: _decide(digest=B, pinned=B, records=(_record(),)),
            None,
            [("1.4.0", B, NOW)],
            A,
            id="pinning-the-new-digest-accepts-it-explicitly",
        ),
        pytest.param(
            lambda: _decide(digest=B, pinned=A),
            reasons.Reason.ROOT_DIGEST_PIN_MISMATCH,
            [],
            None,
            id="a-pin-refuses-any-other-digest-even-first",
        ),
        pytest.param(
            lambda: _decide(
                digest=B,
                pinned=A,
                records=(_record(),),
                on_republish=trustpolicy.OnRepublish.REAPPROVE,
            ),
            reasons.Reason.ROOT_DIGEST_PIN_MISMATCH,
            [("1.4.0", A, EARLIER)],
            None,
            id="reapprove-never-overrides-a-pin",
        ),
        pytest.param(
            lambda: _decide(digest=B, records=(_record("1.3.0"),)),
            None,
            [("1.4.0", B, NOW), ("1.3.0", A, EARLIER)],
            None,
            id="other-versions-are-other-records",
        ),
        pytest.param(
            lambda: _decide(digest=B, records=(_record(model="other-model"),)),
            None,
            [("1.4.0", B, NOW), ("1.4.0", A, EARLIER)],
            None,
            id="another-model-of-the-same-version-is-another-record",
        ),
        pytest.param(
            lambda: _decide(subject="m", require_subject_name=True),
            reasons.Reason.SUBJECT_NAME_MISMATCH,
            [],
            None,
            id="subject-name-must-be-the-model-when-required",
        ),
        pytest.param(
            lambda: _decide(subject="m"),
            None,
            [("1.4.0", A, NOW)],
            None,
            id="subject-name-is-informational-by-default",
        ),
    ],
)
def test_decide_digest(
    decide: typing.Callable[[], pinning.Decision],
    reason: reasons.Reason | None,
    records: list[tuple[str, str, str]],
    replaced: str | None,
) -> None:
    decision = decide()
    assert (decision.violation.reason if decision.violation else None) == reason
    assert [(r.version, r.root_digest, r.since) for r in decision.records] == records
    assert decision.replaced == replaced
    assert (decision.accepted_by is not None) == (replaced is not None)


def test_refusals_name_the_field_and_both_digests() -> None:
    changed = _decide(digest=B, records=(_record(),)).violation
    assert changed is not None
    for named in (A, B, "spec.model.rootDigest", "onRepublish"):
        assert named in changed.message
    pinned = _decide(digest=B, pinned=A).violation
    assert pinned is not None
    assert pinned.message.startswith(f"spec.model.rootDigest pins {A} but {SIG} signs {B}")


def test_the_version_in_use_goes_first_and_the_oldest_unused_are_forgotten() -> None:
    many = tuple(_record(f"0.{n}", B) for n in range(v1alpha1.MAX_VERIFIED_DIGESTS))
    decision = _decide(records=many)
    assert len(decision.records) == v1alpha1.MAX_VERIFIED_DIGESTS
    assert decision.records[0].version == "1.4.0"
    assert decision.records[-1].version == f"0.{v1alpha1.MAX_VERIFIED_DIGESTS - 2}"
    again = _decide(digest=B, records=(*many[:3], _record("1.4.0", B)))
    assert [r.version for r in again.records] == ["1.4.0", "0.0", "0.1", "0.2"]


def _read(raw: dict[str, typing.Any]) -> v1alpha1.ModelDeploymentStatus:
    return observations.parse_status(raw)


def test_records_read_back_leniently() -> None:
    written = [
        _record().to_status().model_dump(),
        {"model": "sentiment-bert", "version": "1.4.0", "rootDigest": B},  # a duplicate
        {"version": "2.0"},
        _record("1.3.0").to_status().model_dump(),
    ]
    status = _read({"verifiedDigests": written, "verification": {"version": "2.0"}})
    assert pinning.from_status(status, model="sentiment-bert") == (_record(), _record("1.3.0"))
    assert pinning.from_status(_read({}), model="sentiment-bert") == ()
    # What does not parse at all is left out, not the rest of the status.
    junk = _read({"verifiedDigests": "junk", "activeVersion": "1.4.0"})
    assert pinning.from_status(junk, model="sentiment-bert") == ()
    assert junk.active_version == "1.4.0"


def test_a_status_from_before_the_records_stands_for_its_last_verified_version() -> None:
    older = {"verification": {"version": "1.4.0", "rootDigest": A, "verifiedAt": EARLIER}}
    records = pinning.from_status(_read(older), model="sentiment-bert")
    assert records == (_record(),)
    assert _decide(digest=B, records=records).violation is not None
