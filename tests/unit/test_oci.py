"""The OCI image writer: the layout is what the image spec says, reproducible, and read back by
independent OCI tools (skopeo, umoci; hack/install-packages.sh installs them)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import oci

NAME = "localhost/modelguard/test:1.0"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run hack/install-packages.sh (make test does)"
    return path


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _tree(root: Path) -> Path:
    """A small directory with a file, an executable, a symlink, a hard link and a subdirectory."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("model\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF pretend")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "sh").symlink_to("tool")
    os.link(root / "bin" / "tool", root / "bin" / "tool2")
    (root / "empty").mkdir(mode=0o700)
    return root


def _build(tmp: Path, *, out: str = "image.tar", tree: Path | None = None) -> oci.Image:
    source = tree or _tree(tmp / "tree")
    return oci.build(
        layers=[
            oci.directory_entries(source),
            [
                oci.file("usr/local/bin/app", data=b"#!/usr/bin/python3\n", mode=0o755),
                oci.symlink("usr/bin/app", "../local/bin/app"),
            ],
        ],
        config=oci.Config(
            user="65532:65532",
            entrypoint=("/usr/local/bin/app",),
            cmd=("--help",),
            env=("PATH=/usr/bin", "LANG=C.UTF-8"),
            working_dir="/work",
            labels={"org.opencontainers.image.title": "test"},
        ),
        name=NAME,
        out=tmp / out,
    )


def test_the_layout_is_what_the_image_spec_says(tmp_path: Path) -> None:
    image = _build(tmp_path)
    members = _members(image.archive)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"

    # Every blob is named by the sha256 of its bytes.
    blobs = {name: data for name, data in members.items() if name.startswith("blobs/sha256/")}
    blobs = {n: d for n, d in blobs.items() if n != "blobs/sha256/"}
    for name, data in blobs.items():
        assert name == "blobs/sha256/" + hashlib.sha256(data).hexdigest()

    def blob(descriptor: dict[str, object]) -> bytes:
        data = blobs["blobs/sha256/" + str(descriptor["digest"]).removeprefix("sha256:")]
        assert len(data) == descriptor["size"]
        return data

    # One manifest, under the tag and under the digest, as containerd's import names images.
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == [NAME, f"localhost/modelguard/test@{image.digest}"]
    assert {m["digest"] for m in index["manifests"]} == {image.digest}
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1.0"
    manifest = json.loads(blob(index["manifests"][0]))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(blob(manifest["config"]))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert config["config"] == {
        "User": "65532:65532",
        "Entrypoint": ["/usr/local/bin/app"],
        "Cmd": ["--help"],
        "Env": ["PATH=/usr/bin", "LANG=C.UTF-8"],
        "WorkingDir": "/work",
        "Labels": {"org.opencontainers.image.title": "test"},
    }
    assert config["os"] == "linux"

    # Each layer is a gzip tar; the config lists the digests of the uncompressed tars.
    assert len(manifest["layers"]) == 2 == len(config["rootfs"]["diff_ids"])
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        plain = gzip.decompress(blob(layer))
        assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert [layer.digest for layer in image.layers] == [d["digest"] for d in manifest["layers"]]
    assert image.archive_size == image.archive.stat().st_size
    assert oci.manifest_digest(image.archive) == image.digest


def _layer_members(image: oci.Image, index: int) -> list[tarfile.TarInfo]:
    data = _members(image.archive)[str(image.layers[index].path)]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return tar.getmembers()


def test_layers_are_sorted_with_fixed_times_and_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    image = _build(tmp_path)
    first = _layer_members(image, 0)
    names = [m.name for m in first]
    assert names == ["bin", "bin/sh", "bin/tool", "bin/tool2", "empty", "etc", "etc/hostname"]
    assert {m.mtime for m in first} == {1700000000}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in first} == {(0, 0, "", "")}
    by_name = {m.name: m for m in first}
    assert by_name["bin/tool"].mode == 0o755
    assert by_name["etc/hostname"].mode == 0o644
    assert (by_name["empty"].isdir(), by_name["empty"].mode) == (True, 0o700)
    assert (by_name["bin/sh"].issym(), by_name["bin/sh"].linkname) == (True, "tool")
    assert (by_name["bin/tool2"].islnk(), by_name["bin/tool2"].linkname) == (True, "bin/tool")
    # Files given one by one get their parent directories.
    second = [m.name for m in _layer_members(image, 1)]
    assert second == ["usr", "usr/bin", "usr/bin/app", "usr/local", "usr/local/bin",
                      "usr/local/bin/app"]  # fmt: skip


def test_the_same_input_gives_the_same_digest(tmp_path: Path) -> None:
    first = _build(tmp_path / "a")
    # Same content, other owners, times and paths on the host.
    other = _tree(tmp_path / "b" / "elsewhere")
    for path in [other, *other.rglob("*")]:
        os.utime(path, (12345, 12345), follow_symlinks=False)
    second = _build(tmp_path / "b", tree=other)
    assert second.digest == first.digest
    assert second.archive.read_bytes() == first.archive.read_bytes()
    # One byte more and the digest changes.
    (other / "etc" / "hostname").write_text("model!\n")
    assert _build(tmp_path / "b", out="changed.tar", tree=other).digest != first.digest


