"""The chart's own ValidatingWebhookConfiguration, pointed at an operator process on loopback:
how the tests and the benchmarks make the real API server call `modelguard run` over TLS."""

from __future__ import annotations

import base64
import subprocess
import typing

import yaml

import localcluster


def loopback(*, name: str, port: int, ca: bytes, namespace: str) -> dict[str, typing.Any]:
    """The chart's rendered configuration with each webhook's Service replaced by
    https://127.0.0.1:<port><path> and `ca` as its CA bundle."""
    rendered = subprocess.run(
        [
            str(localcluster.binary("helm")),
            "template",
            "modelguard",
            str(localcluster.REPO_ROOT / "charts" / "modelguard"),
            "--namespace",
            namespace,
            "--show-only",
            "templates/validatingwebhookconfiguration.yaml",
            # Required by the chart; only the webhook configuration is kept from this render.
            "--set",
            "image.digest=sha256:" + "0" * 64,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (config,) = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "ValidatingWebhookConfiguration"
    ]
    config["metadata"] = {"name": name}
    for webhook in config["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{path}",
            "caBundle": base64.b64encode(ca).decode(),
        }
    return typing.cast(dict[str, typing.Any], config)
