"""Generated files match their sources: a change to the pydantic models or the chart that was not
followed by `make generate` fails here, naming the stale files."""

from __future__ import annotations

import subprocess
import sys

import harness
import yaml


def test_generated_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(harness.REPO_ROOT / "hack" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_install_manifest_is_the_chart_rendered() -> None:
    install = (harness.REPO_ROOT / "manifests" / "install.yaml").read_text()
    assert "kind: CustomResourceDefinition" in install
    assert "name: modeldeployments.modelguard.dev" in install
    assert "pod-security.kubernetes.io/enforce: restricted" in install


def test_install_manifest_carries_no_audit_key() -> None:
    # A key in a published manifest would be every user's key: anyone could seal records with it.
    install = (harness.REPO_ROOT / "manifests" / "install.yaml").read_text()
    documents = [doc for doc in yaml.safe_load_all(install) if doc]
    assert not [doc for doc in documents if doc["kind"] == "Secret"]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["audit-key"]["secret"]["secretName"] == "modelguard-audit-key"
    assert "kubectl create secret generic modelguard-audit-key" in install
