"""The reference server of benchmarks/webhook_latency.py: a trivial TLS AdmissionReview echo.

The same stack as kopf's webhook server (aiohttp, one `POST /{id}` route, the request parsed as
JSON, a JSON response) minus kopf and ModelGuard's handlers, so that the benchmark client's own
cost and the TLS/HTTP cost are visible next to the webhook's figures. It allows everything.

    python benchmarks/_webhook.py --port PORT --cert-dir DIR   # DIR holds tls.crt and tls.key
"""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path

from aiohttp import web


async def _review(request: web.Request) -> web.Response:
    review = json.loads(await request.text())
    return web.json_response(
        {
            "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert_dir / "tls.crt", args.cert_dir / "tls.key")
    app = web.Application()
    app.add_routes([web.post("/{id:.*}", _review)])
    web.run_app(
        app, host="127.0.0.1", port=args.port, ssl_context=context, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
