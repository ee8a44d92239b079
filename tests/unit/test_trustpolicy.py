"""The TrustPolicy API: secure defaults, PEM validation naming the field, the generated CRD."""

from __future__ import annotations

import typing

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import crd, errors, trustpolicy


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# A well-formed EC public key on secp112r1, a curve cryptography does not support: loading it
# raises UnsupportedAlgorithm, not ValueError.
UNSUPPORTED_CURVE_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAEAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==\n"
    "-----END PUBLIC KEY-----\n"
)


def _body(**spec: typing.Any) -> dict[str, typing.Any]:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "default"},
        "spec": {"signers": [{"name": "team", "publicKey": _pem()}], **spec},
    }


def test_defaults_are_secure() -> None:
    spec = trustpolicy.parse(_body()).spec
    assert spec.min_signers == 1
    assert spec.formats.allow_pickle is False
    assert spec.formats.allow == []
    assert spec.formats.allowed() == ()
    assert spec.enforcement is trustpolicy.Enforcement.ENFORCE
    assert spec.hash_algorithms == [trustpolicy.HashAlgorithm.SHA256]
    assert spec.sources == []
    assert spec.network.egress_cidrs == []


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        pytest.param(
            {"name": "team", "publicKey": "not a key"},
            "spec.signers[0].publicKey: must be a PEM public key",
            id="bad-pem",
        ),
        pytest.param(
            {"name": "team", "certificateRoot": "-----BEGIN CERTIFICATE-----\nxx\n"},
            "spec.signers[0].certificateRoot: must be PEM certificates",
            id="bad-certificate",
        ),
        pytest.param(
            {"name": "team", "publicKey": UNSUPPORTED_CURVE_KEY},
            "spec.signers[0].publicKey: must be an elliptic-curve P-256, P-384 or P-521 public "
            "key (Curve 1.3.132.0.6 is not supported)",
            id="unsupported-curve",
        ),
        pytest.param({"name": "team"}, "exactly one of publicKey", id="no-method"),
        pytest.param(
            {"name": "team", "publicKey": "@", "keyless": {"issuer": "i", "identity": "x"}},
            "spec.signers[0].publicKey",
            id="two-methods",
        ),
    ],
)
def test_invalid_signers_are_refused_naming_the_field(
    signer: dict[str, typing.Any], message: str
) -> None:
    body = _body()
    body["spec"]["signers"] = [signer]
    with pytest.raises(errors.InvalidObjectError) as refused:
        trustpolicy.parse(body)
    assert any(message in line for line in refused.value.messages), refused.value.messages


def test_crd_is_cluster_scoped_and_rendered() -> None:
    rendered = crd.render_crds()
    assert "modelguard.dev_trustpolicies.yaml" in rendered
    definition = crd.trust_policy_crd()
    assert definition["spec"]["scope"] == "Cluster"
    assert definition["spec"]["names"]["shortNames"] == ["tp"]
    spec = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["formats"]["properties"]["allowPickle"]["default"] is False
    allow = spec["properties"]["formats"]["properties"]["allow"]
    assert allow["default"] == []
    assert allow["items"]["enum"] == ["Pickle", "Keras", "HDF5"]
    assert spec["properties"]["enforcement"]["default"] == "Enforce"
