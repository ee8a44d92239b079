"""The one rule for the path of a source or model URI, shared by the API schema, the policy's
binding and the sources (no pydantic: the agent loads it at start-up).

A URI is matched against a TrustPolicy's prefix by its segments, but a server reads the path
its own way: Tomcat and Jetty (Artifactory, Nexus) drop `;params` so that `..;` climbs, some
proxies decode `%2e` or `%2f` (or `%252e` twice). So the path must mean the same to every reader:
no `;`, no backslash, no percent-encoded `%`, `.`, `/` or `\\`, and no segment that is empty or
only dots.
"""

from __future__ import annotations

import re
import typing
import urllib.parse

ACCEPTED: typing.Final = (
    "path segments that are not empty, '.', '..' or only dots, with no ';' or '\\' and no "
    "percent-encoded '%', '.', '/' or '\\' (%25, %2E, %2F, %5C), and no spaces or control "
    "characters"
)
# The same rule as a regular expression (RE2 and Rust regex: no look-around), for the schemas.
_ESCAPE: typing.Final = r"%([0134679A-Fa-f][0-9A-Fa-f]|2[0-46-9A-Da-d]|5[0-9ABD-Fabd-f])"
_CHAR: typing.Final = rf"([^\s\x00-\x1f\x7f/;%\\]|{_ESCAPE})"
_NOT_DOT: typing.Final = rf"([^\s\x00-\x1f\x7f/;%\\.]|{_ESCAPE})"
HOST_PATTERN: typing.Final = r"[^\s\x00-\x1f\x7f/]+"
"""What may stand between scheme:// and the path: no space, control character or slash."""
SEGMENTS_PATTERN: typing.Final = rf"(/\.*{_NOT_DOT}{_CHAR}*)*/?"
"""Zero or more `/segment`, an optional trailing `/`: what follows scheme://authority."""
_REFUSED_ESCAPE = re.compile(r"%(25|2e|2f|5c)", re.IGNORECASE)
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# Decoding more often than this gains nothing: each pass removes a "%25" layer.
_MAX_DECODES: typing.Final = 8


def path_of(uri: str) -> str:
    """What follows `scheme://authority` in `uri`, without a query or fragment."""
    _, _, rest = uri.partition("://")
    _, slash, path = rest.partition("/")
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    return slash + path


def problem(uri: str) -> str | None:
    """Why `uri` (its path, mostly) breaks the rule, or None."""
    if _SPACE_OR_CONTROL.search(uri):
        # URL parsers drop tabs and newlines anywhere: the host or path read is not the written.
        return "has a space or control character"
    path = path_of(uri)
    if ";" in path:
        return "has ';' in its path (servers that drop ';params' read '..;' as '..')"
    if "\\" in path:
        return "has a backslash in its path (a separator to some servers)"
    escape = _REFUSED_ESCAPE.search(path)
    if escape is not None:
        return f"has {escape.group(0)!r} in its path (decoded again it climbs or splits a segment)"
    if not path:
        return None
    segments = path[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # one trailing "/" marks a folder
    for segment in segments:
        if dot_segment(segment):
            return f"has the path segment {segment!r} (empty, '.', '..' or only dots)"
    return None


def dot_segment(segment: str) -> bool:
    """Whether a path segment reads as empty or only dots to some server: after dropping its
    `;params` and percent-decoding it until nothing changes."""
    text = segment
    for _ in range(_MAX_DECODES):
        text = text.split(";", 1)[0]
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            break
        text = decoded
    return not text.strip(".")
