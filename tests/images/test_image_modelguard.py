"""The ModelGuard image, run for real with runc: non-root, read-only root file system, no shell,
and `modelguard verify` checks a model signed with the reference implementation."""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
from pathlib import Path

import imagerun
import pytest

import images
import oci
import signedmodel


def _layer_members(image: oci.Image) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(image.archive) as archive:
        for layer in image.layers:
            data = archive.extractfile(str(layer.path)).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
                members.update({m.name: m for m in tar.getmembers()})
    return members


@pytest.fixture(scope="module")
def bundle(
    modelguard_image: oci.Image, tmp_path_factory: pytest.TempPathFactory
) -> imagerun.Bundle:
    return imagerun.Bundle(
        modelguard_image.archive,
        tag=images.project_version(),
        directory=tmp_path_factory.mktemp("mg"),
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A model signed with model_signing: (its folder, a folder of model.sig and the key, its
    root digest)."""
    root = tmp_path_factory.mktemp("signed")
    keys = root / "keys"
    keys.mkdir()
    private, public_pem = signedmodel.generate_key(keys)
    (keys / "signer.pub").write_text(public_pem)
    private.chmod(0o644)  # read by the image's non-root user; a throwaway test key
    model = signedmodel.write_model(root / "model", signedmodel.demo_files("v1"))
    signature = signedmodel.sign(model, private_key=private, signature=keys / "model.sig")
    return model, keys, signedmodel.root_digest(signature)


def test_the_image_runs_modelguard_as_a_numeric_non_root_user(modelguard_image: oci.Image) -> None:
    name = modelguard_image.name
    assert name == f"ghcr.io/modelguard-dev/modelguard:{images.project_version()}"
    assert (
        modelguard_image.names[1] == f"ghcr.io/modelguard-dev/modelguard@{modelguard_image.digest}"
    )
    with tarfile.open(modelguard_image.archive) as tar:
        manifest = json.load(tar.extractfile(f"blobs/sha256/{modelguard_image.digest[7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/modelguard"]
    assert "PATH=/usr/local/bin:/usr/bin" in config["config"]["Env"]


def test_no_shell_no_package_tool_no_setuid_file(modelguard_image: oci.Image) -> None:
    members = _layer_members(modelguard_image)
    bins = ("bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/local/bin/", "usr/local/sbin/")
    commands = {n for n in members if n.startswith(bins)}
    assert commands == {"usr/bin/python3", "usr/bin/python3.11", "usr/local/bin/modelguard"}
    shells = {
        "sh",
        "bash",
        "dash",
        "ash",
        "zsh",
        "busybox",
        "dpkg",
        "apt",
        "apt-get",
        "perl",
        "tar",
    }
    assert not {n for n, m in members.items() if m.isfile() and n.rsplit("/", 1)[-1] in shells}
    assert not {
        n for n, m in members.items() if m.isfile() and m.mode & (stat.S_ISUID | stat.S_ISGID)
    }
    # Scanners find the Debian packages the image holds.
    status = {n.rsplit("/", 1)[-1] for n in members if n.startswith("var/lib/dpkg/status.d/")}
    assert {"libc6", "libssl3", "python3.11-minimal", "libpython3.11-stdlib"} <= status
    assert "dpkg" not in status


def test_modelguard_runs_as_nonroot_on_a_read_only_root(bundle: imagerun.Bundle) -> None:
    helped = bundle.run(["modelguard", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "verify" in helped.stdout
    who = bundle.run(
        ["python3", "-I", "-c",
         "import os\ntry:\n open('/written', 'w')\nexcept OSError as e:\n print(e.strerror)\n"
         "print(os.getuid(), os.getgid())"]
    )  # fmt: skip
    assert who.stdout.split("\n")[:2] == ["Read-only file system", "65532 65532"], who.stderr


def test_there_is_no_shell_to_run(bundle: imagerun.Bundle) -> None:
    shell = bundle.run(["/bin/sh", "-c", "true"])
    assert shell.returncode != 0
    assert "no such file" in (shell.stderr + shell.stdout).lower()


def test_verify_in_the_image_accepts_the_signed_model(
    bundle: imagerun.Bundle, signed: tuple[Path, Path, str]
) -> None:
    model, keys, digest = signed
    verified = bundle.run(
        ["modelguard", "verify", "--signature", "/keys/model.sig", "--public-key",
         "/keys/signer.pub", "/models"],
        binds=[(model, "/models"), (keys, "/keys")],
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert digest in verified.stdout


def test_verify_in_the_image_refuses_a_changed_byte(
    bundle: imagerun.Bundle, signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, keys, _ = signed
    changed = tmp_path / "model"
    signedmodel.write_model(changed, signedmodel.demo_files("v1"))
    weights = changed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    refused = bundle.run(
        ["modelguard", "verify", "--signature", "/keys/model.sig", "--public-key",
         "/keys/signer.pub", "/models"],
        binds=[(changed, "/models"), (keys, "/keys")],
    )  # fmt: skip
    assert refused.returncode == 1
    assert "model.safetensors" in refused.stdout + refused.stderr


def test_a_rebuild_gives_the_same_digest(modelguard_image: oci.Image, tmp_path: Path) -> None:
    again = images.modelguard_image(out=tmp_path / "again.oci.tar")
    assert again.digest == modelguard_image.digest
    assert again.archive.read_bytes() == modelguard_image.archive.read_bytes()
