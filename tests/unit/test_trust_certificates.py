"""The certificate signing method: RFC 5280 path validation against the policy's roots, the code
signing usage, validity at verification time, the signer's pinned identity, and a refusal that
says which rule failed and for which certificate.

Certificates are built here with `cryptography`, one named case per rule; the end-to-end tests
sign real models with model_signing's certificate method.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import pathlib
import typing
from contextlib import redirect_stderr, redirect_stdout

import model_signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from modelguard import cli
from modelguard.api import errors, trustpolicy
from modelguard.trust import bundle, certificates, policy, reasons, signatures, verify

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
CODE_SIGNING = oid.ExtendedKeyUsageOID.CODE_SIGNING
# An extension no verifier knows; marked critical, a certificate carrying it must be refused.
UNKNOWN = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
# Known extensions whose values do not parse: an OCTET STRING where a SEQUENCE belongs.
GARBLED_BASIC_CONSTRAINTS = x509.UnrecognizedExtension(
    oid.ExtensionOID.BASIC_CONSTRAINTS, b"\x04\x00"
)
GARBLED_SAN = x509.UnrecognizedExtension(oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x04\x00")


@dataclasses.dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
        """The certificate and its private key as PEM files, for model_signing."""
        certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
        certificate.write_text(self.pem)
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return certificate, key


def issue(
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool,
    path_length: int | None = None,
    basic_constraints: bool = True,
    key_usage: bool = True,
    digital_signature: bool = True,
    key_cert_sign: bool = True,
    eku: typing.Sequence[x509.ObjectIdentifier] | None = (CODE_SIGNING,),
    san: typing.Sequence[x509.GeneralName] = (),
    name_constraints: x509.NameConstraints | None = None,
    critical_unknown: bool = False,
    extra: typing.Sequence[tuple[x509.ExtensionType, bool]] = (),
    subject: x509.Name | None = None,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 30 * DAY,
) -> Issued:
    """A certificate with exactly the extensions asked for; self-signed without `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = subject or x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, name)])
    signing_key, issuer_name = (
        (key, subject) if issuer is None else (issuer.key, issuer.certificate.subject)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature and not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign and ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    if critical_unknown:
        builder = builder.add_extension(UNKNOWN, critical=True)
    return Issued(key, builder.sign(signing_key, hashes.SHA256()))


def root(name: str = "root", **options: typing.Any) -> Issued:
    return issue(name, ca=True, eku=None, **options)


def intermediate(name: str, issuer: Issued, **options: typing.Any) -> Issued:
    return issue(name, issuer=issuer, ca=True, eku=None, **options)


def leaf(name: str, issuer: Issued, **options: typing.Any) -> Issued:
    return issue(name, issuer=issuer, ca=False, **options)


@dataclasses.dataclass(frozen=True)
class Chain:
    """A signing certificate, the certificates the bundle carries after it, the policy's roots."""

    signing: Issued
    carried: tuple[Issued, ...]
    roots: tuple[Issued, ...]
    at: datetime.datetime | None = None


def _bundle(chain: Chain, *, label: str = "model.sig") -> bundle.Bundle:
    payload_type, payload = "application/vnd.in-toto+json", b"{}"
    signature = chain.signing.key.sign(
        signatures.pae(payload_type, payload), ec.ECDSA(hashes.SHA256())
    )
    return bundle.Bundle(
        label=label,
        payload_type=payload_type,
        payload=payload,
        signature=signature,
        key_hint=None,
        certificates=tuple(
            item.certificate.public_bytes(serialization.Encoding.DER)
            for item in (chain.signing, *chain.carried)
        ),
        keyless=False,
    )


def _leaf_under_root() -> Chain:
    ca = root()
    return Chain(leaf("release", ca), (ca,), (ca,))


def _leaf_under_intermediate() -> Chain:
    ca = root()
    middle = intermediate("intermediate", ca)
    return Chain(leaf("release", middle), (middle,), (ca,))


def _self_signed_leaf_as_root() -> Chain:
    # OMS conformance: a signing certificate trusted directly, with no CA at all.
    alone = issue("release", ca=False)
    return Chain(alone, (), (alone,))


def _self_signed_leaf_without_basic_constraints() -> Chain:
    alone = issue("release", ca=False, basic_constraints=False)
    return Chain(alone, (), (alone,))


def _leaf_marked_ca() -> Chain:
    # model_signing's own test certificates sign with a CA:TRUE certificate that has codeSigning.
    ca = root()
    return Chain(issue("release", issuer=ca, ca=True, key_usage=False), (), (ca,))


def _name_inside_the_constraints() -> Chain:
    permitted = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com")], excluded_subtrees=None
    )
    ca = root(name_constraints=permitted)
    return Chain(leaf("release", ca, san=[x509.RFC822Name("ml@example.com")]), (), (ca,))


def _path_length_exceeded() -> Chain:
    ca = root(path_length=0)
    middle = intermediate("intermediate", ca)
    return Chain(leaf("release", middle), (middle,), (ca,))


def _email_outside_the_constraints() -> Chain:
    permitted = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com")], excluded_subtrees=None
    )
    ca = root(name_constraints=permitted)
    return Chain(leaf("release", ca, san=[x509.RFC822Name("ml@evil.test")]), (), (ca,))


def _dns_name_excluded() -> Chain:
    middle_constraints = x509.NameConstraints(
        permitted_subtrees=None, excluded_subtrees=[x509.DNSName("evil.test")]
    )
    ca = root()
    middle = intermediate("intermediate", ca, name_constraints=middle_constraints)
    return Chain(leaf("release", middle, san=[x509.DNSName("a.evil.test")]), (middle,), (ca,))


def _unknown_critical_extension_in_leaf() -> Chain:
    ca = root()
    return Chain(leaf("release", ca, critical_unknown=True), (), (ca,))


def _unknown_critical_extension_in_intermediate() -> Chain:
    ca = root()
    middle = intermediate("intermediate", ca, critical_unknown=True)
    return Chain(leaf("release", middle), (middle,), (ca,))


def _no_extended_key_usage() -> Chain:
    # keyUsage digitalSignature alone is what model_signing accepts: any certificate of the CA,
    # a TLS server's included, could sign models.
    ca = root()
    return Chain(leaf("release", ca, eku=None), (), (ca,))


def _server_auth_only() -> Chain:
    ca = root()
    return Chain(leaf("web", ca, eku=[oid.ExtendedKeyUsageOID.SERVER_AUTH]), (), (ca,))


def _key_usage_without_digital_signature() -> Chain:
    ca = root()
    return Chain(leaf("release", ca, digital_signature=False), (), (ca,))


def _leaf_expired() -> Chain:
    ca = root()
    # Valid at its own notBefore, which the old check judged it at: expired for a year now.
    old = leaf("release", ca, not_before=NOW - 400 * DAY, not_after=NOW - 35 * DAY)
    return Chain(old, (), (ca,))


def _leaf_not_yet_valid() -> Chain:
    ca = root()
    return Chain(leaf("release", ca, not_before=NOW + DAY, not_after=NOW + 9 * DAY), (), (ca,))


def _intermediate_expired() -> Chain:
    ca = root()
    middle = intermediate("intermediate", ca, not_after=NOW - DAY)
    return Chain(leaf("release", middle), (middle,), (ca,))


def _expired_at_the_time_asked() -> Chain:
    chain = _leaf_under_root()
    return dataclasses.replace(chain, at=chain.signing.certificate.not_valid_after_utc + DAY)


def _another_root() -> Chain:
    ca = root()
    # The bundle carries its own root: it counts for nothing.
    return Chain(leaf("release", ca), (ca,), (root("other"),))


def _intermediate_missing() -> Chain:
    ca = root()
    middle = intermediate("intermediate", ca)
    return Chain(leaf("release", middle), (), (ca,))


def _issuer_not_a_ca() -> Chain:
    ca = root()
    middle = issue("intermediate", issuer=ca, ca=False)
    return Chain(leaf("release", middle), (middle,), (ca,))


def _issuer_without_key_cert_sign() -> Chain:
    ca = root(key_cert_sign=False)
    return Chain(leaf("release", ca), (), (ca,))


def _garbled_extension_in_leaf() -> Chain:
    # The verifier itself passes a signing certificate whose basicConstraints does not parse.
    ca = root()
    garbled = leaf(
        "release", ca, basic_constraints=False, extra=[(GARBLED_BASIC_CONSTRAINTS, True)]
    )
    return Chain(garbled, (), (ca,))


def _garbled_extension_in_intermediate() -> Chain:
    ca = root()
    middle = intermediate("intermediate", ca, extra=[(GARBLED_SAN, False)])
    return Chain(leaf("release", middle), (middle,), (ca,))


def _too_many_certificates() -> Chain:
    ca = root()
    return Chain(leaf("release", ca), (ca,) * 16, (ca,))


def _self_signed_leaf_not_the_root() -> Chain:
    return Chain(issue("release", ca=False), (), (root(),))


ACCEPTED = [
    pytest.param(_leaf_under_root, id="leaf-under-root"),
    pytest.param(_leaf_under_intermediate, id="leaf-under-intermediate"),
    pytest.param(_self_signed_leaf_as_root, id="self-signed-leaf-as-root"),
    pytest.param(_self_signed_leaf_without_basic_constraints, id="self-signed-leaf-no-bc"),
    pytest.param(_leaf_marked_ca, id="signing-certificate-marked-ca"),
    pytest.param(_name_inside_the_constraints, id="name-inside-constraints"),
]


@pytest.mark.parametrize("build", ACCEPTED)
def test_a_chain_to_a_trusted_root_verifies(build: typing.Callable[[], Chain]) -> None:
    chain = build()
    trusted = [signatures.CertificateSigner("pki", tuple(c.certificate for c in chain.roots))]
    verified = signatures.verify(_bundle(chain), trusted, at=chain.at)
    assert verified.signer == "pki"
    assert verified.identity == f"certificate {chain.signing.certificate.subject.rfc4514_string()}"


REFUSED = [
    pytest.param(
        _path_length_exceeded, "CertificatePathLengthExceeded", "pathLen", id="path-length"
    ),
    pytest.param(
        _email_outside_the_constraints,
        "CertificateNameConstraintViolated",
        "CN=release",
        id="email-outside-name-constraints",
    ),
    pytest.param(
        _dns_name_excluded,
        "CertificateNameConstraintViolated",
        "CN=release",
        id="dns-name-excluded",
    ),
    pytest.param(
        _unknown_critical_extension_in_leaf,
        "CertificateUnknownCriticalExtension",
        "1.3.6.1.4.1.55555.1",
        id="unknown-critical-extension-leaf",
    ),
    pytest.param(
        _unknown_critical_extension_in_intermediate,
        "CertificateUnknownCriticalExtension",
        "1.3.6.1.4.1.55555.1",
        id="unknown-critical-extension-intermediate",
    ),
    pytest.param(_no_extended_key_usage, "CertificateNotForSigning", "codeSigning", id="no-eku"),
    pytest.param(_server_auth_only, "CertificateNotForSigning", "CN=web", id="server-auth-eku"),
    pytest.param(
        _key_usage_without_digital_signature,
        "CertificateNotForSigning",
        "digitalSignature",
        id="key-usage-without-digital-signature",
    ),
    pytest.param(_leaf_expired, "CertificateExpired", "CN=release", id="leaf-expired"),
    pytest.param(
        _leaf_not_yet_valid, "CertificateNotYetValid", "CN=release", id="leaf-not-yet-valid"
    ),
    pytest.param(
        _intermediate_expired, "CertificateExpired", "CN=intermediate", id="intermediate-expired"
    ),
    pytest.param(
        _expired_at_the_time_asked, "CertificateExpired", "CN=release", id="expired-at-time-asked"
    ),
    pytest.param(
        _garbled_extension_in_leaf,
        "MalformedBundle",
        "certificate 'CN=release'",
        id="garbled-extension-leaf",
    ),
    pytest.param(
        _garbled_extension_in_intermediate,
        "MalformedBundle",
        "certificate 'CN=intermediate'",
        id="garbled-extension-intermediate",
    ),
    pytest.param(
        _too_many_certificates, "MalformedBundle", "17 certificates", id="too-many-certificates"
    ),
    pytest.param(_another_root, "UntrustedSigner", "does not chain", id="another-root"),
    pytest.param(
        _intermediate_missing, "UntrustedSigner", "does not chain", id="intermediate-missing"
    ),
    pytest.param(_issuer_not_a_ca, "UntrustedSigner", "CN=intermediate", id="issuer-not-a-ca"),
    pytest.param(
        _issuer_without_key_cert_sign, "UntrustedSigner", "keyCertSign", id="no-key-cert-sign"
    ),
    pytest.param(
        _self_signed_leaf_not_the_root,
        "UntrustedSigner",
        "does not chain",
        id="self-signed-leaf-not-the-root",
    ),
]


@pytest.mark.parametrize(("build", "reason", "named"), REFUSED)
def test_a_chain_breaking_a_rule_is_refused_with_that_rule(
    build: typing.Callable[[], Chain], reason: str, named: str
) -> None:
    chain = build()
    trusted = [signatures.CertificateSigner("pki", tuple(c.certificate for c in chain.roots))]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(_bundle(chain, label="model.sig"), trusted, at=chain.at)
    assert str(refused.value.reason) == reason, refused.value
    assert named in refused.value.message
    # The refusal names the bundle it is about.
    assert "model.sig" in refused.value.message


def _garbled(der: bytes, name: str) -> bytes:
    """`der` with one byte of `name` (the UTF8String of a name in it) made invalid UTF-8, which
    cryptography loads and fails on when the name is first read."""
    raw = name.encode()
    assert der.count(raw) >= 1
    return der.replace(raw, raw[:3] + b"\xb3" + raw[4:])


@pytest.mark.parametrize("field", ["subject", "issuer"])
def test_a_certificate_whose_names_do_not_parse_is_refused_naming_it(field: str) -> None:
    """Found by fuzzing (fuzz/corpus/bundle/regression-certificate-subject-not-parsing): a name's
    UTF8String that is not UTF-8 loads, and failed with a ValueError traceback when the subject
    was first read, instead of refusing the bundle."""
    ca = root("issuing-ca")
    chain = Chain(leaf("ml-release", ca), (ca,), (ca,))
    signed = _bundle(chain, label="model.sig")
    garbled = _garbled(signed.certificates[0], "ml-release" if field == "subject" else "issuing-ca")
    broken = dataclasses.replace(signed, certificates=(garbled, *signed.certificates[1:]))
    trusted = [signatures.CertificateSigner("pki", (ca.certificate,))]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(broken, trusted, at=chain.at)
    assert str(refused.value.reason) == "MalformedBundle"
    assert refused.value.message.startswith(
        f"model.sig: verificationMaterial.x509CertificateChain.certificates[0] has a {field} "
        "that does not parse"
    )


def test_a_certificate_of_no_x509_version_is_refused() -> None:
    """Found by fuzzing (fuzz/corpus/bundle/regression-certificate-version-invalid): a version
    field other than v1 or v3 raises cryptography's InvalidVersion, which is no ValueError, and
    escaped as a traceback from the bundle's certificates and from a policy's roots."""
    ca = root("ca")
    chain = Chain(leaf("release", ca), (ca,), (ca,))
    signed = _bundle(chain, label="model.sig")
    v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2, the TBSCertificate's version
    assert signed.certificates[0].count(v3) == 1
    garbled = signed.certificates[0].replace(v3, v3[:-1] + b"\x1e")
    broken = dataclasses.replace(signed, certificates=(garbled, *signed.certificates[1:]))
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(broken, [signatures.CertificateSigner("pki", (ca.certificate,))])
    assert str(refused.value.reason) == "MalformedBundle"
    assert "holds a certificate that is not DER: 30 is not a valid X509 version" in str(
        refused.value
    )
    root_der = ca.certificate.public_bytes(serialization.Encoding.DER).replace(
        v3, v3[:-1] + b"\x1e"
    )
    pem = b"-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n" % base64.encodebytes(
        root_der
    )
    with pytest.raises(reasons.VerificationError, match="--certificate-root is not PEM"):
        certificates.load(pem, field="--certificate-root")
    spec = {
        "signers": [{"name": "pki", "certificateRoot": pem.decode(), "identity": {"any": True}}]
    }
    with pytest.raises(errors.InvalidObjectError, match="must be PEM certificates"):
        trustpolicy.parse({"metadata": {"name": "p"}, "spec": spec})


def test_a_root_whose_name_does_not_parse_is_refused_with_the_policy() -> None:
    """The same certificate as a policy's root was accepted, and failed every certificate chain
    checked against it with a ValueError (the subject compared with each issuer)."""
    ca = root("garbled-ca")
    der = _garbled(ca.certificate.public_bytes(serialization.Encoding.DER), "garbled-ca")
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(reasons.VerificationError) as refused:
        certificates.load(pem, field="--certificate-root")
    assert str(refused.value.reason) == "InvalidKey"
    assert refused.value.message.startswith(
        "--certificate-root: certificate 1 has a subject that does not parse"
    )
    spec = {
        "signers": [{"name": "pki", "certificateRoot": pem.decode(), "identity": {"any": True}}]
    }
    with pytest.raises(errors.InvalidObjectError) as invalid:
        trustpolicy.parse({"metadata": {"name": "p"}, "spec": spec})
    assert (
        "spec.signers[0].certificateRoot: must be PEM certificates whose names parse: the "
        "subject of certificate 1" in invalid.value.messages[0]
    )


def _identity_rules(chain: Chain, identity: dict[str, typing.Any]) -> policy.Rules:
    pem = "".join(item.pem for item in chain.roots)
    spec = {"signers": [{"name": "pki", "certificateRoot": pem, "identity": identity}]}
    return policy.rules_of(trustpolicy.TrustPolicySpec.model_validate(spec))


def _named_leaf() -> Chain:
    ca = root()
    subject = x509.Name(
        [
            x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(oid.NameOID.COMMON_NAME, "release"),
        ]
    )
    signing = leaf(
        "release",
        ca,
        subject=subject,
        san=[
            x509.RFC822Name("release@example.com"),
            x509.UniformResourceIdentifier("spiffe://example.com/ml/release"),
            x509.DNSName("release.example.com"),
        ],
    )
    return Chain(signing, (), (ca,))


IDENTITIES = [
    pytest.param({"subject": "CN=release,O=Example"}, None, id="subject"),
    pytest.param({"san": "release@example.com"}, None, id="san-email"),
    pytest.param({"san": "spiffe://example.com/ml/release"}, None, id="san-uri"),
    pytest.param({"san": "release.example.com"}, None, id="san-dns"),
    pytest.param(
        {"subject": "CN=release,O=Example", "san": "release@example.com"}, None, id="both"
    ),
    pytest.param({"any": True}, None, id="any-identity"),
    pytest.param({"subject": "CN=release,O=Other"}, "subject", id="subject-mismatch"),
    # Order is part of a distinguished name.
    pytest.param({"subject": "O=Example,CN=release"}, "subject", id="subject-order"),
    pytest.param({"subject": "CN=release"}, "subject", id="subject-prefix"),
    pytest.param({"san": "other@example.com"}, "san", id="san-mismatch"),
    # A SAN matches within its own kind only: an email is not a DNS name.
    pytest.param({"san": "example.com"}, "san", id="san-other-kind"),
    pytest.param({"san": "RELEASE@example.com"}, "san", id="san-case"),
    pytest.param(
        {"subject": "CN=release,O=Example", "san": "other@example.com"}, "san", id="both-one-off"
    ),
]


@pytest.mark.parametrize(("identity", "mismatch"), IDENTITIES)
def test_a_pinned_identity_must_be_the_signing_certificates(
    identity: dict[str, typing.Any], mismatch: str | None
) -> None:
    chain = _named_leaf()
    rules = _identity_rules(chain, identity)
    if mismatch is None:
        assert signatures.verify(_bundle(chain), rules.signers).signer == "pki"
        return
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(_bundle(chain), rules.signers)
    assert str(refused.value.reason) == "CertificateIdentityMismatch"
    assert f"spec.signers[0].identity.{mismatch}" in refused.value.message
    assert "CN=release,O=Example" in refused.value.message


def test_two_signers_under_one_root_are_told_apart_by_identity() -> None:
    ca = root()
    alice = leaf("alice", ca, san=[x509.RFC822Name("alice@example.com")])
    bob = leaf("bob", ca, san=[x509.RFC822Name("bob@example.com")])
    spec = {
        "signers": [
            {"name": name, "certificateRoot": ca.pem, "identity": {"san": f"{name}@example.com"}}
            for name in ("alice", "bob")
        ]
    }
    rules = policy.rules_of(trustpolicy.TrustPolicySpec.model_validate(spec))
    assert signatures.verify(_bundle(Chain(alice, (), (ca,))), rules.signers).signer == "alice"
    assert signatures.verify(_bundle(Chain(bob, (), (ca,))), rules.signers).signer == "bob"
    mallory = leaf("mallory", ca, san=[x509.RFC822Name("mallory@example.com")])
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(_bundle(Chain(mallory, (), (ca,))), rules.signers)
    assert str(refused.value.reason) == "CertificateIdentityMismatch"


def _signer(**fields: typing.Any) -> dict[str, typing.Any]:
    return {"name": "pki", **fields}


POLICY_SIGNERS = [
    pytest.param(
        _signer(certificateRoot=root().pem),
        "spec.signers[0]: identity is required with a certificateRoot that holds a CA",
        id="ca-root-without-identity",
    ),
    pytest.param(
        _signer(certificateRoot=root().pem, identity={}),
        "spec.signers[0].identity: needs subject and/or san, or any: true (not both)",
        id="empty-identity",
    ),
    pytest.param(
        _signer(certificateRoot=root().pem, identity={"any": True, "san": "a@example.com"}),
        "spec.signers[0].identity: needs subject and/or san, or any: true (not both)",
        id="any-and-san",
    ),
    pytest.param(
        _signer(certificateRoot=root(extra=[(GARBLED_SAN, False)]).pem, identity={"any": True}),
        "spec.signers[0].certificateRoot: must be PEM certificates whose extensions parse",
        id="garbled-root",
    ),
    pytest.param(
        _signer(certificateRoot=root().pem, identity={"subject": "not a name"}),
        "spec.signers[0].identity.subject: must be a distinguished name in RFC 4514 form",
        id="bad-subject",
    ),
    pytest.param(
        _signer(
            publicKey=ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            identity={"san": "a@example.com"},
        ),
        "spec.signers[0]: identity applies only to a certificateRoot signer",
        id="identity-on-a-key",
    ),
]


@pytest.mark.parametrize(("signer", "message"), POLICY_SIGNERS)
def test_a_signer_identity_is_validated_naming_the_field(
    signer: dict[str, typing.Any], message: str
) -> None:
    body = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "p"},
        "spec": {"signers": [signer]},
    }
    with pytest.raises(errors.InvalidObjectError) as refused:
        trustpolicy.parse(body)
    assert any(message in line for line in refused.value.messages), refused.value.messages


def test_a_self_signed_signing_certificate_needs_no_identity() -> None:
    # It can certify nothing but itself: the root is the identity.
    alone = issue("release", ca=False)
    spec = trustpolicy.TrustPolicySpec.model_validate(
        {"signers": [{"name": "pki", "certificateRoot": alone.pem}]}
    )
    rules = policy.rules_of(spec)
    assert signatures.verify(_bundle(Chain(alone, (), (alone,))), rules.signers).signer == "pki"


def _model(directory: pathlib.Path) -> pathlib.Path:
    model = directory / "model"
    model.mkdir()
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights.bin").write_bytes(b"\x00" * 64)
    return model


def _sign(
    directory: pathlib.Path, signing: Issued, *, chain: typing.Sequence[Issued]
) -> tuple[pathlib.Path, bytes]:
    model = _model(directory)
    certificate, key = signing.write(directory, "signing")
    carried = [item.write(directory, f"chain-{index}")[0] for index, item in enumerate(chain)]
    model_signing.signing.Config().use_certificate_signer(
        private_key=key, signing_certificate=certificate, certificate_chain=carried
    ).sign(model, directory / "model.sig")
    return model, (directory / "model.sig").read_bytes()


def _rules(roots: typing.Sequence[Issued], **signer: typing.Any) -> policy.Rules:
    pem = "".join(item.pem for item in roots)
    spec = {"signers": [{"name": "pki", "certificateRoot": pem, **signer}]}
    return policy.rules_of(trustpolicy.TrustPolicySpec.model_validate(spec))


def test_model_signing_certificate_method_with_a_pinned_identity(tmp_path: pathlib.Path) -> None:
    chain = _named_leaf()
    ca = chain.roots[0]
    middle = intermediate("intermediate", ca)
    signing = leaf("release", middle, san=[x509.RFC822Name("release@example.com")])
    model, signature = _sign(tmp_path, signing, chain=[middle, ca])
    pinned = _rules([ca], identity={"san": "release@example.com"})
    result = verify.verify_folder(model, signature, pinned, signature_path=tmp_path / "model.sig")
    assert result.signers[0].signer == "pki"
    other = _rules([ca], identity={"san": "someone@example.com"})
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, signature, other)
    assert str(refused.value.reason) == "CertificateIdentityMismatch"


def test_model_signing_self_signed_certificate_as_the_root(tmp_path: pathlib.Path) -> None:
    alone = issue("release", ca=False)
    model, signature = _sign(tmp_path, alone, chain=[alone])
    result = verify.verify_folder(model, signature, _rules([alone]))
    assert result.signers[0].identity == "certificate CN=release"


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        pytest.param(
            lambda ca: leaf("release", ca, not_before=NOW - 400 * DAY, not_after=NOW - 35 * DAY),
            "CertificateExpired",
            id="expired-long-ago",
        ),
        pytest.param(
            lambda ca: leaf("release", ca, eku=None), "CertificateNotForSigning", id="no-eku"
        ),
        pytest.param(
            lambda ca: leaf("release", ca, critical_unknown=True),
            "CertificateUnknownCriticalExtension",
            id="unknown-critical",
        ),
    ],
)
def test_model_signing_signatures_breaking_a_rule_are_refused(
    tmp_path: pathlib.Path, build: typing.Callable[[Issued], Issued], reason: str
) -> None:
    # model_signing itself signs (and verifies) all of these.
    ca = root()
    model, signature = _sign(tmp_path, build(ca), chain=[ca])
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, signature, _rules([ca], identity={"any": True}))
    assert str(refused.value.reason) == reason
    assert "CN=release" in refused.value.message


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_signed(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A model signed under a CA, and a self-signed one, with the PEM files the CLI reads."""
    directory = tmp_path_factory.mktemp("cli-certificates")
    ca = root()
    (directory / "root.pem").write_text(ca.pem)
    signing = leaf("release", ca, san=[x509.RFC822Name("release@example.com")])
    (directory / "ca").mkdir()
    _sign(directory / "ca", signing, chain=[ca])
    alone = issue("alone", ca=False)
    (directory / "alone.pem").write_text(alone.pem)
    (directory / "self").mkdir()
    _sign(directory / "self", alone, chain=[alone])
    return directory


CLI_CASES = [
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem"],
        "InvalidPolicy: --certificate-root",
        id="ca-root-without-identity",
    ),
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem", "--certificate-san", "release@example.com"],
        None,
        id="ca-root-san",
    ),
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem", "--certificate-subject", "CN=release"],
        None,
        id="ca-root-subject",
    ),
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem", "--any-certificate-identity"],
        None,
        id="ca-root-any",
    ),
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem", "--certificate-san", "mallory@example.com"],
        "CertificateIdentityMismatch: bundle: certificate 'CN=release' does not name "
        "--certificate-san 'mallory@example.com'",
        id="ca-root-san-mismatch",
    ),
    pytest.param(
        "ca",
        ["--certificate-root", "root.pem", "--certificate-subject", "not a name"],
        "InvalidPolicy: --certificate-subject",
        id="bad-subject",
    ),
    pytest.param(
        "ca",
        [
            "--certificate-root",
            "root.pem",
            "--any-certificate-identity",
            "--certificate-san",
            "release@example.com",
        ],
        "InvalidPolicy: --any-certificate-identity",
        id="any-and-san",
    ),
    pytest.param("self", ["--certificate-root", "alone.pem"], None, id="self-signed-root"),
    pytest.param(
        "self",
        ["--certificate-root", "root.pem", "--any-certificate-identity"],
        "UntrustedSigner: bundle: certificate 'CN=alone' does not chain",
        id="self-signed-other-root",
    ),
]


@pytest.mark.parametrize(("model", "args", "refusal"), CLI_CASES)
def test_cli_certificate_root_and_identity(
    cli_signed: pathlib.Path, model: str, args: list[str], refusal: str | None
) -> None:
    args = [str(cli_signed / arg) if arg.endswith(".pem") else arg for arg in args]
    folder = cli_signed / model
    code, out, err = _cli(
        "verify", str(folder / "model"), "--signature", str(folder / "model.sig"), *args
    )
    if refusal is None:
        assert (code, err) == (0, ""), err
        assert out.startswith("verified root sha256:")
        return
    assert code == 1
    assert err.startswith(refusal), err
    assert "Traceback" not in err


def test_cli_identity_flags_need_a_certificate_root(cli_signed: pathlib.Path) -> None:
    folder = cli_signed / "ca"
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (cli_signed / "key.pub").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, _, err = _cli(
        "verify",
        str(folder / "model"),
        "--signature",
        str(folder / "model.sig"),
        "--public-key",
        str(cli_signed / "key.pub"),
        "--certificate-san",
        "release@example.com",
    )
    assert code == 1
    assert err.startswith("InvalidPolicy: --certificate-san applies only with --certificate-root")
