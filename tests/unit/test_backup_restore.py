"""Restores from a volume store, without a cluster: what verifies comes back, and a changed file,
a file the manifest does not sign, or a manifest under another key is refused, naming what
failed, with the folder left empty. The backup is laid out as the copy writes one (layout.py)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import pathlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import signedmodel
from modelguard import cli
from modelguard.backup import layout, manifest, restore, stores, streams
from modelguard.trust import policy, reasons, signatures

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
UNTIL = NOW + datetime.timedelta(days=1)
BACKUP = "20260601T000000Z-0123456789ab"
FILES = {"config.json": b'{"a": 1}', "weights.bin": bytes(range(256)) * 4096}


def _backup(tmp_path: pathlib.Path, *, index_extra: bool = False) -> tuple[Path, dict[str, str]]:
    """A backup of a signed model in a volume store; the keys' paths."""
    model = signedmodel.write_model(tmp_path / "model", FILES)
    signer, signer_pem = signedmodel.generate_key(tmp_path, name="signer")
    signature = signedmodel.sign(model, private_key=signer, signature=tmp_path / "model.sig")
    key = manifest.BackupKey(ec.generate_private_key(ec.SECP256R1()))
    store = stores.open_volume(tmp_path / "store", description="volume")
    (tmp_path / "store").mkdir()
    context = layout.document(
        {
            "apiVersion": layout.API_VERSION,
            "kind": "BackupContext",
            "model": {
                "name": "m",
                "version": "1",
                "rootDigest": signedmodel.root_digest(signature),
            },
            "modelDeployment": {"namespace": "ns", "name": "m"},
        }
    )
    documents = {
        **{f"model/{name}": data for name, data in FILES.items()},
        layout.SIGNATURE: signature,
        layout.CONTEXT: context,
        layout.MODEL_DEPLOYMENT: layout.document({"kind": "ModelDeployment"}),
    }
    entries = []
    for path, data in documents.items():
        stored = asyncio.run(
            store.put_immutable(
                layout.sha256_key(hashlib.sha256(data).hexdigest()), data, retain_until=UNTIL
            )
        )
        entries.append(
            layout.Entry(path=path, key=stored.key, size=stored.size, sha256=stored.sha256)
        )
    listed = [*entries]
    if index_extra:
        listed.append(
            layout.Entry(path="model/extra.bin", key="objects/x", size=1, sha256="0" * 64)
        )
    index = layout.index_document(backup=BACKUP, entries=listed)
    asyncio.run(
        store.put_immutable(
            layout.sha256_key(hashlib.sha256(index).hexdigest()), index, retain_until=UNTIL
        )
    )
    files = [manifest.File(e.path, e.sha256) for e in entries]
    files.append(manifest.File(layout.INDEX, hashlib.sha256(index).hexdigest()))
    signed = manifest.sign(manifest.statement_of(backup=BACKUP, files=files), key=key)
    location = layout.manifest_key(namespace="ns", name="m", backup=BACKUP)
    asyncio.run(store.put_immutable(location, signed, retain_until=UNTIL))
    (tmp_path / "backup.pub").write_text(key.public_pem())
    (tmp_path / "signer.pub").write_text(signer_pem)
    return tmp_path / "store", {"backup": str(tmp_path / "backup.pub"), "signer": signer_pem}


def _restore(root: Path, keys: dict[str, str], into: Path) -> restore.Restored:
    store = stores.open_volume(root, description="volume")
    public = manifest.load_public_keys([Path(keys["backup"]).read_bytes()])
    signer = signatures.load_public_key(keys["signer"].encode(), field="signer")

    async def run() -> restore.Restored:
        opened = await restore.open_backup(
            store, namespace="ns", name="m", backup=BACKUP, keys=public
        )
        return await restore.restore(
            store,
            opened,
            rules=policy.Rules(signers=(signatures.KeySigner("release", signer),)),
            destination=restore.DirectoryDestination(into),
            approvals_policy=None,
            now=NOW,
        )

    return asyncio.run(run())


def test_a_backup_comes_back_verified(tmp_path: Path) -> None:
    root, keys = _backup(tmp_path)
    restored = _restore(root, keys, tmp_path / "out")
    assert restored.files == 2
    assert {name: (tmp_path / "out" / name).read_bytes() for name in FILES} == FILES
    assert (tmp_path / "out" / "model.sig").exists()


def test_a_changed_object_is_refused_naming_the_file_and_nothing_is_left(tmp_path: Path) -> None:
    root, keys = _backup(tmp_path)
    stored = root / layout.sha256_key(hashlib.sha256(FILES["weights.bin"]).hexdigest())
    stored.chmod(0o644)
    stored.write_bytes(b"\0" * len(FILES["weights.bin"]))
    with pytest.raises(reasons.VerificationError) as refused:
        _restore(root, keys, tmp_path / "out")
    assert refused.value.reason is reasons.Reason.DIGEST_MISMATCH
    assert "model/weights.bin" in refused.value.message
    assert list((tmp_path / "out").iterdir()) == []


def test_an_index_listing_more_than_the_manifest_signs_is_refused(tmp_path: Path) -> None:
    root, keys = _backup(tmp_path, index_extra=True)
    with pytest.raises(streams.BackupError, match="disagree"):
        _restore(root, keys, tmp_path / "out")


def test_a_manifest_under_another_key_is_refused(tmp_path: Path) -> None:
    root, keys = _backup(tmp_path)
    other = manifest.BackupKey(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "other.pub").write_text(other.public_pem())
    with pytest.raises(streams.BackupError, match="UntrustedSigner"):
        _restore(root, {**keys, "backup": str(tmp_path / "other.pub")}, tmp_path / "out")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--to", "OUT"], "name who may sign the model"),
        (["--export", "FULL", "--public-key", "SIGNER"], "must be a new or empty folder"),
    ],
    ids=["no signer to check the model with", "an export into a folder that holds files"],
)
def test_the_command_refuses_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    root, keys = _backup(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    places = {
        "OUT": str(tmp_path / "out"),
        "FULL": str(tmp_path / "full"),
        "SIGNER": str(tmp_path / "signer.pub"),
    }
    args = [
        "restore",
        "ns/m",
        "--store-volume",
        str(root),
        "--backup-public-key",
        keys["backup"],
        *[places.get(arg, arg) for arg in extra],
    ]
    assert cli.main(args) == 1
    assert named in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
