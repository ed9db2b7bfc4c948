"""How slides are named in every output path, whatever their format (for all stages)."""

from __future__ import annotations


def slide_stem(filename: str) -> str:
    """The slide name used in output paths: the file name without its last extension (``.svs``,
    ``.tif``, ``.ndpi``, …); a name without a dot is its own stem."""
    name = str(filename).rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
