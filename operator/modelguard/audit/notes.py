"""C2SP signed notes (https://c2sp.org/signed-note), Ed25519 only: text signed by named keys.

A note is its text (ending in a newline), a blank line, then signature lines `— <key name>
base64(key ID || signature)`. Opening one follows the specification and Go's
golang.org/x/mod/sumdb/note: a signature by a known key must verify or the note is refused;
signatures by unknown keys are set aside; a note no known key signed is refused, saying who did.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import typing

from modelguard.audit import keys

MAX_BYTES: typing.Final = 64 * 1024
"""Far above any checkpoint (a few hundred bytes), far below what could cost memory."""
MAX_SIGNATURES: typing.Final = 100
"""The specification requires at least 16; Go's implementation stops at 100."""
_DASH: typing.Final = "\u2014 "


class NoteError(ValueError):
    """The note cannot be used; the message says why."""


class Malformed(NoteError):
    pass


class InvalidSignature(NoteError):
    """A known key's signature does not verify: the note was altered, or forged."""

    def __init__(self, verifier: keys.Verifier) -> None:
        super().__init__(
            f"the signature of key {verifier.name}+{verifier.id} does not verify: the note was "
            "altered or forged"
        )
        self.verifier = verifier


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    key_id: int

    @property
    def id(self) -> str:
        return f"{self.key_id:08x}"


class Unverified(NoteError):
    """No known key signed the note."""

    def __init__(self, text: str, signatures: typing.Sequence[Signature]) -> None:
        names = ", ".join(f"{s.name}+{s.id}" for s in signatures)
        super().__init__(f"signed by no key given, only by {names}")
        self.text = text
        self.signatures = tuple(signatures)


@dataclasses.dataclass(frozen=True)
class Opened:
    text: str
    signed_by: tuple[keys.Verifier, ...]
    others: tuple[Signature, ...]
    """Signatures of keys not given, ignored as the specification requires."""


def sign(text: str, signer: keys.Signer) -> str:
    """The signed note of `text` (which must end in a newline and hold no control character but
    newlines)."""
    problem = _text_problem(text)
    if problem is not None:
        raise Malformed(problem)
    verifier = signer.verifier
    signature = verifier.key_id.to_bytes(4, "big") + signer.sign(text.encode())
    return f"{text}\n{_DASH}{verifier.name} {base64.b64encode(signature).decode()}\n"


def open_note(note: str, known: keys.Keyring) -> Opened:
    """The text of `note` with the keys that signed it; NoteError when it is malformed, a known
    key's signature does not verify, or no known key signed it."""
    if len(note.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise Malformed(f"larger than {MAX_BYTES} bytes")
    for char in note:
        if (ord(char) < 0x20 and char != "\n") or 0xD800 <= ord(char) <= 0xDFFF:
            raise Malformed(f"holds the control character U+{ord(char):04X}")
    split = note.rfind("\n\n")
    if split < 0:
        raise Malformed("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise Malformed("the last signature line does not end in a newline")
    signed_by: list[keys.Verifier] = []
    others: list[Signature] = []
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise Malformed(f"more than {MAX_SIGNATURES} signatures")
    for line in lines:
        name, raw = _signature_line(line)
        key_id = int.from_bytes(raw[:4], "big")
        verifier = known.get(name, key_id)
        if verifier is None:
            signature = Signature(name=name, key_id=key_id)
            if signature not in others:
                others.append(signature)
            continue
        if verifier in signed_by:
            continue
        if not verifier.verifies(text.encode(), raw[4:]):
            raise InvalidSignature(verifier)
        signed_by.append(verifier)
    if not signed_by:
        raise Unverified(text, others)
    return Opened(text=text, signed_by=tuple(signed_by), others=tuple(others))


def _signature_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(_DASH):
        raise Malformed("a signature line does not start with an em dash and a space")
    name, _, encoded = line[len(_DASH) :].partition(" ")
    problem = keys.name_problem(name)
    if problem is not None:
        raise Malformed(f"a signature's key name {problem}")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise Malformed("a signature is not base64") from None
    if len(raw) < 5:
        raise Malformed("a signature is shorter than a key ID and one byte")
    return name, raw


def _text_problem(text: str) -> str | None:
    if not text.endswith("\n"):
        return "a note's text ends in a newline"
    if any((ord(char) < 0x20 and char != "\n") for char in text):
        return "a note's text holds no control character but newlines"
    return None
