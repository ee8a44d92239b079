"""The PVC source over a real directory: listing, bounded reads, streaming, and refusals
(symlinks anywhere, special files, missing claim or file)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from modelguard import sources
from modelguard.sources import base, errors


@pytest.fixture
def mount_root(tmp_path: Path) -> Path:
    model = tmp_path / "store" / "m" / "1"
    (model / "tokenizer").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"w" * 3_000_000)
    (model / "tokenizer" / "vocab.json").write_bytes(b"{}")
    (model / "model.sig").write_bytes(b"sig")
    return tmp_path


def open_pvc(mount_root: Path, uri: str = "pvc://store/m/1") -> base.Source:
    return sources.open_source(uri, mount_root=mount_root)


async def test_lists_every_file_sorted(mount_root: Path) -> None:
    async with open_pvc(mount_root) as source:
        assert await source.list_files() == [
            base.ObjectInfo("model.safetensors", 3_000_000),
            base.ObjectInfo("model.sig", 3),
            base.ObjectInfo("tokenizer/vocab.json", 2),
        ]


async def test_read_small_and_its_cap(mount_root: Path) -> None:
    source = open_pvc(mount_root)
    assert await source.read_small("model.sig", max_bytes=3) == b"sig"
    with pytest.raises(errors.TooLarge):
        await source.read_small("model.sig", max_bytes=2)


async def test_stream_returns_the_bytes_in_bounded_chunks(mount_root: Path) -> None:
    source = open_pvc(mount_root)
    chunks = [chunk async for chunk in source.stream("model.safetensors", chunk_size=1 << 20)]
    assert b"".join(chunks) == b"w" * 3_000_000
    assert max(len(chunk) for chunk in chunks) <= 1 << 20


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_stopping_a_stream_early_closes_the_file(mount_root: Path) -> None:
    source = open_pvc(mount_root)
    before = open_descriptors()
    async with contextlib.aclosing(source.stream("model.safetensors", chunk_size=1024)) as stream:
        async for _ in stream:
            break
    assert open_descriptors() == before


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("missing.bin", errors.MissingFile, id="missing"),
        pytest.param("tokenizer/missing.json", errors.MissingFile, id="missing-nested"),
        pytest.param("model.sig/x", errors.MissingFile, id="file-as-folder"),
        pytest.param("tokenizer", errors.UnsafePath, id="a-directory"),
        pytest.param("../1/model.sig", errors.UnsafePath, id="dotdot"),
        pytest.param("/etc/passwd", errors.UnsafePath, id="absolute"),
    ],
)
async def test_refused_reads(mount_root: Path, name: str, error: type[errors.SourceError]) -> None:
    with pytest.raises(error):
        await open_pvc(mount_root).read_small(name, max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("link", "target"),
    [
        pytest.param("evil.bin", "/etc/passwd", id="file-link-out"),
        pytest.param("inner.bin", "model.sig", id="file-link-in"),
        pytest.param("linked-dir", "tokenizer", id="dir-link"),
    ],
)
async def test_symlinks_are_refused_by_list_and_read(
    mount_root: Path, link: str, target: str
) -> None:
    (mount_root / "store" / "m" / "1" / link).symlink_to(target)
    source = open_pvc(mount_root)
    with pytest.raises(errors.UnsafePath, match="symlink"):
        await source.list_files()
    name = f"{link}/vocab.json" if link == "linked-dir" else link
    with pytest.raises(errors.UnsafePath, match="symlink"):
        await source.read_small(name, max_bytes=1 << 20)
    with pytest.raises(errors.UnsafePath, match="symlink"):
        async for _ in source.stream(name):
            pass


async def test_symlink_in_the_source_path_is_refused(mount_root: Path) -> None:
    (mount_root / "store" / "alias").symlink_to("m")
    with pytest.raises(errors.UnsafePath):
        await open_pvc(mount_root, "pvc://store/alias/1").list_files()


async def test_special_files_are_refused(mount_root: Path) -> None:
    os.mkfifo(mount_root / "store" / "m" / "1" / "pipe")
    source = open_pvc(mount_root)
    with pytest.raises(errors.UnsafePath, match="not a regular file"):
        await source.list_files()
    with pytest.raises(errors.UnsafePath, match="not a regular file"):
        await source.read_small("pipe", max_bytes=10)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("pvc://other/m/1", id="claim-not-mounted"),
        pytest.param("pvc://store/m/2", id="no-dir"),
    ],
)
async def test_missing_source(mount_root: Path, uri: str) -> None:
    with pytest.raises(errors.SourceNotFound):
        await open_pvc(mount_root, uri).list_files()


async def test_too_many_files(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    for index in range(5):
        (folder / f"f{index}").write_bytes(b"")
    source = sources.pvc.PvcSource(
        sources.locations.PvcLocation(claim="store", path=""), mount_root=tmp_path, max_files=4
    )
    with pytest.raises(errors.TooLarge):
        await source.list_files()
