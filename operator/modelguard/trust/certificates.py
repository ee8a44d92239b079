"""x509 certificates of the certificate signing method: PEM roots, bundle chains, RFC 5280 path
validation, the code-signing usage and the signer's pinned identity.

Separate from signatures.py because importing cryptography's x509 costs a noticeable share of a
`modelguard verify` start-up, and only policies with certificate roots and bundles with a chain
need it: signatures.py and policy.py import this module only then.

Path validation is cryptography's RFC 5280 verifier (the one sigstore-python uses), not ours: a
path from the signing certificate through the bundle's other certificates to one of the policy's
roots (a root inside the bundle counts for nothing), every certificate valid at the time checked,
every issuer a CA (basicConstraints cA; keyUsage keyCertSign when it has a keyUsage) within its
pathLenConstraint and nameConstraints, no critical extension the verifier does not implement.
Then the signing certificate must be for code signing (extended key usage codeSigning, and
keyUsage digitalSignature when it has a keyUsage), then be the identity its signer pins.
What this module adds is the refusal's reason: the verifier's verdict, explained by walking the
same path to name the certificate and the rule (docs/decisions/0011-certificate-validation.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing

from cryptography import exceptions, x509
from cryptography.x509 import oid, verification

from modelguard.trust import bundle, reasons

# Longest path followed from the signing certificate to a root (cryptography's default too).
MAX_CHAIN_DEPTH: typing.Final = 8
# Certificates a bundle may carry: the deepest path and a root, with room to spare. The bundle is
# anyone's to write; the verifier tries the candidates it is given.
MAX_CARRIED: typing.Final = 16

_CRITICAL: typing.Final = re.compile(
    r"invalid extension: ([0-9.]+): certificate contains unaccounted"
)
# What the verifier's message wraps around its reason, dropped from ours.
_WRAPPING: typing.Final = re.compile(
    r"^(validation failed: |candidates exhausted: |fatal error: |"
    r"Python extension validator failed: ValueError: )+|"
    r" \(encountered processing <Certificate\(.*\)>\)$"
)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a signing certificate must name: its exact subject and/or one exact SAN.

    `subject_field` and `san_field` are where the values came from (policy field or CLI flag),
    for the refusal to name them."""

    subject: x509.Name | None
    san: str | None
    subject_field: str = "identity.subject"
    san_field: str = "identity.san"


def load(pem: bytes, *, field: str) -> tuple[x509.Certificate, ...]:
    """One or more PEM certificates; InvalidKey naming `field` otherwise."""
    try:
        certificates = tuple(x509.load_pem_x509_certificates(pem))
    # InvalidVersion (a version field other than v1 or v3) is no ValueError.
    except (ValueError, x509.InvalidVersion) as error:
        raise _invalid_key(f"{field} is not PEM certificates: {error}") from None
    if not certificates:
        raise _invalid_key(f"{field} holds no certificate")
    for index, certificate in enumerate(certificates):
        # A name that does not parse would fail the first chain checked against it instead.
        problem = _unparsed_names(certificate)
        if problem is not None:
            raise _invalid_key(f"{field}: certificate {index + 1} has a {problem}")
        problem = _unparsed_extensions(certificate)
        if problem is not None:
            raise _invalid_key(
                f"{field}: certificate {_name(certificate)} has an extension that does not "
                f"parse: {problem}"
            )
    return certificates


def is_ca(certificate: x509.Certificate) -> bool:
    """Whether `certificate` may issue others (basicConstraints cA): a root that is not can
    certify only itself, so it needs no pinned identity."""
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError:
        # An extension that does not parse: treat as a CA, which then needs a pinned identity.
        return True


def subject_name(text: str, *, field: str) -> x509.Name:
    """An RFC 4514 distinguished name (as `openssl x509 -nameopt RFC2253` prints it, most
    specific first); InvalidPolicy naming `field` otherwise."""
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as error:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            f"{field} is not an RFC 4514 distinguished name such as CN=release,O=Example: {error}",
        ) from None


def chain_of(signed: bundle.Bundle) -> list[x509.Certificate]:
    """The bundle's certificate chain, signing certificate first; MalformedBundle otherwise."""
    if len(signed.certificates) > MAX_CARRIED:
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE,
            f"{signed.label}: verificationMaterial.x509CertificateChain holds "
            f"{len(signed.certificates)} certificates; at most {MAX_CARRIED} are read",
        )
    try:
        chain = [x509.load_der_x509_certificate(raw) for raw in signed.certificates]
    # InvalidVersion (a version field other than v1 or v3) is no ValueError.
    except (ValueError, x509.InvalidVersion) as error:
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE,
            f"{signed.label}: verificationMaterial.x509CertificateChain holds a certificate "
            f"that is not DER: {error}",
        ) from None
    # Names are parsed on first access too, and every message names the certificate: one whose
    # subject or issuer does not parse is refused here, by its place in the chain.
    for index, certificate in enumerate(chain):
        problem = _unparsed_names(certificate)
        if problem is not None:
            raise reasons.VerificationError(
                reasons.Reason.MALFORMED_BUNDLE,
                f"{signed.label}: verificationMaterial.x509CertificateChain.certificates[{index}]"
                f" has a {problem}",
            )
    # Every later check reads extensions: one that does not parse refuses the bundle here, once,
    # whatever the verifier makes of it (it passes a garbled basicConstraints in a leaf).
    for certificate in chain:
        problem = _unparsed_extensions(certificate)
        if problem is not None:
            raise reasons.VerificationError(
                reasons.Reason.MALFORMED_BUNDLE,
                f"{signed.label}: verificationMaterial.x509CertificateChain: certificate "
                f"{_name(certificate)} has an extension that does not parse: {problem}",
            )
    return chain


