"""The glue from `modelguard run` flags to kopf: the TLS server it is given, and denials as kopf's
admission errors."""

from __future__ import annotations

import collections.abc
import contextlib
import datetime
import logging
import pathlib
import socket
import ssl
import typing

import aiohttp
import kopf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard import cli
from modelguard.admission import certs, decisions, serving

IDENTITY = decisions.Identity(operator_username="system:serviceaccount:mg:mg")


def test_webhook_server_serves_tls_from_the_cert_dir(tmp_path: pathlib.Path) -> None:
    options = serving.Options(port=9443, cert_dir=tmp_path, addr="127.0.0.1", identity=IDENTITY)
    server = getattr(serving.server(options), "served", None)
    assert isinstance(server, kopf.WebhookServer)
    assert (server.addr, server.port) == ("127.0.0.1", 9443)
    assert (server.certfile, server.pkeyfile) == (tmp_path / "tls.crt", tmp_path / "tls.key")
    # Certificates renewed in the mounted Secret are picked up without a restart.
    assert server.file_check_interval == serving.CERT_CHECK_SECONDS


def test_a_port_without_certificates_is_refused() -> None:
    options = serving.Options(port=9443, cert_dir=None, addr="", identity=IDENTITY)
    with pytest.raises(kopf.PermanentError, match="--webhook-cert-dir"):
        serving.server(options)


def test_no_port_means_no_listener() -> None:
    options = serving.Options(port=None, cert_dir=None, addr="", identity=IDENTITY)
    assert not isinstance(serving.server(options), kopf.WebhookServer)


def test_a_denial_becomes_a_403_admission_error_with_the_message() -> None:
    serving.enforce(decisions.Decision.allow())
    with pytest.raises(kopf.AdmissionError) as raised:
        serving.enforce(decisions.Decision.deny("edit the ModelDeployment ml/bert instead"))
    assert str(raised.value) == "edit the ModelDeployment ml/bert instead"
    assert raised.value.code == 403


def test_run_flags_build_the_webhook_options() -> None:
    args = cli.build_parser().parse_args(
        [
            "run",
            "--webhook-port=9443",
            "--webhook-cert-dir=/etc/modelguard/webhook",
            "--operator-username=system:serviceaccount:mg:mg",
        ]
    )
    options = cli._webhook_options(args)
    assert options.port == 9443
    assert options.cert_dir == pathlib.Path("/etc/modelguard/webhook")
    assert options.addr == "0.0.0.0"  # noqa: S104 - the pod's address, behind the Service
    assert options.identity == decisions.Identity(
        operator_username="system:serviceaccount:mg:mg", break_glass_group="modelguard:break-glass"
    )


def test_a_webhook_without_the_operator_identity_is_refused() -> None:
    args = cli.build_parser().parse_args(["run", "--webhook-port=9443", "--webhook-cert-dir=/x"])
    with pytest.raises(SystemExit, match="--operator-username"):
        cli._webhook_options(args)


def _record(message: str, *, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@contextlib.contextmanager
def _objects_logged_from(level: int) -> collections.abc.Iterator[None]:
    logger = logging.getLogger("kopf.objects")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@pytest.mark.parametrize(
    ("case", "message", "level", "expected_level", "expected_message"),
    [
        (
            "denial by our webhook is INFO",
            "Webhook 'managed-child' failed permanently: managed by ModelGuard; edit it there",
            logging.ERROR,
            logging.INFO,
            "admission denied by webhook 'managed-child': managed by ModelGuard; edit it there",
        ),
        (
            "another handler's permanent failure stays an ERROR",
            "Handler 'reconcile' failed permanently: boom",
            logging.ERROR,
            logging.ERROR,
            "Handler 'reconcile' failed permanently: boom",
        ),
        (
            "a webhook that is not ours stays an ERROR",
            "Webhook 'other' failed permanently: no",
            logging.ERROR,
            logging.ERROR,
            "Webhook 'other' failed permanently: no",
        ),
        (
            "other levels untouched",
            "Webhook 'model-deployment' failed permanently: x",
            logging.WARNING,
            logging.WARNING,
            "Webhook 'model-deployment' failed permanently: x",
        ),
    ],
)
def test_denial_log_filter(
    case: str, message: str, level: int, expected_level: int, expected_message: str
) -> None:
    record = _record(message, level=level)
    with _objects_logged_from(logging.INFO):
        assert serving.DenialLogFilter().filter(record), case
    assert (record.levelno, record.getMessage()) == (expected_level, expected_message), case


def test_a_denial_is_dropped_when_info_is_not_logged() -> None:
    record = _record("Webhook 'trust-policy' failed permanently: bad key")
    with _objects_logged_from(logging.WARNING):
        assert not serving.DenialLogFilter().filter(record)


# --- Who may call the webhook: a real TLS handshake against kopf's server ----------------------


def _client_certificate(
    directory: pathlib.Path, *, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[pathlib.Path, pathlib.Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _ca(directory: pathlib.Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


# What kopf reads of a review, as the API server sends it: anything less is answered 400 before
# the handlers (test_fuzz_corpora has those).
REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "u-1",
        "operation": "CREATE",
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "bert", "namespace": "ml"}},
    },
}


