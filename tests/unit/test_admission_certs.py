"""Webhook certificates made with `cryptography`: a CA and a serving certificate that a TLS client
trusting only that CA accepts for the names it was made for, and refuses for any other."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import ssl
import stat

import pytest
from cryptography import x509

from modelguard.admission import certs


def test_serving_certificate_is_signed_by_the_ca_for_the_given_names() -> None:
    bundle = certs.generate(
        dns_names=certs.service_dns_names(service="mg-webhook", namespace="modelguard-system"),
        ip_addresses=["127.0.0.1"],
        valid_for=datetime.timedelta(days=30),
    )
    ca = x509.load_pem_x509_certificate(bundle.ca)
    cert = x509.load_pem_x509_certificate(bundle.cert)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "mg-webhook",
        "mg-webhook.modelguard-system",
        "mg-webhook.modelguard-system.svc",
    ]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)


def test_a_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        certs.generate()


def test_written_files_follow_the_tls_secret_layout_with_a_private_key(
    tmp_path: pathlib.Path,
) -> None:
    bundle = certs.generate(dns_names=["localhost"])
    certs.write(bundle, tmp_path / "tls")
    assert (tmp_path / "tls" / "ca.crt").read_bytes() == bundle.ca
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == bundle.cert
    assert (tmp_path / "tls" / "tls.key").read_bytes() == bundle.key
    assert stat.S_IMODE((tmp_path / "tls" / "tls.key").stat().st_mode) == 0o600


def test_a_tls_client_trusting_the_ca_accepts_the_server(tmp_path: pathlib.Path) -> None:
    bundle = certs.generate(ip_addresses=["127.0.0.1"])
    certs.write(bundle, tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    trusting = ssl.create_default_context(cadata=bundle.ca.decode())
    stranger = ssl.create_default_context(cadata=certs.generate(dns_names=["x"]).ca.decode())

    async def handshake(client: ssl.SSLContext) -> None:
        async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
        port = listener.sockets[0].getsockname()[1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.close()
        finally:
            listener.close()

    asyncio.run(handshake(trusting))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(handshake(stranger))
