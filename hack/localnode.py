"""The local cluster's real node: kubelet, containerd (with Debian's runc and CNI plugins),
kube-proxy and kube-router's network policy controller, in namespaces of their own, with CoreDNS
as the cluster's DNS pod.

A node made of namespaces, as kind makes one of a container: hack/nodeinit.py is process 1 of a
PID, network, mount, UTS and IPC namespace, and every daemon of the node runs inside them
(nsenter). So the cni0 bridge, ip_forward, the iptables chains and ipsets of kube-proxy, kube-router
and the kubelet, the pods' network namespaces and the kubelet's mounts all exist in the node only,
and vanish with it; stopping process 1 ends every process left in the node, pods included. A veth
pair links the node (`eth0`, the node's InternalIP) to the host (`mgnode<slot>`), where the API
server listens; the host routes the node's pod and service ranges to it, so that the API server
reaches webhooks and kubelets, and forwards nothing (the host's ip_forward is left as it is).

What a network namespace does not contain is handled explicitly:
- machine-wide kernel tunables the kubelet sets are shadowed inside the node (hack/nodeinit.py);
- files the daemons write at fixed paths land in overlays of /var and /run in the state directory;
- pods' cgroups: the kubelet's cgroupRoot is one per cluster, nested in the cgroup of the process
  that starts the cluster, and removed with the node.

Several clusters may run at once: each takes a free slot (its host link's name is created
atomically, and its address ranges overlap no route of the host), which gives it its own ranges.

Nothing leaves the machine: the node has no default route, and before any daemon starts, the only
packets that may leave the node through its link are those to the API server's port on the host
end and replies to connections the host opened (a mangle-table chain, which kube-router and
kube-proxy never reorder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import images
import localcluster
import oci

HACK_DIR = Path(__file__).resolve().parent

NODE_NAME = "real-node"
# The label and taint that keep every pod off the real node but those meant for it; kwok nodes
# take the rest. `placement()` is what a pod spec adds to run there.
NODE_LABEL = "modelguard.dev/node"
NODE_LABEL_VALUE = "real"
TAINT = {"key": NODE_LABEL, "value": NODE_LABEL_VALUE, "effect": "NoSchedule"}

HOST_LINK_PREFIX = "mgnode"
NODE_LINK = "eth0"
SLOTS = 32
NODE_FILE = "node.json"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")  # Debian's runc
# Users of the node's components, issued by the cluster CA.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBE_PROXY_USER = "system:kube-proxy"
KUBE_ROUTER_USER = "kube-router"
KUBE_ROUTER_HEALTH_PORT = 20244
KUBE_PROXY_HEALTH_PORT = 10256
COREDNS_IMAGE_REPOSITORY = "localhost/modelguard/coredns"
EGRESS_CHAIN = "MODELGUARD-EGRESS"
# The metric of the host's fallback routes for a node's ranges, below the link's own routes.
FALLBACK_METRIC = 4095


class NodeError(localcluster.ClusterError):
    """The real node could not be started or stopped; the message says which step and why."""


def placement() -> dict[str, object]:
    """The nodeSelector and toleration a pod spec adds to run on the real node (and only there)."""
    return {
        "nodeSelector": {NODE_LABEL: NODE_LABEL_VALUE},
        "tolerations": [{**TAINT, "operator": "Equal"}],
    }


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Network:
    """The address ranges of the cluster in slot `slot` (0 <= slot < SLOTS), all in 10.0.0.0/8:
    pods 10.(160+slot).0.0/16 (the real node's pods the first /24, kwok's the upper half),
    Services 10.(192+slot).0.0/16, the host-node link 10.(224+slot).0.0/30."""

    slot: int

    @property
    def pod_cidr(self) -> str:
        return f"10.{160 + self.slot}.0.0/16"

    @property
    def node_pod_cidr(self) -> str:
        return f"10.{160 + self.slot}.0.0/24"

    @property
    def kwok_pod_cidr(self) -> str:
        return f"10.{160 + self.slot}.128.0/17"

    @property
    def service_cidr(self) -> str:
        return f"10.{192 + self.slot}.0.0/16"

    @property
    def link_cidr(self) -> str:
        return f"10.{224 + self.slot}.0.0/30"

    @property
    def host_ip(self) -> str:
        """The host end of the link: where the API server listens for the node and its pods."""
        return f"10.{224 + self.slot}.0.1"

    @property
    def node_ip(self) -> str:
        """The node's InternalIP, the node end of the link."""
        return f"10.{224 + self.slot}.0.2"

    @property
    def dns_ip(self) -> str:
        """The ClusterIP of the kube-dns Service."""
        return f"10.{192 + self.slot}.0.10"

    @property
    def host_link(self) -> str:
        return f"{HOST_LINK_PREFIX}{self.slot}"

    def ranges(self) -> list[ipaddress.IPv4Network]:
        return [
            ipaddress.IPv4Network(cidr)
            for cidr in (self.pod_cidr, self.service_cidr, self.link_cidr)
        ]


