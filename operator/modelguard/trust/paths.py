"""Safety of the file names a signature lists: relative, normalised, inside the model folder.

model_signing writes names as normalised POSIX paths relative to the model root; anything else in
a signed statement is either a bug or an attack (a name like `../secret` makes a naive verifier
read outside the model), so it is refused here whatever model_signing itself would do.
"""

from __future__ import annotations

import typing

from modelguard.trust import reasons

# Longer names are refused: they exceed what every filesystem we mount accepts.
MAX_NAME_BYTES: typing.Final = 4096
# What OMS (6.2) excludes from every model by default, as top-level paths of the model root.
DEFAULT_EXCLUSIONS: typing.Final = (".git", ".gitattributes", ".github", ".gitignore")
_GLOB_CHARACTERS: typing.Final = frozenset("*?[")


def check_name(name: str, *, field: str = "name") -> reasons.Violation | None:
    """None when `name` is a safe relative POSIX path; else an UnsafePath violation naming it."""
    problem = _problem(name)
    if problem is None:
        return None
    return reasons.Violation(reasons.Reason.UNSAFE_PATH, f"{field} {name!r} {problem}")


def check_ignore_path(entry: str, *, field: str) -> reasons.Violation | None:
    """None when `entry` is an ignore path OMS allows (6.2.1): an exact, safe relative path with
    no glob character; else an UnsafePath violation naming `field`."""
    if _GLOB_CHARACTERS & set(entry):
        return reasons.Violation(
            reasons.Reason.UNSAFE_PATH,
            f"{field} {entry!r} has a glob character (*, ? or [): an ignore path is an exact path "
            "from the model root",
        )
    return check_name(entry, field=field)


def _problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if "\x00" in name:
        return "contains a NUL character"
    if "\\" in name:
        # A backslash is a separator on Windows and in some object stores' tooling.
        return "contains a backslash"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "contains a control character"
    if name.startswith("/"):
        return "is absolute"
    parts = name.split("/")
    if ".." in parts:
        return "contains '..'"
    if "." in parts or "" in parts:
        # Not what model_signing writes: two spellings of one file would defeat the manifest.
        return "is not normalised (empty or '.' component)"
    return None


def is_ignored(name: str, ignore_paths: typing.Iterable[str]) -> bool:
    """Whether `name` is one of `ignore_paths` or lies below one (model_signing's rule)."""
    return any(name == ignored or name.startswith(ignored + "/") for ignored in ignore_paths)
