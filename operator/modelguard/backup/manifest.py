"""The backup manifest: an OpenSSF Model Signing bundle over every file of a backup, signed with
the operator's backup key (pure).

The statement is the one model_signing writes for a folder (in-toto Statement v1, predicateType
https://model_signing/signature/v1.0, files serialization, SHA-256), its subject named by the
backup id; the bundle is model_signing's key-method bundle (sigstore bundle v0.3, DSSE envelope,
the key's hint, no transparency log). So a backup, laid out as a folder, verifies with
`model_signing verify key` and `modelguard verify --public-key` alike, and `verify` here reads it
back with the trust layer's own bundle and statement checks.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import typing

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.backup import layout
from modelguard.trust import bundle, digests, paths, policy, reasons, signatures, statement, verify

BUNDLE_MEDIA_TYPE: typing.Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
MAX_KEY_BYTES: typing.Final = 16 << 10


class InvalidKey(ValueError):
    """The backup key cannot be used; the message names the file and what is accepted."""


@dataclasses.dataclass(frozen=True, repr=False)
class BackupKey:
    """The operator's backup signing key; `repr` never shows it."""

    private: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"BackupKey(id={self.key_id})"

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        """model_signing's key hint: hex SHA-256 of the PEM public key."""
        return signatures.key_hint(self.public)

    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def load_key(path: pathlib.Path) -> BackupKey:
    """The EC private key in `path` (PEM, PKCS#8 or SEC 1, unencrypted); InvalidKey otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_BYTES + 1)
    except OSError as error:
        raise InvalidKey(f"backup key {path}: {error.strerror or error}") from None
    return parse_key(data, what=f"backup key {path}")


def parse_key(data: bytes, *, what: str = "backup key") -> BackupKey:
    if len(data) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what}: larger than {MAX_KEY_BYTES} bytes, not a PEM key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise InvalidKey(
            f"{what}: not an unencrypted PEM private key ({error}); make one with `openssl "
            "ecparam -name prime256v1 -genkey -noout` (the chart makes one at install)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidKey(f"{what}: not an elliptic-curve key (P-256, P-384 or P-521)")
    if key.curve.name not in signatures.CURVE_HASHES:
        raise InvalidKey(f"{what}: curve {key.curve.name} is not P-256, P-384 or P-521")
    return BackupKey(key)


@dataclasses.dataclass(frozen=True)
class File:
    """One file of the backup folder, as the manifest lists it."""

    path: str
    sha256: str


def statement_of(*, backup: str, files: typing.Sequence[File]) -> dict[str, typing.Any]:
    """The in-toto statement model_signing would write for the backup folder."""
    resources = digests.manifest_order(
        digests.Resource(path=item.path, algorithm="sha256", digest=bytes.fromhex(item.sha256))
        for item in files
    )
    return {
        "_type": statement.STATEMENT_TYPE,
        "subject": [
            {"name": backup, "digest": {"sha256": digests.root_digest(resources).hex()}},
        ],
        "predicateType": statement.PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(paths.DEFAULT_EXCLUSIONS),
            },
            "resources": [
                {"name": item.path, "algorithm": "sha256", "digest": item.digest.hex()}
                for item in resources
            ],
        },
    }


def sign(content: typing.Mapping[str, typing.Any], *, key: BackupKey) -> bytes:
    """The bundle (model_signing's key method) of the statement `content`, signed with `key`."""
    payload = json.dumps(content, sort_keys=True, indent=2).encode("utf-8")
    algorithm = signatures.CURVE_HASHES[key.private.curve.name]
    signature = key.private.sign(
        signatures.pae(bundle.IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(algorithm())
    )
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.key_id}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": bundle.IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


@dataclasses.dataclass(frozen=True)
class Verified:
    """A backup manifest whose signature verified: its files by path, and who signed."""

    backup: str
    files: dict[str, str]
    """Hex SHA-256 of every file of the backup, by its path in the backup folder."""
    key_id: str


def verify_manifest(
    data: bytes, *, keys: typing.Sequence[ec.EllipticCurvePublicKey], backup: str
) -> Verified:
    """The manifest's files, once its signature verifies under one of `keys` and it names
    `backup`; VerificationError (BadSignature, UntrustedSigner, MalformedBundle...) otherwise."""
    if not keys:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY, "no backup public key to check the manifest with"
        )
    signers = tuple(
        signatures.KeySigner(f"backup key {signatures.key_hint(key)[:16]}", key) for key in keys
    )
    signed = verify.verify_signatures(data, policy.Rules(signers=signers))
    found = signed.statement
    if found.model_name != backup:
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE,
            f"the manifest is signed for backup {found.model_name!r}, not {backup!r}: it was "
            "put under another backup's name",
        )
    if found.serialization.method != "files" or found.serialization.hash_type != "sha256":
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE, "a backup manifest signs its files with SHA-256"
        )
    files = {resource.path: resource.digest.hex() for resource in found.resources}
    if layout.INDEX not in files:
        raise reasons.VerificationError(
            reasons.Reason.MALFORMED_BUNDLE, f"the manifest lists no {layout.INDEX}"
        )
    return Verified(
        backup=backup,
        files=files,
        key_id=",".join(sorted({who.identity for who in signed.signers})),
    )


def load_public_keys(pems: typing.Iterable[bytes]) -> list[ec.EllipticCurvePublicKey]:
    """Backup public keys (PEM, several to a file allowed: the current one and those rotated
    out, which still verify older backups)."""
    keys: list[ec.EllipticCurvePublicKey] = []
    for pem in pems:
        for block in _pem_blocks(pem):
            keys.append(signatures.load_public_key(block, field="--backup-public-key"))
    return keys


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END PUBLIC KEY-----"
    blocks = []
    for part in data.split(marker):
        if b"-----BEGIN PUBLIC KEY-----" in part:
            blocks.append(part[part.index(b"-----BEGIN") :] + marker + b"\n")
    return blocks or [data]
