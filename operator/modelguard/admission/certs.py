"""Webhook TLS material made with `cryptography`: a CA and a serving certificate it signs.

The files follow the layout of a `kubernetes.io/tls` Secret with `ca.crt` (what Helm's chart
Secret and cert-manager both produce), so the operator reads a mounted Secret and a local
directory the same way. kopf's own self-signed path is not used: it needs oscrypto, which fails
on OpenSSL 3.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib
import typing

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

CA_FILE: typing.Final = "ca.crt"
CERT_FILE: typing.Final = "tls.crt"
KEY_FILE: typing.Final = "tls.key"


@dataclasses.dataclass(frozen=True)
class Bundle:
    """PEM bytes: the CA certificate (the webhook's caBundle), the serving certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes


def service_dns_names(*, service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server may use to reach a Service-backed webhook."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc")


def generate(
    *,
    dns_names: typing.Sequence[str] = (),
    ip_addresses: typing.Sequence[str] = (),
    valid_for: datetime.timedelta = datetime.timedelta(days=365),
) -> Bundle:
    """A fresh CA and a serving certificate for `dns_names` and `ip_addresses`, signed by it."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    now = datetime.datetime.now(datetime.UTC)
    # A few minutes of slack: the API server's clock may run slightly behind ours.
    not_before = now - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "modelguard-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Bundle(
        ca=ca.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write(bundle: Bundle, directory: pathlib.Path) -> None:
    """Writes the bundle as ca.crt, tls.crt and tls.key; the key readable by its owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CA_FILE).write_bytes(bundle.ca)
    key_path = directory / KEY_FILE
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.chmod(0o600)
    key_path.write_bytes(bundle.key)
    # The certificate last: a server that watches the files sees a matching key already in place.
    (directory / CERT_FILE).write_bytes(bundle.cert)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
