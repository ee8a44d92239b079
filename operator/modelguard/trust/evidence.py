"""What a verification established about a signature file, kept so that the artifact it pinned
can be judged again under a later policy without reading the file again (pure).

The bytes that serve are pinned (their root digest and the signature file's SHA-256); what can
change is the policy. Re-reading the signature file from the tenant's store to judge it again
would let whoever may write the store (or delete the credentials) decide whether a revocation
stops what serves. So the operator keeps, for the artifact it rolls out, what the signatures
need: each signature, the key hint or certificate chain it names, and the digests of the signed
message (the DSSE pre-authentication encoding) under each hash a signing curve may use. Judging
it again is then the same signature and certificate check under the current policy's signers,
its k-of-n, its hash algorithms and its sources, with no input anybody else can withdraw.

Only bundles that sign the very statement verified are kept (any other could sign other files),
at most MAX_SIGNATURES of them and MAX_BYTES in all: a signature left out can only make the
judgement stricter.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

from cryptography.hazmat.primitives import hashes

from modelguard.trust import bundle, policy, reasons, signatures

MAX_SIGNATURES: typing.Final = 16
"""Signatures of one bundle file kept, at most."""
MAX_BYTES: typing.Final = 48 * 1024
"""What the kept signatures and certificates may weigh in all (DER and signature bytes)."""
_HASHES: typing.Final = tuple(algorithm() for algorithm in signatures.CURVE_HASHES.values())


@dataclasses.dataclass(frozen=True)
class Signature:
    """One kept signature: what `signatures.verify` needs of its bundle, but the payload."""

    signature: bytes
    key_hint: str | None = None
    certificates: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What verifying one signature file established, for judging it again later."""

    root_digest: str
    signature_digest: str
    hash_algorithm: str
    source_uri: str
    signature_uri: str
    verified_at: datetime.datetime
    """When it was verified: certificates are judged again at that time (the signature was made
    and checked while they were valid; only the policy changed since)."""
    message_digests: dict[str, bytes]
    """The signed message's digest by hash name (sha256, sha384, sha512)."""
    signatures: tuple[Signature, ...]


def record(
    signed: typing.Sequence[bundle.Bundle],
    *,
    payload: bytes,
    root_digest: str,
    signature_digest: str,
    hash_algorithm: str,
    source_uri: str,
    signature_uri: str,
    verified_at: datetime.datetime,
) -> Evidence:
    """The evidence of the bundles of one signature file whose payload is `payload` (the
    statement verified)."""
    kept: list[Signature] = []
    weight = 0
    for item in signed:
        if item.keyless or item.payload != payload or len(kept) >= MAX_SIGNATURES:
            continue
        size = len(item.signature) + sum(len(der) for der in item.certificates)
        if weight + size > MAX_BYTES:
            continue
        weight += size
        kept.append(Signature(item.signature, item.key_hint, tuple(item.certificates)))
    payload_type = signed[0].payload_type if signed else ""
    digests = {}
    for algorithm in _HASHES:
        hasher = hashes.Hash(algorithm)
        hasher.update(signatures.pae(payload_type, payload))
        digests[algorithm.name] = hasher.finalize()
    return Evidence(
        root_digest=root_digest,
        signature_digest=signature_digest,
        hash_algorithm=hash_algorithm,
        source_uri=source_uri,
        signature_uri=signature_uri,
        verified_at=verified_at,
        message_digests=digests,
        signatures=tuple(kept),
    )


def judge(
    evidence: Evidence, rules: policy.Rules, *, namespace: str | None
) -> reasons.Violation | None:
    """None when `rules` (a policy now) still accept what `evidence` established; else the first
    violation, as verifying the signature file under them would find it (Audit admits what it
    admits at verification)."""
    verified: list[signatures.Verified] = []
    failures: list[reasons.Violation] = []
    for index, kept in enumerate(evidence.signatures):
        entry = bundle.Bundle(
            label=f"{evidence.signature_uri} (signature {index + 1} as verified "
            f"{evidence.verified_at.isoformat()})",
            payload_type="",
            payload=b"",
            signature=kept.signature,
            key_hint=kept.key_hint,
            certificates=kept.certificates,
            keyless=False,
        )
        try:
            verified.append(
                signatures.verify(
                    entry, rules.signers, at=evidence.verified_at, digests=evidence.message_digests
                )
            )
        except reasons.VerificationError as error:
            failures.append(error.violation)
    if not verified:
        return (
            failures[0]
            if failures
            else reasons.Violation(
                reasons.Reason.UNTRUSTED_SIGNER,
                f"{evidence.signature_uri}: no signature of it was kept to judge it by",
            )
        )
    checks: list[policy.Check] = [
        lambda: policy.check_min_signers(verified, min_signers=rules.min_signers),
        lambda: _hash_allowed(evidence, rules),
        lambda: policy.check_source(
            evidence.source_uri, sources=rules.sources, namespace=namespace
        ),
        lambda: policy.check_source(
            evidence.signature_uri, sources=rules.sources, namespace=namespace
        ),
    ]
    violations = policy.evaluate(checks)
    if violations and failures and violations[0].reason is reasons.Reason.TOO_FEW_SIGNERS:
        violations[0] = reasons.Violation(
            violations[0].reason, f"{violations[0].message}; {failures[0]}"
        )
    try:
        policy.enforce(violations, audit=rules.audit)
    except reasons.VerificationError as error:
        return error.violation
    return None


def _hash_allowed(evidence: Evidence, rules: policy.Rules) -> reasons.Violation | None:
    if evidence.hash_algorithm in rules.hash_algorithms:
        return None
    return reasons.Violation(
        reasons.Reason.HASH_NOT_ALLOWED,
        f"{evidence.signature_uri} hashes the model's files with {evidence.hash_algorithm}, "
        f"which spec.hashAlgorithms no longer allows ({', '.join(sorted(rules.hash_algorithms))})",
    )
