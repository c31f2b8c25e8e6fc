"""Vertebra level names and the other small vocabularies the table contracts check against:
the VerSe label map (VerSe README; ``data_utilities.v_dict``), the MosMed level alphabet and
keypoint names, the level-transfer rules, the graded VerSe labels.

Plain constants, no imports: a contract in ``schemas/`` reads them without loading a reader.
"""

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

MOSMED_ANNOTATED_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"Th{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
)
"""The MosMed v2 label alphabet, cranial to caudal."""

MOSMED_LEVELS: tuple[str, ...] = tuple(name.replace("Th", "T") for name in MOSMED_ANNOTATED_LEVELS)
"""Level names in the tables (``T7`` for v2's ``Th7``: the same names as VerSe's ``level``)."""

POINT_NAMES: tuple[str, ...] = ("ant_sup", "ant_inf", "mid_sup", "mid_inf", "post_sup", "post_inf")
"""Keypoint order within one MosMed vertebra, as in both annotation releases."""

LEVEL_RULES: tuple[str, ...] = ("v2_identical_keypoints", "v2_same_reader", "v2_other_reader")
"""How a MosMed v1 vertebra got its level from the labelled release, in the order the rules
are tried (:func:`verse_etl.mosmed.matching.levels_from_reference`)."""

GRADED_LABELS: tuple[int, ...] = tuple(range(8, 26))
"""VerSe levels with fracture-grade columns: T1..T12 (8-19) and L1..L6 (20-25)."""