async def _ask(
    server: kopf.WebhookServerProtocol,
    *,
    server_ca: pathlib.Path,
    client: tuple[pathlib.Path, pathlib.Path] | None,
) -> int | str:
    """The HTTP status of one admission request over TLS, or the kind of connection failure."""
    answered: list[str] = []

    async def fn(request: typing.Any, **_: typing.Any) -> typing.Any:
        answered.append(request["request"]["uid"])
        return {"response": {"uid": request["request"]["uid"], "allowed": True}}

    serving_ = server(fn)
    config = await serving_.__anext__()
    try:
        context = ssl.create_default_context(cafile=str(server_ca))
        if client is not None:
            context.load_cert_chain(*map(str, client))
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(
                    f"{config['url']}/managed-child", json=REVIEW, ssl=context
                ) as response:
                    assert (response.status == 200) == bool(answered)
                    return response.status
            except (aiohttp.ClientConnectionError, ssl.SSLError) as error:
                assert not answered
                return type(error).__name__
    finally:
        await serving_.aclose()


@pytest.fixture
def tls(tmp_path: pathlib.Path) -> pathlib.Path:
    certs.write(certs.generate(ip_addresses=["127.0.0.1"]), tmp_path / "tls")
    return tmp_path


def _options(tls: pathlib.Path, **client: typing.Any) -> serving.Options:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return serving.Options(
        port=port, cert_dir=tls / "tls", addr="127.0.0.1", identity=IDENTITY, **client
    )


async def test_without_a_client_ca_any_tls_client_is_answered(tls: pathlib.Path) -> None:
    server = serving.server(_options(tls))
    assert await _ask(server, server_ca=tls / "tls" / "ca.crt", client=None) == 200


async def test_with_a_client_ca_only_its_certificates_get_an_answer(tls: pathlib.Path) -> None:
    api_server_ca = _ca(tls, "apiserver-webhook-client-ca")
    other_ca = _ca(tls, "someone-else")
    options = _options(tls, client_ca=tls / "apiserver-webhook-client-ca.pem")
    server_ca = tls / "tls" / "ca.crt"
    api_server = _client_certificate(tls, name="kube-apiserver", ca=api_server_ca)
    impostor = _client_certificate(tls, name="a-pod", ca=other_ca)
    assert await _ask(serving.server(options), server_ca=server_ca, client=api_server) == 200
    # A pod that can reach the port gets no TLS session, let alone an answer.
    for client in (None, impostor):
        outcome = await _ask(serving.server(options), server_ca=server_ca, client=client)
        assert outcome in {
            "ClientOSError",
            "ServerDisconnectedError",
            "ClientConnectorError",
            "SSLError",
        }


async def test_a_client_name_narrows_what_the_ca_signed(tls: pathlib.Path) -> None:
    client_ca = _ca(tls, "shared-ca")
    options = _options(tls, client_ca=tls / "shared-ca.pem", client_names=("kube-apiserver",))
    server_ca = tls / "tls" / "ca.crt"
    allowed = _client_certificate(tls, name="kube-apiserver", ca=client_ca)
    other = _client_certificate(tls, name="some-controller", ca=client_ca)
    assert await _ask(serving.server(options), server_ca=server_ca, client=allowed) == 200
    assert await _ask(serving.server(options), server_ca=server_ca, client=other) == 403


def test_a_client_name_without_a_ca_is_refused(tls: pathlib.Path) -> None:
    with pytest.raises(kopf.PermanentError, match="--webhook-client-ca"):
        serving.server(_options(tls, client_names=("kube-apiserver",)))


def test_a_connect_request_names_its_pod_where_handlers_read_it() -> None:
    # kopf's handlers read an object's name and namespace from its metadata; a CONNECT
    # request's object (PodExecOptions) has none, its pod is named by the request alone.
    review = {
        "request": {
            "operation": "CONNECT",
            "name": "bert-7c54bb5d48-ct4ht",
            "namespace": "ml",
            "object": {"kind": "PodExecOptions", "apiVersion": "v1", "command": ["sh"]},
        }
    }
    serving.name_connect_target(review)
    assert review["request"]["object"]["metadata"] == {
        "name": "bert-7c54bb5d48-ct4ht",
        "namespace": "ml",
    }
    created = {"request": {"operation": "CREATE", "name": "x", "object": {"metadata": {}}}}
    serving.name_connect_target(created)
    assert created["request"]["object"] == {"metadata": {}}
