"""Generated files match their sources: a change to the pydantic models or the chart that was not
followed by `make generate` fails here, naming the stale files."""

from __future__ import annotations

import subprocess
import sys

import harness


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
