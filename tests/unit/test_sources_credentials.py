"""Source settings from a Secret's data and from a Secret mounted as files: the keys read, their
defaults, and every refusal naming the key without showing its value."""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelguard.sources import credentials, sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 - AWS documentation example
KEYS = {"AWS_ACCESS_KEY_ID": b"AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET.encode()}


def ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


ACCEPTED = {
    "empty: anonymous, AWS defaults": ({}, None, "us-east-1", None),
    "access keys": (KEYS, sigv4.Credentials("AKIAEXAMPLE", SECRET), "us-east-1", None),
    "session token, region, endpoint": (
        KEYS
        | {
            "AWS_SESSION_TOKEN": b"token",
            "AWS_REGION": b"eu-west-3\n",
            "AWS_ENDPOINT_URL": b"https://minio.storage:9000",
        },
        sigv4.Credentials("AKIAEXAMPLE", SECRET, "token"),
        "eu-west-3",
        "https://minio.storage:9000",
    ),
    "blank values are unset": (
        KEYS | {"AWS_REGION": b"  ", "AWS_ENDPOINT_URL": b""},
        sigv4.Credentials("AKIAEXAMPLE", SECRET),
        "us-east-1",
        None,
    ),
    "unknown keys are ignored": (
        {"serviceAccount": b"x"} | KEYS,
        sigv4.Credentials("AKIAEXAMPLE", SECRET),
        "us-east-1",
        None,
    ),
}


@pytest.mark.parametrize(
    ("data", "expected", "region", "endpoint"), ACCEPTED.values(), ids=ACCEPTED.keys()
)
def test_accepted(
    data: dict[str, bytes],
    expected: sigv4.Credentials | None,
    region: str,
    endpoint: str | None,
) -> None:
    settings = credentials.from_secret_data(data)
    assert settings.s3.credentials == expected
    assert settings.s3.region == region
    assert settings.s3.endpoint == endpoint
    assert settings.transport.ca_pem is None


REFUSED = {
    "secret key without access key": (
        {"AWS_SECRET_ACCESS_KEY": SECRET.encode()},
        "AWS_ACCESS_KEY_ID is missing",
    ),
    "access key without secret key": (
        {"AWS_ACCESS_KEY_ID": b"AKIAEXAMPLE"},
        "AWS_SECRET_ACCESS_KEY is missing",
    ),
    "session token alone": ({"AWS_SESSION_TOKEN": SECRET.encode()}, "AWS_SESSION_TOKEN is set"),
    "secret key not UTF-8": (
        KEYS | {"AWS_SECRET_ACCESS_KEY": b"\xff" + SECRET.encode()},
        "AWS_SECRET_ACCESS_KEY is not UTF-8",
    ),
    "secret key with a space": (
        KEYS | {"AWS_SECRET_ACCESS_KEY": SECRET.encode() + b" x"},
        "AWS_SECRET_ACCESS_KEY holds spaces",
    ),
    "region not a region": (KEYS | {"AWS_REGION": b"EU West"}, "AWS_REGION is not a region"),
    "endpoint not http": (
        KEYS | {"AWS_ENDPOINT_URL": b"ftp://minio"},
        "AWS_ENDPOINT_URL is not an http(s)",
    ),
    "endpoint with user information": (
        KEYS | {"AWS_ENDPOINT_URL": b"https://me:hunter2@minio"},
        "AWS_ENDPOINT_URL holds user information",
    ),
    "endpoint with a path": (
        KEYS | {"AWS_ENDPOINT_URL": b"https://minio/bucket"},
        "AWS_ENDPOINT_URL has a path",
    ),
    "endpoint with a bad port": (
        KEYS | {"AWS_ENDPOINT_URL": b"https://minio:99999"},
        "AWS_ENDPOINT_URL is not a URL",
    ),
    "CA bundle not PEM": (KEYS | {"AWS_CA_BUNDLE": b"not a certificate"}, "AWS_CA_BUNDLE is not"),
    "value too large": (
        KEYS | {"AWS_SESSION_TOKEN": b"x" * (credentials.MAX_VALUE_BYTES + 1)},
        "AWS_SESSION_TOKEN is larger",
    ),
}


@pytest.mark.parametrize(("data", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_naming_the_key_never_the_value(data: dict[str, bytes], message: str) -> None:
    with pytest.raises(credentials.InvalidCredentials) as caught:
        credentials.from_secret_data(data)
    assert caught.value.reason == "InvalidCredentials"
    assert message in caught.value.message
    assert SECRET not in str(caught.value)


def test_ca_bundles_from_the_api_leave_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every distinct bundle once made a file in the operator's small /tmp, never removed.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pems = [ca_pem() for _ in range(5)]
    found = [credentials.from_secret_data(KEYS | {"AWS_CA_BUNDLE": pem}) for pem in pems]
    assert list(os.walk(tmp_path)) == [(str(tmp_path), [], [])]
    assert [settings.transport.ca_pem for settings in found] == pems


def secret_volume(directory: Path, data: dict[str, bytes]) -> Path:
    """What the kubelet mounts: KEY -> ..data/KEY, ..data -> ..<timestamp>/ holding the files."""
    stamped = directory / "..2026_11_22_05_00_00.000000001"
    stamped.mkdir(parents=True)
    for key, value in data.items():
        (stamped / key).write_bytes(value)
    (directory / "..data").symlink_to(stamped.name)
    for key in data:
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def test_a_mounted_secret_reads_like_its_data(tmp_path: Path) -> None:
    pem = ca_pem()
    data = KEYS | {"AWS_ENDPOINT_URL": b"https://minio:9000", "AWS_CA_BUNDLE": pem}
    settings = credentials.from_directory(secret_volume(tmp_path / "secret", data))
    assert (
        settings.s3
        == credentials.from_secret_data(KEYS | {"AWS_ENDPOINT_URL": data["AWS_ENDPOINT_URL"]}).s3
    )
    # Read into memory: nothing is copied out of the volume.
    assert settings.transport.ca_pem == pem


def test_plain_files_are_read_too(tmp_path: Path) -> None:
    for key, value in KEYS.items():
        (tmp_path / key).write_bytes(value + b"\n")
    assert credentials.from_directory(tmp_path).s3.credentials == sigv4.Credentials(
        "AKIAEXAMPLE", SECRET
    )


def test_an_empty_directory_means_anonymous(tmp_path: Path) -> None:
    assert credentials.from_directory(tmp_path).s3.credentials is None


def test_a_symlink_leading_out_of_the_volume_is_refused(tmp_path: Path) -> None:
    volume = secret_volume(tmp_path / "secret", {"AWS_ACCESS_KEY_ID": b"AKIAEXAMPLE"})
    outside = tmp_path / "elsewhere"
    outside.write_text(SECRET)
    (volume / "AWS_SECRET_ACCESS_KEY").symlink_to(outside)
    with pytest.raises(credentials.InvalidCredentials, match="AWS_SECRET_ACCESS_KEY is a symlink"):
        credentials.from_directory(volume)


def test_a_symlink_into_another_folder_of_the_volume_is_refused(tmp_path: Path) -> None:
    volume = secret_volume(tmp_path / "secret", KEYS)
    (volume / "nested" / "deeper").mkdir(parents=True)
    (volume / "nested" / "deeper" / "token").write_text("t")
    (volume / "AWS_SESSION_TOKEN").symlink_to("nested/deeper/token")
    with pytest.raises(credentials.InvalidCredentials, match="AWS_SESSION_TOKEN is not laid out"):
        credentials.from_directory(volume)


def test_a_key_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "AWS_REGION").mkdir()
    with pytest.raises(credentials.InvalidCredentials, match="AWS_REGION is not a regular file"):
        credentials.from_directory(tmp_path)


def test_a_dangling_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "AWS_REGION").symlink_to("..data/AWS_REGION")
    with pytest.raises(credentials.InvalidCredentials, match="AWS_REGION"):
        credentials.from_directory(tmp_path)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(credentials.InvalidCredentials, match="credentials directory"):
        credentials.from_directory(tmp_path / "absent")
