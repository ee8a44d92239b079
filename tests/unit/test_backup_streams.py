"""Bytes checked as they pass: a stream whose file does not verify never hands on its last chunk,
so an upload of a known length never completes; refusals name the file."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator

import pytest

from modelguard.backup import streams
from modelguard.trust import digests, reasons

DATA = bytes(range(256)) * 40_000  # about 10 MiB: more than two hashing batches


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _expected(signed: bytes, *, size: int | None = None) -> streams.Expected:
    return streams.Expected(
        name="model/w.bin (object objects/sha256/x)",
        path="w.bin",
        resources=(digests.Resource("w.bin", "sha256", hashlib.sha256(signed).digest()),),
        size=len(signed) if size is None else size,
        sha256=None,
    )


def _pass_on(data: bytes, expected: streams.Expected) -> tuple[bytes, BaseException | None]:
    """What a writer receives of `data`, and how the stream ended."""

    async def run() -> tuple[bytes, BaseException | None]:
        hashing = streams.Hashing(1)
        checked = streams.Checked(_chunks(data), streams.FileCheck(expected), hashing)
        received = bytearray()
        try:
            async for chunk in checked:
                received += chunk
        except Exception as error:
            return bytes(received), error
        finally:
            hashing.close()
        return bytes(received), None

    return asyncio.run(run())


def test_a_verified_file_passes_whole() -> None:
    received, failure = _pass_on(DATA, _expected(DATA))
    assert failure is None
    assert received == DATA


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (DATA[:-1] + b"X", "DigestMismatch"),
        (b"X" + DATA[1:], "DigestMismatch"),
        (DATA + b"X", "ReadBackMismatch"),
        (DATA[:-1], "ReadBackMismatch"),
    ],
    ids=["the last byte changed", "the first byte changed", "one byte more", "one byte less"],
)
def test_a_file_that_does_not_verify_never_reaches_its_end(data: bytes, reason: str) -> None:
    received, failure = _pass_on(data, _expected(DATA))
    assert failure is not None
    assert streams.describe(failure)[0] == reason
    assert "model/w.bin" in streams.describe(failure)[1]
    # The writer never got all of it: an upload of the announced length cannot complete.
    assert len(received) < len(DATA)


def test_the_recorded_sha256_is_checked_too() -> None:
    expected = streams.Expected(
        name="context.json", path="context.json", resources=None, size=3, sha256="0" * 64
    )
    received, failure = _pass_on(b"abc", expected)
    assert isinstance(failure, reasons.VerificationError)
    assert "context.json" in failure.message
    assert received == b""
