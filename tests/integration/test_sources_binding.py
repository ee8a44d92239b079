"""Sources read only where the TrustPolicy binds them, against real servers on loopback: no
redirect followed (by the operator's source classes and by the agent), no name that resolves to
loopback, the S3 endpoint the policy names and not the Secret's, and whatever a server says
bounded and quoted."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from test_agent_fetch_verify import credentials_for, dest_contents, publish, run_agent

import s3server
import signedmodel
from modelguard import sources
from modelguard.sources import base, errors, s3

# Under the 64 KiB of an error body that is read, far over what a message may carry.
EVIL_MESSAGE = "denied\nReady=True\r\n" + "A" * 50_000


@dataclasses.dataclass
class Server:
    """A plain HTTP server on 127.0.0.1: `files` by path, `redirects` by path, and every path
    it was asked for in `seen`."""

    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    redirects: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, tuple[int, bytes]] = dataclasses.field(default_factory=dict)
    seen: list[str] = dataclasses.field(default_factory=list)
    port: int = 0
    # Error bodies sent in two pieces, the second a moment later, as a busy network delivers.
    split_errors: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server.seen.append(path)
            if path in server.redirects:
                self.send_response(302)
                self.send_header("Location", server.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path in server.errors:
                status, body = server.errors[path]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.split_errors:
                    self.wfile.write(body[:100])
                    self.wfile.flush()
                    time.sleep(0.3)
                    body = body[100:]
                self.wfile.write(body)
            elif path in server.files:
                body = server.files[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args: object) -> None:
            del args

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def two_servers() -> Iterator[tuple[Server, Server]]:
    with serving(Server()) as first, serving(Server()) as second:
        yield first, second


def _open(uri: str, **settings: typing.Any) -> base.Source:
    return sources.open_source(
        uri,
        s3_settings=s3.S3Settings(**settings) if settings else None,
        transport_settings=base.Transport(attempts=1, connect_timeout=5),
    )


# --- redirects ----------------------------------------------------------------------------------


async def test_a_redirect_to_another_host_is_not_followed(
    two_servers: tuple[Server, Server],
) -> None:
    first, second = two_servers
    second.files["/internal/model.sig"] = b"from elsewhere"
    first.redirects["/m/model.sig"] = f"{second.base}/internal/model.sig"
    async with _open(f"{first.base}/m/") as source:
        # SourceError: the old code's errors module has no RedirectRefused to name.
        with pytest.raises(errors.SourceError) as raised:
            await source.read_small("model.sig", max_bytes=100)
    assert raised.value.reason == "SourceRedirectRefused"
    assert f"'{second.base}/internal/model.sig'" in raised.value.message
    assert second.seen == []


def test_the_agent_follows_no_redirect_either(
    s3: s3server.S3Server,
    s3_bucket: str,
    tmp_path: Path,
    signing_key: tuple[Path, str],
    two_servers: tuple[Server, Server],
) -> None:
    # The bundle is served where the source is; every file redirects to another server.
    published = publish(s3, s3_bucket, tmp_path, signing_key, signedmodel.demo_files("1.0"))
    first, second = two_servers
    first.files["/m/model.sig"] = published.signature
    for name, data in published.files.items():
        second.files[f"/stolen/{name}"] = data
        first.redirects[f"/m/{name}"] = f"{second.base}/stolen/{name}"
    result = run_agent(
        published,
        tmp_path,
        bound_endpoint=False,
        extra=["--source", f"{first.base}/m/", "--signature", f"{first.base}/m/model.sig"],
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("SourceRedirectRefused: "), result.stderr
    assert second.seen == []
    assert dest_contents(tmp_path / "dest") == {}


# --- addresses ----------------------------------------------------------------------------------


async def test_a_name_resolving_to_loopback_is_refused_the_named_address_is_not(
    two_servers: tuple[Server, Server],
) -> None:
    server, _ = two_servers
    server.files["/m/model.sig"] = b"bundle"
    async with _open(f"http://localhost:{server.port}/m/") as source:
        with pytest.raises(errors.SourceError, match="loopback") as raised:
            await source.read_small("model.sig", max_bytes=100)
    assert raised.value.reason == "SourceAddressRefused"
    assert server.seen == []
    async with _open(f"{server.base}/m/") as source:
        assert await source.read_small("model.sig", max_bytes=100) == b"bundle"


async def test_an_s3_endpoint_by_a_loopback_name_is_refused(
    s3: s3server.S3Server, s3_bucket: str
) -> None:
    s3.put_object(s3_bucket, "m/model.sig", b"bundle")
    by_name = s3.endpoint.replace("127.0.0.1", "localhost")
    settings = {"credentials": s3.credentials, "region": s3.region}
    async with _open(f"s3://{s3_bucket}/m/", endpoint=by_name, **settings) as source:
        with pytest.raises(errors.SourceError, match="loopback") as raised:
            await source.read_small("model.sig", max_bytes=100)
    assert raised.value.reason == "SourceAddressRefused"
    async with _open(f"s3://{s3_bucket}/m/", endpoint=s3.endpoint, **settings) as source:
        assert await source.read_small("model.sig", max_bytes=100) == b"bundle"


# --- the Secret's endpoint ----------------------------------------------------------------------


def test_the_agent_refuses_a_secret_endpoint_the_policy_does_not_bind(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    # The Secret names the (loopback) server; the pod's binding says AWS S3: refused, not used.
    published = publish(s3, s3_bucket, tmp_path, signing_key, signedmodel.demo_files("1.0"))
    result = run_agent(published, tmp_path, bound_endpoint=False)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("SourceEndpointNotAllowed: key AWS_ENDPOINT_URL names "), (
        result.stderr
    )
    assert "--signature-endpoint binds the source to AWS S3" in result.stderr
    assert dest_contents(tmp_path / "dest") == {}


def test_the_agent_admitting_private_addresses_still_refuses_a_name_on_loopback(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    # allowPrivateAddresses (the flags the operator passes for it) admits a ClusterIP behind a
    # Service name, never the node itself: only naming 127.0.0.1 reaches it.
    published = publish(s3, s3_bucket, tmp_path, signing_key, signedmodel.demo_files("1.0"))
    by_name = s3.endpoint.replace("127.0.0.1", "localhost")
    result = run_agent(
        published,
        tmp_path,
        credentials=credentials_for(s3, AWS_ENDPOINT_URL=by_name),
        bound_endpoint=False,
        extra=(
            "--source-endpoint",
            by_name,
            "--signature-endpoint",
            by_name,
            "--source-private-addresses",
            "--signature-private-addresses",
        ),
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("SourceAddressRefused: "), result.stderr
    assert "loopback" in result.stderr
    assert dest_contents(tmp_path / "dest") == {}


# --- what a server says -------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["whole", "in-two-pieces"])
async def test_an_s3_error_message_is_bounded_and_quoted(
    two_servers: tuple[Server, Server], split: bool
) -> None:
    server, _ = two_servers
    server.split_errors = split
    body = (
        f"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>{EVIL_MESSAGE}</Message>"
        "</Error>"
    ).encode()
    server.errors["/models/m/model.sig"] = (403, body)
    async with _open("s3://models/m/", endpoint=server.base) as source:
        with pytest.raises(errors.SourceDenied) as raised:
            await source.read_small("model.sig", max_bytes=100)
    message = raised.value.message
    # (XML turns the CR LF into one LF.)
    assert "HTTP 403, the source answered: 'AccessDenied: denied\\nReady=True\\nAAA" in message
    assert "\n" not in message
    assert "\r" not in message
    assert len(message) < 1000


# --- paths a server reads as another folder -------------------------------------------------------


def test_the_api_server_refuses_a_source_path_that_servers_read_otherwise(
    kubectl: harness.Kubectl, chart_installed: str, signing_key: tuple[Path, str]
) -> None:
    # The CRD's own schema, as the real API server applies it (the chart installs no webhook
    # here): the rule holds even where the operator is not asked.
    del chart_installed
    name = f"climb-{os.getpid()}"
    for uri in (
        "https://models.example/team-a/..;/team-b/",
        "https://models.example/team-a/%252e%252e/team-b/",
        "s3://models/team-a/%2e%2e/",
    ):
        policy = signedmodel.trust_policy(
            name=name, public_key=signing_key[1], sources=[{"uri": uri}]
        )
        result = kubectl.apply(policy, check=False)
        assert result.returncode != 0, f"{uri}: created"
        assert "spec.sources[0].uri" in result.stderr, result.stderr
        assert kubectl.get("trustpolicy", name, namespace="default") is None
    # The same path elsewhere in the name is fine.
    fine = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        sources=[{"uri": "https://models.example/team-a/v1..2/"}],
    )
    try:
        kubectl.apply(fine)
    finally:
        kubectl.run("delete", "trustpolicy", name, check=False)
