"""The example model server: the root digest of what it loaded is the one model_signing signs,
and it serves only the files it loaded."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelserver
import signedmodel

# "a-b/x" sorts before "a/y" by code point, after it by path components.
FILES = {"a-b/x": b"one", "a/y": b"two", "weights.bin": b"\x00" * 10, "empty": b""}


def _signed(tmp_path: Path) -> tuple[Path, str]:
    model = signedmodel.write_model(tmp_path / "model", FILES)
    private, _ = signedmodel.generate_key(tmp_path)
    signature = signedmodel.sign(model, private_key=private, signature=tmp_path / "model.sig")
    return model, signedmodel.root_digest(signature)


def test_the_root_digest_is_model_signings(tmp_path: Path) -> None:
    model, signed = _signed(tmp_path)
    loaded = modelserver.load(model)
    assert loaded.root_digest == signed
    # Code point order would give another digest: the order is what makes them agree.
    by_code_point = hashlib.sha256(
        b"".join(bytes.fromhex(f.sha256) for f in sorted(loaded.files, key=lambda f: f.path))
    ).hexdigest()
    assert f"sha256:{by_code_point}" != signed


def test_one_changed_byte_changes_the_digest(tmp_path: Path) -> None:
    model, signed = _signed(tmp_path)
    (model / "weights.bin").write_bytes(b"\x00" * 9 + b"\x01")
    assert modelserver.load(model).root_digest != signed


def test_symlinks_are_not_followed_nor_hashed(tmp_path: Path) -> None:
    model, signed = _signed(tmp_path)
    (model / "link").symlink_to("weights.bin")
    (model / "dirlink").symlink_to("a")
    loaded = modelserver.load(model)
    assert loaded.root_digest == signed
    assert loaded.skipped == ("dirlink", "link")


def test_a_writable_volume_is_reported_and_left_clean(tmp_path: Path) -> None:
    outcome = modelserver.try_write(tmp_path)
    assert outcome["failed"] is False
    assert not (tmp_path / modelserver.WRITE_PROBE).exists()
    missing = modelserver.try_write(tmp_path / "absent")
    assert missing["failed"] is True
    assert "No such file" in str(missing["error"])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    model, signed = _signed(tmp_path)
    (tmp_path / "secret").write_text("outside the volume")
    loaded = modelserver.load(model)
    write = modelserver.try_write(model)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), modelserver.handler(loaded, write))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", signed
    finally:
        server.shutdown()
        server.server_close()


def test_answers_carry_the_digest_and_serve_loaded_files(served: tuple[str, str]) -> None:
    url, signed = served
    with urllib.request.urlopen(f"{url}/", timeout=5) as response:  # noqa: S310 - the test's loopback server
        answer = json.load(response)
        assert response.headers[modelserver.DIGEST_HEADER] == signed
    assert answer["rootDigest"] == signed
    with urllib.request.urlopen(f"{url}/files/a-b/x", timeout=5) as response:  # noqa: S310 - the test's loopback server
        assert response.read() == b"one"
        assert response.headers[modelserver.DIGEST_HEADER] == signed


@pytest.mark.parametrize("path", ["/files/../secret", "/files/%2e%2e/secret", "/files/a", "/x"])
def test_nothing_but_a_loaded_file_is_served(served: tuple[str, str], path: str) -> None:
    url, _ = served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}{path}", timeout=5)  # noqa: S310
    assert refused.value.code == 404


def test_the_runtime_is_read_from_the_process_status_and_a_root_write(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Name:\tmodel-server\nUid:\t65532\t65532\t65532\t65532\nGid:\t65532\t65532\t65532\t65532\n"
        "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nCapEff:\t0000000000000000\n"
    )
    token = tmp_path / "token"
    observed = modelserver.runtime(status=status, root=tmp_path / "read-only", token=token)
    assert observed["process"] == {
        "Uid": "65532 65532 65532 65532",
        "Gid": "65532 65532 65532 65532",
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "Seccomp_filters": "1",
        "CapEff": "0000000000000000",
    }
    assert observed["rootWrite"]["failed"] is True  # type: ignore[index]
    assert observed["serviceAccountToken"] is False
    token.write_text("a token")
    (tmp_path / "read-only").mkdir()
    again = modelserver.runtime(status=status, root=tmp_path / "read-only", token=token)
    assert again["rootWrite"]["failed"] is False  # type: ignore[index]
    assert again["serviceAccountToken"] is True
