"""How ModelGuard's cost grows with the number of models: N ModelDeployments at once, next to N
plain Deployments of the same pod shape on the same cluster (the floor), in the same run.

A local cluster of its own with kwok nodes only (room for every pod), the chart installed for its
RBAC (its operator Deployment scaled to zero, as `make run` does), and `modelguard run` on this
machine as the chart's ServiceAccount, serving the chart's admission webhooks on loopback: the
API server calls them for every write, as it calls the in-cluster Service. Every model is a copy
of manifests/examples/sentiment.yaml (one replica each), all serving one signed model from a
local S3 server (MinIO) under the `default` TrustPolicy, with the approval it requires.

Steps, each printed with its figure:
1. one model created, made Ready and deleted (warm-up; its Deployment's pod template is the
   floor's), then the operator stopped;
2. floor: N plain Deployments of that pod template created at once; seconds until every one has
   its replica available; API requests per Deployment; seconds to delete them all;
3. the operator started again; N ModelDeployments created at once (one `kubectl create`, as the
   floor's): seconds until every one is Ready; the operator's CPU and peak RSS (total and per
   model); API requests per model (`apiserver_request_total`); the admission webhooks' latency
   as the API server measures it (`apiserver_admission_webhook_admission_duration_seconds`, p50
   and p99 interpolated within its coarse buckets, and the bucket p99 falls in);
4. converged: the operator's CPU over `--idle-seconds`;
5. the operator restarted: the API writes it makes to the models and their children until quiet
   (target 0), next to the writes of every kind in a window as long before the restart;
6. every ModelDeployment deleted: seconds until the models, their Deployments and pods are gone.

Targets (issue 16): 1,000 models Ready within 1.5x the floor; webhook p99 <= 25 ms during the
burst; 5,000 models in at most 300 MiB of operator RSS; idle CPU flat in N. Run with `make
bench` (a small N) or `python benchmarks/scale.py --models 1000`; figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path

import yaml

import localcluster
import localoperator
import s3server
import signedmodel
import webhookconfig
from modelguard.admission import certs

EXAMPLE = localcluster.REPO_ROOT / "manifests" / "examples" / "sentiment.yaml"
CHART = localcluster.REPO_ROOT / "charts" / "modelguard"
AGENT_REPOSITORY = "registry.example/modelguard"
AGENT_DIGEST = "sha256:" + "0" * 64
AGENT_IMAGE = f"{AGENT_REPOSITORY}@{AGENT_DIGEST}"
NAMESPACE = localoperator.NAMESPACE
RELEASE = localoperator.RELEASE
MODELS = "scale-models"
FLOOR = "scale-floor"
WEBHOOK_CONFIG = "modelguard-scale"
# kwok nodes as localcluster makes them: 32 CPUs, 110 pods; a model's pod asks 500m for its
# server and more for what ModelGuard adds (53 fitted a node): 40 leaves room.
PODS_PER_NODE = 40
WEBHOOK_METRIC = "apiserver_admission_webhook_admission_duration_seconds"
# What the operator reads or writes for a model, and what the cluster's controllers write in
# answer: the requests counted per model.
MODEL_RESOURCES = frozenset(
    {
        "modeldeployments",
        "trustpolicies",
        "modelapprovals",
        "deployments",
        "replicasets",
        "pods",
        "services",
        "serviceaccounts",
        "networkpolicies",
        "secrets",
        "events",
        "namespaces",
    }
)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Manifest = dict[str, typing.Any]
Counts = dict[tuple[str, str, str], float]


# --- The cluster and what it measures ----------------------------------------------------------


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.polls: Counts = {}
        """The driver's own LISTs while it waits, taken out of the figures."""

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(localcluster.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:4])}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def apply(self, *manifests: Manifest, namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self.kubectl(
            "apply", "-f", "-", *extra, input="\n---\n".join(yaml.safe_dump(m) for m in manifests)
        )

    def create_all(self, manifests: list[Manifest], *, log: Path) -> subprocess.Popen[str]:
        """One `kubectl create` of them all, started: it creates them one after another, each
        create waiting for the admission webhooks it goes through. Its errors go to `log`."""
        with log.open("w") as errors:
            process = subprocess.Popen(
                [
                    str(localcluster.binary("kubectl")),
                    f"--kubeconfig={self.kubeconfig}",
                    *("create", "-f", "-"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                text=True,
            )
        threading.Thread(
            target=_feed, args=(process, yaml.safe_dump_all(manifests)), daemon=True
        ).start()
        return process

    def metrics(self) -> str:
        return self.kubectl("get", "--raw", "/metrics")

    def listed(self, kinds: str, namespace: str, output: str) -> list[str]:
        """Lines of one `kubectl get` of `kinds` (one LIST each), counted as the driver's."""
        for kind in kinds.split(","):
            key = ("LIST", kind, "")
            self.polls[key] = self.polls.get(key, 0.0) + 1
        text = self.kubectl("get", kinds, "-n", namespace, "-o", output)
        return [line for line in text.splitlines() if line.strip()]

    def since(self, before: Counts, polls: Counts) -> Counts:
        """Requests since `before` (taken with the driver's `polls` then), the driver's LISTs
        out."""
        delta = _delta(requests(self.metrics()), before)
        for key, value in self.polls.items():
            left = delta.get(key, 0.0) - (value - polls.get(key, 0.0))
            if left:
                delta[key] = left
            else:
                delta.pop(key, None)
        return delta


def _feed(process: subprocess.Popen[str], text: str) -> None:
    assert process.stdin is not None
    process.stdin.write(text)
    process.stdin.close()


def requests(metrics: str) -> Counts:
    """apiserver_request_total by (verb, resource, subresource)."""
    found: Counts = {}
    for line in metrics.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != "apiserver_request_total":
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        found[key] = found.get(key, 0.0) + float(match.group(3))
    return found


def _delta(after: Counts, before: Counts) -> Counts:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (seconds)."""

    buckets: dict[float, float]
    count: float

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(
            {le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.count - other.count,
        )

    def quantile(self, q: float) -> tuple[float, float]:
        """(estimate in seconds, interpolated linearly within its bucket; the bucket's bound)."""
        bounds = sorted(self.buckets)
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return lower, bound
                share = (rank - below) / (count - below) if count > below else 1.0
                return lower + (bound - lower) * share, bound
            lower, below = bound, count
        return math.nan, math.inf

    def share_within(self, seconds: float) -> float:
        return self.buckets.get(seconds, math.nan) / self.count if self.count else math.nan


def webhook_latency(metrics: str) -> dict[str, Histogram]:
    """The API server's histogram of admission webhook calls, by webhook name."""
    buckets: dict[str, dict[float, float]] = {}
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        match = _SAMPLE.match(line)
        if not match or not match.group(1).startswith(WEBHOOK_METRIC):
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        name = labels.get("name", "")
        value = float(match.group(3))
        suffix = match.group(1).removeprefix(WEBHOOK_METRIC)
        if suffix == "_bucket":
            per = buckets.setdefault(name, {})
            le = float(labels["le"])
            per[le] = per.get(le, 0.0) + value
        elif suffix == "_count":
            counts[name] = counts.get(name, 0.0) + value
    return {name: Histogram(buckets[name], counts.get(name, 0.0)) for name in buckets}


def _latency_delta(
    after: dict[str, Histogram], before: dict[str, Histogram]
) -> dict[str, Histogram]:
    empty = Histogram({}, 0.0)
    return {name: h - before.get(name, empty) for name, h in after.items()}


def _merged(histograms: typing.Iterable[Histogram]) -> Histogram:
    buckets: dict[float, float] = {}
    count = 0.0
    for h in histograms:
        for le, n in h.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + n
        count += h.count
    return Histogram(buckets, count)


# --- The operator process ------------------------------------------------------------------------


class Process:
    """CPU seconds and peak RSS of one process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime, fields 14 and 15 of the line (11 and 12 after the name).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MiB."""
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        return (
            int(status["VmRSS"].split()[0]) / 1024,
            int(status["VmHWM"].split()[0]) / 1024,
        )


@dataclasses.dataclass
class Operator:
    cluster: Cluster
    state: Path
    token: localoperator.RenewedToken
    identity: Path
    ca: bytes
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.state / "operator.log"

    def start(self) -> Process:
        """Started, Ready (its caches filled) and its webhooks registered."""
        port, ready_port = localcluster.free_port(), localcluster.free_port()
        readiness = f"http://127.0.0.1:{ready_port}/readyz"
        client_ca = localcluster.webhook_client_ca(self.cluster.kubeconfig)
        self.starts += 1
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelguard.cli",
                    "run",
                    f"--webhook-port={port}",
                    "--webhook-addr=127.0.0.1",
                    f"--webhook-cert-dir={self.state / 'tls'}",
                    f"--operator-username=system:serviceaccount:{NAMESPACE}:{RELEASE}",
                    f"--readiness={readiness}",
                    *("--audit-log", str(self.state / "audit.jsonl")),
                    *("--audit-key-file", str(self.state / "audit.pem")),
                    *("--audit-log-name", localoperator.AUDIT_LOG_NAME),
                    *("--audit-checkpoints-namespace", NAMESPACE),
                    *("--audit-checkpoints-prefix", f"{RELEASE}-audit"),
                    *("--leader-election-lease", RELEASE, "--leader-election-namespace", NAMESPACE),
                    f"--webhook-client-ca={client_ca}",
                    f"--webhook-client-name={localcluster.WEBHOOK_CLIENT_NAME}",
                ],
                env={
                    **os.environ,
                    "KUBECONFIG": str(self.identity),
                    "POD_NAME": f"modelguard-scale-{self.starts}",
                    "POD_NAMESPACE": NAMESPACE,
                    "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        localoperator.wait_until_ready(self.process, readiness=readiness, log=self.log, timeout=600)
        self.cluster.apply(
            webhookconfig.loopback(name=WEBHOOK_CONFIG, port=port, ca=self.ca, namespace=NAMESPACE)
        )
        return Process(self.process.pid)

    def stop(self) -> None:
        """Its webhooks removed first (nothing left failing closed), then the process stopped."""
        self.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found"
        )
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


# --- Waiting -------------------------------------------------------------------------------------


def _until(
    check: Callable[[], int],
    *,
    goal: int,
    timeout: float,
    what: str,
    poll: float,
    reached: list[int] | None = None,
) -> float:
    """Seconds until check() reaches goal; progress printed now and then. At `timeout`: with
    `reached`, the count reached is appended to it and the timeout returned; else TimeoutError."""
    started = time.monotonic()
    shown = started
    while True:
        done = check()
        now = time.monotonic()
        if done >= goal:
            return now - started
        if now - started > timeout:
            if reached is None:
                raise TimeoutError(f"{what}: {done}/{goal} after {timeout:.0f} s")
            print(f"    ... {what}: {done}/{goal} at the timeout, {timeout:.0f} s", flush=True)
            reached.append(done)
            return now - started
        if now - shown >= 60:
            print(f"    ... {what}: {done}/{goal} after {now - started:.0f} s", flush=True)
            shown = now
        time.sleep(poll)


def _ready_models(cluster: Cluster) -> int:
    path = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'
    return sum(
        line == "True" for line in cluster.listed("modeldeployments", MODELS, f"jsonpath={path}")
    )


def _not_ready(cluster: Cluster) -> dict[str, int]:
    path = (
        '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/'
        '{.status.conditions[?(@.type=="Ready")].reason}{"\\n"}{end}'
    )
    found: dict[str, int] = {}
    for line in cluster.listed("modeldeployments", MODELS, f"jsonpath={path}"):
        status, _, reason = line.partition("/")
        if status != "True":
            key = reason or "no status yet"
            found[key] = found.get(key, 0) + 1
    return found


def _available_deployments(cluster: Cluster, namespace: str) -> int:
    path = '{range .items[*]}{.spec.replicas} {.status.availableReplicas}{"\\n"}{end}'
    found = 0
    for line in cluster.listed("deployments", namespace, f"jsonpath={path}"):
        wanted, _, available = line.partition(" ")
        found += available.strip() == wanted.strip()
    return found


def _remaining(cluster: Cluster, namespace: str, kinds: str) -> int:
    return len(cluster.listed(kinds, namespace, "name"))


def _quiet(
    cluster: Cluster, *, resources: frozenset[str], settle: float, timeout: float
) -> tuple[Counts, float]:
    """(request counts, seconds waited) once no write to `resources` came for `settle` s."""
    started = time.monotonic()
    last = requests(cluster.metrics())
    since = started
    while time.monotonic() - started < timeout:
        time.sleep(2)
        now = requests(cluster.metrics())
        if any(k[0] in WRITES and k[1] in resources for k in _delta(now, last)):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            break
    return last, time.monotonic() - started


# --- The objects ---------------------------------------------------------------------------------


def _example() -> Manifest:
    (model,) = [
        d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ModelDeployment"
    ]
    return typing.cast(Manifest, model)


def _models(example: Manifest, *, count: int, prefix: str = "m") -> list[Manifest]:
    made = []
    for index in range(count):
        model = copy.deepcopy(example)
        model["metadata"] = {"name": f"{prefix}-{index:05d}", "namespace": MODELS}
        model["spec"]["serving"]["replicas"] = 1
        made.append(model)
    return made


def _floor_deployments(template: Manifest, *, count: int) -> list[Manifest]:
    """Plain Deployments of the model's pod shape: its pod spec, none of ModelGuard's labels,
    the namespace's default ServiceAccount."""
    spec = copy.deepcopy(template["spec"])
    spec["serviceAccountName"] = "default"
    made = []
    for index in range(count):
        name = f"d-{index:05d}"
        labels = {"app": name}
        made.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": FLOOR},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec},
                },
            }
        )
    return made