def _unparsed_names(certificate: x509.Certificate) -> str | None:
    for field in ("subject", "issuer"):
        try:
            getattr(certificate, field).rfc4514_string()
        except ValueError as error:
            return f"{field} that does not parse: {error}"
    return None


def _unparsed_extensions(certificate: x509.Certificate) -> str | None:
    try:
        certificate.extensions  # noqa: B018 - parsed on first access
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        return str(error)
    return None


def check_chain(
    chain: list[x509.Certificate],
    *,
    roots: tuple[x509.Certificate, ...],
    at: datetime.datetime,
    label: str,
) -> list[x509.Certificate]:
    """The RFC 5280 path from chain[0] through chain[1:] to one of `roots`, valid at `at`, signing
    certificate first; VerificationError with the rule it breaks otherwise."""
    leaf, carried = chain[0], chain[1:]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        return verifier.verify(leaf, carried).chain
    except verification.VerificationError as error:
        raise _explain(
            str(error), leaf=leaf, carried=carried, roots=roots, at=at, label=label
        ) from None
    except ValueError as error:
        # A certificate cryptography cannot parse deeper (a malformed extension, say).
        raise _untrusted(
            f"{label}: certificate {_name(leaf)} cannot be validated: {error}"
        ) from None


def check_signing_usage(leaf: x509.Certificate, *, label: str) -> None:
    """The signing certificate is for code signing: CertificateNotForSigning otherwise."""
    # Stricter than model_signing, which takes keyUsage digitalSignature alone: then any
    # certificate of the CA (a TLS server's too) could sign models.
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = None
    if extended is None or oid.ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        has = (
            "no extended key usage"
            if extended is None
            else "extended key usage " + ", ".join(usage._name for usage in extended)
        )
        raise _not_for_signing(
            f"{label}: certificate {_name(leaf)} has {has}; a signing certificate needs "
            "extended key usage codeSigning"
        )
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise _not_for_signing(
            f"{label}: certificate {_name(leaf)} has a keyUsage without digitalSignature: its "
            "key may not sign"
        )


def check_identity(leaf: x509.Certificate, identity: Identity, *, label: str) -> None:
    """The signing certificate names the pinned subject and SAN: IdentityMismatch otherwise."""
    if identity.subject is not None and leaf.subject != identity.subject:
        raise _mismatch(
            f"{label}: certificate subject {_name(leaf)} is not {identity.subject_field} "
            f"{identity.subject.rfc4514_string()!r} (an exact match, in order)"
        )
    if identity.san is not None:
        kind, present = _sans(leaf, identity.san)
        if identity.san not in present:
            names = ", ".join(present) or "none"
            raise _mismatch(
                f"{label}: certificate {_name(leaf)} does not name {identity.san_field} "
                f"{identity.san!r} (its {kind} SANs: {names})"
            )


def san_kind(value: str) -> str:
    """Which SAN kind a pinned name is matched against: a URI has a scheme, an email an @."""
    if "://" in value:
        return "URI"
    return "email" if "@" in value else "DNS"


def _sans(leaf: x509.Certificate, value: str) -> tuple[str, list[str]]:
    kind = san_kind(value)
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return kind, []
    if kind == "URI":
        found = names.get_values_for_type(x509.UniformResourceIdentifier)
    elif kind == "email":
        found = names.get_values_for_type(x509.RFC822Name)
    else:
        found = names.get_values_for_type(x509.DNSName)
    return kind, list(found)


def _ca_key_usage(
    _policy: verification.Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(
            f"issuer {_name(certificate)} may not sign certificates: its keyUsage lacks keyCertSign"
        )


# Issuers: RFC 5280 (basicConstraints required; the verifier checks cA, pathLen and
# nameConstraints itself) plus keyUsage keyCertSign. Not the web PKI profile: private model-signing
# CAs rarely carry the authority key identifiers and SANs it requires. Every extension not listed
# is permitted if non-critical; a critical one the verifier does not implement is refused.
_CA_POLICY: typing.Final = (
    verification.ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _ca_key_usage)
)
# The signing certificate's usage is checked after the path, for a refusal that says so.
_EE_POLICY: typing.Final = verification.ExtensionPolicy.permit_all()


