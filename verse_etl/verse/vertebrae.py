"""Rows of the ``vertebrae`` table (``schemas/vertebrae.py``): one per vertebra of a VerSe scan,
from its mask's label statistics and its centroid file."""

from __future__ import annotations

from typing import Any

import pandas as pd

# Checks about a vertebra's centroid; their records name the centroid file, as do those of a
# label only the centroid file lists. Every other vertebra record names the mask.
_CENTROID_CHECKS = frozenset(
    {"centroid_outside_volume", "centroid_outside_label", "centroid_without_mask_label"}
)


def quarantine_file(row: pd.Series, check: str, scan: dict[str, Any]) -> str:
    """The file a quarantine record of a vertebra row names (it has no file column itself):
    the centroid file or the mask of its ``scan`` row, whichever ``check`` is about."""
    about_centroid = check in _CENTROID_CHECKS or (row["in_centroids"] and not row["in_mask"])
    order = ("centroids_path", "mask_path") if about_centroid else ("mask_path", "centroids_path")
    return next((scan[k] for k in (*order, "ct_path") if scan.get(k)), str(row["scan_id"]))
