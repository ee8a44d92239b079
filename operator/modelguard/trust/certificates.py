"""x509 certificates of the certificate signing method: PEM roots, bundle chains, their checks.

Separate from signatures.py because importing cryptography's x509 costs a noticeable share of a
`modelguard verify` start-up, and only policies with certificate roots and bundles with a chain
need it: signatures.py and policy.py import this module only then.

A chain must lead from the signing certificate to one of the policy's roots (a root inside the
bundle counts for nothing), every certificate valid at the time checked, every issuer a CA, and
the signing certificate usable for signing (digitalSignature, or extended key usage codeSigning).
"""

from __future__ import annotations

import datetime
import typing

from cryptography import exceptions, x509
from cryptography.x509 import oid

from modelguard.trust import bundle, reasons

# Longest chain followed from the signing certificate to a root.
_MAX_CHAIN_DEPTH: typing.Final = 8


def load(pem: bytes, *, field: str) -> tuple[x509.Certificate, ...]:
    """One or more PEM certificates; InvalidKey naming `field` otherwise."""
    try:
        certificates = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as error:
        raise _invalid_key(f"{field} is not PEM certificates: {error}") from None
    if not certificates:
        raise _invalid_key(f"{field} holds no certificate")
    return certificates


def chain_of(signed: bundle.Bundle) -> list[x509.Certificate]:
    """The bundle's certificate chain, signing certificate first; MalformedBundle otherwise."""
    try:
        return [x509.load_der_x509_certificate(raw) for raw in signed.certificates]
    except ValueError as error:
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE,
            f"{signed.label}: verificationMaterial.x509CertificateChain holds a certificate "
            f"that is not DER: {error}",
        ) from None


def check_chain(
    chain: list[x509.Certificate], *, roots: tuple[x509.Certificate, ...], at: datetime.datetime
) -> None:
    """A path from the signing certificate to one of `roots`, each valid at `at`, issuers CAs."""
    path = [chain[0]]
    intermediates = chain[1:]
    while len(path) <= _MAX_CHAIN_DEPTH:
        current = path[-1]
        anchor = next((root for root in roots if _issued_by(current, root)), None)
        if anchor is not None:
            for certificate in [*path, anchor]:
                _check_validity(certificate, at=at)
            for issuer in [*path[1:], anchor]:
                _check_ca(issuer)
            return
        parent = next((c for c in intermediates if c not in path and _issued_by(current, c)), None)
        if parent is None:
            break
        path.append(parent)
    raise _untrusted("no path to a trusted root")


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, exceptions.InvalidSignature, exceptions.UnsupportedAlgorithm):
        # A key on a curve (or of a kind) cryptography cannot use issues nothing we can check.
        return False
    return True


def _check_validity(certificate: x509.Certificate, *, at: datetime.datetime) -> None:
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise reasons.VerificationError(
            reasons.Reason.CERTIFICATE_EXPIRED,
            f"certificate {certificate.subject.rfc4514_string()!r} is valid from "
            f"{certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()}, not at {at.isoformat()}",
        )


def _check_ca(certificate: x509.Certificate) -> None:
    subject = certificate.subject.rfc4514_string()
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.value.ca:
        raise _untrusted(f"issuer certificate {subject!r} is not a CA (basicConstraints)")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise _untrusted(f"issuer certificate {subject!r} may not sign certificates (keyUsage)")


def check_signing_usage(leaf: x509.Certificate, *, label: str) -> None:
    """The signing certificate may sign: CertificateNotForSigning otherwise."""
    # model_signing's rule: keyUsage digitalSignature, or extended key usage codeSigning.
    try:
        if leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return
    except x509.ExtensionNotFound:
        pass
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if oid.ExtendedKeyUsageOID.CODE_SIGNING in extended:
            return
    except x509.ExtensionNotFound:
        pass
    raise reasons.VerificationError(
        reasons.Reason.CERTIFICATE_NOT_FOR_SIGNING,
        f"{label}: certificate {leaf.subject.rfc4514_string()!r} has neither keyUsage "
        "digitalSignature nor extended key usage codeSigning",
    )


def _untrusted(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.UNTRUSTED_SIGNER, message)


def _invalid_key(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.INVALID_KEY, message)
