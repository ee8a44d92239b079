"""Small signed models for the examples and the tests: files written, signed with the real
`model_signing` library (the reference implementation ModelGuard interoperates with), and
published to an S3-compatible server.

`model_signing` is a development dependency: the operator never imports it.
"""

from __future__ import annotations

import base64
import collections.abc
import datetime
import json
import struct
import typing
from pathlib import Path

import model_signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import s3server
from modelguard.trust import approval as trust_approval

SIGNATURE_FILE = "model.sig"


def generate_key(directory: Path, *, name: str = "signer") -> tuple[Path, str]:
    """An EC P-256 signing key written to `directory`; returns its path and the public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def safetensors(tensors: dict[str, list[float]]) -> bytes:
    """A valid safetensors file of float32 vectors: an 8-byte header length, JSON, then data."""
    header: dict[str, object] = {}
    data = b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def demo_files(version: str) -> dict[str, bytes]:
    """A tiny but well-formed model: weights in safetensors, a config and a tokenizer."""
    return {
        "config.json": json.dumps({"model_type": "demo", "version": version}).encode(),
        "tokenizer/vocab.json": json.dumps({"good": 0, "bad": 1}).encode(),
        "model.safetensors": safetensors({"weight": [0.5, -0.25, 1.0], "bias": [0.1]}),
    }


def write_model(directory: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory


def sign(model_dir: Path, *, private_key: Path, signature: Path) -> bytes:
    """Signs `model_dir` with model_signing's key method; returns the signature file's bytes."""
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key).sign(
        model_dir, signature
    )
    return signature.read_bytes()


def publish(
    server: s3server.S3Server,
    *,
    bucket: str,
    prefix: str,
    files: dict[str, bytes],
    signature: bytes,
) -> str:
    """Uploads the files and model.sig under s3://bucket/prefix/; returns that URI."""
    prefix = prefix.strip("/")
    for name, data in files.items():
        server.put_object(bucket, f"{prefix}/{name}", data)
    server.put_object(bucket, f"{prefix}/{SIGNATURE_FILE}", signature)
    return f"s3://{bucket}/{prefix}/"


def credentials_secret(server: s3server.S3Server, *, name: str) -> dict[str, object]:
    """A Secret with the server's credentials, in the keys the operator and agent read."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {
            "AWS_ACCESS_KEY_ID": server.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": server.credentials.secret_key,
            "AWS_REGION": server.region,
            "AWS_ENDPOINT_URL": server.endpoint,
        },
    }


def s3_source(server: s3server.S3Server, bucket: str) -> dict[str, str]:
    """A TrustPolicy source for `bucket` on `server`: the policy names the server's endpoint, its
    loopback address included (which a name resolving there would not reach)."""
    return {"uri": f"s3://{bucket}/", "endpoint": server.endpoint}


def trust_policy(
    *,
    name: str,
    public_key: str,
    sources: collections.abc.Sequence[collections.abc.Mapping[str, object]],
    approver_key: str | None = None,
) -> dict[str, object]:
    """A policy trusting one signer, bound to every namespace; with `approver_key`, one approver
    ("security") whose single approval a version needs (the default minApprovals), else no
    approval needed."""
    spec: dict[str, object] = {
        "signers": [{"name": "ml-release", "publicKey": public_key}],
        "sources": [dict(source) for source in sources],
        # Bound to every namespace: each test makes its own.
        "namespaceSelector": {},
    }
    if approver_key is None:
        spec["minApprovals"] = 0
    else:
        spec["approvers"] = [{"name": "security", "publicKey": approver_key, "roles": ["security"]}]
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def root_digest(signature: bytes) -> str:
    """The root digest a model_signing signature file signs, as "sha256:<hex>"."""
    envelope = json.loads(signature)["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return f"sha256:{statement['subject'][0]['digest']['sha256']}"


def approval(
    *,
    private_key: Path,
    namespace: str,
    model: str,
    version: str,
    digest: str,
    expires: datetime.datetime,
    name: str,
    approver: str = "security",
) -> dict[str, typing.Any]:
    """A ModelApproval signed by `private_key`, exactly as `modelguard approve` makes one."""
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    claim = trust_approval.Claim(
        model=model,
        version=version,
        root_digest=digest,
        approver=approver,
        reason="release review passed",
        expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        namespace=namespace,
    )
    built = trust_approval.build(claim, private_key=key, name=name)
    return built.model_dump(mode="json", by_alias=True, exclude_none=True)
