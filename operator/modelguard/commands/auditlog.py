"""`modelguard audit verify`: the hash chain of the operator's audit log checked under the
installation's key; `N records in K segments, chain intact`, or where it is broken."""

from __future__ import annotations

import pathlib
import sys
import typing

from modelguard.audit import chain, keys


def verify(*, file: str, key_file: pathlib.Path) -> int:
    """Exit code 0 and the summary on standard output, 1 and what is wrong on standard error.
    `file` is a path, or - for standard input."""
    try:
        key = keys.load(key_file)
    except keys.InvalidKey as error:
        print(error, file=sys.stderr)
        return 1
    try:
        if file == "-":
            result = chain.verify(_decoded(sys.stdin.buffer), key=key)
        else:
            with pathlib.Path(file).open("rb") as lines:
                result = chain.verify(_decoded(lines), key=key)
    except OSError as error:
        print(f"{file}: {error.strerror or error}", file=sys.stderr)
        return 1
    if not result.intact:
        print(result.summary(), file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _decoded(lines: typing.IO[bytes]) -> typing.Iterator[str]:
    # Invalid UTF-8 must not stop the check: a record holding it then fails its hash, and any
    # other line is skipped anyway.
    for raw in lines:
        yield raw.decode("utf-8", errors="replace")
