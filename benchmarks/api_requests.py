"""API requests the operator makes per reconcile of a steady model, and per rollout.

Counted by the API server itself: `apiserver_request_total` from its /metrics (admin kubeconfig),
summed over the resources a reconcile touches, before and after each step. The driver's own
requests are known and taken out: it creates and patches the ModelDeployment (one request each)
and waits by LISTing ModelDeployments, which the operator never does after its watch starts (that
row is left out). Deployments, ReplicaSets and pods that the cluster's own controllers write in
answer to the operator's writes count too: they are what a rollout costs the API server.

With --baseline REF the same steps are run, in the same cluster, against the operator's code as
of that git ref (exported into a temporary directory), so the figures print beside a reference
measured in the same run. Run with `make bench`; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

import localcluster
import localoperator
import s3server
import signedmodel

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "charts" / "modelguard"
AGENT_REPOSITORY = "registry.example/modelguard"
AGENT_DIGEST = "sha256:" + "0" * 64
AGENT_IMAGE = f"{AGENT_REPOSITORY}@{AGENT_DIGEST}"
SERVER_IMAGE = "registry.example/model-server@sha256:" + "4f" * 32
NAMESPACE = "modelguard-system"
RELEASE = "modelguard"
# What a reconcile reads or writes, and what the cluster's controllers write in answer.
RESOURCES = frozenset(
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
_SAMPLE = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")

Counts = dict[tuple[str, str, str], float]


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [str(localcluster.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, *manifests: typing.Any, namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self.kubectl(
            "apply", "-f", "-", *extra, input="\n---\n".join(yaml.safe_dump(m) for m in manifests)
        )

    def counts(self) -> Counts:
        """apiserver_request_total by (verb, resource, subresource), for RESOURCES."""
        found: Counts = {}
        for line in self.kubectl("get", "--raw", "/metrics").splitlines():
            match = _SAMPLE.match(line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("resource") not in RESOURCES:
                continue
            key = (labels.get("verb", ""), labels["resource"], labels.get("subresource", ""))
            found[key] = found.get(key, 0.0) + float(match.group(2))
        return found


def _delta(after: Counts, before: Counts) -> Counts:
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    # The driver's waiting.
    delta.pop(("LIST", "modeldeployments", ""), None)
    return {key: value for key, value in delta.items() if value}


def _quiet(cluster: Cluster, *, settle: float = 3.0, timeout: float = 90) -> Counts:
    """Counts once no request of RESOURCES has come for `settle` seconds (the LIST aside)."""
    deadline = time.monotonic() + timeout
    last = cluster.counts()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cluster.counts()
        if _delta(now, last):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
    return last


def _model(cluster: Cluster, namespace: str, name: str) -> dict[str, typing.Any]:
    items: list[dict[str, typing.Any]] = yaml.safe_load(
        cluster.kubectl(
            "get",
            "modeldeployments",
            "-n",
            namespace,
            "-o",
            "json",
            f"--field-selector=metadata.name={name}",
        )
    )["items"]
    return items[0] if items else {}


def _wait(check: typing.Callable[[], bool], *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the model did not settle")
        time.sleep(0.25)


def _ready(body: dict[str, typing.Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )


def _audit_key(state: Path) -> Path:
    # An Ed25519 PEM: today's audit key, and 119 bytes, which a baseline from before signed
    # records takes as its HMAC key.
    key = state / "audit.pem"
    if not key.exists():
        key.touch(mode=0o600)
        key.write_bytes(localoperator.audit_key_pem())
    return key


@contextlib.contextmanager
def _operator(
    cluster: Cluster, *, code: Path | None, state: Path
) -> Iterator[subprocess.Popen[bytes]]:
    identity = localoperator.service_account_kubeconfig(
        admin_kubeconfig=cluster.kubeconfig,
        namespace=NAMESPACE,
        service_account=RELEASE,
        path=state / "operator.kubeconfig",
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(identity),
        "POD_NAME": "modelguard-bench",
        "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
        # By environment, not flag: a baseline from before sealed records ignores it.
        "MODELGUARD_AUDIT_KEY_FILE": str(_audit_key(state)),
        # Likewise for signed checkpoints: the log's name, and where its checkpoints go.
        "MODELGUARD_AUDIT_LOG_NAME": f"{NAMESPACE}/{RELEASE}",
        "POD_NAMESPACE": NAMESPACE,
    }
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    with (state / "operator.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelguard.cli", "run", "--audit-log", str(state / "a.jsonl")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Its start-up (the initial LISTs and WATCHes) is not a reconcile's cost: let it pass.
        time.sleep(8)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _measure(
    cluster: Cluster,
    s3: s3server.S3Server,
    *,
    code: Path | None,
    keys: tuple[tuple[Path, str], tuple[Path, str]],
    reconciles: int,
    state: Path,
) -> tuple[Counts, Counts]:
    """(requests of one rollout, requests per steady reconcile)."""
    (signing, _), (approver, _) = keys
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.apply(signedmodel.credentials_secret(s3, name="store"), namespace=namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "store",
        "-n",
        namespace,
        f"--clusterrole={RELEASE}-source-credentials",
        f"--serviceaccount={NAMESPACE}:{RELEASE}",
    )
    directory = state / namespace
    signedmodel.write_model(directory / "m", signedmodel.demo_files("1.4.0"))
    signature = signedmodel.sign(
        directory / "m", private_key=signing, signature=directory / "model.sig"
    )
    uri = signedmodel.publish(
        s3,
        bucket="models",
        prefix=f"{namespace}/m",
        files=signedmodel.demo_files("1.4.0"),
        signature=signature,
    )
    cluster.apply(
        signedmodel.approval(
            private_key=approver,
            namespace=namespace,
            model="m",
            version="1.4.0",
            digest=signedmodel.root_digest(signature),
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            name="m-1-4-0",
        ),
        namespace=namespace,
    )
    model = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": namespace},
        "spec": {
            "model": {
                "name": "m",
                "version": "1.4.0",
                "source": {"uri": uri, "credentialsSecret": "store"},
            },
            "serving": {"image": SERVER_IMAGE, "replicas": 2},
        },
    }
    with _operator(cluster, code=code, state=state):
        before = _quiet(cluster)
        cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(model))
        _wait(lambda: _ready(_model(cluster, namespace, "m")))
        rollout = _delta(_quiet(cluster), before)
        # kubectl create: one POST of the ModelDeployment.
        rollout[("POST", "modeldeployments", "")] -= 1
        before = _quiet(cluster)
        for index in range(reconciles):
            mark = f"bench-{index}"
            cluster.kubectl(
                "annotate",
                "--overwrite",
                "-n",
                namespace,
                "modeldeployment",
                "m",
                f"example.com/touched={mark}",
            )
            _wait(
                lambda mark=mark: (
                    mark  # type: ignore[misc]
                    in (_model(cluster, namespace, "m")["metadata"].get("annotations") or {}).get(
                        "modelguard.dev/last-handled-configuration", ""
                    )
                )
            )
        steady = _delta(_quiet(cluster), before)
        # kubectl annotate: one GET and one PATCH of the ModelDeployment each.
        steady[("GET", "modeldeployments", "")] -= reconciles
        steady[("PATCH", "modeldeployments", "")] -= reconciles
    # Gone before the next run starts: its garbage collection would count there.
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    return rollout, {key: value / reconciles for key, value in steady.items()}


def _export(ref: str, into: Path) -> Path:
    """The operator's code and chart as of `ref`, in `into`."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", ref, "operator", "charts"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _install(cluster: Cluster, chart: Path) -> None:
    """The chart (its RBAC is the operator's) at this version, webhooks off: kwok runs no pods."""
    localcluster.tool(
        "helm",
        cluster.kubeconfig,
        *("upgrade", "--install", RELEASE, str(chart), "--namespace", NAMESPACE),
        # The operator's image is the agent's: the chart's admission policies admit only
        # pod templates whose verifying init container runs it.
        *(
            "--set",
            f"image.repository={AGENT_REPOSITORY}",
            "--set",
            f"image.digest={AGENT_DIGEST}",
        ),
        *("--set", "webhook.enabled=false"),
        *("--wait", "--timeout=180s"),
    ).check_returncode()