def _explain(
    detail: str,
    *,
    leaf: x509.Certificate,
    carried: list[x509.Certificate],
    roots: tuple[x509.Certificate, ...],
    at: datetime.datetime,
    label: str,
) -> reasons.VerificationError:
    """The verifier's refusal as a reason and a message naming the certificate at fault."""
    detail = _WRAPPING.sub("", detail)
    path = _path(leaf, carried=carried, roots=roots)
    where = f"{label}: certificate {_name(leaf)}"
    if path is None:
        # Nothing of it reaches a root of the signer: whatever else the verifier tripped over
        # (a name constraint or a validity period of the bundle's own CAs) is not the reason.
        return _untrusted(
            f"{where} does not chain to a trusted root: no path through the {len(carried)} "
            "other certificate(s) of the bundle reaches a root of the signer"
        )

    def which(certificate: x509.Certificate) -> str:
        return where if certificate is leaf else f"{where}: {_name(certificate)} of its path"

    if "not valid at validation time" in detail:
        for certificate in path:
            if at < certificate.not_valid_before_utc:
                return reasons.VerificationError(
                    reasons.Reason.CERTIFICATE_NOT_YET_VALID,
                    f"{which(certificate)} is valid from "
                    f"{certificate.not_valid_before_utc.isoformat()}, not yet at {at.isoformat()}",
                )
            if at > certificate.not_valid_after_utc:
                return reasons.VerificationError(
                    reasons.Reason.CERTIFICATE_EXPIRED,
                    f"{which(certificate)} expired "
                    f"{certificate.not_valid_after_utc.isoformat()}, before {at.isoformat()} "
                    "(certificates are judged at verification time)",
                )
    if "path length constraint" in detail:
        return reasons.VerificationError(
            reasons.Reason.CERTIFICATE_PATH_LENGTH_EXCEEDED,
            f"{where}: {_path_length_culprit(path)} allows fewer CAs below it "
            f"(basicConstraints pathLen) than its path has: {detail}",
        )
    if re.search(r"name ?constraint", detail, flags=re.IGNORECASE):
        return reasons.VerificationError(
            reasons.Reason.CERTIFICATE_NAME_CONSTRAINT_VIOLATED,
            f"{where}: a name is outside the nameConstraints of a CA of its path: {detail}",
        )
    critical = _CRITICAL.search(detail)
    if critical is not None:
        extension = critical.group(1)
        bearer = next((c for c in [leaf, *carried, *roots] if _has_critical(c, extension)), leaf)
        return reasons.VerificationError(
            reasons.Reason.CERTIFICATE_UNKNOWN_CRITICAL_EXTENSION,
            f"{which(bearer)} has critical extension {extension}, which the verifier "
            "does not implement (RFC 5280: such a certificate must be refused)",
        )
    for issuer in path[1:]:
        if not is_ca(issuer):
            return _untrusted(
                f"{where}: issuer {_name(issuer)} is not a CA (basicConstraints cA is not set)"
            )
    return _untrusted(f"{where} does not chain to a trusted root: {detail}")


def _path(
    leaf: x509.Certificate,
    *,
    carried: list[x509.Certificate],
    roots: tuple[x509.Certificate, ...],
) -> list[x509.Certificate] | None:
    """The certificates from `leaf` to a root by signature alone, for naming the one at fault."""
    path = [leaf]
    while len(path) <= MAX_CHAIN_DEPTH + 1:
        current = path[-1]
        if current in roots:
            return path
        anchor = next((root for root in roots if _issued_by(current, root)), None)
        if anchor is not None:
            return [*path, anchor]
        parent = next((c for c in carried if c not in path and _issued_by(current, c)), None)
        if parent is None:
            return None
        path.append(parent)
    return None


def _path_length_culprit(path: list[x509.Certificate] | None) -> str:
    for below, issuer in enumerate((path or [])[1:]):
        try:
            limit = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue
        # `below` CAs stand between this issuer and the signing certificate.
        if limit.path_length is not None and below > limit.path_length:
            return f"CA {_name(issuer)} (pathLen {limit.path_length})"
    return "a CA of its path"


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, exceptions.InvalidSignature, exceptions.UnsupportedAlgorithm):
        # A key on a curve (or of a kind) cryptography cannot use issues nothing we can check.
        return False
    return True


def _has_critical(certificate: x509.Certificate, dotted: str) -> bool:
    try:
        extension = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(dotted))
    except (x509.ExtensionNotFound, ValueError):
        return False
    return extension.critical


def _name(certificate: x509.Certificate) -> str:
    return repr(certificate.subject.rfc4514_string())


def _untrusted(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.UNTRUSTED_SIGNER, message)


def _not_for_signing(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.CERTIFICATE_NOT_FOR_SIGNING, message)


def _mismatch(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.CERTIFICATE_IDENTITY_MISMATCH, message)


def _invalid_key(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.INVALID_KEY, message)
