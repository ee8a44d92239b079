"""The installation's audit key: the Ed25519 key that signs every audit record and every
checkpoint of the audit log, under the log's name.

A key is named and identified as C2SP signed notes do (https://c2sp.org/signed-note): the name is
the log's name, the key ID the first four bytes of SHA-256(name || 0x0A || 0x01 || public key).
Verifiers get the public key as a verifier key, `<name>+<key ID, 8 hex>+<base64(0x01 || key)>`,
the format of golang.org/x/mod/sumdb/note: it lets anyone verify and nobody forge, so it can be
published. The private key is a PKCS#8 PEM file (what Helm's `genPrivateKey "ed25519"` and
`openssl genpkey -algorithm ed25519` write), mounted from a Secret; whoever can read that Secret
can sign as the operator.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import pathlib
import typing
import unicodedata

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ED25519: typing.Final = 0x01
"""The signed-note signature type byte of Ed25519."""
MAX_NAME_BYTES: typing.Final = 200
"""A log name is one line of every checkpoint and part of every origin; it need not be long."""
MAX_KEY_FILE_BYTES: typing.Final = 16 * 1024


class InvalidKey(ValueError):
    """A key cannot be used; the message names the key and what is accepted."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a log (and its key), or None. Signed notes forbid empty names,
    Unicode spaces and `+` (the separator of verifier keys); control characters are refused
    too, since names are printed."""
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    for char in name:
        if char == "+":
            return "contains '+'"
        if char.isspace() or unicodedata.category(char) in {"Zs", "Zl", "Zp"}:
            return "contains a space"
        if unicodedata.category(char) in {"Cc", "Cs", "Cf"}:
            return f"contains the control character U+{ord(char):04X}"
    return None


def key_id(name: str, public: bytes) -> int:
    """The signed-note key ID of an Ed25519 key under `name`."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()
    return int.from_bytes(digest[:4], "big")


@dataclasses.dataclass(frozen=True)
class Verifier:
    """A public audit key under its log's name."""

    name: str
    public: bytes

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem is not None:
            raise InvalidKey(f"the key name {self.name!r} {problem}")
        if len(self.public) != 32:
            raise InvalidKey("an Ed25519 public key has 32 bytes")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public)

    @property
    def id(self) -> str:
        """The key ID as 8 hex digits, as records, verifier keys and messages show it."""
        return f"{self.key_id:08x}"

    @property
    def vkey(self) -> str:
        """The verifier key: what verifiers are given, and what may be published."""
        encoded = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.id}+{encoded}"

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except crypto_exceptions.InvalidSignature:
            return False
        return True


@dataclasses.dataclass(frozen=True, repr=False)
class Signer:
    """The private audit key under its log's name; `repr` never shows the key."""

    name: str
    private: ed25519.Ed25519PrivateKey

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem is not None:
            raise InvalidKey(f"the log name {self.name!r} {problem}")

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, id={self.verifier.id})"

    @property
    def verifier(self) -> Verifier:
        public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return Verifier(name=self.name, public=public)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def generate(name: str) -> Signer:
    return Signer(name=name, private=ed25519.Ed25519PrivateKey.generate())


def parse_verifier(text: str) -> Verifier:
    """A verifier key `<name>+<8 hex>+<base64(0x01 || 32 bytes)>`; InvalidKey saying what is
    wrong otherwise."""
    name, _, rest = text.strip().partition("+")
    hex_id, _, encoded = rest.partition("+")
    expected = "expected <name>+<key ID, 8 hex digits>+<base64 of 0x01 and 32 key bytes>"
    if not name or len(hex_id) != 8 or not encoded:
        raise InvalidKey(f"not a verifier key: {expected}")
    try:
        claimed = int(hex_id, 16)
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidKey(f"not a verifier key: {expected}") from None
    if len(raw) != 33 or raw[0] != ED25519:
        raise InvalidKey("not an Ed25519 verifier key: the key must be 0x01 and 32 bytes")
    verifier = Verifier(name=name, public=raw[1:])
    if verifier.key_id != claimed:
        raise InvalidKey(
            f"the key ID {hex_id} is not that of this name and key ({verifier.id}): the "
            "verifier key was altered"
        )
    return verifier


def load_signer(path: pathlib.Path, *, name: str) -> Signer:
    """The private key in `path` (PKCS#8 PEM, Ed25519), named `name`; InvalidKey naming the file
    otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidKey(f"audit key {path}: {error.strerror or error}") from None
    accepted = (
        "expected an Ed25519 private key in PEM (PKCS#8, `-----BEGIN PRIVATE KEY-----`), as the "
        "chart's Secret holds or `openssl genpkey -algorithm ed25519` writes"
    )
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidKey(f"audit key {path}: larger than {MAX_KEY_FILE_BYTES} bytes; {accepted}")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm):
        raise InvalidKey(f"audit key {path}: not a PEM private key; {accepted}") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise InvalidKey(f"audit key {path}: not an Ed25519 key; {accepted}")
    problem = name_problem(name)
    if problem is not None:
        raise InvalidKey(f"audit log name {name!r} {problem}")
    return Signer(name=name, private=private)


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The public keys a verifier trusts: every key the log was ever signed with (a rotation
    adds one), all under the log's one name."""

    name: str
    by_id: typing.Mapping[int, Verifier]

    @classmethod
    def of(cls, verifiers: typing.Iterable[Verifier]) -> Keyring:
        found = list(verifiers)
        if not found:
            raise InvalidKey("no public key given")
        names = sorted({verifier.name for verifier in found})
        if len(names) > 1:
            raise InvalidKey(
                f"the public keys name {len(names)} logs ({', '.join(names)}); the keys of one "
                "log share its name: verify each log with its own keys"
            )
        return cls(name=names[0], by_id={verifier.key_id: verifier for verifier in found})

    def get(self, name: str, key_id: int) -> Verifier | None:
        verifier = self.by_id.get(key_id)
        return verifier if verifier is not None and verifier.name == name else None


def parse_verifiers(text: str, *, where: str) -> list[Verifier]:
    """The verifier keys of a file: one per line; blank lines and `#` comments skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            found.append(parse_verifier(stripped))
        except InvalidKey as error:
            raise InvalidKey(f"{where}, line {number}: {error}") from None
    if not found:
        raise InvalidKey(f"{where}: no verifier key in it")
    return found
