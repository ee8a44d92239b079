"""The S3 source against a real S3-compatible server (MinIO from the `s3` fixture): listing,
bounded reads, streaming large objects in parallel, and every failure typed with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import typing
from pathlib import Path

import pytest

import localcluster
import s3server
from modelguard import sources
from modelguard.sources import base, errors, locations, s3, sigv4

MIB = 1 << 20


def settings_for(server: s3server.S3Server, **overrides: typing.Any) -> s3.S3Settings:
    root = s3.S3Settings(
        credentials=server.credentials, region=server.region, endpoint=server.endpoint
    )
    return dataclasses.replace(root, **overrides)


def open_s3(
    server: s3server.S3Server, uri: str, *, attempts: int = 3, **overrides: typing.Any
) -> base.Source:
    return sources.open_source(
        uri,
        s3_settings=settings_for(server, **overrides),
        transport_settings=base.Transport(attempts=attempts, connect_timeout=5),
    )


async def test_lists_the_folder_only_sorted_with_sizes(
    s3: s3server.S3Server, s3_bucket: str
) -> None:
    for key, data in {
        "m/1/model.safetensors": b"x" * 1000,
        "m/1/tokenizer/vocab.json": b"{}",
        "m/1/a b/ü+.txt": b"odd",
        "m/1/empty": b"",
        "m/1/dir/": b"",  # a console's folder marker
        "m/10/other.bin": b"not in m/1/",
        "m/1.txt": b"sibling",
    }.items():
        s3.put_object(s3_bucket, key, data)
    async with open_s3(s3, f"s3://{s3_bucket}/m/1/") as source:
        assert await source.list_files() == [
            base.ObjectInfo("a b/ü+.txt", 3),
            base.ObjectInfo("empty", 0),
            base.ObjectInfo("model.safetensors", 1000),
            base.ObjectInfo("tokenizer/vocab.json", 2),
        ]


async def test_listing_follows_continuation_pages(s3: s3server.S3Server, s3_bucket: str) -> None:
    names = [f"f{index:02d}" for index in range(7)]
    for name in names:
        s3.put_object(s3_bucket, f"m/{name}", name.encode())
    s3_source = sources.s3.S3Source(
        locations.S3Location(bucket=s3_bucket, prefix="m/"),
        settings=settings_for(s3),
        transport_settings=base.Transport(),
        page_size=2,
    )
    async with s3_source:
        assert [info.name for info in await s3_source.list_files()] == names


async def test_read_small_returns_the_bytes_and_refuses_more_than_the_cap(
    s3: s3server.S3Server, s3_bucket: str
) -> None:
    s3.put_object(s3_bucket, "m/model.sig", b"s" * 100)
    async with open_s3(s3, f"s3://{s3_bucket}/m/") as source:
        assert await source.read_small("model.sig", max_bytes=100) == b"s" * 100
        with pytest.raises(errors.TooLarge, match="100 bytes"):
            await source.read_small("model.sig", max_bytes=99)


async def test_open_file_reads_a_signature_uri(s3: s3server.S3Server, s3_bucket: str) -> None:
    s3.put_object(s3_bucket, "m/1/model.sig", b"bundle")
    source, name = sources.open_file(
        f"s3://{s3_bucket}/m/1/model.sig", s3_settings=settings_for(s3)
    )
    async with source:
        assert await source.read_small(name, max_bytes=1024) == b"bundle"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "shard.bin"
    with path.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MIB))
    return path


async def test_streams_a_64_mib_object_with_the_right_bytes_in_bounded_chunks(
    s3: s3server.S3Server, s3_bucket: str, big_file: Path
) -> None:
    s3.put_object(s3_bucket, "m/shard.bin", big_file)
    expected = await asyncio.to_thread(lambda: hashlib.sha256(big_file.read_bytes()).hexdigest())
    async with open_s3(s3, f"s3://{s3_bucket}/m/") as source:
        digest = hashlib.sha256()
        total = 0
        async for chunk in source.stream("shard.bin", chunk_size=MIB):
            assert 0 < len(chunk) <= MIB
            digest.update(chunk)
            total += len(chunk)
    assert total == 64 * MIB
    assert digest.hexdigest() == expected


async def test_streams_several_files_in_parallel(s3: s3server.S3Server, s3_bucket: str) -> None:
    contents = {f"shard-{index}.bin": os.urandom(4 * MIB + index) for index in range(6)}
    for name, data in contents.items():
        s3.put_object(s3_bucket, f"m/{name}", data)

    async def fetch(source: base.Source, name: str) -> bytes:
        return b"".join([chunk async for chunk in source.stream(name, chunk_size=256 << 10)])

    async with open_s3(s3, f"s3://{s3_bucket}/m/") as source:
        fetched = await asyncio.gather(*(fetch(source, name) for name in contents))
    assert dict(zip(contents, fetched, strict=True)) == contents


async def test_an_early_stop_releases_the_connection(s3: s3server.S3Server, s3_bucket: str) -> None:
    s3.put_object(s3_bucket, "m/a.bin", b"a" * (4 * MIB))
    source = sources.open_source(
        f"s3://{s3_bucket}/m/",
        s3_settings=settings_for(s3),
        # One connection: a leaked one would make the next request wait for ever.
        transport_settings=base.Transport(max_connections=1),
    )
    async with source:
        for _ in range(3):
            async with contextlib.aclosing(source.stream("a.bin", chunk_size=1024)) as stream:
                async for _chunk in stream:
                    break
        assert await asyncio.wait_for(source.read_small("a.bin", max_bytes=8 * MIB), 10)


async def test_a_missing_object_is_missing_file(s3: s3server.S3Server, s3_bucket: str) -> None:
    async with open_s3(s3, f"s3://{s3_bucket}/m/") as source:
        with pytest.raises(errors.MissingFile, match=f"s3://{s3_bucket}/m/nope.bin"):
            await source.read_small("nope.bin", max_bytes=10)
        with pytest.raises(errors.MissingFile):
            async for _ in source.stream("nope.bin"):
                pass


async def test_a_missing_bucket_is_source_not_found(s3: s3server.S3Server) -> None:
    async with open_s3(s3, "s3://no-such-bucket-here/m/") as source:
        with pytest.raises(errors.SourceNotFound, match="no-such-bucket-here"):
            await source.list_files()


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        pytest.param("wrong-secret", "SignatureDoesNotMatch", id="wrong-secret"),
        pytest.param("unknown-key", "InvalidAccessKeyId", id="unknown-access-key"),
        pytest.param("anonymous", "AccessDenied", id="anonymous"),
    ],
)
async def test_bad_credentials_are_source_denied(
    s3: s3server.S3Server, s3_bucket: str, credentials: str, code: str
) -> None:
    s3.put_object(s3_bucket, "m/model.sig", b"sig")
    keys = {
        "wrong-secret": sigv4.Credentials(s3.access_key, "not-the-secret"),
        "unknown-key": sigv4.Credentials("nobody", s3.secret_key),
        "anonymous": None,
    }[credentials]
    async with open_s3(s3, f"s3://{s3_bucket}/m/", credentials=keys) as source:
        for call in (source.list_files(), source.read_small("model.sig", max_bytes=10)):
            with pytest.raises(errors.SourceDenied, match=code) as raised:
                await call
            # Denials end up in conditions and Events: no secret in them, ever.
            assert s3.secret_key not in str(raised.value)
            assert raised.value.reason == "SourceDenied"


@pytest.mark.parametrize("attempts", [pytest.param(1, id="once"), pytest.param(3, id="retried")])
async def test_a_closed_port_is_source_unreachable(attempts: int) -> None:
    port = localcluster.free_port()
    source = sources.open_source(
        "s3://models/m/",
        s3_settings=s3.S3Settings(
            credentials=sigv4.Credentials("a", "b"), endpoint=f"http://127.0.0.1:{port}"
        ),
        transport_settings=base.Transport(attempts=attempts),
    )
    async with source:
        with pytest.raises(errors.SourceUnreachable, match="cannot connect"):
            await source.list_files()
        with pytest.raises(errors.SourceUnreachable):
            async for _ in source.stream("model.bin"):
                pass


async def test_a_name_that_does_not_resolve_is_source_unreachable() -> None:
    source = sources.open_source(
        "s3://models/m/",
        s3_settings=s3.S3Settings(endpoint="http://no-such-host.invalid:9000"),
        transport_settings=base.Transport(attempts=1),
    )
    async with source:
        with pytest.raises(errors.SourceUnreachable):
            await source.read_small("model.sig", max_bytes=10)


async def test_tls_to_a_plain_http_server_is_source_unreachable(s3: s3server.S3Server) -> None:
    https_endpoint = s3.endpoint.replace("http://", "https://")
    async with open_s3(s3, "s3://models/m/", attempts=1, endpoint=https_endpoint) as source:
        with pytest.raises(errors.SourceUnreachable, match="TLS"):
            await source.list_files()


async def test_a_stopped_server_is_source_unreachable(tmp_path: Path) -> None:
    server = s3server.S3Server(tmp_path / "s3")
    server.start()
    server.create_bucket("models")
    server.put_object("models", "m/model.sig", b"sig")
    source = open_s3(server, "s3://models/m/", attempts=1)
    async with source:
        assert await source.read_small("model.sig", max_bytes=10) == b"sig"
        server.stop()
        with pytest.raises(errors.SourceUnreachable):
            await source.read_small("model.sig", max_bytes=10)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../other/model.sig", id="dotdot"),
        pytest.param("/m/model.sig", id="absolute"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("", id="empty"),
    ],
)
async def test_unsafe_names_are_refused_before_any_request(name: str) -> None:
    # The endpoint does not exist: an UnsafePath (not SourceUnreachable) proves nothing was sent.
    port = localcluster.free_port()
    source = sources.open_source(
        "s3://models/m/", s3_settings=s3.S3Settings(endpoint=f"http://127.0.0.1:{port}")
    )
    async with source:
        with pytest.raises(errors.UnsafePath):
            await source.read_small(name, max_bytes=10)
        with pytest.raises(errors.UnsafePath):
            source.stream(name)


async def test_an_unsafe_key_in_the_bucket_fails_the_listing(
    s3: s3server.S3Server, s3_bucket: str
) -> None:
    s3.put_object(s3_bucket, "m/ok.bin", b"ok")
    s3.put_object(s3_bucket, "m/a\\b.bin", b"backslash")
    async with open_s3(s3, f"s3://{s3_bucket}/m/") as source:
        with pytest.raises(errors.UnsafePath, match="backslash"):
            await source.list_files()


async def test_object_lock_buckets_are_readable(s3: s3server.S3Server) -> None:
    s3.create_bucket("locked-models", object_lock=True)
    assert b"<ObjectLockEnabled>Enabled" in s3.request(
        "GET", "/locked-models", query={"object-lock": ""}
    )
    s3.put_object("locked-models", "m/model.sig", b"sig")
    async with open_s3(s3, "s3://locked-models/m/") as source:
        assert await source.read_small("model.sig", max_bytes=10) == b"sig"
