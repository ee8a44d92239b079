"""The project's images, built once per session (their slow layers come from the binary cache),
and run without a node: umoci unpacks, runc runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import images
import oci


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def modelguard_image(image_dir: Path) -> oci.Image:
    return images.modelguard_image(out=image_dir / "modelguard.oci.tar")


@pytest.fixture(scope="session")
def model_server_image(image_dir: Path) -> oci.Image:
    return images.model_server_image(out=image_dir / "model-server.oci.tar")
