"""What serves judged again from what its verification established (trust/evidence.py): real
model_signing signatures and certificate chains, policies changed after the fact, and nothing
read again from the store."""

from __future__ import annotations

import datetime
import pathlib
import typing

import pytest
import test_trust_verify as helpers

from modelguard.api import trustpolicy
from modelguard.trust import evidence, policy, reasons, verify

NOW = datetime.datetime.now(datetime.UTC)


def _rules(**spec: typing.Any) -> policy.Rules:
    return policy.rules_of(
        trustpolicy.TrustPolicySpec.model_validate(
            {"sources": [{"uri": "s3://models/"}], **spec}, by_alias=True
        )
    )


def _signer(name: str, public: pathlib.Path) -> dict[str, str]:
    return {"name": name, "publicKey": public.read_text()}


def _kept(signature_file: bytes, rules: policy.Rules) -> evidence.Evidence:
    """What the operator records when it verifies `signature_file` under `rules`."""
    bundles = verify.bundles_of(signature_file)
    signed = verify.verify_signatures(
        signature_file, rules, source_uri="s3://models/m/", bundles=bundles
    )
    return evidence.record(
        bundles,
        payload=signed.payload,
        root_digest="sha256:" + signed.statement.root_digest.hex(),
        signature_digest="sha256:" + "00" * 32,
        hash_algorithm=signed.statement.serialization.hash_type,
        source_uri="s3://models/m/",
        signature_uri="s3://models/m/model.sig",
        verified_at=NOW,
    )


@pytest.fixture
def two_signatures(tmp_path: pathlib.Path) -> tuple[bytes, pathlib.Path, pathlib.Path]:
    """A signature file with two bundles, one per key (as during a key rotation)."""
    old_private, old_public = helpers._key(tmp_path, "old")
    new_private, new_public = helpers._key(tmp_path, "new")
    model = helpers._write(tmp_path / "model", {"weights.safetensors": b"w" * 10})
    lines = []
    for name, private in (("old", old_private), ("new", new_private)):
        helpers._sign(model, tmp_path / f"{name}.sig", private)
        lines.append((tmp_path / f"{name}.sig").read_bytes().strip())
    return b"\n".join(lines) + b"\n", old_public, new_public


def test_the_policy_it_was_verified_under_still_accepts_it(
    two_signatures: tuple[bytes, pathlib.Path, pathlib.Path],
) -> None:
    signature_file, old, _ = two_signatures
    rules = _rules(signers=[_signer("old", old)])
    assert evidence.judge(_kept(signature_file, rules), rules, namespace="ns") is None


def test_a_revoked_key_is_refused_without_the_signature_file(
    two_signatures: tuple[bytes, pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    signature_file, old, _ = two_signatures
    kept = _kept(signature_file, _rules(signers=[_signer("old", old)]))
    _, successor = helpers._key(tmp_path, "successor")
    refused = evidence.judge(
        kept, _rules(signers=[_signer("successor", successor)]), namespace="ns"
    )
    assert refused is not None
    assert refused.reason is reasons.Reason.UNTRUSTED_SIGNER


def test_a_key_rotation_keeps_what_the_new_key_signed_too(
    two_signatures: tuple[bytes, pathlib.Path, pathlib.Path],
) -> None:
    # Verified while only the old key was trusted; the policy then trusts only the new one. The
    # bundle signed by the new key was kept though it did not count then: it counts now.
    signature_file, old, new = two_signatures
    kept = _kept(signature_file, _rules(signers=[_signer("old", old)]))
    assert evidence.judge(kept, _rules(signers=[_signer("new", new)]), namespace="ns") is None


def test_more_signers_required_than_kept_is_refused(
    two_signatures: tuple[bytes, pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    signature_file, old, new = two_signatures
    kept = _kept(signature_file, _rules(signers=[_signer("old", old)]))
    _, third = helpers._key(tmp_path, "third")
    rules = _rules(
        signers=[_signer("old", old), _signer("new", new), _signer("third", third)], minSigners=3
    )
    refused = evidence.judge(kept, rules, namespace="ns")
    assert refused is not None
    assert refused.reason is reasons.Reason.TOO_FEW_SIGNERS


def test_a_source_withdrawn_from_the_policy_is_refused(
    two_signatures: tuple[bytes, pathlib.Path, pathlib.Path],
) -> None:
    signature_file, old, _ = two_signatures
    kept = _kept(signature_file, _rules(signers=[_signer("old", old)]))
    moved = policy.rules_of(
        trustpolicy.TrustPolicySpec.model_validate(
            {"signers": [_signer("old", old)], "sources": [{"uri": "s3://elsewhere/"}]}
        )
    )
    refused = evidence.judge(kept, moved, namespace="ns")
    assert refused is not None
    assert refused.reason is reasons.Reason.SOURCE_NOT_ALLOWED


def test_a_bundle_of_other_statement_is_not_kept(tmp_path: pathlib.Path) -> None:
    # A bundle signing another statement could sign other files: judging with it could accept
    # what was never verified, so only bundles of the verified statement are kept.
    private, public = helpers._key(tmp_path, "k")
    other_private, _ = helpers._key(tmp_path, "other")
    first = helpers._write(tmp_path / "first", {"a.safetensors": b"a"})
    second = helpers._write(tmp_path / "second", {"b.safetensors": b"b"})
    helpers._sign(first, tmp_path / "first.sig", private)
    helpers._sign(second, tmp_path / "second.sig", other_private)
    signature_file = (tmp_path / "first.sig").read_bytes().strip() + b"\n"
    signature_file += (tmp_path / "second.sig").read_bytes().strip() + b"\n"
    kept = _kept(signature_file, _rules(signers=[_signer("k", public)]))
    assert len(kept.signatures) == 1
