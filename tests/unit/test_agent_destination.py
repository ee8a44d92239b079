"""The model volume: files created only inside it and never over an existing one, sealed read-only,
and cleared completely, sealed or not."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from modelguard.agent import destination, failures


def write(dest: destination.Destination, name: str, content: bytes) -> list[bytes]:
    out = dest.create(name, hash_type="sha256", shard_size=None)
    out.write([content[:3], content[3:]])
    return [resource.digest for resource in out.finish()]


def test_files_are_written_hashed_and_sealed(tmp_path: Path) -> None:
    dest = destination.Destination(tmp_path / "model")
    dest.prepare()
    assert write(dest, "a/b/c.bin", b"hello world") == [hashlib.sha256(b"hello world").digest()]
    write(dest, "top.json", b"{}")
    dest.seal()
    assert (tmp_path / "model" / "a" / "b" / "c.bin").read_bytes() == b"hello world"
    for path in [dest.root, dest.root / "a", dest.root / "a" / "b"]:
        assert stat.S_IMODE(path.stat().st_mode) == destination.DIR_MODE
    assert stat.S_IMODE((dest.root / "top.json").stat().st_mode) == destination.FILE_MODE


def test_a_mount_point_of_another_user_is_filled_and_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An emptyDir's mount point is the kubelet's (root, the pod's fsGroup, mode 2777): the agent,
    another user, may not chmod it (EPERM on a real node), and fills and seals what it holds."""
    root = tmp_path / "models"
    root.mkdir()
    root.chmod(0o2777)
    (root / "left-over.bin").write_bytes(b"from a previous run")
    owner = root.stat().st_uid
    monkeypatch.setattr(destination.os, "geteuid", lambda: owner + 1)
    dest = destination.Destination(root)
    dest.prepare()
    assert list(root.iterdir()) == []
    write(dest, "a/b.bin", b"hello")
    dest.seal()
    assert stat.S_IMODE(root.stat().st_mode) == 0o2777
    assert stat.S_IMODE((root / "a").stat().st_mode) == destination.DIR_MODE
    assert stat.S_IMODE((root / "a" / "b.bin").stat().st_mode) == destination.FILE_MODE
    dest.clear()
    assert list(root.iterdir()) == []
    assert stat.S_IMODE(root.stat().st_mode) == 0o2777


def test_prepare_clears_a_sealed_volume(tmp_path: Path) -> None:
    dest = destination.Destination(tmp_path)
    dest.prepare()
    write(dest, "x/y.bin", b"1")
    dest.seal()
    dest.prepare()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    dest = destination.Destination(tmp_path)
    dest.prepare()
    write(dest, "a.bin", b"1")
    with pytest.raises(failures.AgentError) as caught:
        dest.create("a.bin", hash_type="sha256", shard_size=None)
    assert caught.value.reason == failures.DESTINATION_ERROR


def test_a_symlink_in_the_way_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = destination.Destination(tmp_path / "model")
    dest.prepare()
    (dest.root / "sub").symlink_to(outside)
    (dest.root / "leaf.bin").symlink_to(outside / "leaf.bin")
    for name in ("sub/x.bin", "leaf.bin"):
        with pytest.raises(failures.AgentError):
            dest.create(name, hash_type="sha256", shard_size=None)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "a/./b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    dest = destination.Destination(tmp_path)
    dest.prepare()
    with pytest.raises(failures.AgentError) as caught:
        dest.create(name, hash_type="sha256", shard_size=None)
    assert caught.value.reason == "UnsafePath"


def test_a_destination_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(failures.AgentError) as caught:
        destination.Destination(tmp_path / "file").prepare()
    assert caught.value.reason == failures.DESTINATION_ERROR


def test_a_write_after_close_is_refused_not_sent_to_a_reused_descriptor(tmp_path: Path) -> None:
    dest = destination.Destination(tmp_path)
    dest.prepare()
    out = dest.create("a.bin", hash_type="sha256", shard_size=None)
    out.close()
    with pytest.raises(ValueError, match="after close"):
        out.write([b"late"])
    assert (tmp_path / "a.bin").stat().st_size == 0
