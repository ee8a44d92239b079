"""The image's pinned dependencies (hack/image-requirements.txt) satisfy pyproject.toml: a
dependency added or narrowed there without `python hack/images.py lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    text = (REPO / "hack" / "image-requirements.txt").read_text()
    pins = {}
    for name, version, digest in re.findall(
        r"^(\S+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", text, re.MULTILINE
    ):
        assert digest
        pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_with_a_hash_within_its_range() -> None:
    pins = _pins()
    lines = [x for x in (REPO / "hack" / "image-requirements.txt").read_text().splitlines()
             if "==" in x]  # fmt: skip
    assert len(pins) == len(lines)  # every pinned line has its hash
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency.name} is not in hack/image-requirements.txt"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} ∉ {dependency}"
