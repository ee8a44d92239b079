"""`make run`'s operator: `modelguard run` on this machine, as the chart's ServiceAccount.

The chart is installed with its operator Deployment scaled to zero (kwok runs no containers), so
the operator runs here instead, with the identity and RBAC the chart gives it (TokenRequest
tokens, never the admin's, renewed in a file as the kubelet renews a pod's projected token, so
that it runs for as long as it is left running), and serves the chart's admission webhooks on
loopback: the API server calls it exactly as it would call the in-cluster Service. On exit the
webhook configuration is removed, so that a stopped operator does not leave ModelGuard's objects
failing closed, and the Secret its tokens are bound to, so that they stop working with it.

Usage: python hack/localoperator.py --kubeconfig ADMIN --dir .run/operator --log FILE
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import typing
import urllib.request
from pathlib import Path

import yaml

import localcluster
import webhookconfig

NAMESPACE: typing.Final = "modelguard-system"
RELEASE: typing.Final = "modelguard"
AUDIT_LOG_NAME: typing.Final = f"{NAMESPACE}/{RELEASE}"
"""The name the chart gives the audit log of this release (audit.logName's default)."""
WEBHOOK_CONFIG: typing.Final = "modelguard-local"
TOKEN_BINDING: typing.Final = f"{RELEASE}-local-operator-token"
"""The Secret the local operator's tokens are bound to (in NAMESPACE): deleted when it stops."""


def audit_key_pem() -> bytes:
    """A new audit key as the chart makes it: an Ed25519 private key, PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def service_account_kubeconfig(
    *,
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    path: Path,
    token_file: Path | None = None,
) -> Path:
    """A kubeconfig acting as a ServiceAccount against the admin's cluster. With `token_file`, its
    user reads the token from that file (`tokenFile`), which clients read again when the API
    server answers 401, as they do a pod's projected token: what `RenewedToken` keeps valid.
    Without, a one-hour token from the TokenRequest API, written into the kubeconfig (for a
    short-lived identity: nothing renews it)."""
    if token_file is not None:
        user: dict[str, str] = {"tokenFile": str(token_file.resolve())}
    else:
        token, _ = request_token(
            admin_kubeconfig=admin_kubeconfig,
            namespace=namespace,
            service_account=service_account,
            lifetime=3600,
        )
        user = {"token": token}
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]
    identity = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": identity, "user": user}],
                "contexts": [
                    {"name": identity, "context": {"cluster": cluster["name"], "user": identity}}
                ],
                "current-context": identity,
            }
        )
    )
    path.chmod(0o600)
    return path


def request_token(
    *,
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    lifetime: int,
    bound_secret: str | None = None,
) -> tuple[str, datetime.datetime]:
    """A token of the ServiceAccount from the TokenRequest API, valid `lifetime` seconds (or less,
    as the API server decides), and when it expires. `bound_secret`: bound to that Secret of the
    namespace, so that deleting it invalidates the token at once (the kubelet binds a pod's token
    to the pod)."""
    bound = ("--bound-object-kind=Secret", f"--bound-object-name={bound_secret}")
    created = localcluster.tool(
        "kubectl",
        admin_kubeconfig,
        *("create", "token", service_account, "-n", namespace),
        *(bound if bound_secret else ()),
        f"--duration={lifetime}s",
        "--output=json",
        timeout=60,
    )
    if created.returncode != 0:
        raise TokenError(f"kubectl create token {service_account}: {created.stderr.strip()}")
    status = json.loads(created.stdout)["status"]
    expires = datetime.datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
    return str(status["token"]), expires


class TokenError(Exception):
    """No token could be had from the TokenRequest API; the message says why."""


RENEW_AT: typing.Final = 0.8
"""The share of a token's lifetime after which a new one is requested: the kubelet's rule for a
pod's projected token (renewed once older than 80 % of its lifetime)."""
RETRY_SECONDS: typing.Final = 10.0
"""How soon a renewal that failed is tried again, while the token in the file is still valid."""


def renewal_due(issued: datetime.datetime, expires: datetime.datetime) -> datetime.datetime:
    """When a token issued at `issued` that expires at `expires` is renewed: at 80 % of its
    lifetime, as the kubelet renews a projected token."""
    return issued + (expires - issued) * RENEW_AT


class RenewedToken:
    """A ServiceAccount token kept valid in a file the way the kubelet keeps a pod's projected
    token: requested from the TokenRequest API, renewed once 80 % of its lifetime has passed, and
    replaced atomically (written aside, then renamed over the file: a reader sees the old token or
    the new one, never part of one). Each token is bound to the Secret `binding` of the namespace,
    which `start` makes and `stop` deletes: the credentials of a stopped operator die with it, as a
    pod's die with the pod. Clients given `path` as a kubeconfig's `tokenFile` read it again when
    the API server answers 401."""

    def __init__(
        self,
        *,
        admin_kubeconfig: Path,
        namespace: str,
        service_account: str,
        path: Path,
        binding: str,
        lifetime: int = 3600,
    ) -> None:
        self.admin_kubeconfig = admin_kubeconfig
        self.namespace = namespace
        self.service_account = service_account
        self.path = path.resolve()
        self.binding = binding
        self.lifetime = lifetime
        self.renewals = 0
        """Tokens written so far."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def renew(self) -> datetime.datetime:
        """Requests a new token (making the binding Secret again if it is gone) and writes it;
        returns when it expires."""
        with self._lock:
            self._ensure_binding()
            token, expires = request_token(
                admin_kubeconfig=self.admin_kubeconfig,
                namespace=self.namespace,
                service_account=self.service_account,
                lifetime=self.lifetime,
                bound_secret=self.binding,
            )
            aside = self.path.with_name(f".{self.path.name}.new")
            aside.unlink(missing_ok=True)
            descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(token)
                file.flush()
                os.fsync(file.fileno())
            aside.replace(self.path)
            self.renewals += 1
            return expires

    def start(self) -> RenewedToken:
        """Writes the first token, then renews it in the background until `stop`."""
        expires = self.renew()
        self._thread = threading.Thread(
            target=self._keep_renewing, args=(expires,), name="token-renewer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops renewing and deletes the binding Secret: every token it bound stops working."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._kubectl(
            "delete",
            "secret",
            self.binding,
            "-n",
            self.namespace,
            "--ignore-not-found",
            check=False,
        )

    def __enter__(self) -> RenewedToken:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _keep_renewing(self, expires: datetime.datetime) -> None:
        issued = datetime.datetime.now(datetime.UTC)
        while True:
            due = renewal_due(issued, expires)
            wait = (due - datetime.datetime.now(datetime.UTC)).total_seconds()
            if self._stopping.wait(timeout=max(0.0, wait)):
                return
            try:
                expires = self.renew()
                issued = datetime.datetime.now(datetime.UTC)
            except (TokenError, OSError, subprocess.TimeoutExpired) as error:
                # The token in the file stays valid until it expires: try again soon, as the
                # kubelet does, rather than give up.
                print(f"localoperator: token renewal failed, retrying: {error}", file=sys.stderr)
                if self._stopping.wait(timeout=RETRY_SECONDS):
                    return

    def _ensure_binding(self) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.binding,
                "namespace": self.namespace,
                "annotations": {
                    "modelguard.dev/purpose": f"the tokens of {self.service_account} run outside"
                    " the cluster are bound to this Secret; deleting it revokes them",
                },
            },
        }
        self._kubectl("apply", "-f", "-", input=json.dumps(secret))

    def _kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = localcluster.tool("kubectl", self.admin_kubeconfig, *args, input=input, timeout=60)
        if check and done.returncode != 0:
            raise TokenError(f"kubectl {args[0]} secret {self.binding}: {done.stderr.strip()}")
        return done


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(
    process: subprocess.Popen[bytes], *, readiness: str, log: Path, timeout: float = 120
) -> None:
    """Until the operator's readiness endpoint answers 200: its caches are filled, as the chart's
    readiness probe waits before the webhook Service sends it reviews."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"localoperator: the operator exited; see {log}")
        try:
            with urllib.request.urlopen(readiness, timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"localoperator: not ready after {timeout:.0f} s; see {log}")
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

    # Renewed as the kubelet renews a pod's projected token, for as long as the operator runs.
    token = RenewedToken(
        admin_kubeconfig=args.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "token",
        binding=TOKEN_BINDING,
    ).start()
    identity = service_account_kubeconfig(
        admin_kubeconfig=args.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "operator.kubeconfig",
        token_file=token.path,
    )
    bundle = certs.generate(ip_addresses=["127.0.0.1"])
    certs.write(bundle, state / "tls")
    # Kept across runs: the log goes on under one key, as the chart's Secret keeps it.
    audit_key = state / "audit.pem"
    if not audit_key.exists():
        audit_key.touch(mode=0o600)
        audit_key.write_bytes(audit_key_pem())
    port = _free_port()
    readiness = f"http://127.0.0.1:{_free_port()}/readyz"
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
    log = args.log.open("ab")
    try:
        operator = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("modelguard")),
                *("run", "--verbose", f"--webhook-port={port}", "--webhook-addr=127.0.0.1"),
                f"--readiness={readiness}",
                f"--webhook-cert-dir={state / 'tls'}",
                f"--operator-username=system:serviceaccount:{NAMESPACE}:{RELEASE}",
                *("--audit-log", str(state / "audit.jsonl")),
                *("--audit-key-file", str(audit_key)),
                *("--audit-log-name", AUDIT_LOG_NAME),
                *("--audit-checkpoints-namespace", NAMESPACE),
                *("--audit-checkpoints-prefix", f"{RELEASE}-audit"),
                # As the chart runs it: reconciling while holding the release's Lease.
                *("--leader-election-lease", RELEASE, "--leader-election-namespace", NAMESPACE),
                *client_auth,
            ],
            env={**os.environ, "KUBECONFIG": str(identity), "POD_NAME": "modelguard-local"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        token.stop()
        raise
    finally:
        log.close()

    def stop(signum: int, frame: types.FrameType | None) -> None:
        del frame
        operator.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        # Registered once the caches are filled, as the webhook Service would send it reviews.
        wait_until_ready(operator, readiness=readiness, log=args.log)
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
        # Its tokens stop working with it.
        token.stop()


if __name__ == "__main__":
    sys.exit(main())
