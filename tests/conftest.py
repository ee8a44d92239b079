"""Options shared by every test tier."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=None,
        help="run the integration tests against this existing cluster (e.g. kind) instead of "
        "starting the local control plane; also read from $MODELGUARD_TEST_KUBECONFIG",
    )
