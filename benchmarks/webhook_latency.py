"""Admission webhook latency, measured directly and as the API server sees it.

Direct: AdmissionReview requests (a managed Deployment UPDATE by an ordinary user, which is
denied, and the same UPDATE by the operator, which is allowed) replayed at a fixed rate over
keep-alive TLS to a `modelguard run` process serving the webhook on loopback. The client is an
open-loop load generator in Go (benchmarks/loadgen, built once per source hash into the binary
cache): request i is due at start + i/rate whatever happened before it, and its latency counts
from that due time, so a server that falls behind shows it and the client's own cost stays far
below the server's. With two or more CPUs the server is pinned to one and the load generator to
another. References, measured in the same run with the same load generator, bytes and pinning:
the smallest TLS webhook (loadgen serve, Go: the floor of the transport and the client) and a
trivial aiohttp TLS echo (benchmarks/_webhook.py: kopf's HTTP stack without kopf or ModelGuard).

As the API server sees it: the chart's ValidatingWebhookConfiguration pointed at that process, and
server-side dry-run PATCHes of a managed Service sent to the API server at a fixed rate, as the
admin (denied) and impersonating the operator (allowed). The API server's own figure is
`apiserver_admission_webhook_admission_duration_seconds` (bucket deltas around each run; its
buckets are coarse, so its quantiles are printed as the bucket they fall in, "<=5" meaning
(0, 5] ms); the client-side latency of the same requests is printed with the webhook registered
and with it deleted (the reference).

Targets (issue 4): direct p99 <= 10 ms at 300 requests/s on one core; API-server-observed
p99 <= 25 ms at 50 requests/s. Run with `make bench`; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import dataclasses
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import localcluster
import webhookconfig
from modelguard.admission import certs

REPO_ROOT = Path(__file__).resolve().parent.parent
LOADGEN_DIR = Path(__file__).resolve().with_name("loadgen")
AGENT_IMAGE = "registry.example/modelguard@sha256:" + "0" * 64
OPERATOR_USERNAME = "system:serviceaccount:modelguard-system:modelguard"
RELEASE_NAMESPACE = "modelguard-system"
# The webhook process reconciles this namespace only, which stays empty: it is here to serve.
IDLE_NAMESPACE = "modelguard-bench-idle"
NAMESPACE = "modelguard-bench"
MODEL = "bench"
WEBHOOK_NAME = "managed-children.modelguard.dev"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"
DIRECT_TARGET_MS = 10.0
API_SERVER_TARGET_MS = 25.0


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table; quantiles are milliseconds or, for histograms, bucket strings."""

    scenario: str
    rate: float
    count: int
    mean: float
    p50: str
    p90: str
    p99: str
    max: str
    target: str
    errors: int | None = None
    capacity: float | None = None
    """Requests/s back to back on one connection (direct rows only)."""
    cpu_per_request: float | None = None
    """CPU milliseconds the server process spent per request (direct rows only)."""
    core_busy: float | None = None
    """How busy the server's core was, in percent, whoever used it (direct rows only)."""


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclasses.dataclass(frozen=True)
class Sample:
    """Client-side latencies (seconds) of one fixed-rate run."""

    latencies: list[float]
    elapsed: float

    def row(self, scenario: str, *, target_ms: float | None = None) -> Row:
        ordered = sorted(self.latencies)
        p99 = _quantile(ordered, 0.99) * 1000
        return Row(
            scenario=scenario,
            rate=len(ordered) / self.elapsed,
            count=len(ordered),
            mean=sum(ordered) / len(ordered) * 1000,
            p50=f"{_quantile(ordered, 0.50) * 1000:.2f}",
            p90=f"{_quantile(ordered, 0.90) * 1000:.2f}",
            p99=f"{p99:.2f}",
            max=f"{ordered[-1] * 1000:.2f}",
            target=_verdict(p99, target_ms),
        )


def _verdict(p99_ms: float, target_ms: float | None) -> str:
    if target_ms is None:
        return "reference"
    return f"p99<={target_ms:g}: {'met' if p99_ms <= target_ms else 'MISSED'}"


