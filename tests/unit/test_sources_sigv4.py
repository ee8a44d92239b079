"""The SigV4 signer against the S3 examples AWS publishes (Signature Version 4, "Examples")."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

import pytest

from modelguard.sources import sigv4

# AWS's documented example key pair, not a secret.
EXAMPLE_KEYS = sigv4.Credentials(
    access_key="AKIAIOSFODNN7EXAMPLE",
    secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # noqa: S106
)
EXAMPLE_TIME = datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC)
EXAMPLE_HOST = "examplebucket.s3.amazonaws.com"


@dataclasses.dataclass(frozen=True)
class Example:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    payload: bytes
    signed_headers: str
    signature: str


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(
            Example(
                "GET",
                "/test.txt",
                {},
                {"Range": "bytes=0-9"},
                b"",
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
            id="get-object-range",
        ),
        pytest.param(
            Example(
                "GET",
                "/",
                {"max-keys": "2", "prefix": "J"},
                {},
                b"",
                "host;x-amz-content-sha256;x-amz-date",
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            ),
            id="list-objects",
        ),
        pytest.param(
            Example(
                "GET",
                "/",
                {"lifecycle": ""},
                {},
                b"",
                "host;x-amz-content-sha256;x-amz-date",
                "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            ),
            id="get-bucket-lifecycle",
        ),
        pytest.param(
            Example(
                "PUT",
                "/test$file.text",
                {},
                {
                    "Date": "Fri, 24 May 2013 00:00:00 GMT",
                    "x-amz-storage-class": "REDUCED_REDUNDANCY",
                },
                b"Welcome to Amazon S3.",
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
            id="put-object-encoded-name",
        ),
    ],
)
def test_aws_published_examples(example: Example) -> None:
    signed = sigv4.sign(
        method=example.method,
        host=EXAMPLE_HOST,
        path=sigv4.encode_path(example.path),
        query=sigv4.encode_query(example.query),
        headers=example.headers,
        credentials=EXAMPLE_KEYS,
        region="us-east-1",
        now=EXAMPLE_TIME,
        payload_sha256=hashlib.sha256(example.payload).hexdigest(),
    )
    assert signed["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={example.signed_headers}, Signature={example.signature}"
    )
    assert signed["x-amz-date"] == "20130524T000000Z"


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        pytest.param("/b/a b/ü.bin", "/b/a%20b/%C3%BC.bin", id="space-and-unicode"),
        pytest.param("/b/x+y=z&w", "/b/x%2By%3Dz%26w", id="reserved"),
        pytest.param("/b/keep-_.~", "/b/keep-_.~", id="unreserved-kept"),
    ],
)
def test_path_encoding(raw: str, encoded: str) -> None:
    assert sigv4.encode_path(raw) == encoded


def test_query_is_sorted_and_slash_encoded() -> None:
    assert (
        sigv4.encode_query({"prefix": "a/b c", "list-type": "2"}) == "list-type=2&prefix=a%2Fb%20c"
    )


def test_session_token_is_signed() -> None:
    keys = sigv4.Credentials(access_key="AK", secret_key="SK", session_token="TOKEN")  # noqa: S106
    signed = sigv4.sign(
        method="GET",
        host="h",
        path="/",
        query="",
        headers={},
        credentials=keys,
        region="eu-west-1",
        now=EXAMPLE_TIME,
    )
    assert signed["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in signed["authorization"].split("SignedHeaders=")[1]


def test_credentials_repr_hides_secrets() -> None:
    keys = sigv4.Credentials(
        access_key="AK",
        secret_key="very-secret",  # noqa: S106
        session_token="tok-secret",  # noqa: S106
    )
    assert "very-secret" not in repr(keys)
    assert "tok-secret" not in repr(keys)
