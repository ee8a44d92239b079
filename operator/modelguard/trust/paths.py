"""The file names a signature lists and the paths it leaves out, as violations: the one file-name
rule (api/filenames) with the field it was found in, and OMS's rules for ignore paths."""

from __future__ import annotations

import typing

from modelguard.api import filenames
from modelguard.trust import reasons

# What OMS (6.2) excludes from every model by default, as top-level paths of the model root.
DEFAULT_EXCLUSIONS: typing.Final = (".git", ".gitattributes", ".github", ".gitignore")
_GLOB_CHARACTERS: typing.Final = frozenset("*?[")


def check_name(name: str, *, field: str = "name") -> reasons.Violation | None:
    """None when `name` is a safe relative POSIX path; else an UnsafePath violation naming it."""
    problem = filenames.problem(name)
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


def is_ignored(name: str, ignore_paths: typing.Iterable[str]) -> bool:
    """Whether `name` is one of `ignore_paths` or lies below one (model_signing's rule)."""
    return any(name == ignored or name.startswith(ignored + "/") for ignored in ignore_paths)
