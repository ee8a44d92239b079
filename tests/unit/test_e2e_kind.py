"""`make e2e-kind` needs Docker; without it, it stops at once and says what to run instead."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "e2e-kind.sh"


def _run(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_docker_it_stops_and_names_the_alternative(tmp_path: Path) -> None:
    # PATH holds what the script needs before its check, not docker.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dirname", "cat", "tail", "printf"):
        found = next(Path(d) / name for d in ("/usr/bin", "/bin") if (Path(d) / name).exists())
        (tools / name).symlink_to(found)
    done = _run(str(tools))
    assert done.returncode == 1
    assert "needs Docker: no docker command on PATH" in done.stderr
    assert "make test" in done.stderr


def test_with_a_docker_client_but_no_engine_it_says_so(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    docker = tools / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    done = _run(f"{tools}:/usr/bin:/bin")
    assert done.returncode == 1
    assert "needs a running Docker engine" in done.stderr
    assert "Cannot connect to the Docker daemon" in done.stderr
    # Nothing was built or created before the check.
    assert not (REPO / ".e2e-kind").exists() or not any((REPO / ".e2e-kind").iterdir())
