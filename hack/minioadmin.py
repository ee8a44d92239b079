"""MinIO's admin API, for the tests and `make run`: users with a policy of their own, as a
platform team makes the identity that writes backups (`mc admin user add`, `mc admin policy
create`, `mc admin policy attach` do the same).

Requests are signed as the server's root user (SigV4, like every S3 request). Bodies that carry a
secret (a new user's secret key) are encrypted as madmin-go does it (`madmin.EncryptData`):
`salt(32) | 0x02 | nonce(8) | sio stream`, the key PBKDF2-SHA256 of the root secret key (8192
rounds), the stream sio-go's AES-256-GCM in 16 KiB fragments, each sealed with the nonce and its
little-endian sequence number, the last one marked final in its associated data. MinIO accepts
this PBKDF2 form whether or not it runs in FIPS mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing

from cryptography.hazmat.primitives.ciphers import aead

import s3server

_PBKDF2_AES_GCM: typing.Final = 0x02
_PBKDF2_ROUNDS: typing.Final = 8192
_FRAGMENT: typing.Final = 1 << 14
ADMIN: typing.Final = "/minio/admin/v3"

# What a writer of backups needs and no more: put and read objects and their versions, read the
# bucket's versioning and object lock configuration, list keys, and set a retention of at least
# the store's days. Never delete, never a legal hold, never s3:BypassGovernanceRetention, never
# the bucket's configuration.
WRITER_ACTIONS: typing.Final = {
    "bucket": [
        "s3:GetBucketLocation",
        "s3:GetBucketVersioning",
        "s3:GetBucketObjectLockConfiguration",
        "s3:ListBucket",
        "s3:ListBucketVersions",
    ],
    "objects": [
        "s3:PutObject",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectRetention",
    ],
}


def writer_policy(bucket: str, *, retention_days: int) -> dict[str, typing.Any]:
    """The IAM policy of the identity that writes backups into `bucket`, whose BackupStore locks
    objects for `retention_days` at least.

    s3:PutObjectRetention (needed to write a lock, and to lengthen that of a file an earlier
    backup stored) is denied for a retention ending sooner than `retention_days` from now:
    MinIO, unlike AWS, lets an identity holding it shorten a Governance retention with
    x-amz-bypass-governance-retention, so the condition is what keeps such a lock from going
    below the store's days. Compliance retention cannot be shortened by anyone."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": WRITER_ACTIONS["bucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": WRITER_ACTIONS["objects"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:PutObjectRetention"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
            {
                "Effect": "Deny",
                "Action": ["s3:PutObjectRetention"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
                "Condition": {
                    "NumericLessThan": {
                        "s3:object-lock-remaining-retention-days": str(retention_days)
                    }
                },
            },
        ],
    }


def encrypt(password: str, data: bytes) -> bytes:
    """madmin.EncryptData in its PBKDF2 form (see the module)."""
    salt = os.urandom(32)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS, dklen=32)
    cipher = aead.AESGCM(key)
    nonce = os.urandom(8)

    def sealed(sequence: int, fragment: bytes, tag: bytes) -> bytes:
        return cipher.encrypt(nonce + sequence.to_bytes(4, "little"), fragment, tag)

    # sio-go's associated data: a flag byte, then the tag of an empty message under sequence 0.
    header_tag = cipher.encrypt(nonce + (0).to_bytes(4, "little"), b"", None)
    fragments = [data[i : i + _FRAGMENT] for i in range(0, len(data), _FRAGMENT)] or [b""]
    out = [salt, bytes([_PBKDF2_AES_GCM]), nonce]
    for sequence, fragment in enumerate(fragments, start=1):
        final = sequence == len(fragments)
        out.append(sealed(sequence, fragment, (b"\x80" if final else b"\x00") + header_tag))
    return b"".join(out)


def add_user(server: s3server.S3Server, *, access_key: str, secret_key: str) -> None:
    body = json.dumps({"secretKey": secret_key, "status": "enabled"}).encode()
    server.request(
        "PUT",
        f"{ADMIN}/add-user",
        query={"accessKey": access_key},
        body=encrypt(server.secret_key, body),
    )


def add_policy(server: s3server.S3Server, *, name: str, policy: dict[str, typing.Any]) -> None:
    server.request(
        "PUT", f"{ADMIN}/add-canned-policy", query={"name": name}, body=json.dumps(policy).encode()
    )


def attach_policy(server: s3server.S3Server, *, name: str, user: str) -> None:
    server.request(
        "PUT",
        f"{ADMIN}/set-user-or-group-policy",
        query={"policyName": name, "userOrGroup": user, "isGroup": "false"},
    )


def backup_writer(
    server: s3server.S3Server,
    *,
    bucket: str,
    access_key: str,
    secret_key: str,
    retention_days: int = 1,
) -> None:
    """A user that may write backups into `bucket` and do nothing else."""
    add_user(server, access_key=access_key, secret_key=secret_key)
    policy = writer_policy(bucket, retention_days=retention_days)
    add_policy(server, name=f"backup-writer-{bucket}", policy=policy)
    attach_policy(server, name=f"backup-writer-{bucket}", user=access_key)
