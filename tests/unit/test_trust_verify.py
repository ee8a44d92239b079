"""trust.verify and `modelguard verify` against real model_signing signatures: interop at several
layouts, and the tamper matrix, each case refused with its own reason."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import errno
import io
import json
import mmap
import os
import pathlib
import pickle
import typing
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import model_signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid
from model_signing import hashing

from modelguard import cli
from modelguard.api import trustpolicy
from modelguard.trust import (
    bundle,
    certificates,
    digests,
    folder,
    policy,
    reasons,
    signatures,
    verify,
)

Reason = reasons.Reason
Layout = dict[str, bytes]

LAYOUTS: dict[str, Layout] = {
    "single-file": {"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"w" * 3000},
    # Names whose string order differs from model_signing's path-component order.
    "nested": {
        "a.txt": b"a",
        "a/b": b"ab",
        "a-b/c.json": b"{}",
        "a/b.d/e": b"abde",
        "z/y/x/w/config.json": b'{"k": 1}',
        "empty": b"",
    },
    "many-small": {f"shard-{i:03d}/part.txt": str(i).encode() * (i % 7) for i in range(150)},
}


def _write(root: pathlib.Path, layout: Layout) -> pathlib.Path:
    for name, content in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def _key(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _hashing(*, shard_size: int | None = None, hash_type: str = "sha256") -> hashing.Config:
    config = hashing.Config()
    if shard_size is None:
        # model_signing's option is "blake2"; what it records (and we read) is "blake2b".
        algorithm = "blake2" if hash_type == "blake2b" else hash_type
        return config.use_file_serialization(hashing_algorithm=algorithm)  # type: ignore[arg-type]
    return config.use_shard_serialization(shard_size=shard_size)


def _sign(
    model: pathlib.Path,
    signature: pathlib.Path,
    private: pathlib.Path,
    *,
    shard_size: int | None = None,
    hash_type: str = "sha256",
) -> None:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        _hashing(shard_size=shard_size, hash_type=hash_type)
    ).sign(model, signature)


def _statement(signature: pathlib.Path) -> dict[str, typing.Any]:
    bundle = json.loads(signature.read_bytes())
    result: dict[str, typing.Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return result


def _policy(public: pathlib.Path, **spec: typing.Any) -> policy.Rules:
    return _rules({"signers": [{"name": "team", "publicKey": public.read_text()}], **spec})


def _rules(spec: dict[str, typing.Any]) -> policy.Rules:
    return policy.rules_of(trustpolicy.TrustPolicySpec.model_validate(spec))


def test_rules_default_to_a_policy_that_names_only_its_signers(
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
) -> None:
    # `modelguard verify --public-key` builds its Rules without the API models: its defaults must
    # stay those of the TrustPolicySpec.
    from_policy = _policy(keys["trusted"][1])
    assert [signer.name for signer in from_policy.signers] == ["team"]
    assert dataclasses.replace(from_policy, signers=()) == policy.Rules(signers=())


def test_rules_carry_every_setting_of_the_policy(
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
) -> None:
    rules = _rules(
        {
            "signers": [
                {"name": name, "publicKey": keys[name][1].read_text()}
                for name in ("trusted", "other")
            ],
            "minSigners": 2,
            "hashAlgorithms": ["sha256", "blake2b"],
            "sources": [
                {
                    "uri": "s3://models/team-a/",
                    "endpoint": "https://minio.storage:9000",
                    "allowPrivateAddresses": True,
                },
                {"uri": "pvc://store/", "namespace": "team-a"},
            ],
            "formats": {"allowPickle": True, "allow": ["Keras"]},
            "enforcement": "Audit",
        }
    )
    assert dataclasses.replace(rules, signers=()) == policy.Rules(
        signers=(),
        min_signers=2,
        hash_algorithms=frozenset({"sha256", "blake2b"}),
        sources=(
            policy.SourceRule(
                uri="s3://models/team-a/",
                endpoint="https://minio.storage:9000",
                allow_private_addresses=True,
            ),
            policy.SourceRule(uri="pvc://store/", namespace="team-a"),
        ),
        allow_formats=frozenset({"Keras", "Pickle"}),
        audit=True,
    )
    assert [signer.name for signer in rules.signers] == ["trusted", "other"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: _key(directory, name) for name in ("trusted", "other")}


# --- interop --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "shard_size", "hash_type"),
    [
        pytest.param("single-file", None, "sha256", id="single-file"),
        pytest.param("nested", None, "sha256", id="nested-folders"),
        pytest.param("many-small", None, "sha256", id="many-small-files"),
        pytest.param("nested", None, "blake2b", id="nested-blake2b"),
        pytest.param("single-file", 1000, "sha256", id="sharded-single-file"),
        pytest.param("nested", 2, "sha256", id="sharded-nested"),
    ],
)
def test_root_digest_and_verification_match_model_signing(
    tmp_path: pathlib.Path,
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    layout: str,
    shard_size: int | None,
    hash_type: str,
) -> None:
    model = _write(tmp_path / "model", LAYOUTS[layout])
    signature = tmp_path / "model.sig"
    private, public = keys["trusted"]
    _sign(model, signature, private, shard_size=shard_size, hash_type=hash_type)
    signed_root = _statement(signature)["subject"][0]["digest"]["sha256"]
    files = folder.scan(model, ignore_paths=[".git", ".gitignore"])
    if shard_size is not None:
        files = [item for item in files if item.size]
    ours = folder.hash_files(model, files, hash_type=hash_type, shard_size=shard_size, workers=3)
    # Our own manifest, in our own order, gives model_signing's root digest byte for byte.
    assert digests.root_digest(ours).hex() == signed_root
    rules = _policy(public, hashAlgorithms=[hash_type])
    result = verify.verify_folder(model, signature.read_bytes(), rules)
    assert result.root_digest.hex() == signed_root
    assert [item.signer for item in result.signers] == ["team"]
    assert result.bytes == sum(len(content) for content in LAYOUTS[layout].values())


def test_incremental_hasher_matches_the_folder_hasher_whatever_the_chunks(
    tmp_path: pathlib.Path,
) -> None:
    content = bytes(range(256)) * 40
    (tmp_path / "w.bin").write_bytes(content)
    for shard_size in (None, 1000, 4096):
        expected = folder.hash_files(
            tmp_path,
            [folder.LocalFile("w.bin", len(content))],
            hash_type="sha256",
            shard_size=shard_size,
        )
        for chunk in (1, 7, 999, 1000, 100_000):
            hasher = digests.FileHasher("w.bin", hash_type="sha256", shard_size=shard_size)
            for offset in range(0, len(content), chunk):
                hasher.update(content[offset : offset + chunk])
            assert hasher.finish() == expected


@pytest.mark.parametrize(
    "shard_size",
    [
        pytest.param(None, id="files"),
        pytest.param(5000, id="shards-starting-mid-page"),
        pytest.param(3 * mmap.ALLOCATIONGRANULARITY, id="shards-on-page-boundaries"),
    ],
)
def test_files_and_shards_larger_than_a_window_give_model_signing_digests(
    tmp_path: pathlib.Path,
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    shard_size: int | None,
) -> None:
    # Windows of two pages: every file and shard spans several, and the last window of each is
    # short, so every seam between windows, shards and file ends is crossed.
    layout = {
        "big.bin": os.urandom(9 * mmap.ALLOCATIONGRANULARITY + 123),
        "sub/odd.bin": os.urandom(12_345),
        "config.json": b'{"k": 1}',
    }
    model = _write(tmp_path / "model", layout)
    signature = tmp_path / "model.sig"
    _sign(model, signature, keys["trusted"][0], shard_size=shard_size)
    signed_root = _statement(signature)["subject"][0]["digest"]["sha256"]
    ours = folder.hash_files(
        model,
        folder.scan(model, ignore_paths=[]),
        hash_type="sha256",
        shard_size=shard_size,
        workers=2,
        window_bytes=2 * mmap.ALLOCATIONGRANULARITY,
    )
    assert digests.root_digest(ours).hex() == signed_root


def test_a_file_system_that_cannot_map_files_is_read_instead(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = os.urandom(5 * mmap.ALLOCATIONGRANULARITY + 17)
    (tmp_path / "w.bin").write_bytes(content)
    listed = [folder.LocalFile("w.bin", len(content))]
    mapped = {
        shard_size: folder.hash_files(tmp_path, listed, hash_type="sha256", shard_size=shard_size)
        for shard_size in (None, 5000)
    }

    def refuse(*_: object, **__: object) -> typing.NoReturn:
        raise OSError(errno.ENODEV, "No such device")

    # What a file system without mmap support answers (some FUSE mounts).
    monkeypatch.setattr(mmap, "mmap", refuse)
    for shard_size, expected in mapped.items():
        read = folder.hash_files(
            tmp_path,
            listed,
            hash_type="sha256",
            shard_size=shard_size,
            window_bytes=2 * mmap.ALLOCATIONGRANULARITY,
        )
        assert read == expected


@pytest.mark.parametrize("mappable", [True, False], ids=["mapped", "read"])
def test_a_file_that_shrank_since_it_was_listed_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, mappable: bool
) -> None:
    (tmp_path / "w.bin").write_bytes(b"x" * (3 * mmap.ALLOCATIONGRANULARITY))
    listed = folder.scan(tmp_path, ignore_paths=[])
    (tmp_path / "w.bin").write_bytes(b"x" * 100)
    if not mappable:

        def refuse(*_: object, **__: object) -> typing.NoReturn:
            raise OSError(errno.ENODEV, "No such device")

        monkeypatch.setattr(mmap, "mmap", refuse)
    # Mapped, the pages past the new end would kill the process with SIGBUS when hashed.
    with pytest.raises(reasons.VerificationError) as refused:
        folder.hash_files(tmp_path, listed, hash_type="sha256", shard_size=None)
    assert refused.value.reason is Reason.DIGEST_MISMATCH
    assert "'w.bin' shrank" in refused.value.message


def test_a_window_must_be_whole_pages(tmp_path: pathlib.Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="multiple of"):
        folder.hash_files(
            tmp_path,
            [folder.LocalFile("w.bin", 1)],
            hash_type="sha256",
            shard_size=None,
            window_bytes=mmap.ALLOCATIONGRANULARITY + 1,
        )


def test_signature_inside_the_model_folder_is_not_an_extra_file(
    tmp_path: pathlib.Path, keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> None:
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    private, public = keys["trusted"]
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(model, model / "model.sig")
    result = verify.verify_folder(
        model,
        (model / "model.sig").read_bytes(),
        _policy(public),
        signature_path=model / "model.sig",
    )
    assert result.files == len(LAYOUTS["nested"])


def test_certificate_method_chains_to_the_policy_root(tmp_path: pathlib.Path) -> None:
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    root_key, root = _certificate(tmp_path, "root", ca=True)
    leaf_key, leaf = _certificate(tmp_path, "leaf", ca=False, issuer=(root_key, root))
    model_signing.signing.Config().use_certificate_signer(
        private_key=tmp_path / "leaf.key",
        signing_certificate=tmp_path / "leaf.crt",
        certificate_chain=[tmp_path / "root.crt"],
    ).sign(model, tmp_path / "model.sig")
    rules = _rules({"signers": [_root_signer(tmp_path / "root.crt")]})
    result = verify.verify_folder(model, (tmp_path / "model.sig").read_bytes(), rules)
    assert result.signers[0].signer == "pki"
    assert "CN=leaf" in result.signers[0].identity
    # The same bundle against another root: the root inside the bundle counts for nothing.
    _certificate(tmp_path, "other", ca=True)
    rules = _rules({"signers": [_root_signer(tmp_path / "other.crt")]})
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, (tmp_path / "model.sig").read_bytes(), rules)
    assert refused.value.reason is Reason.UNTRUSTED_SIGNER
    # Checked now instead of at issuance, a certificate that expired is refused.
    later = leaf.not_valid_after_utc + datetime.timedelta(days=1)
    rules = _rules({"signers": [_root_signer(tmp_path / "root.crt")]})
    with pytest.raises(reasons.VerificationError) as expired:
        verify.verify_folder(model, (tmp_path / "model.sig").read_bytes(), rules, at=later)
    assert expired.value.reason is Reason.CERTIFICATE_EXPIRED
    del leaf_key


def _root_signer(root: pathlib.Path) -> dict[str, typing.Any]:
    return {"name": "pki", "certificateRoot": root.read_text(), "identity": {"subject": "CN=leaf"}}


def test_a_chain_certificate_on_an_unsupported_curve_is_no_path_not_a_crash(
    tmp_path: pathlib.Path,
) -> None:
    # The chain comes from the bundle, anyone's to write: a certificate whose key cryptography
    # cannot load (UnsupportedAlgorithm) must count as issuing nothing.
    root_key, root = _certificate(tmp_path, "root", ca=True)
    _, leaf = _certificate(tmp_path, "leaf", ca=False, issuer=(root_key, root))
    odd = x509.load_der_x509_certificate(
        _with_public_key(root.public_bytes(serialization.Encoding.DER), UNSUPPORTED_CURVE_SPKI)
    )
    assert odd.subject == leaf.issuer
    _, other = _certificate(tmp_path, "other", ca=True)
    with pytest.raises(reasons.VerificationError) as refused:
        certificates.check_chain(
            [leaf, odd], roots=(other,), at=datetime.datetime.now(datetime.UTC), label="bundle"
        )
    assert refused.value.reason is Reason.UNTRUSTED_SIGNER


def test_a_signing_certificate_on_an_unsupported_curve_is_an_invalid_key(
    tmp_path: pathlib.Path,
) -> None:
    # Issued by the trusted root, so the chain holds; only its key cannot be used.
    root_key, root = _certificate(tmp_path, "root", ca=True)
    _, leaf = _certificate(tmp_path, "leaf", ca=False, issuer=(root_key, root))
    odd_leaf = _with_public_key(
        leaf.public_bytes(serialization.Encoding.DER), UNSUPPORTED_CURVE_SPKI, signer=root_key
    )
    signed = bundle.Bundle(
        label="bundle",
        payload_type="application/vnd.in-toto+json",
        payload=b"{}",
        signature=b"not checked",
        key_hint=None,
        certificates=(odd_leaf,),
        keyless=False,
    )
    trusted = [signatures.CertificateSigner("pki", (root,))]
    with pytest.raises(reasons.VerificationError) as refused:
        signatures.verify(signed, trusted, at=datetime.datetime.now(datetime.UTC))
    assert refused.value.reason is Reason.INVALID_KEY
    assert "signing certificate's key is not EC P-256/384/521" in refused.value.message


# SubjectPublicKeyInfo of an EC key on secp112r1 (OID 1.3.132.0.6), which cryptography refuses.
UNSUPPORTED_CURVE_SPKI = base64.b64decode(
    "MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAEAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=="
)


def _with_public_key(
    certificate: bytes, spki: bytes, *, signer: ec.EllipticCurvePrivateKey | None = None
) -> bytes:
    """`certificate` (DER) with its subjectPublicKeyInfo replaced, signed again by `signer`;
    without one, its signature no longer matches (no matter for one only used as an issuer)."""
    ((_, body),) = _der_elements(certificate)
    (tbs_tag, tbs), algorithm, signature = _der_elements(body)
    fields = _der_elements(tbs)
    # version [0], serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    fields[6] = _der_elements(spki)[0]
    new_tbs = _der(tbs_tag, b"".join(_der(tag, contents) for tag, contents in fields))
    if signer is not None:
        signature = (0x03, b"\x00" + signer.sign(new_tbs, ec.ECDSA(hashes.SHA256())))
    return _der(0x30, new_tbs + _der(*algorithm) + _der(*signature))


def _der_elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER element in `data`."""
    elements = []
    position = 0
    while position < len(data):
        tag, length = data[position], data[position + 1]
        position += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[position : position + count], "big")
            position += count
        elements.append((tag, data[position : position + length]))
        position += length
    return elements


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _certificate(
    directory: pathlib.Path,
    name: str,
    *,
    ca: bool,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signing_key, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    certificate = builder.sign(signing_key, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key, certificate


def test_k_of_n_counts_distinct_trusted_signers(
    tmp_path: pathlib.Path, keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> None:
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    lines = []
    for name in ("trusted", "other"):
        _sign(model, tmp_path / f"{name}.sig", keys[name][0])
        lines.append(json.dumps(json.loads((tmp_path / f"{name}.sig").read_bytes())))
    jsonl = ("\n".join(lines) + "\n").encode()
    rules = _rules(
        {
            "signers": [
                {"name": name, "publicKey": keys[name][1].read_text()}
                for name in ("trusted", "other")
            ],
            "minSigners": 2,
        }
    )
    result = verify.verify_folder(model, jsonl, rules)
    assert sorted(item.signer for item in result.signers) == ["other", "trusted"]
    # The same signer twice is one signer.
    twice = ("\n".join([lines[0], lines[0]]) + "\n").encode()
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, twice, rules)
    assert refused.value.reason is Reason.TOO_FEW_SIGNERS
    # Audit admits it, and says so.
    audit = dataclasses.replace(rules, audit=True)
    assert verify.verify_folder(model, twice, audit).audit[0].reason is Reason.TOO_FEW_SIGNERS


def test_co_signed_bundles_must_name_the_same_files(
    tmp_path: pathlib.Path, keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> None:
    # Two trusted signers, one root digest, but the second names the files differently: the
    # root digest does not bind names, so which bundle's names to believe cannot be decided.
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    _sign(model, tmp_path / "trusted.sig", keys["trusted"][0])
    statement = json.loads(
        base64.b64decode(
            json.loads((tmp_path / "trusted.sig").read_bytes())["dsseEnvelope"]["payload"]
        )
    )
    first, second = statement["predicate"]["resources"][:2]
    first["name"], second["name"] = second["name"], first["name"]
    jsonl = (tmp_path / "trusted.sig").read_bytes() + b"\n" + _craft(statement, keys["other"][0])
    rules = _rules(
        {
            "signers": [
                {"name": name, "publicKey": keys[name][1].read_text()}
                for name in ("trusted", "other")
            ]
        }
    )
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_signatures(jsonl, rules)
    assert refused.value.reason is Reason.MALFORMED_BUNDLE
    assert "different file names" in refused.value.message


# --- the tamper matrix ----------------------------------------------------------------------


def _craft(statement: dict[str, typing.Any], private: pathlib.Path) -> bytes:
    """A bundle exactly as model_signing's key method writes it, over a statement of ours."""
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = json.dumps(statement).encode()
    sig = key.sign(
        signatures.pae("application/vnd.in-toto+json", payload), ec.ECDSA(hashes.SHA256())
    )
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "publicKey": {"hint": signatures.key_hint(key.public_key())},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        }
    ).encode()


def _one_byte_changed(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    path = model / "a/b.d/e"
    path.write_bytes(b"X" + path.read_bytes()[1:])
    return sig


def _file_added(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    (model / "a/extra.json").write_bytes(b"{}")
    return sig


def _file_removed(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    (model / "a.txt").unlink()
    return sig


def _file_renamed(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    (model / "a.txt").rename(model / "b.txt")
    return sig


def _symlink_added(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    (model / "link").symlink_to("/etc/passwd")
    return sig


def _dotdot_name(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    statement = json.loads(base64.b64decode(json.loads(sig)["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["name"] = "../secret.txt"
    return _craft(statement, keys["trusted"][0])


def _root_digest_forged(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    statement = json.loads(base64.b64decode(json.loads(sig)["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "00" * 32
    return _craft(statement, keys["trusted"][0])


def _untrusted_key(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    target = model.parent / "untrusted.sig"
    _sign(model, target, keys["other"][0])
    return target.read_bytes()


def _payload_altered(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    bundle = json.loads(sig)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["name"] = "evil"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(bundle).encode()


def _another_model(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    other = _write(
        model.parent / "other", {"weights.safetensors": b"\x02" * 64, "config.json": b"{}"}
    )
    _sign(other, model.parent / "other.sig", keys["trusted"][0])
    return (model.parent / "other.sig").read_bytes()


def _truncated(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    return sig[: len(sig) // 2]


def _garbled(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    return bytes(byte ^ 0x5A for byte in sig[:200]) + sig[200:]


def _wrong_payload_type(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    bundle = json.loads(sig)
    bundle["dsseEnvelope"]["payloadType"] = "application/json"
    return json.dumps(bundle).encode()


def _pickle_as_bin(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    (model / "weights.bin").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    _sign(model, model.parent / "re.sig", keys["trusted"][0])
    return (model.parent / "re.sig").read_bytes()


def _torch_zip_as_bin(model: pathlib.Path, sig: bytes, keys: typing.Any) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("archive/data/0", b"\x00" * 64)
    (model / "model.bin").write_bytes(buffer.getvalue())
    _sign(model, model.parent / "re.sig", keys["trusted"][0])
    return (model.parent / "re.sig").read_bytes()


TAMPER_CASES = [
    pytest.param(_one_byte_changed, Reason.DIGEST_MISMATCH, "'a/b.d/e'", id="one-byte-changed"),
    pytest.param(_file_added, Reason.UNEXPECTED_FILE, "'a/extra.json'", id="file-added"),
    pytest.param(_file_removed, Reason.MISSING_FILE, "'a.txt'", id="file-removed"),
    pytest.param(_file_renamed, Reason.MISSING_FILE, "'a.txt'", id="file-renamed"),
    pytest.param(_symlink_added, Reason.UNSAFE_PATH, "'link'", id="symlink-added"),
    pytest.param(_dotdot_name, Reason.UNSAFE_PATH, "../secret.txt", id="dotdot-in-signed-name"),
    pytest.param(_root_digest_forged, Reason.ROOT_DIGEST_MISMATCH, "subject", id="root-forged"),
    pytest.param(_untrusted_key, Reason.UNTRUSTED_SIGNER, "not a trusted", id="untrusted-key"),
    pytest.param(_payload_altered, Reason.BAD_SIGNATURE, "altered", id="payload-altered"),
    pytest.param(_another_model, Reason.MISSING_FILE, "config.json", id="bundle-of-another-model"),
    pytest.param(_truncated, Reason.MALFORMED_BUNDLE, "not JSON", id="truncated-json"),
    pytest.param(_garbled, Reason.MALFORMED_BUNDLE, "signature file", id="garbled-json"),
    pytest.param(_wrong_payload_type, Reason.WRONG_PAYLOAD_TYPE, "payloadType", id="payload-type"),
    pytest.param(_pickle_as_bin, Reason.UNSAFE_FORMAT, "'weights.bin'", id="pickle-as-bin"),
    pytest.param(_torch_zip_as_bin, Reason.UNSAFE_FORMAT, "'model.bin'", id="torch-zip-as-bin"),
]


@pytest.fixture
def signed_model(
    tmp_path: pathlib.Path, keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> tuple[pathlib.Path, bytes]:
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    _sign(model, tmp_path / "model.sig", keys["trusted"][0])
    return model, (tmp_path / "model.sig").read_bytes()


@pytest.mark.parametrize(("tamper", "reason", "named"), TAMPER_CASES)
def test_tampering_is_refused_with_its_reason_by_verify(
    signed_model: tuple[pathlib.Path, bytes],
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    tamper: typing.Callable[..., bytes],
    reason: Reason,
    named: str,
) -> None:
    model, sig = signed_model
    tampered = tamper(model, sig, keys)
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, tampered, _policy(keys["trusted"][1]))
    assert refused.value.reason is reason, refused.value
    assert named in refused.value.message


@pytest.mark.parametrize(("tamper", "reason", "named"), TAMPER_CASES)
def test_tampering_is_refused_with_its_reason_by_the_cli(
    signed_model: tuple[pathlib.Path, bytes],
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    tamper: typing.Callable[..., bytes],
    reason: Reason,
    named: str,
) -> None:
    model, sig = signed_model
    signature = model.parent / "tampered.sig"
    signature.write_bytes(tamper(model, sig, keys))
    code, out, err = run_cli(
        "verify", str(model), "--signature", str(signature), "--public-key", str(keys["trusted"][1])
    )
    assert code == 1
    assert out == ""
    assert err.startswith(f"{reason}: "), err
    assert named in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_untampered_model_verifies_with_the_cli(
    signed_model: tuple[pathlib.Path, bytes], keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> None:
    model, sig = signed_model
    (model.parent / "model.sig").write_bytes(sig)
    code, out, err = run_cli(
        "verify",
        str(model),
        "--signature",
        str(model.parent / "model.sig"),
        "--public-key",
        str(keys["trusted"][1]),
    )
    root = json.loads(base64.b64decode(json.loads(sig)["dsseEnvelope"]["payload"]))
    assert (code, err) == (0, "")
    assert out == (
        f"verified root sha256:{root['subject'][0]['digest']['sha256']} signer public-key "
        f"files 6 bytes 17\n"
    )


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --- how many bundles a signature file may hold ---------------------------------------------


def _signed_line(tmp_path: pathlib.Path, private: pathlib.Path, *, name: str) -> str:
    model = _write(tmp_path / f"model-{name}", LAYOUTS["nested"])
    _sign(model, tmp_path / f"{name}.sig", private)
    return json.dumps(json.loads((tmp_path / f"{name}.sig").read_bytes()), separators=(",", ":"))


def _bad_signature(line: str) -> str:
    document = json.loads(line)
    # A well-formed DER ECDSA signature that verifies under no key.
    document["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        b"\x30\x06\x02\x01\x01\x02\x01\x01"
    ).decode()
    return json.dumps(document, separators=(",", ":"))


def test_the_bundle_cap_is_above_any_policy_s_signers() -> None:
    # One bundle per trusted signer, with room for co-signers the policy does not list.
    assert verify.MAX_BUNDLES >= 2 * trustpolicy.MAX_SIGNERS


def test_a_signature_file_of_more_bundles_than_the_cap_is_refused_before_any_is_verified(
    tmp_path: pathlib.Path,
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _signed_line(tmp_path, keys["trusted"][0], name="trusted")
    checked: list[str] = []
    real = signatures.verify

    def counting(signed: bundle.Bundle, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        checked.append(signed.label)
        return real(signed, *args, **kwargs)

    monkeypatch.setattr(signatures, "verify", counting)
    rules = _policy(keys["trusted"][1])
    at_cap = ("\n".join([line] * verify.MAX_BUNDLES) + "\n").encode()
    assert verify.verify_signatures(at_cap, rules).statement is not None
    checked.clear()
    over = ("\n".join([line] * (verify.MAX_BUNDLES + 1)) + "\n").encode()
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_signatures(over, rules)
    assert refused.value.reason is Reason.MALFORMED_BUNDLE
    assert f"{verify.MAX_BUNDLES + 1} bundles" in refused.value.message
    assert f"at most {verify.MAX_BUNDLES}" in refused.value.message
    assert checked == []


def test_verification_stops_once_min_signers_can_no_longer_be_met(
    tmp_path: pathlib.Path,
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = _signed_line(tmp_path, keys["trusted"][0], name="trusted")
    bad = _bad_signature(good)
    checked: list[str] = []
    real = signatures.verify

    def counting(signed: bundle.Bundle, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        checked.append(signed.label)
        return real(signed, *args, **kwargs)

    monkeypatch.setattr(signatures, "verify", counting)
    two = _rules(
        {
            "signers": [
                {"name": name, "publicKey": keys[name][1].read_text()}
                for name in ("trusted", "other")
            ],
            "minSigners": 2,
        }
    )
    # Two of five needed: after four failures one bundle is left, which can add one signer only.
    jsonl = ("\n".join([bad] * 4 + [good]) + "\n").encode()
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_signatures(jsonl, two)
    assert refused.value.reason is Reason.BAD_SIGNATURE
    assert "bundle on line 1" in refused.value.message
    assert checked == [f"bundle on line {n}" for n in (1, 2, 3, 4)]
    # One needed: a file of failures is tried to its end (the last one may be the signer's).
    checked.clear()
    one = _policy(keys["trusted"][1])
    assert verify.verify_signatures(jsonl, one).signers[0].signer == "team"
    assert len(checked) == 5
    # Audit admits too few signers, but not none: it stops only when no bundle is left that
    # could verify.
    checked.clear()
    audit = dataclasses.replace(two, audit=True)
    admitted = verify.verify_signatures(jsonl, audit)
    assert admitted.audit[0].reason is Reason.TOO_FEW_SIGNERS
    assert "bundle on line 1" in admitted.audit[0].message
    assert len(checked) == 5


# --- what the loader opens: every file in the folder, and the folder itself -----------------

EVIL_PICKLE = b"cos\nsystem\n(S'id'\ntR."


def test_an_ignored_file_is_sniffed_all_the_same(
    tmp_path: pathlib.Path, keys: dict[str, tuple[pathlib.Path, pathlib.Path]]
) -> None:
    # Hidden from the digests by an ignore path, it still lies in the folder the loader opens.
    model = _write(tmp_path / "model", LAYOUTS["nested"])
    _sign(model, tmp_path / "model.sig", keys["trusted"][0])
    (model / "extra.pkl").write_bytes(EVIL_PICKLE)
    rules = _policy(keys["trusted"][1])
    signature = (tmp_path / "model.sig").read_bytes()
    for options in ({"ignore_paths": ["extra.pkl"]}, {"ignore_unsigned_files": True}):
        with pytest.raises(reasons.VerificationError) as refused:
            verify.verify_folder(model, signature, rules, **options)  # type: ignore[arg-type]
        assert refused.value.reason is Reason.UNSAFE_FORMAT, options
        assert "'extra.pkl'" in refused.value.message


def _keras_config(layer: str) -> bytes:
    return json.dumps(
        {
            "module": "keras",
            "class_name": "Sequential",
            "registered_name": None,
            "config": {
                "name": "s",
                "layers": [
                    {"module": "keras.layers", "class_name": layer, "config": {"name": "l"}}
                ],
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("beside", "layer", "refused"),
    [
        pytest.param("metadata.json", "Lambda", True, id="lambda-beside-metadata"),
        pytest.param("model.weights.npz", "Lambda", True, id="lambda-beside-npz-weights"),
        pytest.param("metadata.json", "Dense", False, id="dense-beside-metadata"),
        pytest.param("tokenizer.json", "Lambda", False, id="config-json-of-another-kind"),
    ],
)
def test_an_unzipped_keras_folder_is_judged_as_a_keras_model(
    tmp_path: pathlib.Path,
    keys: dict[str, tuple[pathlib.Path, pathlib.Path]],
    beside: str,
    layer: str,
    refused: bool,
) -> None:
    model = _write(
        tmp_path / "model",
        {"sub/config.json": _keras_config(layer), f"sub/{beside}": b'{"keras_version": "3.9"}'},
    )
    _sign(model, tmp_path / "model.sig", keys["trusted"][0])
    rules = _policy(keys["trusted"][1])
    signature = (tmp_path / "model.sig").read_bytes()
    if not refused:
        verify.verify_folder(model, signature, rules)
        return
    with pytest.raises(reasons.VerificationError) as error:
        verify.verify_folder(model, signature, rules)
    assert error.value.reason is Reason.UNSAFE_FORMAT
    assert "'sub/config.json'" in error.value.message
    assert "Keras" in error.value.message
