"""Reading signature files: a sigstore bundle (.sig, one JSON document) or a JSONL file of them.

model_signing writes `application/vnd.dev.sigstore.bundle.v0.3+json` bundles whose content is a
DSSE envelope (payloadType `application/vnd.in-toto+json`, base64 payload, one signature) and whose
verificationMaterial is a public key hint (key method: hex SHA-256 of the signer's PEM public key),
an x509 certificate chain (certificate method: DER, leaf first) or, for keyless signing, a Fulcio
certificate with transparency log entries. JSONL (one bundle per line, one line per signer) is
where upstream is heading for several signers of one model. Parsing checks shape only; signatures
are checked in `signatures`, the payload in `statement`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import typing

from modelguard.trust import reasons

MEDIA_TYPE: typing.Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE: typing.Final = "application/vnd.in-toto+json"
# A statement lists every file, some 160 bytes each once in base64: 16 MiB is about 100,000 files,
# and bounds the memory a hostile signature file can make the operator use before any signature
# is checked.
MAX_SIGNATURE_FILE_BYTES: typing.Final = 16 * 1024 * 1024
# JSON objects and arrays a signature file may open. A bundle opens a few dozen: its payload and
# certificates are base64 strings, which hold no brace. A file of tiny objects ([{},{},...]) would
# otherwise cost some 25 times its size in memory.
MAX_JSON_CONTAINERS: typing.Final = 100_000


@dataclasses.dataclass(frozen=True)
class Bundle:
    """What verification needs from one bundle."""

    label: str
    """Where it came from, for messages: "bundle" or "bundle on line 3"."""
    payload_type: str
    payload: bytes
    signature: bytes
    key_hint: str | None
    """Key method: hex SHA-256 of the signer's PEM (SubjectPublicKeyInfo) public key."""
    certificates: tuple[bytes, ...]
    """Certificate method: the DER chain, signing certificate first."""
    keyless: bool
    """Sigstore keyless: a Fulcio certificate backed by transparency log entries."""


def parse_signature_file(data: bytes) -> list[Bundle]:
    """The bundles of a .sig file (one JSON bundle) or a JSONL file (one bundle per line)."""
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise _malformed(f"signature file is larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    text = _text(data)
    try:
        document = _loads(text)
    except ValueError as whole_error:
        lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise _malformed(f"signature file is not JSON: {whole_error}") from None
        bundles = []
        for number, line in lines:
            label = f"bundle on line {number}"
            try:
                bundles.append(_bundle(_loads(line), label=label))
            except ValueError as line_error:
                raise _malformed(f"{label} is not JSON: {line_error}") from None
        return bundles
    return [_bundle(document, label="bundle")]


def parse(data: bytes) -> Bundle:
    """One sigstore bundle from its JSON bytes."""
    try:
        document = _loads(_text(data))
    except ValueError as error:
        raise _malformed(f"bundle is not JSON: {error}") from None
    return _bundle(document, label="bundle")


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _malformed(f"signature file is not UTF-8 text: {error.reason}") from None
    # Counted over the whole file, not per line: a JSONL file is parsed line by line.
    if text.count("{") + text.count("[") > MAX_JSON_CONTAINERS:
        raise _malformed(
            f"signature file opens more than {MAX_JSON_CONTAINERS} JSON objects and arrays"
        )
    return text


def _loads(text: str) -> typing.Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None


def _bundle(document: typing.Any, *, label: str) -> Bundle:
    root = _object(document, label)
    media_type = root.get("mediaType")
    if media_type != MEDIA_TYPE:
        raise _malformed(f"{label}: mediaType {media_type!r} is not {MEDIA_TYPE!r}")
    material = _object(root.get("verificationMaterial"), f"{label}: verificationMaterial")
    if "dsseEnvelope" not in root:
        raise _malformed(f"{label}: dsseEnvelope is missing (only DSSE bundles sign models)")
    envelope = _object(root["dsseEnvelope"], f"{label}: dsseEnvelope")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise _malformed(f"{label}: dsseEnvelope.payloadType is missing or not a string")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise reasons.VerificationError(
            reasons.Reason.WRONG_PAYLOAD_TYPE,
            f"{label}: dsseEnvelope.payloadType is {payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}",
        )
    payload = _base64(envelope.get("payload"), f"{label}: dsseEnvelope.payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise _malformed(f"{label}: dsseEnvelope.signatures must hold exactly one signature")
    signature = _object(signatures[0], f"{label}: dsseEnvelope.signatures[0]")
    sig = _base64(signature.get("sig"), f"{label}: dsseEnvelope.signatures[0].sig")
    key_hint, certificates, keyless = _material(material, label=label)
    return Bundle(
        label=label,
        payload_type=payload_type,
        payload=payload,
        signature=sig,
        key_hint=key_hint,
        certificates=certificates,
        keyless=keyless,
    )


def _material(
    material: dict[str, typing.Any], *, label: str
) -> tuple[str | None, tuple[bytes, ...], bool]:
    field = f"{label}: verificationMaterial"
    tlog_entries = material.get("tlogEntries", [])
    if not isinstance(tlog_entries, list):
        raise _malformed(f"{field}.tlogEntries is not a list")
    if "publicKey" in material:
        public_key = _object(material["publicKey"], f"{field}.publicKey")
        hint = public_key.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise _malformed(f"{field}.publicKey.hint is not a string")
        return hint or None, (), False
    if "x509CertificateChain" in material:
        chain = _object(material["x509CertificateChain"], f"{field}.x509CertificateChain")
        certificates = chain.get("certificates")
        if not isinstance(certificates, list) or not certificates:
            raise _malformed(f"{field}.x509CertificateChain.certificates is missing or empty")
        return (
            None,
            tuple(
                _base64(
                    _object(cert, f"{field}.x509CertificateChain.certificates[{index}]").get(
                        "rawBytes"
                    ),
                    f"{field}.x509CertificateChain.certificates[{index}].rawBytes",
                )
                for index, cert in enumerate(certificates)
            ),
            bool(tlog_entries),
        )
    if "certificate" in material:
        leaf = _object(material["certificate"], f"{field}.certificate")
        raw = _base64(leaf.get("rawBytes"), f"{field}.certificate.rawBytes")
        # A single certificate is how sigstore keyless bundles (v0.3) carry Fulcio's.
        return None, (raw,), True
    raise _malformed(f"{field} has no publicKey, x509CertificateChain or certificate")


def _object(value: typing.Any, field: str) -> dict[str, typing.Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{field} is missing or not a JSON object")
    return value


def _base64(value: typing.Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise _malformed(f"{field} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{field} is not valid base64") from None


def _malformed(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.MALFORMED_BUNDLE, message)
