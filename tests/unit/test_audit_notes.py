"""Signed notes and audit keys as C2SP and Go's sumdb/note define them: a known answer from Go's
own tests (key ID, verifier key, signature), the checkpoint format, and refusals that name why."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from modelguard.audit import checkpoints, keys, notes

# golang.org/x/mod/sumdb/note's test key and note (note_test.go, TestSign and TestOpen).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
    + "fqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_signer() -> keys.Signer:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == keys.ED25519
    return keys.Signer(
        name="PeterNeumann", private=ed25519.Ed25519PrivateKey.from_private_bytes(seed[1:])
    )


def test_go_known_answer_key_id_verifier_key_and_signature() -> None:
    signer = _go_signer()
    assert signer.verifier.id == "c74f20a3"
    assert signer.verifier.vkey == GO_VKEY
    assert keys.parse_verifier(GO_VKEY) == signer.verifier
    # Ed25519 is deterministic: the very bytes Go's Sign writes.
    assert notes.sign(GO_TEXT, signer) == GO_NOTE
    opened = notes.open_note(GO_NOTE, keys.Keyring.of([keys.parse_verifier(GO_VKEY)]))
    assert opened.text == GO_TEXT
    assert [v.id for v in opened.signed_by] == ["c74f20a3"]


@pytest.mark.parametrize(
    ("note", "error"),
    [
        pytest.param(GO_NOTE.replace("problem,", "problem;"), "does not verify", id="text-altered"),
        pytest.param(
            GO_NOTE.replace("IuGUgYN1", "IuGUgYN2"), "does not verify", id="signature-altered"
        ),
        pytest.param(GO_NOTE.replace("\n\n", "\n"), "no blank line", id="no-separator"),
        pytest.param(GO_NOTE[:-1], "does not end in a newline", id="cut-off"),
        pytest.param(GO_NOTE.replace("— ", "- "), "em dash", id="hyphen-for-dash"),
        pytest.param(GO_NOTE.replace("your", "yo\x07ur", 1), "control character U+0007", id="bell"),
        pytest.param(GO_NOTE.replace("x08go/", "!!!"), "not base64", id="not-base64"),
        pytest.param(
            GO_NOTE.replace("PeterNeumann", "CarmenSandiego"),
            "signed by no key given, only by CarmenSandiego+c74f20a3",
            id="unknown-name",
        ),
        pytest.param(GO_NOTE + "x" * notes.MAX_BYTES, "larger than", id="too-large"),
    ],
)
def test_a_note_that_does_not_verify_is_refused_saying_why(note: str, error: str) -> None:
    with pytest.raises(notes.NoteError, match=re.escape(error)):
        notes.open_note(note, keys.Keyring.of([keys.parse_verifier(GO_VKEY)]))


def test_signatures_of_unknown_keys_are_set_aside() -> None:
    other = keys.generate("someone.example/witness")
    cosigned = GO_NOTE + notes.sign(GO_TEXT, other).split("\n\n", 1)[1]
    opened = notes.open_note(cosigned, keys.Keyring.of([keys.parse_verifier(GO_VKEY)]))
    assert [s.name for s in opened.others] == ["someone.example/witness"]
    assert [v.name for v in opened.signed_by] == ["PeterNeumann"]


@pytest.mark.parametrize(
    ("vkey", "error"),
    [
        pytest.param(
            GO_VKEY.replace("c74f20a3", "c74f20a4"), "not that of this name", id="wrong-id"
        ),
        pytest.param(GO_VKEY.replace("+ARpc", "+ZRpc"), "not an Ed25519", id="unknown-algorithm"),
        pytest.param("PeterNeumann+c74f20a3", "not a verifier key", id="no-key"),
        pytest.param(
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "space",
            id="space",
        ),
        pytest.param("PeterNeumann+xyz+ARpc", "not a verifier key", id="short-id"),
    ],
)
def test_a_bad_verifier_key_is_refused_saying_why(vkey: str, error: str) -> None:
    with pytest.raises(keys.InvalidKey, match=re.escape(error)):
        keys.parse_verifier(vkey)


def test_keys_of_two_logs_are_not_one_keyring() -> None:
    with pytest.raises(keys.InvalidKey, match="name 2 logs"):
        keys.Keyring.of(
            [keys.generate("a.example/log").verifier, keys.generate("b.example/log").verifier]
        )


def test_the_private_key_is_the_pem_the_chart_makes(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    signer = keys.load_signer(path, name="modelguard-system/modelguard")
    assert signer.verifier.public == private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert "PRIVATE" not in repr(signer)
    assert signer.verifier.id in repr(signer)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(b"x" * 64, "not a PEM private key", id="the-old-hmac-key"),
        pytest.param(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "not an Ed25519 key",
            id="rsa",
        ),
        pytest.param(b"-" * (keys.MAX_KEY_FILE_BYTES + 1), "larger than", id="huge"),
    ],
)
def test_a_key_file_that_is_no_ed25519_pem_is_refused(
    tmp_path: Path, content: bytes, error: str
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(keys.InvalidKey, match=f"audit key {path}: {error}"):
        keys.load_signer(path, name="modelguard-system/modelguard")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("a+b", "contains '+'"),
        ("a b", "contains a space"),
        ("a\u00a0b", "contains a space"),
        ("a\u202eb", "contains the control character U+202E"),
        ("x" * 201, "is longer than 200 bytes"),
    ],
)
def test_log_names_follow_the_signed_note_rules(name: str, problem: str) -> None:
    assert keys.name_problem(name) == problem


def test_a_checkpoint_is_three_lines_and_round_trips() -> None:
    checkpoint = checkpoints.Checkpoint(
        origin="modelguard-system/modelguard/20300102-030405-0a1b2c3d",
        size=42,
        root=bytes(range(32)),
    )
    assert checkpoint.text() == (
        "modelguard-system/modelguard/20300102-030405-0a1b2c3d\n42\n"
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    )
    assert checkpoints.parse(checkpoint.text()) == checkpoint
    # Extension lines are allowed by the format and ignored.
    assert checkpoints.parse(checkpoint.text() + "extension\n") == checkpoint


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("o\n42\n", "at least three lines"),
        ("\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "origin line is empty"),
        ("o\n042\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "leading zeros"),
        ("o\n-1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "leading zeros"),
        ("o\n42\nAAEC\n", "base64 of 32 bytes"),
        ("o\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n", "extension line is empty"),
    ],
)
def test_a_malformed_checkpoint_says_which_line(text: str, error: str) -> None:
    with pytest.raises(checkpoints.Malformed, match=error):
        checkpoints.parse(text)


def test_segment_names_carry_their_start() -> None:
    log = "modelguard-system/modelguard"
    origin = f"{log}/20300102-030405-0a1b2c3d"
    assert checkpoints.segment_of(origin, log) == "20300102-030405-0a1b2c3d"
    start = checkpoints.segment_start("20300102-030405-0a1b2c3d")
    assert start is not None
    assert start.isoformat() == "2030-01-02T03:04:05+00:00"
    assert checkpoints.segment_of(origin, "modelguard-system/other") is None
    assert checkpoints.segment_of(f"{log}/20301302-030405-0a1b2c3d", log) is None
    assert checkpoints.segment_of(f"{log}/x", log) is None