def _policy_for(policy: dict[str, typing.Any], *, code: Path | None) -> dict[str, typing.Any]:
    """The TrustPolicy as the operator at `code` (None: this tree) reads it."""
    if code is None:
        return policy
    spec = dict(policy["spec"])
    models = (code / "modelguard" / "api" / "trustpolicy.py").read_text()
    if "namespace_selector" not in models:
        # An operator from before namespace binding does not know the field.
        spec.pop("namespaceSelector", None)
    if "class Source(" not in models:
        # One from before sources bound their endpoint takes plain URI prefixes (and the
        # endpoint from the credentials Secret).
        spec["sources"] = [source["uri"] for source in spec.get("sources") or []]
    return {**policy, "spec": spec}


def _print(title: str, counts: Counts) -> None:
    total = sum(counts.values())
    print(f"{title}: {total:.1f} requests")
    for (verb, resource, subresource), value in sorted(counts.items()):
        if abs(value) >= 0.05:
            what = f"{resource}/{subresource}" if subresource else resource
            print(f"    {verb:<7} {what:<28} {value:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", help="git ref of the operator code to measure beside")
    parser.add_argument("--reconciles", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local = localcluster.LocalCluster(root / "cluster")
        local.start()
        s3 = s3server.S3Server(root / "s3")
        s3.start()
        try:
            cluster = Cluster(local.kubeconfig)
            cluster.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
            s3.create_bucket("models")
            signing = signedmodel.generate_key(root, name="signer")
            approver = signedmodel.generate_key(root, name="approver")
            policy = signedmodel.trust_policy(
                name="default",
                public_key=signing[1],
                sources=[signedmodel.s3_source(s3, "models")],
                approver_key=approver[1],
            )
            runs: list[tuple[str, Path | None]] = []
            if args.baseline:
                runs.append((f"baseline {args.baseline}", _export(args.baseline, root / "base")))
            runs.append(("this tree", None))
            for title, tree in runs:
                _install(cluster, tree / "charts" / "modelguard" if tree else CHART)
                code = tree / "operator" if tree else None
                state = root / f"state-{len(title)}-{uuid.uuid4().hex[:4]}"
                state.mkdir()
                cluster.apply(_policy_for(policy, code=code))
                rollout, steady = _measure(
                    cluster,
                    s3,
                    code=code,
                    keys=(signing, approver),
                    reconciles=args.reconciles,
                    state=state,
                )
                _print(f"{title}: one rollout of a new model", rollout)
                _print(f"{title}: per reconcile of a steady model", steady)
        finally:
            s3.stop()
            local.stop()


if __name__ == "__main__":
    main()
