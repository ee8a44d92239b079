"""`make run`'s operator: `modelguard run` on this machine, as the chart's ServiceAccount.

The chart is installed with its operator Deployment scaled to zero (kwok runs no containers), so
the operator runs here instead, with the identity and RBAC the chart gives it (a TokenRequest
token, never the admin's), and serves the chart's admission webhooks on loopback: the API server
calls it exactly as it would call the in-cluster Service. On exit the webhook configuration is
removed, so that a stopped operator does not leave ModelGuard's objects failing closed.

Usage: python hack/localoperator.py --kubeconfig ADMIN --dir .run/operator --log FILE
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import yaml

import localcluster
import webhookconfig

NAMESPACE: typing.Final = "modelguard-system"
RELEASE: typing.Final = "modelguard"
AUDIT_LOG_NAME: typing.Final = f"{NAMESPACE}/{RELEASE}"
"""The name the chart gives the audit log of this release (audit.logName's default)."""
WEBHOOK_CONFIG: typing.Final = "modelguard-local"


def audit_key_pem() -> bytes:
    """A new audit key as the chart makes it: an Ed25519 private key, PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def service_account_kubeconfig(
    *, admin_kubeconfig: Path, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig acting as a ServiceAccount, with a one-hour token from the TokenRequest API
    (the same kind of token a pod of the chart gets), against the admin's cluster."""
    created = subprocess.run(
        [
            str(localcluster.binary("kubectl")),
            f"--kubeconfig={admin_kubeconfig}",
            *("create", "token", service_account, "-n", namespace),
            *("--duration=3600s", "--output=json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(created.stdout)["status"]["token"]
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]
    identity = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": identity, "user": {"token": token}}],
                "contexts": [
                    {"name": identity, "context": {"cluster": cluster["name"], "user": identity}}
                ],
                "current-context": identity,
            }
        )
    )
    path.chmod(0o600)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_listener(process: subprocess.Popen[bytes], *, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"localoperator: the operator exited; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"localoperator: no webhook listener after 60 s; see {log}"
                ) from None
            time.sleep(0.25)


def _kubectl(admin: Path, *args: str, input: str | None = None) -> None:
    subprocess.run(
        [str(localcluster.binary("kubectl")), f"--kubeconfig={admin}", *args],
        input=input,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    # Imported here: hack/ scripts run with the project's venv, where the package is installed.
    from modelguard.admission import certs  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the admin's kubeconfig")
    parser.add_argument("--dir", type=Path, required=True, help="state: identity, certificates")
    parser.add_argument("--log", type=Path, required=True, help="the operator's log file")
    args = parser.parse_args(argv)
    state = args.dir.resolve()
    state.mkdir(parents=True, exist_ok=True)

    identity = service_account_kubeconfig(
        admin_kubeconfig=args.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "operator.kubeconfig",
    )
    bundle = certs.generate(ip_addresses=["127.0.0.1"])
    certs.write(bundle, state / "tls")
    # Kept across runs: the log goes on under one key, as the chart's Secret keeps it.
    audit_key = state / "audit.pem"
    if not audit_key.exists():
        audit_key.touch(mode=0o600)
        audit_key.write_bytes(audit_key_pem())
    port = _free_port()
    # The local control plane presents a webhook client certificate (another cluster may not):
    # answer that caller alone.
    client_ca = localcluster.webhook_client_ca(args.kubeconfig)
    client_auth = (
        (
            f"--webhook-client-ca={client_ca}",
            f"--webhook-client-name={localcluster.WEBHOOK_CLIENT_NAME}",
        )
        if client_ca.exists()
        else ()
    )
    with args.log.open("ab") as log:
        operator = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("modelguard")),
                *("run", "--verbose", f"--webhook-port={port}", "--webhook-addr=127.0.0.1"),
                f"--webhook-cert-dir={state / 'tls'}",
                f"--operator-username=system:serviceaccount:{NAMESPACE}:{RELEASE}",
                *("--audit-log", str(state / "audit.jsonl")),
                *("--audit-key-file", str(audit_key)),
                *("--audit-log-name", AUDIT_LOG_NAME),
                *("--audit-checkpoints-namespace", NAMESPACE),
                *("--audit-checkpoints-prefix", f"{RELEASE}-audit"),
                *client_auth,
            ],
            env={**os.environ, "KUBECONFIG": str(identity), "POD_NAME": "modelguard-local"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(signum: int, frame: types.FrameType | None) -> None:
        del frame
        operator.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _wait_for_listener(operator, port=port, log=args.log)
        config = webhookconfig.loopback(
            name=WEBHOOK_CONFIG, port=port, ca=bundle.ca, namespace=NAMESPACE
        )
        _kubectl(args.kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(config))
        print(
            f"localoperator: operator running as system:serviceaccount:{NAMESPACE}:{RELEASE}, "
            f"admission webhooks on https://127.0.0.1:{port}",
            flush=True,
        )
        return operator.wait()
    finally:
        if operator.poll() is None:
            operator.terminate()
            operator.wait(timeout=30)
        _kubectl(
            args.kubeconfig,
            *("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found"),
        )


if __name__ == "__main__":
    sys.exit(main())