def _namespace(name: str) -> Manifest:
    (namespace,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "Namespace"]
    return {**namespace, "metadata": {**namespace["metadata"], "name": name}}


# --- Printing ------------------------------------------------------------------------------------


def _per(counts: Counts, n: int, *, resources: frozenset[str] | None = None) -> float:
    return sum(v for k, v in counts.items() if resources is None or k[1] in resources) / n


def _top(counts: Counts, n: int, *, limit: int = 12) -> list[str]:
    rows = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [
        f"      {verb:<7} {resource + ('/' + sub if sub else ''):<28} {value / n:>7.2f}"
        for (verb, resource, sub), value in rows
    ]


def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f}"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# --- The run -------------------------------------------------------------------------------------


def _set_up(cluster: Cluster, s3: s3server.S3Server, root: Path) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    localcluster.tool(
        "helm",
        cluster.kubeconfig,
        *("upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE),
        *("--set", "replicaCount=0", "--set", "webhook.enabled=false"),
        *(
            "--set",
            f"image.repository={AGENT_REPOSITORY}",
            "--set",
            f"image.digest={AGENT_DIGEST}",
        ),
        *("--wait", "--timeout=180s"),
    ).check_returncode()
    example = _example()
    model = example["spec"]["model"]
    bucket, prefix = model["source"]["uri"].removeprefix("s3://").split("/", 1)
    s3.create_bucket(bucket)
    signing = signedmodel.generate_key(root, name="ml-release")
    approver = signedmodel.generate_key(root, name="security")
    files = signedmodel.demo_files(model["version"])
    model_dir = signedmodel.write_model(root / "model", files)
    signature = signedmodel.sign(model_dir, private_key=signing[0], signature=root / "model.sig")
    signedmodel.publish(s3, bucket=bucket, prefix=prefix, files=files, signature=signature)
    credentials = signedmodel.credentials_secret(s3, name=model["source"]["credentialsSecret"])
    cluster.apply(
        _namespace(MODELS),
        _namespace(FLOOR),
        signedmodel.trust_policy(
            name="default",
            public_key=signing[1],
            sources=[signedmodel.s3_source(s3, bucket)],
            approver_key=approver[1],
        ),
    )
    cluster.apply(
        credentials,
        signedmodel.approval(
            private_key=approver[0],
            namespace=MODELS,
            model=model["name"],
            version=model["version"],
            digest=signedmodel.root_digest(signature),
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            name="approved",
        ),
        namespace=MODELS,
    )
    cluster.kubectl(
        *("create", "rolebinding", "modelguard-source-credentials", "-n", MODELS),
        f"--clusterrole={RELEASE}-source-credentials",
        f"--serviceaccount={NAMESPACE}:{RELEASE}",
    )


@dataclasses.dataclass
class Figures:
    n: int
    nodes: int
    floor_ready: float = math.nan
    floor_delete: float = math.nan
    floor_requests: Counts = dataclasses.field(default_factory=dict)
    ready: float = math.nan
    ready_count: int = 0
    not_ready: dict[str, int] = dataclasses.field(default_factory=dict)
    """Why models were not Ready at the timeout: count by Ready's reason."""
    created: float = math.nan
    refused_creates: list[int] = dataclasses.field(default_factory=list)
    """Creates the API server refused (webhook timeouts), per attempt, each retried."""
    burst_requests: Counts = dataclasses.field(default_factory=dict)
    latency: dict[str, Histogram] = dataclasses.field(default_factory=dict)
    burst_cpu: float = math.nan
    started_rss: float = math.nan
    peak_rss: float = math.nan
    idle_rss: float = math.nan
    idle_seconds: float = math.nan
    idle_cpu: float = math.nan
    background: Counts = dataclasses.field(default_factory=dict)
    restart: Counts = dataclasses.field(default_factory=dict)
    restart_ready: float = math.nan
    restart_quiet: float = math.nan
    deleted: float = math.nan


@dataclasses.dataclass
class Run:
    cluster: Cluster
    operator: Operator
    root: Path
    figures: Figures
    timeout: float
    poll: float

    @property
    def n(self) -> int:
        return self.figures.n

    def warm_up(self) -> Manifest:
        """One model made Ready and deleted; its Deployment's pod template."""
        cluster = self.cluster
        self.operator.start()
        (warm,) = _models(_example(), count=1, prefix="warm")
        cluster.apply(warm)
        _until(lambda: _ready_models(cluster), goal=1, timeout=300, what="warm-up", poll=1)
        name = warm["metadata"]["name"]
        found = yaml.safe_load(
            cluster.kubectl(
                *("get", "deployment", "-n", MODELS, "-o", "yaml"),
                f"-l=modelguard.dev/model-deployment={name}",
            )
        )
        cluster.kubectl("delete", "modeldeployment", name, "-n", MODELS)
        _until(
            lambda: -_remaining(cluster, MODELS, "deployments,pods"),
            goal=0,
            timeout=300,
            what="warm-up deleted",
            poll=1,
        )
        self.operator.stop()
        return typing.cast(Manifest, found["items"][0]["spec"]["template"])

    def floor(self, template: Manifest) -> None:
        """N plain Deployments, no operator and no webhook."""
        cluster, figures = self.cluster, self.figures
        before, polls = requests(cluster.metrics()), dict(cluster.polls)
        log = self.root / "floor-create.log"
        creating = cluster.create_all(_floor_deployments(template, count=self.n), log=log)
        figures.floor_ready = _until(
            lambda: _available_deployments(cluster, FLOOR),
            goal=self.n,
            timeout=self.timeout,
            what="floor Available",
            poll=self.poll,
        )
        if creating.wait() != 0:
            raise RuntimeError(f"floor: kubectl create failed; see {log}")
        figures.floor_requests = cluster.since(before, polls)
        print(f"  floor: {self.n} Deployments Available in {figures.floor_ready:.1f} s", flush=True)
        cluster.kubectl("delete", "deployments", "--all", "-n", FLOOR, "--wait=false")
        figures.floor_delete = _until(
            lambda: -_remaining(cluster, FLOOR, "deployments,replicasets,pods"),
            goal=0,
            timeout=self.timeout,
            what="floor deleted",
            poll=self.poll,
        )

    def burst(self) -> Process:
        cluster, figures = self.cluster, self.figures
        process = self.operator.start()
        figures.started_rss, _ = process.memory_mib()
        metrics = cluster.metrics()
        before, latency_before = requests(metrics), webhook_latency(metrics)
        polls = dict(cluster.polls)
        cpu = process.cpu_seconds()
        mark = time.monotonic()
        created_at: list[float] = []

        def create() -> None:
            # As a GitOps tool would: what the API server refused (a webhook that did not answer
            # in time fails closed) is created again, until every model exists.
            models = _models(_example(), count=self.n)
            for attempt in range(1, 11):
                log = self.root / f"models-create-{attempt}.log"
                if cluster.create_all(models, log=log).wait() == 0:
                    break
                refused = log.read_text().count("Error from server")
                figures.refused_creates.append(refused)
                print(f"    ... {refused} creates refused (see {log}); creating them again")
                existing = set(cluster.listed("modeldeployments", MODELS, "name"))
                models = [
                    m
                    for m in models
                    if f"modeldeployment.modelguard.dev/{m['metadata']['name']}" not in existing
                ]
            created_at.append(time.monotonic())

        threading.Thread(target=create, daemon=True).start()
        reached: list[int] = []
        figures.ready = _until(
            lambda: _ready_models(cluster),
            goal=self.n,
            timeout=self.timeout,
            what="models Ready",
            poll=self.poll,
            reached=reached,
        )
        figures.ready_count = reached[0] if reached else self.n
        if reached:
            figures.not_ready = _not_ready(cluster)
        time.sleep(0.5)
        figures.created = created_at[0] - mark if created_at else math.nan
        figures.burst_cpu = process.cpu_seconds() - cpu
        figures.burst_requests = cluster.since(before, polls)
        figures.latency = _latency_delta(webhook_latency(cluster.metrics()), latency_before)
        print(
            f"  ModelGuard: {figures.ready_count} of {self.n} models Ready in "
            f"{figures.ready:.1f} s",
            flush=True,
        )
        return process

    def idle(self, process: Process, seconds: float) -> None:
        figures = self.figures
        _quiet(self.cluster, resources=MODEL_RESOURCES, settle=10, timeout=300)
        cpu = process.cpu_seconds()
        time.sleep(seconds)
        figures.idle_seconds = seconds
        figures.idle_cpu = (process.cpu_seconds() - cpu) / seconds
        figures.idle_rss, figures.peak_rss = process.memory_mib()

    def restart(self) -> None:
        """Writes when the converged operator restarts, and in a window as long before."""
        cluster, figures = self.cluster, self.figures
        window = requests(cluster.metrics())
        time.sleep(30)
        figures.background = _delta(requests(cluster.metrics()), window)
        self.operator.stop()
        before = requests(cluster.metrics())
        mark = time.monotonic()
        self.operator.start()
        figures.restart_ready = time.monotonic() - mark
        after, figures.restart_quiet = _quiet(
            cluster, resources=MODEL_RESOURCES, settle=15, timeout=600
        )
        figures.restart = _delta(after, before)

    def delete(self) -> None:
        cluster = self.cluster
        cluster.kubectl("delete", "modeldeployments", "--all", "-n", MODELS, "--wait=false")
        self.figures.deleted = _until(
            lambda: -_remaining(cluster, MODELS, "modeldeployments,deployments,replicasets,pods"),
            goal=0,
            timeout=self.timeout,
            what="models deleted",
            poll=self.poll,
        )


def _writes(counts: Counts, *, models: bool) -> Counts:
    return {
        k: v for k, v in counts.items() if k[0] in WRITES and (k[1] in MODEL_RESOURCES) == models
    }


def _listed(counts: Counts) -> str:
    return ", ".join(
        f"{verb} {resource}{'/' + sub if sub else ''} {value:.0f}"
        for (verb, resource, sub), value in sorted(counts.items())
    )


def report(f: Figures) -> str:
    n = f.n
    ratio = f.ready / f.floor_ready
    out = [
        f"\nscale: N = {n} ModelDeployments (one replica each, one shared signed model), "
        f"{f.nodes} kwok nodes",
        f"{'':<46}{'ModelGuard':>12}{'floor':>10}   target (issue 16)",
        f"{'all Ready / all Available (s)':<46}{f.ready:>12.1f}{f.floor_ready:>10.1f}   "
        f"<= 1.5x floor at 1,000: {ratio:.2f}x",
        f"{'  kubectl create of all returned after (s)':<46}{f.created:>12.1f}"
        + (
            f"   creates refused and retried: {' + '.join(map(str, f.refused_creates))}"
            if f.refused_creates
            else ""
        ),
        *(
            [
                f"  NOT all Ready: {f.ready_count}/{n} at the timeout; the others by Ready's "
                f"reason: {f.not_ready}"
            ]
            if f.ready_count < n
            else []
        ),
        f"{'API requests per model / per Deployment':<46}{_per(f.burst_requests, n):>12.1f}"
        f"{_per(f.floor_requests, n):>10.1f}",
        f"{'delete all, until every pod is gone (s)':<46}{f.deleted:>12.1f}{f.floor_delete:>10.1f}",
        f"{'operator CPU during the burst (s)':<46}{f.burst_cpu:>12.1f}"
        f"   {f.burst_cpu / n * 1000:.0f} ms per model",
        f"{'operator RSS (MiB) started / peak / idle':<46}"
        f"{f.started_rss:>6.0f} /{f.peak_rss:>4.0f} /{f.idle_rss:>4.0f}"
        f"   {(f.peak_rss - f.started_rss) / n * 1024:.0f} KiB per model (peak); "
        f"<= 300 MiB at 5,000",
        f"{f'operator idle CPU over {f.idle_seconds:.0f} s (% of a core)':<46}"
        f"{f.idle_cpu * 100:>12.2f}   flat in N (compare runs)",
    ]
    model_writes = _writes(f.restart, models=True)
    out.append(
        f"{'restart: writes to models and children':<46}{sum(model_writes.values()):>12.0f}"
        f"   0: {_verdict(not model_writes)} (Ready {f.restart_ready:.1f} s after start, "
        f"quiet {f.restart_quiet:.0f} s later)"
    )
    if model_writes:
        out.append(f"      {_listed(model_writes)}")
    out.append(f"  other writes in that window: {_listed(_writes(f.restart, models=False))}")
    out.append(
        f"  every write in 30 s before the restart: {_listed(_writes(f.background, models=False))}"
        f" {_listed(_writes(f.background, models=True))}"
    )
    out.append("  admission webhooks as the API server timed them during the burst (ms):")
    out.append(f"      {'webhook':<44}{'calls':>7}{'p50':>7}{'p99':>7}  bucket  <=25ms")
    for name, h in [*sorted(f.latency.items()), ("all", _merged(f.latency.values()))]:
        if not h.count:
            continue
        p50, _ = h.quantile(0.5)
        p99, bucket = h.quantile(0.99)
        verdict = f"   p99 <= 25 ms: {_verdict(bucket <= 0.025)}" if name == "all" else ""
        out.append(
            f"      {name:<44}{h.count:>7.0f}{_ms(p50):>7}{_ms(p99):>7}  <={_ms(bucket):<6}"
            f"{h.share_within(0.025) * 100:>5.1f}%{verdict}"
        )
    out.append("  API requests per model during the burst, largest first:")
    out.extend(_top(f.burst_requests, n))
    out.append("  API requests per plain Deployment (floor), largest first:")
    out.extend(_top(f.floor_requests, n))
    return "\n".join(out)


def run(n: int, *, idle_seconds: float, root: Path, timeout: float) -> None:
    nodes = math.ceil(n / PODS_PER_NODE) + 1
    started = time.monotonic()
    local = localcluster.LocalCluster(root / "cluster", nodes=nodes, node="kwok")
    local.start()
    s3 = s3server.S3Server(root / "s3")
    s3.start()
    cluster = Cluster(local.kubeconfig)
    operator: Operator | None = None
    try:
        _set_up(cluster, s3, root)
        operator = _operator(cluster, local, root / "operator")
        print(
            f"scale: N={n}, {nodes} kwok nodes; cluster and store up in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        steps = Run(
            cluster,
            operator,
            root,
            Figures(n=n, nodes=nodes),
            timeout=timeout,
            poll=2.0 if n <= 200 else 5.0,
        )
        steps.floor(steps.warm_up())
        process = steps.burst()
        steps.idle(process, idle_seconds)
        steps.restart()
        steps.delete()
        print(report(steps.figures), flush=True)
    except BaseException:
        if operator is not None:
            print(f"operator log (last lines of {operator.log}):", file=sys.stderr)
            with contextlib.suppress(OSError):
                print("\n".join(operator.log.read_text().splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        if operator is not None:
            with contextlib.suppress(Exception):
                operator.stop()
            operator.token.stop()
        s3.stop()
        local.stop()


def _operator(cluster: Cluster, local: localcluster.LocalCluster, state: Path) -> Operator:
    state.mkdir()
    bundle = certs.generate(ip_addresses=["127.0.0.1"])
    certs.write(bundle, state / "tls")
    (state / "audit.pem").write_bytes(localoperator.audit_key_pem())
    token = localoperator.RenewedToken(
        admin_kubeconfig=local.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "token",
        binding=localoperator.TOKEN_BINDING,
    ).start()
    identity = localoperator.service_account_kubeconfig(
        admin_kubeconfig=local.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "operator.kubeconfig",
        token_file=token.path,
    )
    return Operator(cluster, state, token, identity, bundle.ca)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=50, help="N, the models created at once")
    parser.add_argument(
        "--idle-seconds", type=float, default=60, help="how long idle CPU is measured"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for all models Ready (default 1.5 s per model, at least 600); "
        "the figures are printed at the timeout with what was reached",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelguard-scale-") as tmp:
        run(
            args.models,
            idle_seconds=args.idle_seconds,
            root=Path(tmp),
            timeout=args.timeout or max(600.0, args.models * 1.5),
        )


if __name__ == "__main__":
    main()
