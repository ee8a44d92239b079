"""The local cluster's real node: real pods, cluster DNS, NetworkPolicies enforced by kube-router,
nothing leaving the machine, and a host left exactly as it was by `down`, with two clusters at once.

Probes run in pods of the busybox probe image (conftest.probe_image): a connection that succeeds
proves a path is open, one that fails while its twin succeeds proves it is closed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

import localcluster
import localnode

# A documentation address (RFC 5737): assigned to nobody, so a probe to it can never reach anyone.
NOWHERE = "198.51.100.1"


def _probe_pod(
    name: str, image: str, *, command: list[str], labels: dict[str, str] | None = None
) -> harness.Manifest:
    """A restricted pod on the real node running `command` from the probe image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            **localnode.placement(),
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _run_pods(kubectl: harness.Kubectl, namespace: str, *pods: harness.Manifest) -> None:
    for pod in pods:
        kubectl.apply(pod, namespace=namespace)
    for pod in pods:
        kubectl.run(
            *("wait", "--for=condition=Ready", f"pod/{pod['metadata']['name']}"),
            *("-n", namespace, "--timeout=90s"),
        )


def _sleeper(name: str, image: str, labels: dict[str, str] | None = None) -> harness.Manifest:
    return _probe_pod(name, image, command=["/bin/sleep", "3600"], labels=labels)


def _connects(kubectl: harness.Kubectl, namespace: str, pod: str, host: str, port: int) -> bool:
    """Whether `pod` opens a TCP connection to host:port within two seconds."""
    result = kubectl.run(
        *("exec", "-n", namespace, pod, "--"),
        *("/bin/sh", "-c", f"/bin/nc -w 2 {host} {port} </dev/null"),
        check=False,
        timeout=30,
    )
    return result.returncode == 0


def _pod_ip(kubectl: harness.Kubectl, namespace: str, pod: str) -> str:
    ip: str = kubectl.json("get", "pod", pod, "-n", namespace)["status"]["podIP"]
    return ip


@contextlib.contextmanager
def _namespace(kubectl: harness.Kubectl, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def test_a_pod_runs_on_the_real_node_and_only_pods_that_tolerate_it_land_there(
    kubectl: harness.Kubectl, namespace: str, probe_image: str
) -> None:
    kept_off = _sleeper("kept-off", probe_image)
    del kept_off["spec"]["nodeSelector"], kept_off["spec"]["tolerations"]
    _run_pods(kubectl, namespace, _sleeper("on-node", probe_image), kept_off)

    assert kubectl.json("get", "pod", "on-node", "-n", namespace)["spec"]["nodeName"] == (
        localnode.NODE_NAME
    )
    # The taint keeps a pod without the toleration on the kwok nodes, as every existing test's.
    assert kubectl.json("get", "pod", "kept-off", "-n", namespace)["spec"]["nodeName"].startswith(
        "kwok-node-"
    )
    # exec goes API server -> kubelet (its client certificate, the kubelet's webhook authz) ->
    # containerd -> runc: the process really runs, as the restricted user.
    answer = kubectl.run("exec", "-n", namespace, "on-node", "--", "/bin/sh", "-c", "id -u")
    assert answer.stdout.strip() == "65532"


def test_cluster_dns_resolves_a_service_name_through_coredns(
    kubectl: harness.Kubectl, namespace: str, probe_image: str, real_node: localnode.RealNode
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "answer"},
            "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]},
        },
        namespace=namespace,
    )
    cluster_ip = kubectl.json("get", "service", "answer", "-n", namespace)["spec"]["clusterIP"]
    _run_pods(kubectl, namespace, _sleeper("resolver", probe_image))

    def lookup(name: str) -> subprocess.CompletedProcess[str]:
        return kubectl.run(
            "exec", "-n", namespace, "resolver", "--", "/bin/nslookup", name, check=False
        )

    found = lookup(f"answer.{namespace}.svc.cluster.local")
    assert found.returncode == 0, found.stderr
    assert f"Address: {cluster_ip}" in found.stdout
    assert real_node.net.dns_ip in found.stdout  # the kube-dns Service answered
    # CoreDNS has no upstream: a name outside the cluster is not resolved (nothing leaves).
    assert lookup("example.com").returncode != 0


