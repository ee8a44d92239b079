"""Test helpers that drive a real cluster the way a user does: kubectl, helm and identities."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import time
import typing
from pathlib import Path

import yaml

import localcluster
import localoperator

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modelguard"
# The chart requires its image pinned by digest; kwok runs no containers, so any digest serves.
IMAGE_DIGEST = "sha256:" + "0" * 64
IMAGE_REPOSITORY = "registry.example/modelguard"
# The agent image the tests' operator runs (conftest.AGENT_IMAGE) is the chart's image, as in a
# real install: the chart's admission policy admits the operator's pods only with that image.
PINNED_IMAGE = (
    "--set",
    f"image.digest={IMAGE_DIGEST}",
    "--set",
    f"image.repository={IMAGE_REPOSITORY}",
)

Manifest = dict[str, typing.Any]
# kubectl flags acting as a member of the break-glass group (with the rights of a cluster admin):
# who may still write a model's children directly, as in an incident. The chart's admission
# policy refuses such writes from anyone else, cluster admins included.
BREAK_GLASS = (
    "--as=oncall@example.com",
    "--as-group=modelguard:break-glass",
    "--as-group=system:masters",
)


class CommandFailed(AssertionError):
    """A kubectl or helm call failed; the message carries its stderr."""


@dataclasses.dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one kubeconfig (one identity)."""

    kubeconfig: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = localcluster.tool("kubectl", self.kubeconfig, *args, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise CommandFailed(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> Manifest:
        loaded: Manifest = json.loads(self.run(*args, "-o", "json").stdout)
        return loaded

    def get(self, kind: str, name: str, *, namespace: str) -> Manifest | None:
        result = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise CommandFailed(f"kubectl get {kind} {name}: {result.stderr.strip()}")
        loaded: Manifest = json.loads(result.stdout)
        return loaded

    def apply(
        self,
        *manifests: Manifest | str,
        namespace: str | None = None,
        check: bool = True,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        documents = [m if isinstance(m, str) else yaml.safe_dump(m) for m in manifests]
        args = ["apply", "-f", "-", *extra]
        if namespace:
            args += ["-n", namespace]
        return self.run(*args, input="\n---\n".join(documents), check=check)


@dataclasses.dataclass(frozen=True)
class Helm:
    kubeconfig: Path

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = localcluster.tool("helm", self.kubeconfig, *args, timeout=timeout)
        if check and result.returncode != 0:
            raise CommandFailed(f"helm {' '.join(args)}: {result.stderr.strip()}")
        return result


def eventually(
    check: typing.Callable[[], None], *, timeout: float = 60, interval: float = 0.25
) -> None:
    """Calls `check` until it stops raising AssertionError; re-raises the last one at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
        else:
            return


def condition(body: Manifest | None, type: str) -> Manifest:
    for found in ((body or {}).get("status") or {}).get("conditions") or []:
        if found["type"] == type:
            return typing.cast(Manifest, found)
    return {}


def model_events(kubectl: Kubectl, namespace: str, name: str) -> list[Manifest]:
    """The events.k8s.io Events about the ModelDeployment `name`."""
    items: list[Manifest] = kubectl.json(
        "get",
        "events.events.k8s.io",
        "-n",
        namespace,
        f"--field-selector=regarding.name={name},regarding.kind=ModelDeployment",
    )["items"]
    return items


def token_kubeconfig(
    admin: Kubectl,
    *,
    namespace: str,
    service_account: str,
    path: Path,
    token_file: Path | None = None,
) -> Kubectl:
    """A kubectl acting as a ServiceAccount, with a short-lived token from the TokenRequest API,
    or reading its token from `token_file` (a `localoperator.RenewedToken`'s)."""
    return Kubectl(
        localoperator.service_account_kubeconfig(
            admin_kubeconfig=admin.kubeconfig,
            namespace=namespace,
            service_account=service_account,
            path=path,
            token_file=token_file,
        )
    )


def decode_secret(data: str) -> str:
    return base64.b64decode(data).decode()
