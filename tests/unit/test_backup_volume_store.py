"""The volume store: each object written once and read-only, never replaced, never reached
through a symlink; `put_immutable`, the interface audit checkpoints use, is idempotent."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import pathlib
import typing

import pytest

from modelguard.backup import stores
from modelguard.sources import errors

UNTIL = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def _store(root: pathlib.Path) -> stores.VolumeStore:
    return stores.open_volume(root, description="BackupStore v (volume claim v)")


def test_put_immutable_once_then_the_same_bytes_again(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)
    first = asyncio.run(store.put_immutable("checkpoints/1.json", b"one", retain_until=UNTIL))
    assert first.sha256 == hashlib.sha256(b"one").hexdigest()
    path = tmp_path / "checkpoints" / "1.json"
    assert path.read_bytes() == b"one"
    assert path.stat().st_mode & 0o777 == 0o444
    again = asyncio.run(store.put_immutable("checkpoints/1.json", b"one", retain_until=UNTIL))
    assert again == first
    with pytest.raises(errors.ObjectExists, match="never overwritten"):
        asyncio.run(store.put_immutable("checkpoints/1.json", b"two", retain_until=UNTIL))
    assert path.read_bytes() == b"one"
    # No temporary file is left behind, whatever happened.
    assert sorted(p.name for p in path.parent.iterdir()) == ["1.json"]


def test_a_stream_that_is_not_what_it_announced_stores_nothing(tmp_path: pathlib.Path) -> None:
    store = _store(tmp_path)

    async def chunks() -> typing.AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    with pytest.raises(errors.SourceError):
        asyncio.run(store.put("objects/x", chunks, size=6, sha256="0" * 64, retain_until=UNTIL))
    assert list((tmp_path / "objects").iterdir()) == []


def test_a_symlink_in_a_key_is_refused(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    root.mkdir()
    (root / "objects").symlink_to(outside)
    store = _store(root)
    with pytest.raises(errors.UnsafePath):
        asyncio.run(store.put_immutable("objects/x", b"x", retain_until=UNTIL))
    assert list(outside.iterdir()) == []
    with pytest.raises(errors.UnsafePath):
        asyncio.run(store.put_immutable("../escape", b"x", retain_until=UNTIL))