def test_network_policy_default_deny_cuts_and_a_namespace_allow_reopens(
    kubectl: harness.Kubectl, namespace: str, probe_image: str
) -> None:
    server = _probe_pod(
        "server",
        probe_image,
        command=["/bin/httpd", "-f", "-p", "8080", "-h", "/bin"],
        labels={"app": "server"},
    )
    with _namespace(kubectl, "caller") as caller, _namespace(kubectl, "other") as other:
        _run_pods(kubectl, namespace, server)
        _run_pods(kubectl, caller, _sleeper("client", probe_image))
        _run_pods(kubectl, other, _sleeper("client", probe_image))
        address = _pod_ip(kubectl, namespace, "server")

        def reachable_from(client_namespace: str) -> bool:
            return _connects(kubectl, client_namespace, "client", address, 8080)

        assert reachable_from(caller)
        assert reachable_from(other)

        kubectl.apply(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            },
            namespace=namespace,
        )

        def denied() -> None:
            assert not reachable_from(caller)
            assert not reachable_from(other)

        harness.eventually(denied, timeout=30)

        kubectl.apply(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "allow-caller"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "server"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchLabels": {"kubernetes.io/metadata.name": caller}
                                    }
                                }
                            ],
                            "ports": [{"protocol": "TCP", "port": 8080}],
                        }
                    ],
                },
            },
            namespace=namespace,
        )

        def reopened_for_caller_only() -> None:
            assert reachable_from(caller)
            assert not reachable_from(other)

        harness.eventually(reopened_for_caller_only, timeout=30)


def _host_addresses(exclude: ipaddress.IPv4Network) -> list[str]:
    """The host's own IPv4 addresses but loopback and the node's link."""
    links = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    )
    found = []
    for link in links:
        for info in link.get("addr_info", []):
            address = ipaddress.IPv4Address(info["local"])
            if not address.is_loopback and address not in exclude:
                found.append(str(address))
    return found


def test_nothing_leaves_the_node_but_calls_to_the_api_server(
    kubectl: harness.Kubectl, namespace: str, probe_image: str, real_node: localnode.RealNode
) -> None:
    net = real_node.net
    _run_pods(
        kubectl,
        namespace,
        _sleeper("prober", probe_image),
        _probe_pod("peer", probe_image, command=["/bin/httpd", "-f", "-p", "8080", "-h", "/bin"]),
    )
    peer = _pod_ip(kubectl, namespace, "peer")
    kubernetes_service = str(next(ipaddress.ip_network(net.service_cidr).hosts()))
    # A server on the host end of the link, on another port than the API server's: the host is
    # reachable from the node's link, so only the node's own rules keep pods away from it.
    with socket.create_server((net.host_ip, 0)) as listener:
        host_port = listener.getsockname()[1]
        with socket.create_connection((net.host_ip, host_port), timeout=2):
            pass  # the host itself reaches it: the probe below fails for the node's rules only

        def reaches(host: str, port: int) -> bool:
            return _connects(kubectl, namespace, "prober", host, port)

        assert reaches(peer, 8080)
        assert reaches(kubernetes_service, 443)
        assert reaches(net.host_ip, real_node.api_port)
        assert reaches(net.dns_ip, 53)

        assert not reaches(net.host_ip, host_port)
        for address in [*_host_addresses(ipaddress.ip_network(net.link_cidr)), NOWHERE]:
            assert not reaches(address, 80), address

        # The node's own processes are held by the same rules.
        def node_reaches(host: str, port: int) -> bool:
            argv = real_node.enter("/bin/busybox", "nc", "-w", "2", host, str(port))
            return (
                subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, check=False
                ).returncode
                == 0
            )

        assert node_reaches(net.host_ip, real_node.api_port)
        assert not node_reaches(net.host_ip, host_port)


