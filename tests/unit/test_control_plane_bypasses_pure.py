"""Ways around the control-plane hardening of issue 11 in pure logic, each as a test that fails
while the hole is open: outside text reaches a refusal raw (and so a status condition and an
Event), and a NetworkPolicy refusal tells its writer what it may not read."""

from __future__ import annotations

import datetime
import re
import typing

import pytest
from cryptography import x509
from test_admission_decisions import KEY
from test_trust_certificates import Chain, _bundle, leaf, root

from modelguard import kube
from modelguard.admission import decisions
from modelguard.api import trustpolicy
from modelguard.trust import certificates, evidence, policy, reasons, signatures

# What a condition message or an Event note must not carry raw: `kubectl describe` prints both
# as they are, so a line break starts a line of its own (a forged condition or Event row).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_a_bundle_nobody_trusts_puts_no_line_break_into_its_refusal() -> None:
    # Whoever may write a model.sig where a policy with a certificate signer reads it (the
    # tenant's own bucket) carries a CA of their own with nameConstraints and a signing
    # certificate whose SAN holds a line break. No trusted key or CA is needed: the verifier's
    # name constraint error quotes the SAN, and the refusal carries it raw into the Verified
    # condition, the Ready message and the Warning Event. It is also refused under the wrong
    # reason: nothing of it reaches a trusted root.
    trusted = root("trusted")
    attacker = root(
        "attacker",
        name_constraints=x509.NameConstraints(
            permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None
        ),
    )
    forged = "evil.example\nVerified  True  SignatureVerified  signed by ml-release"
    signing = leaf("release", attacker, san=[x509.DNSName(forged)])
    chain = Chain(signing, (attacker,), (trusted,))
    policy = [signatures.CertificateSigner("pki", (trusted.certificate,))]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(_bundle(chain), policy)
    message = refused.value.message
    assert not _CONTROL.search(message), f"raw control character in: {message!r}"
    assert refused.value.reason is reasons.Reason.UNTRUSTED_SIGNER, refused.value.reason


def test_an_identity_mismatch_puts_no_line_break_into_its_refusal() -> None:
    # The same through a certificate of the policy's own CA (one that copies SANs from the
    # request, as many internal CAs do): the pinned-identity refusal lists every SAN raw.
    ca = root()
    signing = leaf(
        "release", ca, san=[x509.RFC822Name("someone@example.com\nReady  True  Available")]
    )
    policy = [
        signatures.CertificateSigner(
            "pki",
            (ca.certificate,),
            identity=certificates.Identity(subject=None, san="release@example.com"),
        )
    ]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(_bundle(Chain(signing, (ca,), (ca,))), policy)
    message = refused.value.message
    assert not _CONTROL.search(message), f"raw control character in: {message!r}"


def test_a_network_policy_refusal_names_no_trust_policy_and_none_of_its_ranges() -> None:
    # Whoever may write NetworkPolicies in a namespace (the `edit` role) may not read
    # ModelDeployments or TrustPolicies (the chart aggregates nothing into `edit`). Decision
    # 0014 keeps policy names out of denials for that reason; a NetworkPolicy probe
    # (`podSelector: {}`, one rule) is answered with every model's TrustPolicy name and the
    # address ranges that policy admits. Without webhook.clientAuth (the default), any pod that
    # reaches the webhook port may send such a probe for any namespace.
    pci = trustpolicy.TrustPolicySpec.model_validate(
        {
            "signers": [{"name": "release", "publicKey": KEY}],
            "network": {"ingressCIDRs": ["10.20.0.0/16"]},
            "namespaceSelector": {},
        },
        by_alias=True,
    )
    probe = {
        "operation": "CREATE",
        "subResource": None,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "kind": {"kind": "NetworkPolicy"},
        "namespace": "payments",
        "name": "probe",
        "object": {
            "metadata": {"name": "probe", "namespace": "payments"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            },
        },
        "oldObject": None,
    }
    decision = decisions.network_policy(
        probe,
        identity=decisions.Identity(operator_username="system:serviceaccount:mg:modelguard"),
        models=[
            decisions.ModelPods(
                "fraud-scoring", "pci-restricted", ({"modelguard.dev/model-deployment": "x"},)
            )
        ],
        policies={"pci-restricted": pci},
    )
    assert not decision.allowed
    leaked = [word for word in ("pci-restricted", "10.20.0.0/16") if word in decision.message]
    assert not leaked, f"the refusal tells {leaked}: {decision.message}"


async def test_an_event_note_fits_the_api_servers_byte_limit_whatever_it_quotes() -> None:
    # The API server refuses an Event whose note is over 1024 bytes; the operator cuts notes at
    # 1024 characters. A certificate subject in a bundle (no trusted CA needed: "certificate
    # 'O=...' does not chain to a trusted root") is quoted with repr, which keeps non-ASCII
    # letters: 300 four-byte letters make the Warning Event refused, so `kubectl describe` never
    # shows it (the post's failure is only logged).
    sent: list[typing.Any] = []

    class Client:
        async def create(self, obj: typing.Any) -> None:
            sent.append(obj)

    subject = "O=" + "\U0001d54f" * 300
    await kube.Kube(typing.cast(typing.Any, Client())).post_event(
        regarding={
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ml", "uid": "u"},
        },
        type="Warning",
        reason="UntrustedSigner",
        action="Verify",
        note=f"model.sig: certificate {subject!r} does not chain to a trusted root",
        reporting_instance="modelguard-0",
    )
    (event,) = sent
    assert len(event.note.encode("utf-8")) <= 1024, len(event.note.encode("utf-8"))


def test_revoking_one_identity_of_a_certificate_signer_counts_as_revocation() -> None:
    # A CA certifies many people, so the way to revoke one of them is to pin the identities
    # still trusted (README, decision 0011). What serves is then refused with
    # CertificateIdentityMismatch, which the judgement of what serves did not count as a
    # revoked signer: the version whose signer was revoked kept serving. What serves is judged
    # from what its verification recorded (trust/evidence), under the policy as it is now.
    ca = root()
    signing = leaf("release", ca, san=[x509.RFC822Name("mallory@example.com")])
    bundle = _bundle(Chain(signing, (ca,), (ca,)))
    sources = (policy.SourceRule(uri="s3://models/"),)
    before = [signatures.CertificateSigner("pki", (ca.certificate,))]
    assert signatures.verify(bundle, before).signer == "pki"
    recorded = evidence.record(
        [bundle],
        payload=bundle.payload,
        root_digest="sha256:" + "ab" * 32,
        signature_digest="sha256:" + "cd" * 32,
        hash_algorithm="sha256",
        source_uri="s3://models/m/",
        signature_uri="s3://models/m/model.sig",
        verified_at=datetime.datetime.now(datetime.UTC),
    )
    assert (
        evidence.judge(recorded, policy.Rules(tuple(before), sources=sources), namespace="ns")
        is None
    )
    after = [
        signatures.CertificateSigner(
            "pki",
            (ca.certificate,),
            identity=certificates.Identity(subject=None, san="release@example.com"),
        )
    ]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(bundle, after)
    assert refused.value.reason is reasons.Reason.CERTIFICATE_IDENTITY_MISMATCH
    judged = evidence.judge(recorded, policy.Rules(tuple(after), sources=sources), namespace="ns")
    assert judged is not None, (
        "the revocation of one identity is not judged a revocation of what serves"
    )
    assert judged.reason is reasons.Reason.CERTIFICATE_IDENTITY_MISMATCH
