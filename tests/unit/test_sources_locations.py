"""Source URIs and file names: what is accepted, what it means, and what is refused and why."""

from __future__ import annotations

import pytest

from modelguard.sources import errors, locations


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param(
            "s3://models/sentiment/1.4.0/",
            locations.S3Location(bucket="models", prefix="sentiment/1.4.0/"),
            id="s3-prefix",
        ),
        pytest.param(
            "s3://models/sentiment/1.4.0",
            locations.S3Location(bucket="models", prefix="sentiment/1.4.0/"),
            id="s3-prefix-without-trailing-slash-is-a-folder",
        ),
        pytest.param(
            "s3://models", locations.S3Location(bucket="models", prefix=""), id="s3-bucket"
        ),
        pytest.param(
            "s3://my.models-2/a",
            locations.S3Location(bucket="my.models-2", prefix="a/"),
            id="s3-dots",
        ),
        pytest.param(
            "S3://models/a/", locations.S3Location(bucket="models", prefix="a/"), id="scheme-case"
        ),
        pytest.param(
            "https://models.example/sentiment/1.4.0/",
            locations.HttpLocation(base="https://models.example/sentiment/1.4.0/"),
            id="https-folder",
        ),
        pytest.param(
            "https://Models.Example:8443/a%20b",
            locations.HttpLocation(base="https://models.example:8443/a%20b/"),
            id="https-port-encoded-path",
        ),
        pytest.param(
            "https://models.example",
            locations.HttpLocation(base="https://models.example/"),
            id="https-root",
        ),
        pytest.param(
            "http://127.0.0.1:8080/m/",
            locations.HttpLocation(base="http://127.0.0.1:8080/m/"),
            id="plain-http-only-when-written",
        ),
        pytest.param(
            "https://[::1]:9000/m/",
            locations.HttpLocation(base="https://[::1]:9000/m/"),
            id="https-ipv6",
        ),
        pytest.param(
            "pvc://model-store/sentiment/1.4.0/",
            locations.PvcLocation(claim="model-store", path="sentiment/1.4.0"),
            id="pvc-path",
        ),
        pytest.param(
            "pvc://model-store", locations.PvcLocation(claim="model-store", path=""), id="pvc-root"
        ),
    ],
)
def test_accepted_uris(uri: str, expected: locations.Location) -> None:
    assert locations.parse(uri) == expected


@pytest.mark.parametrize(
    ("uri", "error", "says"),
    [
        pytest.param("models/a/", errors.InvalidSource, "not a URI", id="no-scheme"),
        pytest.param("ftp://host/a/", errors.InvalidSource, "unsupported scheme", id="ftp"),
        pytest.param("file:///etc/", errors.InvalidSource, "unsupported scheme", id="file"),
        pytest.param("s3:///a/", errors.InvalidSource, "bucket", id="s3-no-bucket"),
        pytest.param("s3://Models/a/", errors.InvalidSource, "bucket", id="s3-uppercase-bucket"),
        pytest.param("s3://ab/", errors.InvalidSource, "bucket", id="s3-short-bucket"),
        pytest.param("s3://a..b/", errors.InvalidSource, "bucket", id="s3-bucket-double-dot"),
        pytest.param("s3://models/a?x=1", errors.InvalidSource, "query", id="s3-query"),
        pytest.param("s3://models/a/../b/", errors.UnsafePath, "'..'", id="s3-dotdot"),
        pytest.param("s3://models/a\\b/", errors.UnsafePath, "backslash", id="s3-backslash"),
        pytest.param("s3://models/a//b/", errors.UnsafePath, "empty", id="s3-empty-segment"),
        pytest.param(
            "https://u:p@host/a/", errors.InvalidSource, "credentials", id="https-userinfo"
        ),
        pytest.param("https:///a/", errors.InvalidSource, "no host", id="https-no-host"),
        pytest.param("https://host/a/?sig=1", errors.InvalidSource, "query", id="https-query"),
        pytest.param(
            "https://host:99999/a/", errors.InvalidSource, "(?i)port", id="https-bad-port"
        ),
        pytest.param(
            "https://host/a/%2e%2e/b/", errors.UnsafePath, "'..'", id="https-encoded-dotdot"
        ),
        pytest.param("pvc://Bad_Claim/a", errors.InvalidSource, "claim", id="pvc-bad-claim"),
        pytest.param("pvc:///a", errors.InvalidSource, "claim", id="pvc-no-claim"),
        pytest.param("pvc://store/../etc", errors.UnsafePath, "'..'", id="pvc-dotdot"),
    ],
)
def test_refused_uris(uri: str, error: type[errors.SourceError], says: str) -> None:
    with pytest.raises(error, match=says) as raised:
        locations.parse(uri)
    assert raised.value.reason == error.reason


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("model.safetensors", id="plain"),
        pytest.param("tokenizer/vocab.json", id="nested"),
        pytest.param("a b/ü ñ.bin", id="spaces-unicode"),
        pytest.param("..hidden/x..y", id="dots-inside-names"),
        pytest.param(".config", id="dotfile"),
    ],
)
def test_safe_names(name: str) -> None:
    assert locations.check_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("../secret", "'..'", id="parent"),
        pytest.param("a/../../b", "'..'", id="parent-inside"),
        pytest.param("a/..", "'..'", id="parent-last"),
        pytest.param("./a", "'.'", id="dot-segment"),
        pytest.param("a//b", "empty", id="empty-segment"),
        pytest.param("a/", "empty", id="trailing-slash"),
        pytest.param("a\\..\\b", "backslash", id="backslash"),
        pytest.param("C:\\model.bin", "backslash", id="windows-path"),
        pytest.param("a\x00b", "control", id="nul"),
        pytest.param("a\nb", "control", id="newline"),
        pytest.param("x" * 1025, "longer than", id="too-long"),
    ],
)
def test_unsafe_names(name: str, says: str) -> None:
    with pytest.raises(errors.UnsafePath, match=says) as raised:
        locations.check_name(name)
    assert raised.value.reason == "UnsafePath"
    assert str(raised.value).startswith("UnsafePath: ")


@pytest.mark.parametrize(
    ("uri", "folder", "name"),
    [
        pytest.param(
            "s3://models/m/1/model.sig",
            locations.S3Location(bucket="models", prefix="m/1/"),
            "model.sig",
            id="s3",
        ),
        pytest.param(
            "https://host/m/model%20v1.sig",
            locations.HttpLocation(base="https://host/m/"),
            "model v1.sig",
            id="https-decoded-name",
        ),
        pytest.param(
            "pvc://store/m/model.sig",
            locations.PvcLocation(claim="store", path="m"),
            "model.sig",
            id="pvc",
        ),
    ],
)
def test_file_uris(uri: str, folder: locations.Location, name: str) -> None:
    assert locations.parse_file(uri) == (folder, name)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("s3://models/m/", id="folder"),
        pytest.param("https://host", id="host-only"),
        pytest.param("model.sig", id="no-scheme"),
    ],
)
def test_file_uri_must_name_a_file(uri: str) -> None:
    with pytest.raises(errors.InvalidSource):
        locations.parse_file(uri)


def test_names_are_encoded_per_segment_in_urls() -> None:
    location = locations.HttpLocation(base="https://host/m/")
    assert locations.http_url(location, "a b/c#d?.bin") == "https://host/m/a%20b/c%23d%3F.bin"
