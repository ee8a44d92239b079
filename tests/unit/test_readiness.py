"""The replica's readiness probe: not Ready (503) until the caches its admission webhooks answer
from are filled, then Ready (200); served on a real loopback socket."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from modelguard.admission import readiness


def test_not_ready_until_the_caches_are_filled() -> None:
    assert readiness.answer(filled=False) == (503, readiness.NOT_READY)
    assert "caches not yet filled" in readiness.NOT_READY
    assert readiness.answer(filled=True)[0] == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://0.0.0.0:8082/readyz",
        "http://0.0.0.0/readyz",
        "http://0.0.0.0:8082",
        "http://:8082/readyz",
        "http://0.0.0.0:port/readyz",
        "0.0.0.0:8082",
    ],
)
def test_a_url_that_names_no_http_port_and_path_is_refused_saying_what_is_accepted(
    url: str,
) -> None:
    with pytest.raises(ValueError, match=r"expected http://HOST:PORT/PATH"):
        readiness.parse(url)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_the_probe_follows_the_caches() -> None:
    listener = readiness.bind(readiness.Endpoint("127.0.0.1", 0, "/readyz"))
    port = listener.getsockname()[1]
    filled = False
    runner = await readiness.serve(listener, path="/readyz", filled=lambda: filled)
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        status, text = await asyncio.to_thread(_get, url)
        assert (status, text.strip()) == (503, readiness.NOT_READY)
        filled = True
        status, text = await asyncio.to_thread(_get, url)
        assert (status, text.strip()) == (200, readiness.READY)
        # Only the path it was given.
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz"))[0] == 404
    finally:
        await runner.cleanup()
        listener.close()
