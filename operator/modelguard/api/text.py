"""Outside text made safe to quote: in a log line, a status condition, an Event note or a refusal.

Whatever an attacker can write ends up quoted somewhere: a certificate's subject or SANs, an S3
error from a tenant's own endpoint, an object's name, an agent's termination message. `kubectl
describe`, `kubectl events` and `kubectl logs` print such text as it is, so a line break in it
starts a row of its own (a forged condition, Event or log line), and a bidirectional override
reorders what is shown. `escape` makes every such character a visible escape; `fit` cuts text to
a byte limit (the API server counts an Event note's 1 KiB in bytes) without splitting a character.
"""

from __future__ import annotations

import re
import typing

# C0 controls (tab included: it aligns text into columns that pose as fields), DEL, C1
# controls, the Unicode line and paragraph separators, bidirectional overrides and isolates, and
# lone surrogates (which UTF-8 cannot carry).
_UNSAFE: typing.Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED: typing.Final = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ELLIPSIS: typing.Final = "..."


def escape(text: str) -> str:
    """`text` on one line, every unsafe character as a visible escape (`\\n`, `\\x1b`,
    `\\u202e`); printable text, non-ASCII letters included, is left as it is."""
    # Every unsafe character is non-printable (Cc, Cf, Zl, Zp, Cs): most text skips the regex.
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def fit(text: str, *, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes of UTF-8, ending in "..." when cut, never in half a
    character."""
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    room = max(0, max_bytes - len(_ELLIPSIS))
    # "ignore" drops the partial character a byte cut may leave at the end.
    return encoded[:room].decode("utf-8", "ignore") + _ELLIPSIS[: max_bytes - room]


def quote(text: str, *, max_bytes: int) -> str:
    """`text` escaped, then cut to `max_bytes` bytes of UTF-8: what an Event note or a message
    quoting outside text carries."""
    return fit(escape(text), max_bytes=max_bytes)
