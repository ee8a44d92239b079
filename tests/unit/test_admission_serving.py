"""The glue from `modelguard run` flags to kopf: the TLS server it is given, and denials as kopf's
admission errors."""

from __future__ import annotations

import collections.abc
import contextlib
import logging
import pathlib

import kopf
import pytest

from modelguard import cli
from modelguard.admission import decisions, serving

IDENTITY = decisions.Identity(operator_username="system:serviceaccount:mg:mg")


def test_webhook_server_serves_tls_from_the_cert_dir(tmp_path: pathlib.Path) -> None:
    options = serving.Options(port=9443, cert_dir=tmp_path, addr="127.0.0.1", identity=IDENTITY)
    server = serving.server(options)
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
