"""The backup manifest: model_signing's statement and key-method bundle over a backup's files,
checked by the trust layer here and by the real model_signing library."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib

import model_signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.backup import layout, manifest
from modelguard.trust import digests, reasons

BACKUP = "20260601T030000Z-0123456789ab"


def _key() -> manifest.BackupKey:
    return manifest.BackupKey(ec.generate_private_key(ec.SECP256R1()))


def _folder(root: pathlib.Path) -> list[manifest.File]:
    files = {
        "model/weights.bin": b"\0" * 1000,
        "model/config.json": b"{}",
        "model.sig": b"{}",
        "context.json": b'{"kind": "BackupContext"}',
        "index.json": b"{}",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return [manifest.File(name, hashlib.sha256(data).hexdigest()) for name, data in files.items()]


def test_model_signing_verifies_a_backup_folder_and_refuses_a_changed_file(
    tmp_path: pathlib.Path,
) -> None:
    key = _key()
    root = tmp_path / "backup"
    signed = manifest.sign(manifest.statement_of(backup=BACKUP, files=_folder(root)), key=key)
    (tmp_path / "backup.sig").write_bytes(signed)
    (tmp_path / "backup.pub").write_text(key.public_pem())
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=tmp_path / "backup.pub"
    )
    verifier.verify(root, tmp_path / "backup.sig")
    (root / "context.json").write_bytes(b'{"kind": "Forged"}')
    with pytest.raises(ValueError, match=r"context\.json"):
        verifier.verify(root, tmp_path / "backup.sig")


def test_the_manifest_verifies_under_the_backup_key_only(tmp_path: pathlib.Path) -> None:
    key = _key()
    files = _folder(tmp_path)
    signed = manifest.sign(manifest.statement_of(backup=BACKUP, files=files), key=key)
    verified = manifest.verify_manifest(signed, keys=[key.public], backup=BACKUP)
    assert verified.files == {item.path: item.sha256 for item in files}
    with pytest.raises(reasons.VerificationError) as refused:
        manifest.verify_manifest(signed, keys=[_key().public], backup=BACKUP)
    assert refused.value.reason is reasons.Reason.UNTRUSTED_SIGNER


def test_a_manifest_put_under_another_backup_is_refused(tmp_path: pathlib.Path) -> None:
    key = _key()
    signed = manifest.sign(manifest.statement_of(backup=BACKUP, files=_folder(tmp_path)), key=key)
    with pytest.raises(reasons.VerificationError, match="another backup's name"):
        manifest.verify_manifest(signed, keys=[key.public], backup="20260602T030000Z-0123456789ab")


def test_an_edited_statement_fails_its_signature(tmp_path: pathlib.Path) -> None:
    key = _key()
    signed = json.loads(
        manifest.sign(manifest.statement_of(backup=BACKUP, files=_folder(tmp_path)), key=key)
    )
    payload = json.loads(base64.b64decode(signed["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    signed["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(reasons.VerificationError) as refused:
        manifest.verify_manifest(json.dumps(signed).encode(), keys=[key.public], backup=BACKUP)
    assert refused.value.reason in {reasons.Reason.BAD_SIGNATURE, reasons.Reason.UNTRUSTED_SIGNER}


def test_the_statement_is_model_signings_root_digest(tmp_path: pathlib.Path) -> None:
    files = _folder(tmp_path)
    content = manifest.statement_of(backup=BACKUP, files=files)
    resources = digests.manifest_order(
        digests.Resource(f.path, "sha256", bytes.fromhex(f.sha256)) for f in files
    )
    assert content["subject"] == [
        {"name": BACKUP, "digest": {"sha256": digests.root_digest(resources).hex()}}
    ]
    assert [r["name"] for r in content["predicate"]["resources"]] == [r.path for r in resources]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (b"not a key", "not an unencrypted PEM private key"),
        (b"x" * (manifest.MAX_KEY_BYTES + 1), "larger than"),
    ],
    ids=["not PEM", "too large"],
)
def test_a_bad_backup_key_is_refused_naming_it(text: bytes, named: str) -> None:
    with pytest.raises(manifest.InvalidKey, match=named):
        manifest.parse_key(text, what="backup key key.pem")


def test_backup_ids_and_content_keys() -> None:
    import datetime  # noqa: PLC0415

    at = datetime.datetime(2026, 6, 1, 3, 0, tzinfo=datetime.UTC)
    assert (
        layout.backup_id(at=at, root_digest="sha256:" + "ab" * 32) == BACKUP[:17] + "abababababab"
    )
    assert layout.is_backup_id(BACKUP)
    assert not layout.is_backup_id("../../etc")
    whole = digests.Resource("w.bin", "sha256", b"\1" * 32)
    assert layout.model_file_key([whole]) == "objects/sha256/" + "01" * 32
    assert layout.signed_sha256([whole]) == "01" * 32
    shards = [
        digests.Resource("w.bin", "sha256-sharded-4", b"\1" * 32, start=0, end=4),
        digests.Resource("w.bin", "sha256-sharded-4", b"\2" * 32, start=4, end=6),
    ]
    assert layout.model_file_key(shards).startswith("objects/sha256-sharded-4/")
    assert layout.signed_sha256(shards) is None
    other = [shards[0], digests.Resource("w.bin", "sha256-sharded-4", b"\3" * 32, start=4, end=6)]
    assert layout.model_file_key(other) != layout.model_file_key(shards)