def replay(send: Callable[[], None], *, rate: float, seconds: float) -> Sample:
    """Calls `send` `rate * seconds` times on a fixed schedule, one at a time; gives up after
    twice the planned time (a slow server shows as fewer requests and a lower achieved rate)."""
    planned = int(rate * seconds)
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + 2 * seconds
    for index in range(planned):
        due = start + index / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        send()
        done = time.perf_counter()
        latencies.append(done - due)
        if done > deadline:
            break
    return Sample(latencies, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# A keep-alive HTTPS client (the API-server runs: 50 requests/s is well within its reach)
# --------------------------------------------------------------------------------------------


class Client:
    """One HTTP/1.1 connection, kept alive; counts how often it had to (re)connect."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self._connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
        self._socket: object = None
        self.connections = 0

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        data = response.read()
        if self._connection.sock is not self._socket:
            self._socket = self._connection.sock
            self.connections += 1
        return response.status, data

    def close(self) -> None:
        self._connection.close()


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _pin(pid: int, cpu: int | None, nice: int) -> None:
    """Pins every thread of `pid` to `cpu` and gives it `nice` (Linux keeps both per thread;
    threads created later inherit them). With autogroups, the kernel shares a CPU between
    sessions first and between their threads second: `pid` must lead its own session, whose
    niceness is set too."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            if cpu is not None:
                os.sched_setaffinity(int(task.name), {cpu})
            if nice:
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
    autogroup = Path(f"/proc/{pid}/autogroup")
    if nice and autogroup.exists():
        with contextlib.suppress(ProcessLookupError):
            autogroup.write_text(f"{nice}\n")


@contextlib.contextmanager
def _serving(
    command: list[str],
    *,
    env: dict[str, str],
    port: int,
    log: Path,
    cpu: int | None,
    nice: int = 0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A listener on 127.0.0.1:`port`, pinned to `cpu`; stopped on exit, whatever happens."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _pin(process.pid, cpu, nice)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{log.stem} exited with {process.returncode}; see {log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no listener on port {port}; see {log}") from None
                time.sleep(0.1)
        _pin(process.pid, cpu, nice)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --------------------------------------------------------------------------------------------
# The load generator (benchmarks/loadgen, Go)
# --------------------------------------------------------------------------------------------

_GO_ENV = {
    # A mismatch between go.mod and the local Go fails loudly instead of fetching a toolchain.
    "GOTOOLCHAIN": "local",
    "CGO_ENABLED": "0",
    # Standard library only: nothing to download, and go.mod is never edited.
    "GOFLAGS": "-mod=readonly",
}


def loadgen_binary() -> Path:
    """The load generator, built once per (sources, Go version) into the binary cache."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the load generator is built from benchmarks/loadgen: Go is needed")
    env = {**os.environ, **_GO_ENV}
    version = subprocess.run(
        [go, "env", "GOVERSION"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    digest = hashlib.sha256(version.encode() + b"\0")
    for source in sorted(LOADGEN_DIR.iterdir()):
        if source.suffix == ".go" or source.name in ("go.mod", "go.sum"):
            digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    destination = localcluster.cache_root() / f"loadgen-{digest.hexdigest()[:16]}"
    binary = destination / "loadgen"
    if binary.is_file():
        return binary
    # Built aside and renamed: an interrupted build never leaves a half-filled entry behind.
    partial = destination.with_name(f"{destination.name}.partial.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"building the load generator ({version}) into {destination}", file=sys.stderr)
    subprocess.run(
        [go, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", str(partial), "."],
        cwd=LOADGEN_DIR,
        env=env,
        check=True,
    )
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return binary


@dataclasses.dataclass(frozen=True)
class Target:
    """A server the load generator is pointed at, and whom to blame for its latency."""

    scenario: str
    url: str
    pid: int
    reviews: list[tuple[Path, bool]]
    """AdmissionReview bodies sent in turn, each with the answer it must get (allowed?)."""
    target_ms: float | None


def _load(
    loadgen: Path,
    target: Target,
    *,
    ca: Path,
    rate: float,
    seconds: float,
    client_cpu: int | None,
    server_cpu: int | None,
    nice: int,
    env: dict[str, str],
) -> tuple[Row, dict[str, typing.Any]]:
    """One open-loop run of the load generator against `target`; its row and its JSON report."""
    command = [
        str(loadgen),
        "run",
        f"-url={target.url}",
        f"-ca={ca}",
        f"-rate={rate:g}",
        f"-duration={seconds:g}s",
        "-warmup=2s",
        "-capacity=2s",
        f"-watch-pid={target.pid}",
        f"-watch-cpu={-1 if server_cpu is None else server_cpu}",
        f"-own-cpu={-1 if client_cpu is None else client_cpu}",
    ]
    for path, allowed in target.reviews:
        command.append(f"-review={path}={'allowed' if allowed else 'denied'}")
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _pin(process.pid, None, nice)  # its affinity is this thread's, already
        stdout, stderr = process.communicate(timeout=2 * seconds + 120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"load generator: {stderr.strip() or process.returncode}")
    report: dict[str, typing.Any] = json.loads(stdout)
    latency = report["latency_ms"]
    server = report["server"]
    row = Row(
        scenario=target.scenario,
        rate=report["achieved_rate"],
        count=report["count"],
        mean=latency["mean"],
        p50=f"{latency['p50']:.2f}",
        p90=f"{latency['p90']:.2f}",
        p99=f"{latency['p99']:.2f}",
        max=f"{latency['max']:.2f}",
        target=_verdict(latency["p99"], target.target_ms),
        errors=report["errors"],
        capacity=report.get("capacity_rate"),
        cpu_per_request=server.get("cpu_ms_per_request"),
        core_busy=server.get("core_busy_percent"),
    )
    return row, report


# --------------------------------------------------------------------------------------------
# What is sent
# --------------------------------------------------------------------------------------------


def _managed_labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/name": MODEL,
        "app.kubernetes.io/managed-by": "modelguard",
        "modelguard.dev/model-deployment": MODEL,
    }


def _deployment(replicas: int) -> dict[str, typing.Any]:
    """A Deployment shaped like the operator's (agent init container, server, volumes)."""
    security = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": MODEL,
            "namespace": NAMESPACE,
            "uid": "3d0f6c1e-0000-4000-8000-000000000001",
            "resourceVersion": "4242",
            "generation": 3,
            "labels": _managed_labels(),
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [
                {
                    "apiVersion": "modelguard.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": MODEL,
                    "uid": "3d0f6c1e-0000-4000-8000-000000000002",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"modelguard.dev/model-deployment": MODEL}},
            "template": {
                "metadata": {"labels": _managed_labels()},
                "spec": {
                    "serviceAccountName": MODEL,
                    "automountServiceAccountToken": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [
                        {
                            "name": "fetch-verify",
                            "image": AGENT_IMAGE,
                            "args": ["agent", "fetch-verify", "--source=s3://models/bench/"],
                            "volumeMounts": [{"name": "model", "mountPath": "/models"}],
                            "securityContext": security,
                        }
                    ],
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "registry.example/model-server@sha256:" + "4f" * 32,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": "http"}},
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/models", "readOnly": True}
                            ],
                            "securityContext": security,
                        }
                    ],
                    "volumes": [{"name": "model", "emptyDir": {}}],
                },
            },
        },
    }


