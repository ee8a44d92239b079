"""What RFC 5280 path validation costs: verifying a tiny model signed with model_signing's
certificate method (root, intermediate, signing certificate) next to the same model signed with
its key method, and next to model_signing's own certificate verification of the same bundle, all
in this process, interleaved; then the signatures alone, without reading the model. Then the
worst bundle an attacker may send: the most certificates a bundle may carry, all one name and one
key, so that each is a candidate issuer of every other. Medians and ranges in milliseconds are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import pathlib
import statistics
import sys
import tempfile
import time
import typing

import model_signing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from modelguard.api import trustpolicy
from modelguard.trust import bundle, certificates, policy, reasons, signatures, verify

NOW = datetime.datetime.now(datetime.UTC)


def _certificate(
    name: str,
    *,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None,
    ca: bool,
    serial: int | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, name)])
    signing_key, issuer_name = issuer or (key, subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _timed(run: typing.Callable[[], object], *, runs: int) -> list[float]:
    result = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        result.append((time.perf_counter() - start) * 1000)
    return result


def _line(label: str, samples: list[float]) -> str:
    return (
        f"{label:<48} median {statistics.median(samples):8.3f} ms  "
        f"range {min(samples):.3f}-{max(samples):.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    # model_signing warns of every certificate without keyUsage, once per verification.
    logging.getLogger("model_signing").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        directory = pathlib.Path(scratch)
        model = directory / "model"
        model.mkdir()
        (model / "config.json").write_text('{"layers": 2}')
        root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in "123")
        root = _certificate("root", key=root_key, issuer=None, ca=True)
        middle = _certificate("middle", key=middle_key, issuer=(root_key, root.subject), ca=True)
        leaf = _certificate("release", key=leaf_key, issuer=(middle_key, middle.subject), ca=False)
        root_path = _write(directory / "root.pem", _pem(root))
        model_signing.signing.Config().use_certificate_signer(
            private_key=_write(directory / "leaf.key", _private(leaf_key)),
            signing_certificate=_write(directory / "leaf.pem", _pem(leaf)),
            certificate_chain=[_write(directory / "middle.pem", _pem(middle)), root_path],
        ).sign(model, directory / "cert.sig")
        model_signing.signing.Config().use_elliptic_key_signer(
            private_key=directory / "leaf.key"
        ).sign(model, directory / "key.sig")
        public = leaf_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        by_root = policy.rules_of(
            trustpolicy.TrustPolicySpec.model_validate(
                {
                    "signers": [
                        {
                            "name": "pki",
                            "certificateRoot": root_path.read_text(),
                            "identity": {"subject": "CN=release"},
                        }
                    ]
                }
            )
        )
        by_key = policy.Rules(
            signers=(signatures.KeySigner("key", signatures.load_public_key(public, field="key")),)
        )
        certificate_sig = (directory / "cert.sig").read_bytes()
        key_sig = (directory / "key.sig").read_bytes()
        theirs = model_signing.verifying.Config().use_certificate_verifier(
            certificate_chain=[root_path]
        )
        cases = {
            "modelguard signatures only, certificate method": lambda: verify.verify_signatures(
                certificate_sig, by_root
            ),
            "modelguard signatures only, key method (ref.)": lambda: verify.verify_signatures(
                key_sig, by_key
            ),
            "modelguard, certificate method (3 certificates)": lambda: verify.verify_folder(
                model, certificate_sig, by_root
            ),
            "modelguard, key method (reference)": lambda: verify.verify_folder(
                model, key_sig, by_key
            ),
            "model_signing, certificate method (reference)": lambda: theirs.verify(
                model, directory / "cert.sig"
            ),
        }
        samples: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(args.runs):
            for label, run in cases.items():
                samples[label] += _timed(run, runs=1)
        for label, values in samples.items():
            print(_line(label, values))
        # One name, one key, every certificate a valid issuer of every other: the most
        # candidates a bundle can offer the path builder.
        mesh_key = ec.generate_private_key(ec.SECP256R1())
        mesh = [
            _certificate("ca", key=mesh_key, issuer=None, ca=True, serial=index + 1)
            for index in range(certificates.MAX_CARRIED - 1)
        ]
        hostile_leaf = _certificate(
            "release", key=leaf_key, issuer=(mesh_key, mesh[0].subject), ca=False
        )
        payload = signatures.pae("application/vnd.in-toto+json", b"{}")
        hostile = bundle.Bundle(
            label="hostile",
            payload_type="application/vnd.in-toto+json",
            payload=b"{}",
            signature=leaf_key.sign(payload, ec.ECDSA(hashes.SHA256())),
            key_hint=None,
            certificates=tuple(
                c.public_bytes(serialization.Encoding.DER) for c in [hostile_leaf, *mesh]
            ),
            keyless=False,
        )

        def refuse() -> None:
            try:
                signatures.verify(hostile, by_root.signers)
            except reasons.VerificationError:
                return
            raise AssertionError("the hostile bundle verified")

        print(_line(f"modelguard, refusing {len(mesh)} mutual issuers", _timed(refuse, runs=10)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
