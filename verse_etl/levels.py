"""Vertebra level names and the VerSe label map (VerSe README; ``data_utilities.v_dict``)."""

from __future__ import annotations

VERSE_LEVELS: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i + 7: f"T{i}" for i in range(1, 13)},
    **{i + 19: f"L{i}" for i in range(1, 7)},
    26: "S",
    27: "Co",
    28: "T13",
}
"""VerSe label (mask voxel value and centroid ``label``) -> level name. 0 is background."""

VERTEBRA_LABELS: tuple[int, ...] = tuple(k for k in VERSE_LEVELS if k not in (26, 27))
"""Labels annotated in VerSe: sacrum (26) and coccyx (27) are in the map but never labelled."""
