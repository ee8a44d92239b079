"""Reading signature files: a sigstore bundle (.sig, one JSON document) or a JSONL file of them.

model_signing writes `application/vnd.dev.sigstore.bundle.v0.3+json` bundles whose content is a
DSSE envelope (payloadType `application/vnd.in-toto+json`, base64 payload, one signature) and whose
verificationMaterial is a public key hint (key method: hex SHA-256 of the signer's PEM public key),
an x509 certificate chain (certificate method: DER, leaf first) or, for keyless signing, a Fulcio
certificate with transparency log entries. JSONL (one bundle per line, one line per signer) is
where upstream is heading for several signers of one model. Parsing checks shape only; signatures
are checked in `signatures`, the payload in `statement`.

A signature file is read before any signature is checked, so what reading one costs must not be
the file's to decide: it is refused past the limits below before anything large is built, and
its long base64 strings are decoded in place rather than copied through json.loads. Reading a
file costs its size again at most (its payload decoded), whatever it holds.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import re
import secrets
import typing

from modelguard.trust import reasons

MEDIA_TYPE: typing.Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE: typing.Final = "application/vnd.in-toto+json"

# The limits below keep what reading a signature file costs a known figure, whatever the file
# holds: it is read before any signature is checked (docs/decisions/0009-bounded-signature-files.md
# has the measurements they come from).
#
# model_signing writes some 150 bytes per file plus its name into the statement, a third more once
# in base64: 2.4 MiB for 10,000 files, 24 MiB for 100,000 files named like
# "layers/012/part-012345.safetensors". 32 MiB holds 100,000 files with names of some 100 bytes.
MAX_SIGNATURE_FILE_BYTES: typing.Final = 32 * 1024 * 1024
# The JSON of a bundle outside its long base64 strings (payload, certificates): under 1 KiB for the
# key and certificate methods, a few KiB with transparency log entries. 256 KiB holds as many
# bundles as a policy can name signers, and json.loads of it costs at most some 25 times that.
MAX_STRUCTURE_BYTES: typing.Final = 256 * 1024
# Bundles (lines) of a JSONL file: one per signer, twice as many as a policy can name
# (trustpolicy.MAX_SIGNERS, 64, not imported: `modelguard verify` starts without the API models),
# which leaves room for co-signers a policy does not list. Each bundle costs a signature check:
# without a cap, a file of thousands of bad bundles keeps the operator busy for seconds per read.
MAX_BUNDLES: typing.Final = 128
# Certificates of one chain: the signing one, the intermediates followed (certificates.py follows
# at most 8) and the root, with room to spare; and the size of each (real ones are 1-2 KiB).
MAX_CERTIFICATES: typing.Final = 10
MAX_CERTIFICATE_BYTES: typing.Final = 16 * 1024
# An ECDSA signature in DER is at most 139 bytes (P-521).
MAX_SIGNATURE_BYTES: typing.Final = 512
# Key hints are hex SHA-256 (64 characters) in model_signing, short names elsewhere.
MAX_HINT_CHARS: typing.Final = 1024

# Base64 strings this long are not handed to json.loads: they are decoded straight from the file's
# bytes, so that the largest thing json.loads sees is the structure around them.
_LONG_BASE64: typing.Final = 1024
_BASE64_ALPHABET: typing.Final = re.compile(rb"[A-Za-z0-9+/=]*")


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
    document = _Document.of(data)
    try:
        return [_bundle(document.loads(document.text), document, label="bundle")]
    except _NotJson as whole_error:
        lines = [
            (number, line)
            for number, line in enumerate(document.text.split("\n"), 1)
            if line.strip()
        ]
        if len(lines) < 2:
            raise _malformed(f"signature file is not JSON: {whole_error}") from None
    if len(lines) > MAX_BUNDLES:
        raise _malformed(
            f"signature file holds {len(lines)} bundles (lines); at most {MAX_BUNDLES} are read "
            "(one per signer, with room for co-signers)"
        )
    bundles = []
    for number, line in lines:
        label = f"bundle on line {number}"
        try:
            parsed = document.loads(line)
        except _NotJson as line_error:
            raise _malformed(f"{label} is not JSON: {line_error}") from None
        bundles.append(_bundle(parsed, document, label=label))
    return bundles


def parse(data: bytes) -> Bundle:
    """One sigstore bundle from its JSON bytes."""
    document = _Document.of(data)
    try:
        return _bundle(document.loads(document.text), document, label="bundle")
    except _NotJson as error:
        raise _malformed(f"bundle is not JSON: {error}") from None


class _NotJson(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class _Document:
    """A signature file as json.loads sees it: its long base64 strings cut out.

    Each cut string becomes a placeholder (a random marker and a number, which no file can know in
    advance) and is decoded later from its place in `data`, once, by the field that wants it. The
    cut is exact: every quote outside a string starts one, and a string is cut only when it holds
    nothing but base64 characters (no escape, no control character), so json.loads accepts the cut
    text exactly when it accepts the file, and reads the same values.
    """

    data: bytes
    text: str
    spans: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, data: bytes) -> _Document:
        if len(data) > MAX_SIGNATURE_FILE_BYTES:
            raise _malformed(f"signature file is larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
        marker = secrets.token_hex(16)
        pieces: list[bytes] = []
        spans: dict[str, tuple[int, int]] = {}
        kept = 0  # bytes of structure so far: what json.loads will see
        copied = 0  # data[:copied] is in pieces
        position = 0
        while (start := data.find(b'"', position)) >= 0:
            # Always a quote outside any string, that opens one: the scan ends each string where
            # JSON does, at the first quote no backslash escapes.
            end, escaped = _string_end(data, start, limit=MAX_STRUCTURE_BYTES - kept + copied)
            position = end
            if (
                not escaped
                and end - start - 2 >= _LONG_BASE64
                and _BASE64_ALPHABET.fullmatch(data, start + 1, end - 1)
            ):
                placeholder = f"{marker}{len(spans)}"
                spans[placeholder] = (start + 1, end - 1)
                pieces += (data[copied:start], b'"%s"' % placeholder.encode())
                kept += start - copied + len(placeholder) + 2
                copied = end
            if kept + end - copied > MAX_STRUCTURE_BYTES:
                raise cls._too_much_structure()
        if kept + len(data) - copied > MAX_STRUCTURE_BYTES:
            raise cls._too_much_structure()
        pieces.append(data[copied:])
        try:
            text = b"".join(pieces).decode("utf-8")
        except UnicodeDecodeError as error:
            raise _malformed(f"signature file is not UTF-8 text: {error.reason}") from None
        return cls(data=data, text=text, spans=spans)

    @staticmethod
    def _too_much_structure() -> reasons.VerificationError:
        return _malformed(
            f"signature file has more than {MAX_STRUCTURE_BYTES} bytes of JSON outside its "
            "base64 strings (a bundle has a few KiB)"
        )

    @staticmethod
    def loads(text: str) -> typing.Any:
        try:
            return json.loads(text)
        except RecursionError:
            raise _NotJson("nested too deeply") from None
        except json.JSONDecodeError as error:
            raise _NotJson(f"{error.msg} at line {error.lineno} column {error.colno}") from None
        except ValueError as error:  # a number of more than 4300 digits
            raise _NotJson(str(error)) from None

    def shown(self, value: typing.Any) -> str:
        """A value for a message, cut short: a refused file's strings are anyone's."""
        span = self.spans.get(value) if isinstance(value, str) else None
        if span is not None:
            return f"a base64 string of {span[1] - span[0]} characters"
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:77]}..."

    def string(self, value: typing.Any, field: str, *, max_chars: int) -> str:
        """A string field that is not base64; MalformedBundle when missing or too long."""
        if not isinstance(value, str):
            raise _malformed(f"{field} is missing or not a string")
        if value in self.spans or len(value) > max_chars:
            raise _malformed(f"{field} is longer than {max_chars} characters")
        return value

    def base64(self, value: typing.Any, field: str, *, max_bytes: int | None = None) -> bytes:
        """A base64 field decoded, from the file's bytes when it was cut out."""
        if not isinstance(value, str) or not value:
            raise _malformed(f"{field} is missing or not a string")
        span = self.spans.get(value)
        encoded: bytes | memoryview = (
            value.encode("utf-8") if span is None else memoryview(self.data)[span[0] : span[1]]
        )
        # Checked before decoding: base64 holds 3 bytes in 4 characters.
        if max_bytes is not None and len(encoded) > -(-max_bytes // 3) * 4:
            raise _malformed(f"{field} is larger than {max_bytes} bytes")
        try:
            return binascii.a2b_base64(encoded, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _malformed(f"{field} is not valid base64") from None


def _string_end(data: bytes, start: int, *, limit: int) -> tuple[int, bool]:
    """Where the string opened by the quote at `start` ends (past its closing quote), and whether
    it holds an escape. A string with an escape is never cut out but kept whole in the structure,
    so its scan stops at the first escape past offset `limit`, where the structure would be over
    its bound: that bounds the scan's steps too."""
    position = start + 1
    escaped = False
    while True:
        quote = data.find(b'"', position)
        if quote < 0:
            raise _malformed("signature file is not JSON: a string is not terminated")
        backslash = data.find(b"\\", position, quote)
        if backslash < 0:
            return quote + 1, escaped
        escaped = True
        if backslash > limit:
            raise _Document._too_much_structure()
        position = backslash + 2  # past the escaped character, a quote or a backslash among them


def _bundle(parsed: typing.Any, document: _Document, *, label: str) -> Bundle:
    root = _object(parsed, label)
    media_type = root.get("mediaType")
    if media_type != MEDIA_TYPE:
        raise _malformed(f"{label}: mediaType {document.shown(media_type)} is not {MEDIA_TYPE!r}")
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
            f"{label}: dsseEnvelope.payloadType is {document.shown(payload_type)}, "
            f"not {IN_TOTO_PAYLOAD_TYPE!r}",
        )
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise _malformed(f"{label}: dsseEnvelope.signatures must hold exactly one signature")
    signature = _object(signatures[0], f"{label}: dsseEnvelope.signatures[0]")
    sig = document.base64(
        signature.get("sig"),
        f"{label}: dsseEnvelope.signatures[0].sig",
        max_bytes=MAX_SIGNATURE_BYTES,
    )
    key_hint, certificates, keyless = _material(material, document, label=label)
    # Decoded last, once everything small is known good: it is the one large allocation.
    payload = document.base64(envelope.get("payload"), f"{label}: dsseEnvelope.payload")
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
    material: dict[str, typing.Any], document: _Document, *, label: str
) -> tuple[str | None, tuple[bytes, ...], bool]:
    field = f"{label}: verificationMaterial"
    tlog_entries = material.get("tlogEntries", [])
    if not isinstance(tlog_entries, list):
        raise _malformed(f"{field}.tlogEntries is not a list")
    if "publicKey" in material:
        public_key = _object(material["publicKey"], f"{field}.publicKey")
        hint = public_key.get("hint")
        if hint is None:
            return None, (), False
        hint = document.string(hint, f"{field}.publicKey.hint", max_chars=MAX_HINT_CHARS)
        return hint or None, (), False
    if "x509CertificateChain" in material:
        chain = _object(material["x509CertificateChain"], f"{field}.x509CertificateChain")
        certificates = chain.get("certificates")
        if not isinstance(certificates, list) or not certificates:
            raise _malformed(f"{field}.x509CertificateChain.certificates is missing or empty")
        if len(certificates) > MAX_CERTIFICATES:
            raise _malformed(
                f"{field}.x509CertificateChain.certificates holds {len(certificates)} "
                f"certificates; at most {MAX_CERTIFICATES} are read"
            )
        return (
            None,
            tuple(
                _certificate(document, cert, f"{field}.x509CertificateChain.certificates[{index}]")
                for index, cert in enumerate(certificates)
            ),
            bool(tlog_entries),
        )
    if "certificate" in material:
        raw = _certificate(document, material["certificate"], f"{field}.certificate")
        # A single certificate is how sigstore keyless bundles (v0.3) carry Fulcio's.
        return None, (raw,), True
    raise _malformed(f"{field} has no publicKey, x509CertificateChain or certificate")


def _certificate(document: _Document, value: typing.Any, field: str) -> bytes:
    return document.base64(
        _object(value, field).get("rawBytes"),
        f"{field}.rawBytes",
        max_bytes=MAX_CERTIFICATE_BYTES,
    )


def _object(value: typing.Any, field: str) -> dict[str, typing.Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{field} is missing or not a JSON object")
    return value


def _malformed(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.MALFORMED_BUNDLE, message)
