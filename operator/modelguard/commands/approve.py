"""`modelguard approve`: a signed ModelApproval for one model version and root digest, printed as
YAML for a GitOps commit or `kubectl apply -f -`; or `REASON: message`."""

from __future__ import annotations

import datetime
import pathlib
import re
import sys
import typing

import yaml
from cryptography import exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import errors, modelapproval, times
from modelguard.commands import files
from modelguard.trust import approval, digests, folder, reasons

_DURATION_UNITS: typing.Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# What `model_signing sign` leaves out by default: git's files, and the signature itself, which
# the ModelDeployment default (model.sig beside the files) puts inside the model folder.
_MODEL_SIGNING_IGNORED: typing.Final = (
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    "model.sig",
)


def run(
    *,
    model: str,
    version: str,
    digest: str | None,
    digest_of: pathlib.Path | None,
    key: pathlib.Path,
    approver: str,
    namespace: str,
    expires: str,
    reason: str,
    name: str | None,
    now: datetime.datetime,
) -> int:
    """Exit code 0 and the ModelApproval on standard output, 1 and the refusal on standard
    error. `digest` or `digest_of` gives the root digest; `expires` is a duration or a time."""
    try:
        private_key = _private_key(key)
        claim = approval.Claim(
            model=model,
            version=version,
            root_digest=_root_digest(digest=digest, digest_of=digest_of),
            approver=approver,
            reason=reason,
            expires_at=_expires_at(expires, now=now),
            namespace=namespace,
        )
        signed = approval.build(claim, private_key=private_key, name=name or _approval_name(claim))
    except reasons.VerificationError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        return 1
    except errors.InvalidObjectError as error:
        print(f"{reasons.Reason.INVALID_APPROVAL}: {'; '.join(error.messages)}", file=sys.stderr)
        return 1
    body = signed.model_dump(mode="json", exclude_none=True)
    sys.stdout.write(yaml.safe_dump(body, sort_keys=False, width=100))
    return 0


def _private_key(path: pathlib.Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC private key from PEM; InvalidKey naming --key otherwise."""
    field = f"--key {str(path)!r}"
    try:
        key = serialization.load_pem_private_key(files.read(path, what="--key"), password=None)
    except TypeError:
        # cryptography says TypeError when the key is encrypted and no password was given.
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY,
            f"{field} is encrypted; decrypt it (openssl ec -in KEY -out PLAIN) to sign",
        ) from None
    except (ValueError, exceptions.UnsupportedAlgorithm) as error:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY, f"{field} is not a PEM private key: {error}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY,
            f"{field} is not an elliptic-curve key (approvers sign with EC P-256/384/521)",
        )
    return key


def _expires_at(text: str, *, now: datetime.datetime) -> str:
    """--expires as RFC 3339: a duration from now (30d, 12h, 2w) or a time; InvalidApproval."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if match is not None:
        when = now + datetime.timedelta(
            seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        )
        text = times.rfc3339(when)
    else:
        try:
            when = times.parse(text)
        except ValueError:
            raise reasons.VerificationError(
                reasons.Reason.INVALID_APPROVAL,
                f"--expires {text!r} is neither a duration (30d, 12h, 90m, 2w) nor an RFC 3339 "
                "time (2030-01-01T00:00:00Z)",
            ) from None
    if when <= now:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_APPROVAL, f"--expires {text!r} is not in the future"
        )
    return text


def _root_digest(*, digest: str | None, digest_of: pathlib.Path | None) -> str:
    """--digest checked, or the root digest of --digest-of computed as model_signing does."""
    if digest is not None:
        checked = digest.strip().lower()
        if not re.fullmatch(modelapproval.ROOT_DIGEST_PATTERN, checked):
            raise reasons.VerificationError(
                reasons.Reason.INVALID_APPROVAL,
                f"--digest {digest!r} is not sha256:<64 hex digits>",
            )
        return checked
    assert digest_of is not None, "the parser requires --digest or --digest-of"
    if not digest_of.is_dir():
        raise reasons.VerificationError(
            reasons.Reason.UNREADABLE, f"--digest-of {str(digest_of)!r} is not a directory"
        )
    found = folder.scan(digest_of, ignore_paths=_MODEL_SIGNING_IGNORED)
    # model_signing's defaults: files serialization, sha256.
    resources = folder.hash_files(digest_of, found, hash_type="sha256", shard_size=None)
    return f"sha256:{digests.root_digest(resources).hex()}"


def _approval_name(claim: approval.Claim) -> str:
    """A default object name: model-version-approver, made a valid Kubernetes name."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{claim.model}-{claim.version}-{claim.approver}".lower())
    return name[:253].strip("-.")
