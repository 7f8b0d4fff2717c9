"""The former name of :mod:`onnxcam.dataset.manifest`."""

from ..dataset.manifest import (
    COLUMNS,
    MANIFEST_SUFFIXES,
    from_paths,
    is_manifest,
    is_uri,
    list_folder,
    location_key,
    read_bytes,
    read_manifest,
)

__all__ = [
    "COLUMNS",
    "MANIFEST_SUFFIXES",
    "from_paths",
    "is_manifest",
    "is_uri",
    "list_folder",
    "location_key",
    "read_bytes",
    "read_manifest",
]