def _run(argv: list[str], *, what: str, input: str | None = None) -> str:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeError(f"{what}: {' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes or has an address in (all routing tables)."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"], what="routes"))
    addresses = json.loads(_run(["ip", "-j", "-4", "addr", "show"], what="addresses"))
    networks = [
        ipaddress.IPv4Network(route["dst"], strict=False)
        for route in routes
        if route.get("dst", "default") != "default"
    ]
    for link in addresses:
        for info in link.get("addr_info", []):
            networks.append(
                ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
            )
    return networks


# --------------------------------------------------------------------------------------------
# cgroups
# --------------------------------------------------------------------------------------------

CGROUP_MOUNT = Path("/sys/fs/cgroup")


def _hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, the named systemd one, cgroup2)."""
    return sorted(
        path
        for path in CGROUP_MOUNT.iterdir()
        if path.is_dir() and not path.is_symlink() and (path / "cgroup.procs").exists()
    )


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy, by the hierarchy's directory name under
    /sys/fs/cgroup ("memory", "systemd" for name=systemd, "unified" for cgroup2)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            own[controller.removeprefix("name=")] = path.rstrip("/") or "/"
    return own


def _deepest(own: dict[str, str]) -> str:
    """The deepest of the cgroups this process is in (a supervisor may account a session's
    processes in one controller only): the node's pods are created below it, so they stay
    accounted where the process that started them is."""
    return max(own.values(), key=lambda path: len(path.strip("/").split("/")) if path != "/" else 0)


def _create_cgroup(root: str) -> None:
    """Creates `root` in every hierarchy (the kubelet insists it exists in each), with cpuset's
    cpus and mems inherited as cgroup v1 needs before a task can join."""
    for hierarchy in _hierarchies():
        path = hierarchy
        for part in root.strip("/").split("/"):
            parent, path = path, path / part
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                own = path / name
                if own.exists() and not own.read_text().strip():
                    own.write_text((parent / name).read_text())


def _processes_in(root: str) -> set[int]:
    found: set[int] = set()
    for hierarchy in _hierarchies():
        top = hierarchy / root.strip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(pid) for pid in procs.read_text().split())
    return found


def _remove_cgroup(root: str, *, own: dict[str, str]) -> None:
    """Removes `root` and everything below it from every hierarchy, then, where the process that
    started the node sat higher than `root`'s parent (`own`: its cgroup per hierarchy), the
    directories made between them, once no other node uses them."""
    for hierarchy in _hierarchies():
        top = hierarchy / root.strip("/")
        if not top.is_dir():
            continue
        for directory in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            _rmdir(directory)
        _rmdir(top)
        base = hierarchy / own.get(hierarchy.name, "/").strip("/")
        parent = top.parent
        while parent != base and base in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # another node's cgroup is below it
                break
            parent = parent.parent


def _rmdir(directory: Path) -> None:
    # A cgroup whose last task just exited may stay busy for a moment.
    deadline = time.monotonic() + 10
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise NodeError(f"cannot remove cgroup {directory}: {error}") from error
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RealNode:
    """The real node of the cluster whose state directory is `cluster_dir`."""

    cluster_dir: Path
    init_pid: int = 0
    network: Network | None = None
    cgroup_root: str = ""
    own_cgroups: dict[str, str] = dataclasses.field(default_factory=dict)
    api_port: int = 0

    @property
    def state_dir(self) -> Path:
        return self.cluster_dir / "node"

    @property
    def net(self) -> Network:
        if self.network is None:
            raise NodeError("the node has no network yet")
        return self.network

    def enter(self, *argv: str) -> list[str]:
        """`argv` run inside the node's namespaces."""
        return [
            "nsenter",
            f"--target={self.init_pid}",
            "--pid",
            "--net",
            "--mount",
            "--uts",
            "--ipc",
            "--",
            *argv,
        ]

    def run(self, *argv: str, what: str, input: str | None = None) -> str:
        """Runs `argv` inside the node and returns its output."""
        return _run(self.enter(*argv), what=what, input=input)

    # -- state ------------------------------------------------------------------------------

    def save(self) -> None:
        record = {
            "init_pid": self.init_pid,
            "slot": self.network.slot if self.network else None,
            "cgroup_root": self.cgroup_root,
            "own_cgroups": self.own_cgroups,
            "api_port": self.api_port,
        }
        localcluster._write_private(self.state_dir / NODE_FILE, json.dumps(record))

    @classmethod
    def load(cls, cluster_dir: Path) -> RealNode | None:
        try:
            record = json.loads((cluster_dir / "node" / NODE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        slot = record.get("slot")
        return cls(
            cluster_dir,
            init_pid=int(record.get("init_pid") or 0),
            network=Network(slot) if slot is not None else None,
            cgroup_root=record.get("cgroup_root", ""),
            own_cgroups=dict(record.get("own_cgroups", {})),
            api_port=int(record.get("api_port") or 0),
        )

    # -- namespaces and network --------------------------------------------------------------

    def create(
        self, spawn: Callable[[str, list[str]], int], *, api_port: int, timeout: float
    ) -> None:
        """Starts process 1 of the node's namespaces, links the node to the host on a free slot
        and closes the node's way out. No daemon runs yet."""
        _check_host()
        for directory in ("/var", "/run"):
            if self.state_dir == Path(directory) or Path(directory) in self.state_dir.parents:
                raise NodeError(
                    f"the state directory {self.cluster_dir} is under {directory}, which the node "
                    "overlays; choose another --dir"
                )
        self.api_port = api_port
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "init.ready"
        pid = spawn(
            "node-init",
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child=SIGTERM",
                "--mount-proc",
                "--net",
                "--mount",
                "--uts",
                "--ipc",
                "--propagation=slave",
                "--",
                sys.executable,
                str(HACK_DIR / "nodeinit.py"),
                f"--dir={self.state_dir}",
                f"--hostname={NODE_NAME}",
            ],
        )
        localcluster.wait_for(
            "the node's namespaces",
            lambda: ready.exists() or not localcluster.alive(pid),
            timeout=timeout,
        )
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if not ready.exists() or not children.exists() or not children.read_text().split():
            raise NodeError("the node's process 1 did not start; see logs/node-init.log")
        self.init_pid = int(children.read_text().split()[0])
        self.own_cgroups = _own_cgroups()
        self.save()
        self._link()
        above = _deepest(self.own_cgroups).rstrip("/")
        self.cgroup_root = f"{above}/modelguard-{self.net.host_link}"
        _create_cgroup(self.cgroup_root)
        self.save()

    def _link(self) -> None:
        """Takes the first slot whose ranges are free on the host; creating the host link by its
        slot's name is what reserves the slot (a second cluster racing for it gets EEXIST)."""
        taken = _host_networks()
        for slot in range(SLOTS):
            network = Network(slot)
            if any(r.overlaps(t) for r in network.ranges() for t in taken):
                continue
            result = subprocess.run(
                [
                    *("ip", "link", "add", network.host_link, "type", "veth"),
                    *("peer", "name", NODE_LINK, "netns", f"/proc/{self.init_pid}/ns/net"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                self.network = network
                break
            if "exists" not in result.stderr:
                raise NodeError(f"cannot create the node's link: {result.stderr.strip()}")
        else:
            raise NodeError(f"no free slot for a node: all {SLOTS} are in use or overlap routes")
        self.save()
        net = self.net
        # Egress first: nothing may leave before the link is up.
        self.run("iptables-restore", "--noflush", what="node egress rules", input=self._egress())
        for argv in (
            ["ip", "addr", "add", f"{net.node_ip}/30", "dev", NODE_LINK],
            ["ip", "link", "set", NODE_LINK, "up"],
            # Local processes of the node reach Services through kube-proxy's DNAT, which needs a
            # route to exist; there is no default route.
            ["ip", "route", "add", net.service_cidr, "via", net.host_ip, "dev", NODE_LINK],
        ):
            self.run(*argv, what="node link")
        host = net.host_link
        # Should the link vanish (the node dies first, or crashes), the host would route these
        # ranges by its default route, out of the machine; these fallbacks refuse them instead.
        for cidr in (net.link_cidr, net.pod_cidr, net.service_cidr):
            _run(
                ["ip", "route", "add", "prohibit", cidr, "metric", str(FALLBACK_METRIC)],
                what="host fallback route",
            )
        _run(["sysctl", "-q", "-w", f"net.ipv6.conf.{host}.disable_ipv6=1"], what="host link")
        for argv in (
            ["ip", "addr", "add", f"{net.host_ip}/30", "dev", host],
            ["ip", "link", "set", host, "up"],
            ["ip", "route", "add", net.pod_cidr, "via", net.node_ip, "dev", host],
            ["ip", "route", "add", net.service_cidr, "via", net.node_ip, "dev", host],
        ):
            _run(argv, what="host link")

    def _egress(self) -> str:
        """What may leave the node through its link: new connections to the API server on the
        host end, and replies to connections the host opened (the API server calling kubelets
        and webhooks). Pods and the node's own processes alike, since the chain is in the
        mangle table's POSTROUTING (after kube-proxy's DNAT, before nothing else can accept)."""
        return "\n".join(
            [
                "*mangle",
                f":{EGRESS_CHAIN} - [0:0]",
                f"-A POSTROUTING -o {NODE_LINK} -j {EGRESS_CHAIN}",
                f"-A {EGRESS_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
                f"-A {EGRESS_CHAIN} -d {self.net.host_ip}/32 -p tcp -m tcp"
                f" --dport {self.api_port} -j RETURN",
                f"-A {EGRESS_CHAIN} -j DROP",
                "COMMIT",
                "",
            ]
        )

    # -- daemons -----------------------------------------------------------------------------

    def start(
        self, cluster: localcluster.LocalCluster, pki: localcluster.Pki, *, timeout: float
    ) -> None:
        """Starts containerd, the kubelet, kube-proxy and kube-router in the node, waits for the
        node to be Ready and NetworkPolicies to be enforced, then runs CoreDNS."""
        net = self.net
        server = f"https://{net.host_ip}:{self.api_port}"
        ca = cluster.state_dir / "pki" / "ca.crt"
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_rbac()))

        def kubeconfig(name: str, *, user: str, groups: tuple[str, ...] = ()) -> Path:
            identity = pki.issue(common_name=user, organizations=groups)
            text = localcluster.kubeconfig_text(
                server=server, ca_pem=pki.ca_pem, identity=identity, user=user
            )
            return localcluster._write_private(self.state_dir / f"{name}.kubeconfig", text)

        kubelet_kubeconfig = kubeconfig(
            "kubelet", user=f"system:node:{NODE_NAME}", groups=("system:nodes",)
        )
        proxy_kubeconfig = kubeconfig("kube-proxy", user=KUBE_PROXY_USER)
        router_kubeconfig = kubeconfig("kube-router", user=KUBE_ROUTER_USER)
        serving = pki.issue(
            common_name=NODE_NAME, server_names=(NODE_NAME,), server_ips=(net.node_ip,)
        )
        serving_crt = localcluster._write_private(self.state_dir / "kubelet.crt", serving.cert_pem)
        serving_key = localcluster._write_private(self.state_dir / "kubelet.key", serving.key_pem)

        pause = images.pause_image(out=self.state_dir / "images" / "pause.oci.tar")
        containerd_config = self._containerd_config(sandbox_image=pause.name)
        containerd = localcluster.binary("containerd")
        cluster._spawn("containerd", self.enter(str(containerd), f"--config={containerd_config}"))
        localcluster.wait_for(
            "containerd",
            lambda: self._ctr("version", check=False).returncode == 0,
            timeout=timeout,
            log=cluster._log("containerd"),
        )
        for archive in (pause.archive, coredns_image()[0]):
            self.import_image(archive)

        kubelet_config = self._kubelet_config(ca=ca, cert=serving_crt, key=serving_key)
        cluster._spawn(
            "kubelet",
            self.enter(
                str(localcluster.binary("kubelet")),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={self.state_dir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={net.node_ip}",
                f"--node-labels={NODE_LABEL}={NODE_LABEL_VALUE}",
                "--v=1",
            ),
        )
        localcluster.wait_for(
            "the real node to register",
            lambda: cluster.kubectl("get", "node", NODE_NAME, check=False).returncode == 0,
            timeout=timeout,
            log=cluster._log("kubelet"),
        )
        # Both look their node up once at start: it must be registered.
        cluster._spawn(
            "kube-proxy",
            self.enter(
                str(localcluster.binary("kube-proxy")),
                f"--config={self._kube_proxy_config(proxy_kubeconfig)}",
                "--v=1",
            ),
        )
        # kube-router 2.1.0 saves the filter table and restores it whole: started while kube-proxy
        # writes its first rules, it drops some of them (kube-proxy then fails a sync and waits
        # 30 s). It starts once kube-proxy has programmed the `kubernetes` Service.
        localcluster.wait_for(
            "kube-proxy's first rules",
            self._services_programmed,
            timeout=timeout,
            log=cluster._log("kube-proxy"),
        )
        cluster._spawn(
            "kube-router",
            self.enter(
                str(localcluster.binary("kube-router")),
                f"--kubeconfig={router_kubeconfig}",
                # The network policy controller alone: routes, Services and the CNI
                # configuration are the bridge plugin's and kube-proxy's.
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--enable-ipv6=false",
                f"--hostname-override={NODE_NAME}",
                f"--service-cluster-ip-range={net.service_cidr}",
                f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
                "--metrics-port=0",
                "--v=1",
            ),
        )
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"node/{NODE_NAME}", f"--timeout={int(timeout)}s"
        )
        for name, port in (
            ("kube-proxy", KUBE_PROXY_HEALTH_PORT),
            ("kube-router", KUBE_ROUTER_HEALTH_PORT),
        ):
            localcluster.wait_for(
                f"{name} /healthz",
                functools.partial(localcluster.http_ok, f"http://{net.node_ip}:{port}/healthz"),
                timeout=timeout,
                log=cluster._log(name),
            )
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_coredns(net)))
        cluster.kubectl(
            "rollout",
            "status",
            "deployment/coredns",
            "-n",
            "kube-system",
            f"--timeout={int(timeout)}s",
        )

    def _services_programmed(self) -> bool:
        result = subprocess.run(
            self.enter("iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"),
            capture_output=True,
            text=True,
            check=False,
        )
        return "default/kubernetes" in result.stdout

    def import_image(self, archive: Path) -> None:
        """Imports an OCI archive (hack/oci.py) into the node's containerd, under every name its
        index gives (the tag and the `repo@sha256:` name), where the kubelet finds it."""
        result = self._ctr("images", "import", "--no-unpack=false", str(archive), check=False)
        if result.returncode != 0:
            raise NodeError(f"importing {archive} failed: {result.stderr.strip()}")

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.enter(
            str(localcluster.binary("ctr")), f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", *args
        )
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=300)

    def _containerd_config(self, *, sandbox_image: str) -> Path:
        """containerd 2.x configuration (version 4, what 2.4 writes): every directory in the
        node's state directory or the node's own /run, no NRI socket, no CNI configuration but
        the node's, the shim this project builds and Debian's runc."""
        base = self.state_dir / "containerd"
        cni_conf = self.state_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        localcluster._write_private(
            cni_conf / "10-modelguard.conflist", json.dumps(self._cni_config(), indent=2)
        )

        def q(value: object) -> str:
            return json.dumps(str(value))

        shim = localcluster.binary("containerd-shim-runc-v2")
        text = f"""version = 4
root = {q(base / "root")}
state = {q(base / "state")}
temp = {q(base / "tmp")}
imports = []
# As the kubelet's own oomScoreAdj: a negative score needs CAP_SYS_RESOURCE.
oom_score = 0

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = {q(CONTAINERD_SOCKET)}
  [plugins.'io.containerd.server.v1.ttrpc']
    address = {q(CONTAINERD_SOCKET + ".ttrpc")}
  [plugins.'io.containerd.internal.v1.opt']
    path = {q(base / "opt")}
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = {q(base / "image-verifier")}
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = {q(sandbox_image)}
  [plugins.'io.containerd.cri.v1.runtime']
    # Sandboxes ask for -998; without CAP_SYS_RESOURCE only scores at or above containerd's own
    # can be set.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        runtime_path = {q(shim)}
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = {q(RUNC)}
          Root = {q(base / "runc")}
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [{q(CNI_PLUGINS)}]
      conf_dir = {q(cni_conf)}
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""
        return localcluster._write_private(base / "config.toml", text)

    def _cni_config(self) -> dict[str, object]:
        """The bridge plugin on cni0 with host-local addresses from the node's pod range; no
        masquerading (nothing leaves), hairpin so that a pod reaches itself through its Service."""
        return {
            "cniVersion": "1.0.0",
            "name": "modelguard",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.net.node_pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.state_dir / "cni" / "ipam"),
                    },
                }
            ],
        }

    def _kubelet_config(self, *, ca: Path, cert: Path, key: Path) -> Path:
        net = self.net
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The machine is cgroup v1 (hybrid); Kubernetes 1.35+ refuses v1 unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # A negative score needs CAP_SYS_RESOURCE, which the machine does not give.
            "oomScoreAdj": 0,
            "failSwapOn": False,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "Webhook"},
            "address": net.node_ip,
            "readOnlyPort": 0,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "healthzBindAddress": "127.0.0.1",
            "clusterDomain": "cluster.local",
            "clusterDNS": [net.dns_ip],
            # No resolver of the host leaks into pods: cluster names only.
            "resolvConf": "",
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "registerWithTaints": [TAINT],
            # A development machine's disk is shared: evict only when it is really full, and keep
            # the images imported without a registry (a collected one could not be pulled back).
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "nodefs.inodesFree": "2%",
                "imagefs.available": "2%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }
        return localcluster._write_private(
            self.state_dir / "kubelet-config.json", json.dumps(config, indent=2)
        )

    def _kube_proxy_config(self, kubeconfig: Path) -> Path:
        net = self.net
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": net.pod_cidr,
            "bindAddress": net.node_ip,
            "healthzBindAddress": f"{net.node_ip}:{KUBE_PROXY_HEALTH_PORT}",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{net.node_ip}/32"],
            "oomScoreAdj": 0,
            # Zeros: leave the conntrack tunables alone (nf_conntrack_max and the hash size are
            # machine-wide).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False},
        }
        return localcluster._write_private(
            self.state_dir / "kube-proxy-config.json", json.dumps(config, indent=2)
        )

    # -- teardown ----------------------------------------------------------------------------

    def stop_pods(self) -> None:
        """Kills every process of the node's pods (all in the kubelet's cgroupRoot)."""
        if not self.cgroup_root:
            return
        deadline = time.monotonic() + 15
        while (pids := _processes_in(self.cgroup_root)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def remove(self) -> None:
        """What is left once the node's processes are stopped: pods that outlived process 1 for a
        moment, the cgroups, the host end of the link, the fallback routes. Safe to call more than
        once."""
        if self.cgroup_root:
            self.stop_pods()
            _remove_cgroup(self.cgroup_root, own=self.own_cgroups)
        if self.network is not None:
            # Deleting one end deletes the pair, and the routes through it.
            net = self.network
            commands = [["ip", "link", "del", net.host_link]]
            commands += [
                ["ip", "route", "del", "prohibit", cidr, "metric", str(FALLBACK_METRIC)]
                for cidr in (net.link_cidr, net.pod_cidr, net.service_cidr)
            ]
            for argv in commands:
                subprocess.run(argv, capture_output=True, check=False)


def _check_host() -> None:
    """What the node needs from the machine, with the way to get it."""
    if os.geteuid() != 0:
        raise NodeError(
            "the real node needs root (namespaces, a veth link, cgroups); NODE=kwok gives the "
            "all-simulated cluster"
        )
    missing = [
        name
        for name in ("unshare", "nsenter", "ip", "iptables-restore", "ipset", "mount")
        if shutil.which(name) is None
    ]
    missing += [str(path) for path in (RUNC, CNI_PLUGINS / "bridge") if not path.exists()]
    if missing:
        raise NodeError(
            f"the real node needs {', '.join(missing)}: run hack/install-packages.sh "
            "(or NODE=kwok for the all-simulated cluster)"
        )


# --------------------------------------------------------------------------------------------
# Cluster objects of the node
# --------------------------------------------------------------------------------------------


def coredns_image() -> tuple[Path, str]:
    """The CoreDNS image (the binary alone, run as a non-root user): its archive, built once per
    CoreDNS version next to the binary in the cache, and the `repo@sha256:` name pods use."""
    binary = localcluster.binary("coredns")
    version = binary.parent.name.removeprefix("coredns-")
    archive = binary.parent / "coredns.oci.tar"
    if not archive.exists():
        partial = archive.with_name(f"{archive.name}.partial.{os.getpid()}")
        oci.build(
            layers=[[oci.file("coredns", source=binary, mode=0o755)]],
            config=oci.Config(user="65532:65532", entrypoint=("/coredns",), env=()),
            name=f"{COREDNS_IMAGE_REPOSITORY}:{version}",
            out=partial,
            history=[f"CoreDNS {version}, built from hack/tools/coredns"],
        )
        partial.rename(archive)
    return archive, f"{COREDNS_IMAGE_REPOSITORY}@{oci.manifest_digest(archive)}"


def _rbac() -> dict[str, object]:
    """The node components' permissions: the API server's kubelet client may use the kubelet API
    (as kubeadm binds it); kube-router's firewall controller reads what upstream's ClusterRole
    lets it read (its leases and Service status rules serve the router and the load balancer
    allocator, which do not run here); CoreDNS reads Services, EndpointSlices and namespaces."""

    def binding(
        name: str, role: str, user: str | None = None, sa: str | None = None
    ) -> dict[str, object]:
        subject: dict[str, str] = (
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}
            if user
            else {"kind": "ServiceAccount", "name": sa or "", "namespace": "kube-system"}
        )
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [subject],
        }

    def role(name: str, rules: list[dict[str, list[str]]]) -> dict[str, object]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        }

    read = ["get", "list", "watch"]
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            binding(
                "modelguard:kube-apiserver-kubelet-client",
                "system:kubelet-api-admin",
                user=KUBELET_CLIENT_USER,
            ),
            role(
                "modelguard:kube-router",
                [
                    {
                        "apiGroups": [""],
                        "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                        "verbs": read,
                    },
                    {
                        "apiGroups": ["networking.k8s.io"],
                        "resources": ["networkpolicies"],
                        "verbs": read,
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": read,
                    },
                ],
            ),
            binding("modelguard:kube-router", "modelguard:kube-router", user=KUBE_ROUTER_USER),
            role(
                "modelguard:coredns",
                [
                    {
                        "apiGroups": [""],
                        "resources": ["services", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            ),
            binding("modelguard:coredns", "modelguard:coredns", sa="coredns"),
        ],
    }


COREFILE = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        ttl 30
    }
    cache 30
    loadbalance
}
"""


def _coredns(net: Network) -> dict[str, object]:
    """CoreDNS as upstream deploys it for kubeadm (k8s-app=kube-dns, the kube-dns Service at the
    10th address of the Service range), on the real node, restricted: non-root, read-only root,
    no capability (containerd lets pods bind low ports), RuntimeDefault seccomp. It answers for
    the cluster's names only: there is no upstream resolver to forward to."""
    labels = {"k8s-app": "kube-dns"}
    _, image = coredns_image()
    metadata = {"namespace": "kube-system", "labels": labels}
    container = {
        "name": "coredns",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "coredns", **metadata},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", **metadata},
                "data": {"Corefile": COREFILE},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "coredns", **metadata},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            **placement(),
                            "serviceAccountName": "coredns",
                            "dnsPolicy": "Default",
                            "priorityClassName": "system-cluster-critical",
                            "containers": [container],
                            "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", **metadata},
                "spec": {
                    "selector": labels,
                    "clusterIP": net.dns_ip,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
        ],
    }
