"""The one rule for a file name inside a model: relative, normalised, and read the same way by every
server and file system. A signature's names, a source's listing, the agent's destination and
`modelguard verify` all apply it, so the cluster and the command line refuse the same names.

model_signing writes names as normalised POSIX paths relative to the model root; anything else is
either a bug or an attack: `../secret` makes a naive verifier read outside the model, and a
segment that is only dots after a server drops `;params` or decodes `%2e` climbs on that server
(the rule of api/uripaths). No pydantic here: the agent loads it at start-up.
"""

from __future__ import annotations

import re
import typing

from modelguard.api import uripaths

MAX_NAME_BYTES: typing.Final = 1024
"""The longest name in UTF-8 bytes: S3's own limit on a key, and more than any model needs."""

_CONTROL: typing.Final = re.compile(r"[\x00-\x1f\x7f]")


def problem(name: str) -> str | None:
    """Why `name` is not a safe relative file name (a phrase to follow the name), or None."""
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if _CONTROL.search(name):
        return "contains a control character (NUL, a line break, ...)"
    if "\\" in name:
        return "contains a backslash (a path separator on Windows and to some servers)"
    if name.startswith("/"):
        return "is absolute"
    segments = name.split("/")
    if ".." in segments:
        return "contains '..'"
    if "." in segments or "" in segments:
        # Not what model_signing writes: two spellings of one file would defeat the manifest.
        return "is not normalised (an empty or '.' segment)"
    for segment in segments:
        if uripaths.dot_segment(segment):
            return f"has the segment {segment!r}, which some servers read as '.' or '..'"
    return None
