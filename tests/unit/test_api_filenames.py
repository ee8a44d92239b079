"""One file-name rule: what a signature may list is what a source may serve and the agent may write,
so `modelguard verify` refuses a name exactly when the cluster would."""

from __future__ import annotations

import re

import pytest

from modelguard.sources import errors, locations
from modelguard.trust import paths

NAMES = {
    "plain": ("model.safetensors", None),
    "nested": ("tokenizer/vocab.json", None),
    "dots-inside-names": ("..hidden/x..y", None),
    "unicode": ("é/ü ñ.bin", None),
    "longest": ("x" * 1024, None),
    "empty": ("", "is empty"),
    "absolute": ("/etc/passwd", "is absolute"),
    "parent": ("a/../../b", "contains '..'"),
    "empty-segment": ("a//b", "not normalised"),
    "dot-segment": ("./a", "not normalised"),
    "backslash": ("a\\b", "backslash"),
    "nul": ("a\x00b", "control character"),
    "newline": ("a\nb", "control character"),
    # What a server reads as a climb: only dots, after dropping ;params or decoding %2e.
    "three-dots": ("a/.../b", "'...'"),
    "encoded-parent": ("a/%2e%2e/b", "'%2e%2e'"),
    "parent-with-params": ("a/..;x/b", "'..;x'"),
    "too-long": ("x" * 1025, "longer than 1024 bytes"),
}


@pytest.mark.parametrize(("name", "problem"), NAMES.values(), ids=NAMES.keys())
def test_a_signature_and_a_source_refuse_the_same_names(name: str, problem: str | None) -> None:
    violation = paths.check_name(name, field="resources[0].name")
    if problem is None:
        assert violation is None
        assert locations.check_name(name) == name
        return
    assert violation is not None
    assert problem in violation.message
    assert violation.message.startswith(f"resources[0].name {name!r} ")
    with pytest.raises(errors.UnsafePath, match=re.escape(problem)):
        locations.check_name(name)
