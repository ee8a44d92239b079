"""Artifact sources: reading a model's files from S3, HTTPS or a mounted PersistentVolumeClaim.

`open_source(uri, ...)` gives a base.Source for a folder URI, `open_file(uri, ...)` a source and a
name for a URI naming one file (a signature bundle). Every failure is an errors.SourceError with a
machine-readable `reason`.
"""

from __future__ import annotations

from pathlib import Path

from modelguard.sources import base, https, locations, pvc, s3


def open_source(
    uri: str,
    *,
    s3_settings: s3.S3Settings | None = None,
    transport_settings: base.Transport | None = None,
    mount_root: Path = pvc.DEFAULT_MOUNT_ROOT,
) -> base.Source:
    """The source for the folder `uri`. Nothing is contacted before the first call on it."""
    return _for_location(
        locations.parse(uri),
        s3_settings=s3_settings,
        transport_settings=transport_settings,
        mount_root=mount_root,
    )


def open_file(
    uri: str,
    *,
    s3_settings: s3.S3Settings | None = None,
    transport_settings: base.Transport | None = None,
    mount_root: Path = pvc.DEFAULT_MOUNT_ROOT,
) -> tuple[base.Source, str]:
    """The source of the folder holding the file `uri`, and the file's name in it."""
    location, name = locations.parse_file(uri)
    source = _for_location(
        location,
        s3_settings=s3_settings,
        transport_settings=transport_settings,
        mount_root=mount_root,
    )
    return source, name


def _for_location(
    location: locations.Location,
    *,
    s3_settings: s3.S3Settings | None,
    transport_settings: base.Transport | None,
    mount_root: Path,
) -> base.Source:
    transport_settings = transport_settings or base.Transport()
    if isinstance(location, locations.S3Location):
        return s3.S3Source(
            location,
            settings=s3_settings or s3.S3Settings(),
            transport_settings=transport_settings,
        )
    if isinstance(location, locations.HttpLocation):
        return https.HttpsSource(location, transport_settings=transport_settings)
    return pvc.PvcSource(location, mount_root=mount_root)