# --------------------------------------------------------------------------------------------
# Two clusters at once; the host as it was
# --------------------------------------------------------------------------------------------

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
)
# Where kubelet, containerd, the CNI plugins and iptables write when nothing else is configured.
DEFAULT_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/lib/kube-router",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/netns",
    "/run/runc",
    "/run/nri",
    "/run/xtables.lock",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/etc/kubernetes",
)
OTHER_NODE = re.compile(rf"{localnode.HOST_LINK_PREFIX}\d+")
# Every slot's ranges (localnode.Network): other clusters' routes are left out of the comparison.
NODE_RANGES = [
    ipaddress.IPv4Network(c) for c in ("10.160.0.0/11", "10.192.0.0/11", "10.224.0.0/11")
]


def _node_route(route: dict[str, str]) -> bool:
    if OTHER_NODE.fullmatch(route.get("dev", "")):
        return True
    destination = route.get("dst", "default")
    if destination == "default" or ":" in destination:
        return False
    network = ipaddress.IPv4Network(destination, strict=False)
    return any(network.subnet_of(r) for r in NODE_RANGES)


def _command(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _host_state() -> dict[str, object]:
    """What a node could change on the host. Other clusters' links, routes and cgroups (other
    test sessions may run nodes on this machine) are left out; the caller checks its own."""
    cgroups = sorted(
        str(path.relative_to(localnode.CGROUP_MOUNT))
        for hierarchy in localnode.CGROUP_MOUNT.iterdir()
        if hierarchy.is_dir()
        for path in hierarchy.iterdir()
        if path.is_dir()
    )
    return {
        "iptables": _command("iptables-save").splitlines(),
        "ip6tables": _command("ip6tables-save").splitlines(),
        "ipsets": _command("ipset", "list", "-n").split(),
        "sysctls": {s: Path("/proc/sys", s).read_text().strip() for s in SYSCTLS},
        "links": sorted(
            link["ifname"]
            for link in json.loads(_command("ip", "-j", "link", "show"))
            if not OTHER_NODE.fullmatch(link["ifname"])
        ),
        "routes": sorted(
            json.dumps(route, sort_keys=True)
            for route in json.loads(_command("ip", "-j", "route", "show", "table", "all"))
            if not _node_route(route)
        ),
        "mounts": sorted(
            " ".join(line.split()[3:5])
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
        "cgroups": [c for c in cgroups if not c.split("/")[-1].startswith("modelguard-")],
        "files": [path for path in DEFAULT_PATHS if os.path.lexists(path)],
    }


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if text in cmdline:
                    found.append(f"{proc.name}: {cmdline}")
    return found


def _net_namespace_users(inode: int) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "ns" / "net").stat().st_ino == inode:
                    found.append(proc.name)
    return found


def test_a_second_cluster_runs_beside_this_one_and_down_leaves_the_host_as_it_was(
    kubectl: harness.Kubectl,
    namespace: str,
    probe_image: str,
    probe_archive: Path,
    real_node: localnode.RealNode,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    before = _host_state()
    second = localcluster.LocalCluster(tmp_path_factory.mktemp("second"))
    second.start()
    try:
        other = second.real_node
        assert other.net.slot != real_node.net.slot
        node_netns = Path(f"/proc/{other.init_pid}/ns/net").stat().st_ino
        # Both nodes run pods and resolve their own cluster's names at the same time.
        second_kubectl = harness.Kubectl(second.kubeconfig)
        other.import_image(probe_archive)
        _run_pods(second_kubectl, "default", _sleeper("resolver", probe_image))
        _run_pods(kubectl, namespace, _sleeper("resolver", probe_image))
        for cluster_kubectl, pod_namespace, dns in (
            (second_kubectl, "default", other.net.dns_ip),
            (kubectl, namespace, real_node.net.dns_ip),
        ):
            answer = cluster_kubectl.run(
                *("exec", "-n", pod_namespace, "resolver", "--"),
                *("/bin/nslookup", "kubernetes.default.svc.cluster.local"),
            )
            assert f"Server:\t\t{dns}" in answer.stdout, answer.stdout
    finally:
        second.stop()
    after = _host_state()

    assert after == before
    assert not _processes_mentioning(str(second.state_dir))
    assert not _net_namespace_users(node_netns)
    assert not any(other.net.host_link in link for link in _command("ip", "-br", "link").split())
    routes = _command("ip", "route", "show", "table", "all")
    assert not any(str(r.network_address) in routes for r in other.net.ranges()), routes
