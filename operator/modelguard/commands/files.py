"""Files a command line names, read whole, with a refusal that names the flag."""

from __future__ import annotations

import pathlib

from modelguard.trust import reasons


def read(path: pathlib.Path, *, what: str) -> bytes:
    """The bytes of `path`; Unreadable naming `what` (the flag) and the path otherwise."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise reasons.VerificationError(
            reasons.Reason.UNREADABLE, f"{what} {str(path)!r}: {error.strerror or error}"
        ) from None