def test_hard_links_point_at_the_path_written_first(tmp_path: Path) -> None:
    # Walk order and write order differ: a/z is walked before a/b/c but written after it.
    root = tmp_path / "t"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "z").write_text("x")
    os.link(root / "a" / "z", root / "a" / "b" / "c")
    layer = oci.directory_entries(root)
    blob = oci.write_layer(layer, tmp_path / "blobs")
    with tarfile.open(blob.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a", "a/b", "a/b/c", "a/z"]
        assert members[2].isfile()
        assert (members[3].islnk(), members[3].linkname) == (True, "a/b/c")


def test_owners_of_the_file_system_are_kept_on_request(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "shadow").write_text("")
    os.chown(root / "shadow", 0, 42)
    kept = {e.path: (e.uid, e.gid) for e in oci.directory_entries(root, owner=None)}
    assert kept["shadow"] == (0, 42)
    given = {e.path: (e.uid, e.gid) for e in oci.directory_entries(root, owner=(7, 8))}
    assert given["shadow"] == (7, 8)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("modelguard:1.0", "registry host"),  # would be looked up as docker.io/library/...
        ("localhost/ModelGuard:1.0", "lower case"),
        ("localhost/modelguard", "<registry host>/<path>:<tag>"),
        ("localhost/modelguard:bad tag", "not a valid tag"),
    ],
)
def test_names_a_node_would_not_find_are_refused(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(oci.ImageError, match=message):
        oci.build(layers=[], config=oci.Config(), name=name, out=tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/", "."])
def test_paths_outside_the_root_are_refused(path: str) -> None:
    with pytest.raises(oci.ImageError, match="inside the image root"):
        oci.file(path, data=b"")


def test_a_path_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(oci.ImageError, match="appears twice"):
        oci.write_layer([oci.file("a", data=b"1"), oci.file("/a", data=b"2")], tmp_path / "blobs")


def test_a_prebuilt_layer_is_reused_as_is(tmp_path: Path) -> None:
    blob = oci.write_layer([oci.file("etc/os-release", data=b"ID=test\n")], tmp_path / "cache")
    image = oci.build(
        layers=[blob, [oci.file("app", data=b"x")]],
        config=oci.Config(),
        name=NAME,
        out=tmp_path / "image.tar",
    )
    assert image.layers[0].digest == blob.digest
    assert blob.path.is_file()  # the cache entry stays where it was


def test_the_command_line_prints_the_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/true\n")
    tool.chmod(0o755)
    out = tmp_path / "cli.tar"
    argv = ["build", "--name", NAME, "--out", str(out), "--file", f"{tool}:/bin/tool",
            "--user", "65532:65532", "--entrypoint", "/bin/tool"]  # fmt: skip
    assert oci.main(argv) == 0
    digest = capsys.readouterr().out.strip()
    assert digest == oci.manifest_digest(out)
    assert oci.main(["digest", str(out)]) == 0
    assert capsys.readouterr().out.strip() == digest


def test_skopeo_reads_and_copies_the_archive(tmp_path: Path) -> None:
    image = _build(tmp_path)
    skopeo = _tool("skopeo")
    inspect = subprocess.run(
        [skopeo, "inspect", f"oci-archive:{image.archive}:1.0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(inspect.stdout)["Digest"] == image.digest
    config = subprocess.run(
        [skopeo, "inspect", "--config", f"oci-archive:{image.archive}:1.0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(config.stdout)["config"]["User"] == "65532:65532"
    # A copy reads every blob and checks it against its digest; the manifest stays the same.
    subprocess.run(
        [skopeo, "copy", "--quiet", f"oci-archive:{image.archive}:1.0", f"oci:{tmp_path}/copy:1.0"],
        check=True,
    )  # fmt: skip
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert [m["digest"] for m in copied["manifests"]] == [image.digest]


def test_umoci_unpacks_the_image_as_a_runtime_would(tmp_path: Path) -> None:
    image = _build(tmp_path)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(image.archive) as tar:
        tar.extractall(layout, filter="data")
    umoci = _tool("umoci")
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:1.0", str(bundle)], check=True,
                   capture_output=True)  # fmt: skip
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc" / "hostname").read_text() == "model\n"
    assert (rootfs / "bin" / "sh").readlink() == Path("tool")
    assert (rootfs / "bin" / "tool").stat().st_ino == (rootfs / "bin" / "tool2").stat().st_ino
    assert (rootfs / "usr" / "local" / "bin" / "app").stat().st_mode & 0o777 == 0o755
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["user"] == {"uid": 65532, "gid": 65532}
    assert runtime["process"]["args"] == ["/usr/local/bin/app", "--help"]
    assert runtime["process"]["cwd"] == "/work"


def test_a_damaged_blob_is_caught_by_an_independent_reader(tmp_path: Path) -> None:
    """The readers above check digests: a layer changed after the build fails to copy."""
    image = _build(tmp_path)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(image.archive) as tar:
        tar.extractall(layout, filter="data")
    damaged = layout / str(image.layers[1].path)
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    copy = subprocess.run(
        [_tool("skopeo"), "copy", "--quiet", f"oci:{layout}:1.0", f"oci:{tmp_path}/copy:1.0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert copy.returncode != 0
    assert "digest" in copy.stderr.lower()
