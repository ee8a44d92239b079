"""The sandbox (pause) image of the local node: upstream's pause.c, static, packed as upstream
packs it."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import images
import oci


def test_pause_is_upstreams_static_binary_run_as_upstream_runs_it(tmp_path: Path) -> None:
    image = images.pause_image(out=tmp_path / "pause.tar")
    assert image.name.startswith("localhost/modelguard/pause:3.")
    assert image.names[1] == f"localhost/modelguard/pause@{image.digest}"
    with tarfile.open(image.archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{image.digest[7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
        layer = tar.extractfile(f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}").read()  # type: ignore[union-attr]
    assert len(index["manifests"]) == 2
    assert config["config"]["User"] == "65535:65535"
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as files:
        pause = files.getmember("pause")
        binary = files.extractfile(pause).read()  # type: ignore[union-attr]
    assert pause.mode == 0o755
    # A static executable has no program interpreter: it runs in an image with nothing else.
    assert binary[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in binary
    extracted = tmp_path / "pause"
    extracted.write_bytes(binary)
    extracted.chmod(0o755)
    version = subprocess.run([extracted, "-v"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(f"pause.c v{image.name.rsplit(':', 1)[1]}-v1.")


def test_the_pause_binary_is_built_once(tmp_path: Path) -> None:
    first, version = images.pause_binary()
    stamp = first.stat().st_mtime_ns
    again, _ = images.pause_binary()
    assert (again, again.stat().st_mtime_ns) == (first, stamp)
    assert first.parent.name.startswith(f"pause-{version}-v1.")
    # The archive is rebuilt from it byte for byte.
    one = images.pause_image(out=tmp_path / "one.tar")
    two = images.pause_image(out=tmp_path / "two.tar")
    assert one.digest == two.digest == oci.manifest_digest(tmp_path / "two.tar")
