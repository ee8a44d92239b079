"""The example model server's image, run for real with runc on a read-only model volume: it
serves the bytes it loaded, with the root digest model_signing signed, and its write fails."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import imagerun
import pytest

import images
import oci
import signedmodel


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_image_serves_the_signed_digest_from_a_read_only_volume(
    model_server_image: oci.Image, tmp_path: Path
) -> None:
    assert model_server_image.names[1].startswith("localhost/modelguard/model-server@sha256:")
    # "a-b/x" sorts before "a/y" by code point but after it by path components (model_signing's
    # order): the digest matches only if the server orders as the signer did.
    files = {**signedmodel.demo_files("v2"), "a-b/x": b"one", "a/y": b"two"}
    model = signedmodel.write_model(tmp_path / "model", files)
    private, _ = signedmodel.generate_key(tmp_path)
    signature = signedmodel.sign(model, private_key=private, signature=tmp_path / "model.sig")
    bundle = imagerun.Bundle(
        model_server_image.archive, tag=images.project_version(), directory=tmp_path / "run"
    )
    port = _free_port()
    log = tmp_path / "server.log"
    args = ["/usr/local/bin/model-server", "--port", str(port), "--address", "127.0.0.1"]
    with bundle.running(args, binds=[(model, "/models")], log=log) as process:
        imagerun.wait_for_port(port, process=process, log=log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            answer = json.load(response)
            header = response.headers["X-Model-Root-Digest"]
        url = f"http://127.0.0.1:{port}/files/model.safetensors"
        with urllib.request.urlopen(url, timeout=10) as response:
            served = response.read()
    assert answer["rootDigest"] == header == signedmodel.root_digest(signature)
    assert served == files["model.safetensors"]
    paths = [f["path"] for f in answer["files"]]
    assert paths == ["a/y", "a-b/x", "config.json", "model.safetensors", "tokenizer/vocab.json"]
    assert answer["volumeWrite"]["failed"] is True
    assert "Read-only file system" in answer["volumeWrite"]["error"]
    assert "Read-only file system" in log.read_text()
    assert not (model / ".model-server-write-probe").exists()


def test_the_server_runs_as_nonroot(model_server_image: oci.Image) -> None:
    with pytest.raises(oci.ImageError):
        oci.split_name("model-server:1")  # the image's name carries a registry host
    import tarfile  # noqa: PLC0415

    with tarfile.open(model_server_image.archive) as tar:
        manifest = json.load(tar.extractfile(f"blobs/sha256/{model_server_image.digest[7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/model-server"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
