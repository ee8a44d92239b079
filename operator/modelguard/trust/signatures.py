"""Checking a bundle's signature against trusted signers: DSSE PAE and ECDSA, x509 chains.

Key method: the DSSE signature is ECDSA over PAE(payloadType, payload) with the hash matching the
curve (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512), as model_signing signs; the bundle's key hint
(hex SHA-256 of the PEM public key) picks the key. Certificate method: the bundle carries the
chain, signing certificate first, which certificates.py checks against the policy's roots; the
signature is then ECDSA with the signing certificate's key.
Keyless sigstore needs Fulcio's roots and Rekor online: refused with KeylessUnavailable.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import typing

from cryptography import exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from modelguard.trust import bundle, reasons

if typing.TYPE_CHECKING:
    from cryptography import x509

    from modelguard.trust import certificates

# The hash each curve signs with (FIPS 186-5, as model_signing pairs them): for verifying
# signatures here and for signing approvals.
CURVE_HASHES: typing.Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


@dataclasses.dataclass(frozen=True)
class KeySigner:
    """A signer trusted by its elliptic-curve public key."""

    name: str
    key: ec.EllipticCurvePublicKey


@dataclasses.dataclass(frozen=True)
class CertificateSigner:
    """A signer trusted through certificates chaining to one of `roots`; with an `identity`,
    only a signing certificate naming it (None: any certificate the roots certify)."""

    name: str
    roots: tuple[x509.Certificate, ...]
    identity: certificates.Identity | None = None


@dataclasses.dataclass(frozen=True)
class KeylessSigner:
    """A sigstore keyless identity; verifying it needs the public-good infrastructure online."""

    name: str
    issuer: str
    identity: str


TrustedSigner = KeySigner | CertificateSigner | KeylessSigner


@dataclasses.dataclass(frozen=True)
class Verified:
    """Whose signature verified: the policy's signer name and what identified it."""

    signer: str
    identity: str
    valid_until: datetime.datetime | None = None
    """Certificate method: when the first certificate of the path expires, after which the same
    signature no longer verifies (certificates are judged at verification time)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    return _pae_header(payload_type, payload) + payload


def _pae_header(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d " % (len(kind), kind, len(payload))


class _Message:
    """The PAE of a bundle, hashed as each curve's hash needs it, never built: it would copy the
    payload, the largest part of a signature file. `known` are digests taken before (by hash
    name), when the payload itself is no longer at hand (trust/evidence)."""

    def __init__(
        self, signed: bundle.Bundle, known: typing.Mapping[str, bytes] | None = None
    ) -> None:
        self._signed = signed
        self._digests: dict[str, bytes] = dict(known or {})

    def digest(self, algorithm: hashes.HashAlgorithm) -> bytes:
        found = self._digests.get(algorithm.name)
        if found is None:
            hasher = hashes.Hash(algorithm)
            hasher.update(_pae_header(self._signed.payload_type, self._signed.payload))
            hasher.update(self._signed.payload)
            found = self._digests[algorithm.name] = hasher.finalize()
        return found


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """model_signing's key hint: hex SHA-256 of the PEM SubjectPublicKeyInfo."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def load_public_key(pem: bytes, *, field: str) -> ec.EllipticCurvePublicKey:
    """An elliptic-curve public key from PEM; InvalidKey naming `field` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, exceptions.UnsupportedAlgorithm) as error:
        raise _invalid_key(f"{field} is not a PEM public key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _invalid_key(f"{field} is not an elliptic-curve key (model_signing signs with EC)")
    if key.curve.name not in CURVE_HASHES:
        raise _invalid_key(
            f"{field} uses curve {key.curve.name}; supported: {', '.join(CURVE_HASHES)}"
        )
    return key


def verify(
    signed: bundle.Bundle,
    signers: typing.Sequence[TrustedSigner],
    *,
    at: datetime.datetime | None = None,
    digests: typing.Mapping[str, bytes] | None = None,
) -> Verified:
    """The trusted signer whose signature `signed` carries; VerificationError otherwise.

    `at` is when certificates must be valid; by default now. The certificate method carries no
    trusted signing time (OMS 8.2: the leaf MUST be within its validity period), so a signature
    is judged when it is verified, never at the certificate's own notBefore. `digests` are the
    signed message's digests by hash name, kept from an earlier verification (trust/evidence),
    instead of the bundle's payload.
    """
    message = _Message(signed, digests)
    if signed.keyless:
        if any(isinstance(signer, KeylessSigner) for signer in signers):
            raise reasons.VerificationError(
                reasons.Reason.KEYLESS_UNAVAILABLE,
                f"{signed.label} is a sigstore keyless signature: verifying it needs the "
                "public-good sigstore infrastructure (Fulcio, Rekor), not available offline",
            )
        raise _untrusted(
            f"{signed.label} is a sigstore keyless signature; no signer of the policy is keyless"
        )
    if signed.certificates:
        return _verify_certificate(signed, message, signers=signers, at=at)
    return _verify_key(signed, message, signers=signers)


def _verify_key(
    signed: bundle.Bundle, message: _Message, *, signers: typing.Sequence[TrustedSigner]
) -> Verified:
    keys = [signer for signer in signers if isinstance(signer, KeySigner)]
    if signed.key_hint is not None:
        matching = [signer for signer in keys if key_hint(signer.key) == signed.key_hint]
        if not matching:
            raise _untrusted(
                f"{signed.label} is signed by key sha256:{signed.key_hint}, which is not a "
                f"trusted public key of the policy ({_names(keys)})"
            )
        for signer in matching:
            if _ecdsa_ok(signer.key, signed.signature, message):
                return Verified(signer.name, f"key sha256:{signed.key_hint}")
        raise reasons.VerificationError(
            reasons.Reason.BAD_SIGNATURE,
            f"{signed.label}: the signature does not verify with trusted key "
            f"{matching[0].name!r}: the statement or signature was altered",
        )
    for signer in keys:
        if _ecdsa_ok(signer.key, signed.signature, message):
            return Verified(signer.name, f"key sha256:{key_hint(signer.key)}")
    raise _untrusted(
        f"{signed.label} verifies with none of the policy's public keys ({_names(keys)})"
    )


def _verify_certificate(
    signed: bundle.Bundle,
    message: _Message,
    *,
    signers: typing.Sequence[TrustedSigner],
    at: datetime.datetime | None,
) -> Verified:
    from modelguard.trust import certificates  # noqa: PLC0415 - see certificates' docstring

    chain = certificates.chain_of(signed)
    leaf = chain[0]
    subject = leaf.subject.rfc4514_string()
    when = at or datetime.datetime.now(datetime.UTC)
    roots = [signer for signer in signers if isinstance(signer, CertificateSigner)]
    errors: list[reasons.Violation] = []
    for signer in roots:
        try:
            path = certificates.check_chain(chain, roots=signer.roots, at=when, label=signed.label)
            certificates.check_signing_usage(leaf, label=signed.label)
            if signer.identity is not None:
                certificates.check_identity(leaf, signer.identity, label=signed.label)
        except reasons.VerificationError as error:
            # Only what it says: the error's traceback and context hold this frame, which holds
            # the list, and with it the whole signature file until the garbage collector runs.
            errors.append(error.violation)
            continue
        try:
            key = leaf.public_key()
        except (ValueError, exceptions.UnsupportedAlgorithm):
            key = None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVE_HASHES:
            raise _invalid_key(
                f"{signed.label}: the signing certificate's key is not EC P-256/384/521"
            )
        if not _ecdsa_ok(key, signed.signature, message):
            raise reasons.VerificationError(
                reasons.Reason.BAD_SIGNATURE,
                f"{signed.label}: the signature does not verify with the key of certificate "
                f"{subject!r}: the statement or signature was altered",
            )
        expires = min(certificate.not_valid_after_utc for certificate in path)
        return Verified(signer.name, f"certificate {subject}", valid_until=expires)
    # A chain that reached a root but failed a later check says more than "untrusted".
    specific = [e for e in errors if e.reason != reasons.Reason.UNTRUSTED_SIGNER]
    if specific:
        raise reasons.VerificationError.of(specific[0])
    if len(errors) == 1:
        raise reasons.VerificationError.of(errors[0])
    raise _untrusted(
        f"{signed.label}: certificate {subject!r} does not chain to a trusted certificate root "
        f"of the policy ({_names(roots)})"
    )


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, signature: bytes, message: _Message) -> bool:
    algorithm = CURVE_HASHES[key.curve.name]()
    try:
        key.verify(signature, message.digest(algorithm), ec.ECDSA(utils.Prehashed(algorithm)))
    except (exceptions.InvalidSignature, ValueError):
        return False
    return True


def _names(signers: typing.Sequence[TrustedSigner]) -> str:
    return ", ".join(signer.name for signer in signers) or "none configured"


def _untrusted(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.UNTRUSTED_SIGNER, message)


def _invalid_key(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.INVALID_KEY, message)
