"""What the chart's owned-objects ValidatingAdmissionPolicy costs the API server per write.

The policy matches every create and update of every namespaced resource (it must: no selector
can see ownerReferences), so each such write pays for it: the object (and the old one) converted
to the form CEL reads, and the match conditions evaluated. Measured on the local kube-apiserver
(etcd + kube-apiserver only), ConfigMaps written by one client over one keep-alive connection,
in alternating rounds without the policy (the reference) and with it, for a small object and a
large one (conversion grows with the object). Two figures per row: the client's latency
(median and 90th percentile) and the API server's own time in its ValidatingAdmissionPolicy
plugin per write (`apiserver_admission_controller_admission_duration_seconds`, mean).
Run with `make bench`; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import ssl
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import localcluster

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "charts" / "modelguard"
NAMESPACE = "bench"
RELEASE_NAMESPACE = "modelguard-system"
POLICY_TEMPLATE = "templates/admissionpolicy-owned-objects.yaml"
SIZES = {"small (100 B of data)": 100, "large (512 KiB of data)": 512 * 1024}


class Client:
    """The admin identity over one keep-alive HTTPS connection: no process start per request."""

    def __init__(self, kubeconfig: Path, directory: Path) -> None:
        config = json.loads(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        files = {}
        for name, key in (
            ("ca", cluster["certificate-authority-data"]),
            ("cert", user["client-certificate-data"]),
            ("key", user["client-key-data"]),
        ):
            files[name] = directory / f"{name}.pem"
            files[name].write_bytes(base64.b64decode(key))
        context = ssl.create_default_context(cafile=str(files["ca"]))
        context.load_cert_chain(str(files["cert"]), str(files["key"]))
        host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
        self.connection = http.client.HTTPSConnection(host, int(port), context=context)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        self.connection.request(
            method,
            path,
            body=None if body is None else json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        response = self.connection.getresponse()
        return response.status, response.read()


def _config_map(name: str, size: int, *, owner: dict[str, str] | None = None) -> dict[str, object]:
    metadata: dict[str, object] = {"name": name, "namespace": NAMESPACE}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"payload": "x" * size},
    }


def _policy_plugin(client: Client) -> tuple[float, float]:
    """Sum (s) and count of the API server's ValidatingAdmissionPolicy plugin's time on admitted
    writes (every policy, every resource: the rounds write ConfigMaps only)."""
    status, text = client.request("GET", "/metrics")
    assert status == 200, text[:200]
    total, count = 0.0, 0.0
    pattern = re.compile(
        r"^apiserver_admission_controller_admission_duration_seconds_(sum|count)"
        r"\{([^}]*)\} (\S+)$"
    )
    for line in text.decode().splitlines():
        found = pattern.match(line)
        if not found or 'name="ValidatingAdmissionPolicy"' not in found.group(2):
            continue
        if 'rejected="false"' not in found.group(2):
            continue
        if found.group(1) == "sum":
            total += float(found.group(3))
        else:
            count += float(found.group(3))
    return total, count


def _round(client: Client, *, size: int, writes: int) -> tuple[list[float], float]:
    """`writes` creates and as many updates; client latencies (ms) and the mean time (µs) the
    API server's admission policy plugin took for each."""
    before = _policy_plugin(client)
    latencies = []
    names = [f"cm-{uuid.uuid4().hex[:10]}" for _ in range(writes)]
    for name in names:
        started = time.perf_counter()
        status, text = client.request(
            "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", _config_map(name, size)
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert status == 201, text[:300]
    for name in names:
        started = time.perf_counter()
        status, text = client.request(
            "PUT",
            f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}",
            _config_map(name, size - 1),
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert status == 200, text[:300]
    after = _policy_plugin(client)
    for name in names:
        client.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
    step = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1e6
    return latencies, step


def _policy_manifest() -> str:
    return subprocess.run(
        [
            str(localcluster.binary("helm")),
            "template",
            "modelguard",
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--show-only",
            POLICY_TEMPLATE,
            "--set",
            "image.digest=sha256:" + "0" * 64,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _enforced(client: Client) -> bool:
    """Whether the API server refuses a ConfigMap that names a ModelDeployment as its owner
    (policies take effect a moment after they are created or deleted)."""
    owner = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "m",
        "uid": str(uuid.uuid4()),
    }
    name = f"probe-{uuid.uuid4().hex[:8]}"
    status, _ = client.request(
        "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", _config_map(name, 1, owner=owner)
    )
    if status == 201:
        client.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
    return status != 201


def _switch(cluster: localcluster.LocalCluster, client: Client, *, on: bool) -> None:
    verb = "apply" if on else "delete"
    extra = () if on else ("--ignore-not-found",)
    cluster.kubectl(verb, "-f", "-", *extra, input=_policy_manifest())
    deadline = time.monotonic() + 60
    while _enforced(client) is not on:
        assert time.monotonic() < deadline, f"the policy did not take effect ({verb})"
        time.sleep(0.2)


def _row(name: str, latencies: list[float], steps: list[float]) -> str:
    ordered = sorted(latencies)
    p90 = ordered[int(len(ordered) * 0.9)]
    return (
        f"{name:<46} {statistics.median(ordered):>9.2f} {p90:>9.2f} {statistics.mean(steps):>14.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=200, help="creates (and updates) per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = localcluster.LocalCluster(Path(tmp) / "cluster", api_server_only=True)
        cluster.start()
        try:
            cluster.kubectl("create", "namespace", NAMESPACE)
            client = Client(cluster.kubeconfig, Path(tmp))
            results: dict[tuple[str, bool], tuple[list[float], list[float]]] = {}
            for _ in range(args.rounds):
                # Alternating, so that a drift of the machine's load falls on both alike.
                for on in (False, True):
                    _switch(cluster, client, on=on)
                    for label, size in SIZES.items():
                        latencies, step = _round(client, size=size, writes=args.writes)
                        found = results.setdefault((label, on), ([], []))
                        found[0].extend(latencies)
                        found[1].append(step)
        finally:
            cluster.stop()
    print(
        f"ConfigMap writes ({args.rounds} rounds of {args.writes} creates + {args.writes} "
        "updates each)"
    )
    print(f"{'what':<46} {'median ms':>9} {'p90 ms':>9} {'VAP plugin µs':>14}")
    for label in SIZES:
        for on in (False, True):
            what = f"{label}, {'with the policy' if on else 'reference: no policy'}"
            latencies, steps = results[(label, on)]
            print(_row(what, latencies, steps))


if __name__ == "__main__":
    main()
