"""The replica's readiness (`modelguard run --readiness URL`): not Ready until the caches its
admission webhooks answer from are filled, so that the webhook Service sends reviews only to
replicas that judge from a full view. During a rolling restart a new pod would otherwise be sent
reviews as soon as kopf's liveness endpoint answers, seconds before its first listing is in.

kopf's own endpoint (`--liveness`) serves one path and says only that the event loop runs, which
is what liveness needs: a replica still listing a large cluster must not be restarted for it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import socket
import typing
import urllib.parse

import aiohttp.web

from modelguard.admission import decisions

READY: typing.Final = "ready: the admission caches are filled"
NOT_READY: typing.Final = (
    f"not ready: {decisions.CACHES_NOT_FILLED} (kopf's first listing of the cluster is not in)"
)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str


def parse(url: str) -> Endpoint:
    """`http://HOST:PORT/PATH`; ValueError naming what is accepted otherwise."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or not parts.path:
        raise ValueError(
            f"expected http://HOST:PORT/PATH (e.g. http://0.0.0.0:8081/readyz), got {url!r}"
        )
    return Endpoint(host=parts.hostname, port=port, path=parts.path)


def answer(*, filled: bool) -> tuple[int, str]:
    """The probe's status and text: 200 once the caches are filled, 503 until then."""
    return (200, READY) if filled else (503, NOT_READY)


def bind(endpoint: Endpoint) -> socket.socket:
    """The listening socket, bound before the operator starts so that a port already taken stops
    the start with a message (OSError) rather than later, inside kopf."""
    listener = socket.create_server((endpoint.host, endpoint.port), reuse_port=False)
    listener.setblocking(False)
    return listener


async def serve(
    listener: socket.socket, *, path: str, filled: collections.abc.Callable[[], bool]
) -> aiohttp.web.AppRunner:
    """Answers GET `path` on `listener` from `filled()`, in the operator's event loop: a loop too
    busy to answer the probe is one too busy to answer the webhooks."""

    async def probe(_: aiohttp.web.Request) -> aiohttp.web.Response:
        status, text = answer(filled=filled())
        return aiohttp.web.Response(status=status, text=text + "\n")

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(path, probe)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.SockSite(runner, listener).start()
    return runner
