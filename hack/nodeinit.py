"""Process 1 of a local node's namespaces: gives the node its own view of the machine, then reaps
orphans until it is told to stop, when the kernel ends every process left in the node with it.

hack/localnode.py starts it as
    unshare --pid --fork --mount-proc --net --mount --uts --ipc --propagation slave -- \
        python hack/nodeinit.py --dir <node state dir> --hostname <node name>

and enters the namespaces it holds (nsenter --target <its pid>) to start the node's daemons. It
uses the standard library only, because it is the first thing to run in the node.

What it changes is visible inside the node only (its mount namespace is a slave of the host's:
nothing mounted here propagates out):
- /sys is the node's own sysfs, so /sys/class/net lists the node's interfaces (the host's cgroup
  file systems are bound back under it);
- /var and /run are overlays whose upper layers are in the state directory: what the node's
  daemons write there, at paths they do not let us configure (/var/lib/kubelet/device-plugins,
  /var/log/containers, /var/lib/cni, /run/xtables.lock...), lands in the state directory and the
  host's directories stay as they were;
- the kernel tunables the kubelet insists on (kernel.panic, kernel.panic_on_oops,
  vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*) are machine-wide, not per namespace: each
  is shadowed by a file of the state directory holding the host's value, so the kubelet "sets"
  its node's tunables and the host's are never written;
- the node's network namespace gets loopback up, IPv6 off, and forwarding on (the pods' traffic
  is routed by the node, which is what per-namespace ip_forward is for).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The machine-wide tunables the kubelet sets unless protectKernelDefaults (which refuses to start
# instead): pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables.
KUBELET_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
READY_FILE = "init.ready"
OVERLAID = ("/var", "/run")


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"nodeinit: {' '.join(argv)} failed: {result.stderr.strip()}")


def _own_sysfs(work: Path) -> None:
    """A sysfs of the node's network namespace at /sys, with the host's cgroup trees moved under it
    (the kubelet and runc manage cgroups there)."""
    keep = work / "cgroup"
    keep.mkdir(parents=True, exist_ok=True)
    _run("mount", "--rbind", "/sys/fs/cgroup", str(keep))
    _run("mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec", "sysfs", "/sys")
    _run("mount", "--move", str(keep), "/sys/fs/cgroup")


def _overlays(work: Path) -> None:
    for directory in OVERLAID:
        name = directory.strip("/")
        upper, scratch = work / "overlay" / name, work / "overlay" / f"{name}.work"
        upper.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={directory},upperdir={upper},workdir={scratch}"
        _run("mount", "-t", "overlay", "-o", options, "overlay", directory)


def _shadow_tunables(work: Path) -> None:
    shadows = work / "sysctl"
    shadows.mkdir(parents=True, exist_ok=True)
    for tunable in KUBELET_TUNABLES:
        live = Path("/proc/sys") / tunable
        shadow = shadows / tunable.replace("/", ".")
        shadow.write_text(live.read_text())
        _run("mount", "--bind", str(shadow), str(live))


def _network() -> None:
    _run("ip", "link", "set", "lo", "up")
    for setting, value in (
        ("net/ipv6/conf/all/disable_ipv6", "1"),
        ("net/ipv6/conf/default/disable_ipv6", "1"),
        ("net/ipv4/ip_forward", "1"),
    ):
        Path("/proc/sys", setting).write_text(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the node's state directory")
    parser.add_argument("--hostname", required=True)
    args = parser.parse_args()
    if os.getpid() != 1:
        print("nodeinit: must run as process 1 of a new PID namespace", file=sys.stderr)
        return 2
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Process 1 of a namespace gets only the signals it has handlers for.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    work = args.dir / "init"
    Path("/proc/sys/kernel/hostname").write_text(args.hostname)
    _own_sysfs(work)
    _overlays(work)
    _shadow_tunables(work)
    _network()
    (args.dir / READY_FILE).write_text(f"{time.time()}\n")

    while not stopping:
        # Orphans (containerd's shims, once their starter exits) are reparented to this process.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        time.sleep(0.5)
    # Returning ends process 1: the kernel kills whatever is left in the node's PID namespace.
    return 0


if __name__ == "__main__":
    sys.exit(main())