def _review(username: str) -> bytes:
    """A managed Deployment scaled from 1 to 5 replicas by `username`."""
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": MODEL,
                "namespace": NAMESPACE,
                "operation": "UPDATE",
                "userInfo": {"username": username, "groups": ["system:authenticated"]},
                "object": _deployment(5),
                "oldObject": _deployment(1),
                "dryRun": False,
                "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
    ).encode()


def _patch_sender(client: Client, *, impersonate: str | None, expect: int) -> Callable[[], None]:
    """A server-side dry-run merge PATCH of the managed Service."""
    path = f"/api/v1/namespaces/{NAMESPACE}/services/{MODEL}?dryRun=All"
    headers = {"Content-Type": "application/merge-patch+json"}
    if impersonate:
        headers |= {"Impersonate-User": impersonate, "Impersonate-Group": "system:masters"}
    counter = iter(range(sys.maxsize))

    def send() -> None:
        body = json.dumps({"metadata": {"annotations": {"bench": str(next(counter))}}}).encode()
        status, data = client.request("PATCH", path, body, headers)
        if status != expect:
            raise RuntimeError(f"dry-run PATCH: expected {expect}, got {status} {data[:300]!r}")

    return send


# --------------------------------------------------------------------------------------------
# The API server
# --------------------------------------------------------------------------------------------


