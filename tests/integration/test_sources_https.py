"""The HTTPS source against a real TLS server on loopback (aiohttp, throwaway CA): verified TLS,
a private CA bundle held in memory, status codes typed, no listing, and no redirect followed."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import localcluster
from modelguard import sources
from modelguard.sources import base, errors

FILES = {"model.sig": b"bundle", "a b/weights.bin": b"w" * (3 << 20)}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS server of FILES under /m/; yields its base URL and the CA bundle that trusts it."""
    pki = localcluster.Pki()
    identity = pki.issue(
        common_name="files", server_names=("localhost",), server_ips=("127.0.0.1",)
    )
    (tmp_path / "tls.crt").write_bytes(identity.cert_pem)
    (tmp_path / "tls.key").write_bytes(identity.key_pem)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.ca_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    plain_port = localcluster.free_port()

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "secret.bin":
            raise web.HTTPForbidden
        if name == "broken.bin":
            raise web.HTTPServiceUnavailable
        if name == "downgrade.bin":
            raise web.HTTPFound(f"http://127.0.0.1:{plain_port}/m/model.sig")
        if name == "moved.sig":
            raise web.HTTPFound("/m/model.sig")
        if name not in FILES:
            raise web.HTTPNotFound
        return web.Response(body=FILES[name])

    app = web.Application()
    app.router.add_get("/m/{name:.+}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = localcluster.free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    await web.TCPSite(runner, "127.0.0.1", plain_port).start()
    try:
        yield f"https://127.0.0.1:{port}/m/", ca
    finally:
        await runner.cleanup()


def open_https(url: str, ca: Path | None) -> base.Source:
    ca_pem = ca.read_bytes() if ca is not None else None
    return sources.open_source(url, transport_settings=base.Transport(ca_pem=ca_pem, attempts=1))


async def test_reads_and_streams_with_a_private_ca(server: tuple[str, Path]) -> None:
    url, ca = server
    async with open_https(url, ca) as source:
        assert await source.read_small("model.sig", max_bytes=100) == b"bundle"
        streamed = b"".join([c async for c in source.stream("a b/weights.bin", chunk_size=1 << 20)])
        assert streamed == FILES["a b/weights.bin"]
        with pytest.raises(errors.TooLarge):
            await source.read_small("a b/weights.bin", max_bytes=1 << 20)
        # Not even a redirect to the same host is followed: the policy bound this URL.
        with pytest.raises(errors.RedirectRefused, match=r"'/m/model\.sig'"):
            await source.read_small("moved.sig", max_bytes=100)


async def test_an_unknown_ca_is_refused(server: tuple[str, Path]) -> None:
    url, _ = server
    async with open_https(url, None) as source:
        with pytest.raises(errors.SourceUnreachable, match="TLS"):
            await source.read_small("model.sig", max_bytes=100)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("missing.bin", errors.MissingFile, id="404"),
        pytest.param("secret.bin", errors.SourceDenied, id="403"),
        pytest.param("broken.bin", errors.SourceUnreachable, id="503"),
        pytest.param("downgrade.bin", errors.RedirectRefused, id="redirect-to-plain-http"),
    ],
)
async def test_failures_are_typed(
    server: tuple[str, Path], name: str, error: type[errors.SourceError]
) -> None:
    url, ca = server
    async with open_https(url, ca) as source:
        with pytest.raises(error):
            await source.read_small(name, max_bytes=100)


async def test_https_cannot_list(server: tuple[str, Path]) -> None:
    url, ca = server
    async with open_https(url, ca) as source:
        assert not source.can_list
        with pytest.raises(errors.ListingUnsupported):
            await source.list_files()
