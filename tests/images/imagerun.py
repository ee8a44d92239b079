"""Runs an image archive the way a node would, without a node: umoci unpacks it into a runtime
bundle (its config.json made from the image config: user, entrypoint, environment, working
directory), and Debian's runc runs it with a read-only root file system, no capabilities and no
new privileges, as the Deployment builder's restricted pods do."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is missing: run hack/install-packages.sh (make test does)"
    return path


class Bundle:
    """An unpacked image: `rootfs/` and the runtime config umoci derived from the image."""

    def __init__(self, archive: Path, *, tag: str, directory: Path) -> None:
        layout = directory / "layout"
        layout.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="data")
        self.path = directory / "bundle"
        subprocess.run(
            [tool("umoci"), "unpack", "--image", f"{layout}:{tag}", str(self.path)],
            check=True, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(layout)
        self.rootfs = self.path / "rootfs"
        self.state = directory / "runc-state"
        self.image_config = json.loads((self.path / "config.json").read_text())

    def _config(
        self,
        *,
        args: Sequence[str] | None,
        binds: Sequence[tuple[Path, str]],
        host_network: bool,
    ) -> None:
        config = json.loads(json.dumps(self.image_config))
        process = config["process"]
        process["terminal"] = False
        if args is not None:
            process["args"] = list(args)
        # As a restricted pod: no capability at all, no privilege escalation.
        process["capabilities"] = {key: [] for key in process["capabilities"]}
        process["noNewPrivileges"] = True
        config["root"]["readonly"] = True
        mounts = config["mounts"]
        # /tmp as the pods have it: a small private file system, the only writable path.
        tmp = {"type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=64m"]}
        mounts.append({"destination": "/tmp", **tmp})  # noqa: S108
        for source, destination in binds:
            mounts.append({"destination": destination, "type": "bind", "source": str(source),
                           "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})  # fmt: skip
        if host_network:
            namespaces = config["linux"]["namespaces"]
            config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
        (self.path / "config.json").write_text(json.dumps(config, indent=1))

    def run(
        self,
        args: Sequence[str] | None = None,
        *,
        binds: Sequence[tuple[Path, str]] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the image to completion; its exit code, stdout and stderr."""
        self._config(args=args, binds=binds, host_network=False)
        name = f"mg-image-test-{uuid.uuid4().hex[:12]}"
        try:
            return subprocess.run(
                [tool("runc"), "--root", str(self.state), "run", "--bundle", str(self.path), name],
                capture_output=True, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            subprocess.run([tool("runc"), "--root", str(self.state), "delete", "--force", name],
                           capture_output=True, check=False)  # fmt: skip

    @contextlib.contextmanager
    def running(
        self,
        args: Sequence[str] | None = None,
        *,
        binds: Sequence[tuple[Path, str]] = (),
        log: Path,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Runs the image in the background on the host's network; stops it on exit."""
        self._config(args=args, binds=binds, host_network=True)
        name = f"mg-image-test-{uuid.uuid4().hex[:12]}"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [tool("runc"), "--root", str(self.state), "run", "--bundle", str(self.path), name],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            yield process
        finally:
            subprocess.run([tool("runc"), "--root", str(self.state), "kill", name, "KILL"],
                           capture_output=True, check=False)  # fmt: skip
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
                process.wait()
            subprocess.run([tool("runc"), "--root", str(self.state), "delete", "--force", name],
                           capture_output=True, check=False)  # fmt: skip


def wait_for_port(
    port: int, *, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the container exited ({process.returncode}): {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout}s: {log.read_text()}")