def _api_client(kubeconfig: Path, directory: Path) -> Client:
    """A keep-alive client authenticated with the admin certificate of `kubeconfig`."""
    config = json.loads(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    cert = directory / "admin.crt"
    key = directory / "admin.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    context.load_cert_chain(cert, key)
    server = re.fullmatch(r"https://([^:/]+):(\d+)", cluster["server"])
    assert server, cluster["server"]
    return Client(server.group(1), int(server.group(2)), context)


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (seconds), with the sum and count."""

    buckets: dict[float, float]
    total: float
    count: float

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(
            {le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - other.total,
            self.count - other.count,
        )

    def bucket_of(self, q: float) -> str:
        """The bucket that holds quantile `q`, as "<=N" milliseconds."""
        bounds = sorted(self.buckets)
        counts = [self.buckets[le] for le in bounds]
        index = bisect.bisect_left(counts, q * self.count)
        bound = bounds[min(index, len(bounds) - 1)]
        return "<=inf" if math.isinf(bound) else f"<={bound * 1000:g}"

    def row(self, scenario: str, *, rate: float, target_ms: float) -> Row:
        p99 = self.bucket_of(0.99)
        met = not p99.endswith("inf") and float(p99[2:]) <= target_ms
        return Row(
            scenario=scenario,
            rate=rate,
            count=int(self.count),
            mean=self.total / self.count * 1000 if self.count else math.nan,
            p50=self.bucket_of(0.50),
            p90=self.bucket_of(0.90),
            p99=p99,
            max=self.bucket_of(1.0),
            target=f"p99<={target_ms:g}: {'met' if met else 'MISSED'}",
        )


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def _scrape(client: Client, webhook: str) -> Histogram:
    """`METRIC` for `webhook`, summed over its other labels (operation, rejected, type)."""
    status, data = client.request("GET", "/metrics", None, {})
    if status != 200:
        raise RuntimeError(f"/metrics: {status}")
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in data.decode().splitlines():
        match = _SAMPLE.match(line)
        if not match or not match.group(1).startswith(METRIC):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if labels.get("name") != webhook:
            continue
        value = float(match.group(3))
        suffix = match.group(1).removeprefix(METRIC)
        if suffix == "_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif suffix == "_sum":
            total += value
        elif suffix == "_count":
            count += value
    return Histogram(buckets, total, count)


def _until(send: Callable[[], None], what: str, *, timeout: float = 30) -> None:
    """Retries `send` until it answers as expected (a webhook configuration takes effect when
    the API server's informer sees it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            send()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}") from None
            time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def _warm(send: Callable[[], None], *, rate: float) -> None:
    """Two seconds at the measured rate: connections, caches and the API server's webhook
    client settle before anything is counted."""
    replay(send, rate=rate, seconds=2)


def _cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields)


def _cpus() -> tuple[int | None, int | None]:
    """(client CPU, server CPU): distinct cores when there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[-1]


def _direct(
    loadgen: Path,
    targets: list[Target],
    *,
    ca: Path,
    rate: float,
    seconds: float,
    client_cpu: int | None,
    server_cpu: int | None,
    nice: int,
) -> tuple[list[Row], list[str]]:
    """The load generator against each target in turn, pinned to `client_cpu` (one Go thread
    running at a time); its rows, and notes on how it fared."""
    env = dict(os.environ)
    previous = os.sched_getaffinity(0)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # inherited by the load generator
        env["GOMAXPROCS"] = "1"
    # This thread's niceness, inherited by the load generator; going back up is always allowed.
    previous_nice = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        for target in targets:
            row, report = _load(
                loadgen,
                target,
                ca=ca,
                rate=rate,
                seconds=seconds,
                client_cpu=client_cpu,
                server_cpu=server_cpu,
                nice=nice,
                env=env,
            )
            rows.append(row)
            lag = report["send_lag_ms"]
            client, server = report["client"], report["server"]
            notes.append(
                f"  {target.scenario}: {report['connections']} keep-alive connections,"
                f" {report['new_connections']} opened while measuring; send lag p50/p99/max"
                f" {lag['p50']:.2f}/{lag['p99']:.2f}/{lag['max']:.2f} ms; load generator"
                f" {client.get('process_cpu_percent', 0):.0f}% of a CPU, its core"
                f" {client.get('core_busy_percent', 0):.0f}% busy; server process"
                f" {server.get('process_cpu_percent', 0):.0f}%, its core"
                f" {server.get('core_busy_percent', 0):.0f}% busy"
                f" ({server.get('core_steal_percent', 0):.1f}% stolen)"
            )
            notes.extend(f"    error: {sample}" for sample in report.get("error_samples", []))
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, previous_nice)
        os.sched_setaffinity(0, previous)
    return rows, notes


def _through_api_server(
    cluster: localcluster.LocalCluster,
    directory: Path,
    *,
    port: int,
    ca: bytes,
    rate: float,
    seconds: float,
) -> list[Row]:
    api = _api_client(cluster.kubeconfig, directory)
    kinds = {
        "admin (denied)": (None, 403),
        "as operator (allowed)": (OPERATOR_USERNAME, 200),
    }
    rows: list[Row] = []
    try:
        for who, (impersonate, _) in kinds.items():
            send = _patch_sender(api, impersonate=impersonate, expect=200)
            _warm(send, rate=rate)
            sample = replay(send, rate=rate, seconds=seconds)
            rows.append(sample.row(f"reference: dry-run PATCH, {who}, no webhook, client"))

        name = f"modelguard-bench-{os.getpid()}"
        config = webhookconfig.loopback(name=name, port=port, ca=ca, namespace=RELEASE_NAMESPACE)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        try:
            for who, (impersonate, expect) in kinds.items():
                send = _patch_sender(api, impersonate=impersonate, expect=expect)
                _until(send, f"the webhook to answer {expect} for {who}")
                _warm(send, rate=rate)
                before = _scrape(api, WEBHOOK_NAME)
                sample = replay(send, rate=rate, seconds=seconds)
                after = _scrape(api, WEBHOOK_NAME)
                rows.append(
                    sample.row(f"via API server: dry-run PATCH, {who}, client"),
                )
                rows.append(
                    (after - before).row(
                        f"via API server: {who}, {METRIC.removeprefix('apiserver_')}",
                        rate=len(sample.latencies) / sample.elapsed,
                        target_ms=API_SERVER_TARGET_MS,
                    )
                )
        finally:
            cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
    finally:
        api.close()
    return rows


def _print(rows: list[Row], notes: list[str]) -> None:
    width = max(len(row.scenario) for row in rows)
    header = f"{'scenario':<{width}} {'rate/s':>7} {'n':>5} {'err':>3} {'mean':>6} "
    header += f"{'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'cap/s':>6} {'cpu/rq':>6}"
    header += f" {'core%':>5}  target"
    print(header)
    for row in rows:
        errors = "-" if row.errors is None else str(row.errors)
        capacity = f"{row.capacity:.0f}" if row.capacity else "-"
        cpu = f"{row.cpu_per_request:.2f}" if row.cpu_per_request is not None else "-"
        core = f"{row.core_busy:.0f}" if row.core_busy is not None else "-"
        print(
            f"{row.scenario:<{width}} {row.rate:>7.1f} {row.count:>5} {errors:>3}"
            f" {row.mean:>6.2f} {row.p50:>6} {row.p90:>6} {row.p99:>6} {row.max:>6}"
            f" {capacity:>6} {cpu:>6} {core:>5}  {row.target}"
        )
    print(
        "(milliseconds, from each request's scheduled send time; '<=N': the API server's"
        " histogram bucket (.., N] holding the quantile; err: failed or wrong answers;"
        " cap/s: back-to-back requests per second on one connection; cpu/rq: CPU ms the server"
        " process spent per request; core%: how busy the server's core was, whoever used it)"
    )
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--direct-rate", type=float, default=300)
    parser.add_argument("--api-server-rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=10, help="per measured run")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the servers and the load generator; below 0 (needs CAP_SYS_NICE)"
        " they get a larger share of their cores on a busy machine",
    )
    args = parser.parse_args()
    if args.nice < 0:
        previous = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            parser.error("--nice below 0 needs CAP_SYS_NICE")
        os.setpriority(os.PRIO_PROCESS, 0, previous)
    loadgen = loadgen_binary()
    client_cpu, server_cpu = _cpus()
    steal_before, total_before = _cpu_times()
    with (
        tempfile.TemporaryDirectory(prefix="modelguard-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        directory = Path(tmp)
        # etcd and the API server only: the admission path needs nothing else, and the
        # controller-manager, scheduler and kwok would only compete for the two cores.
        cluster = localcluster.LocalCluster(directory / "cluster", api_server_only=True)
        cluster.start()
        stack.callback(cluster.stop)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        for namespace in (IDLE_NAMESPACE, NAMESPACE):
            cluster.kubectl("create", "namespace", namespace)
        # The managed Service the API-server runs patch, created before any webhook exists.
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": MODEL, "namespace": NAMESPACE, "labels": _managed_labels()},
            "spec": {
                "selector": {"modelguard.dev/model-deployment": MODEL},
                "ports": [{"port": 80}],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(service))

        bundle = certs.generate(ip_addresses=["127.0.0.1"])
        tls = directory / "tls"
        certs.write(bundle, tls)
        ca = directory / "ca.crt"
        ca.write_bytes(bundle.ca)
        user_review = directory / "review-user.json"
        user_review.write_bytes(_review("system:serviceaccount:team-a:editor"))
        operator_review = directory / "review-operator.json"
        operator_review.write_bytes(_review(OPERATOR_USERNAME))
        port, echo_port, floor_port = (localcluster.free_port() for _ in range(3))
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "POD_NAME": "modelguard-bench",
            "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
        }
        webhook = stack.enter_context(
            _serving(
                [
                    sys.executable,
                    "-m",
                    "modelguard.cli",
                    "run",
                    f"--namespace={IDLE_NAMESPACE}",
                    f"--webhook-port={port}",
                    "--webhook-addr=127.0.0.1",
                    f"--webhook-cert-dir={tls}",
                    f"--operator-username={OPERATOR_USERNAME}",
                ],
                env=env,
                port=port,
                log=directory / "webhook.log",
                cpu=server_cpu,
                nice=args.nice,
            )
        )
        echo = stack.enter_context(
            _serving(
                [
                    sys.executable,
                    str(Path(__file__).with_name("_webhook.py")),
                    f"--port={echo_port}",
                    f"--cert-dir={tls}",
                ],
                env=env,
                port=echo_port,
                log=directory / "echo.log",
                cpu=server_cpu,
                nice=args.nice,
            )
        )
        floor = stack.enter_context(
            _serving(
                [
                    str(loadgen),
                    "serve",
                    f"-addr=127.0.0.1:{floor_port}",
                    f"-cert={tls / certs.CERT_FILE}",
                    f"-key={tls / certs.KEY_FILE}",
                ],
                env=env | ({"GOMAXPROCS": "1"} if server_cpu is not None else {}),
                port=floor_port,
                log=directory / "floor.log",
                cpu=server_cpu,
                nice=args.nice,
            )
        )
        path = "/managed-child"
        targets = [
            Target(
                "reference: minimal TLS webhook (Go), same load",
                f"https://127.0.0.1:{floor_port}{path}",
                floor.pid,
                [(user_review, True)],
                None,
            ),
            Target(
                "reference: TLS echo (aiohttp, no kopf), same load",
                f"https://127.0.0.1:{echo_port}{path}",
                echo.pid,
                [(user_review, True)],
                None,
            ),
            Target(
                "direct: managed Deployment UPDATE, user (denied)",
                f"https://127.0.0.1:{port}{path}",
                webhook.pid,
                [(user_review, False)],
                DIRECT_TARGET_MS,
            ),
            Target(
                "direct: managed Deployment UPDATE, operator (allowed)",
                f"https://127.0.0.1:{port}{path}",
                webhook.pid,
                [(operator_review, True)],
                DIRECT_TARGET_MS,
            ),
        ]
        rows, direct_notes = _direct(
            loadgen,
            targets,
            ca=ca,
            rate=args.direct_rate,
            seconds=args.seconds,
            client_cpu=client_cpu,
            server_cpu=server_cpu,
            nice=args.nice,
        )
        rows += _through_api_server(
            cluster,
            directory,
            port=port,
            ca=bundle.ca,
            rate=args.api_server_rate,
            seconds=args.seconds,
        )
    pinning = (
        f"direct: every server (modelguard run, the aiohttp echo, the Go webhook) pinned to"
        f" CPU {server_cpu}, the load generator to CPU {client_cpu} (GOMAXPROCS=1)"
        if server_cpu is not None
        else "direct: not pinned, one CPU available: client and server share it"
    )
    pinning += f"; niceness {args.nice}" + (
        "" if args.nice else " (other processes on these cores compete on equal terms)"
    )
    steal_after, total_after = _cpu_times()
    steal = (steal_after - steal_before) / max(1, total_after - total_before) * 100
    _print(
        rows,
        [
            pinning,
            *direct_notes,
            f"{os.cpu_count()} CPUs; etcd and kube-apiserver unpinned, and the API-server runs'"
            " client is Python; CPU time stolen by the hypervisor during the whole run:"
            f" {steal:.1f}%",
        ],
    )


if __name__ == "__main__":
    main()
