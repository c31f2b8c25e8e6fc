"""Anatomical plausibility of vertebra tables: order, overlap, level gaps, centroid labels.

Pure functions on table DataFrames that return, for every row, what is anatomically wrong with
it in words that name the levels (None where nothing is). The table contracts in ``schemas/``
declare them as quality checks (``raise_warning=True``): a flagged row stays in its table and gets
a quarantine record whose reason is this text, and ``params.yaml: checks.modes`` decides whether
the check is ignored, warned about or fails the build.

* :func:`mosmed_order_findings`: one expert's vertebrae must follow each other from cranial to
  caudal (centres falling in world z) without overlapping: each inferior endplate point (anterior,
  middle, posterior) above the next vertebra's superior endplate point of the same column.
* :func:`level_gap_findings`: the levels of one expert (MosMed) or one scan (VerSe) form an
  unbroken run (T13 and L6 are optional extras, never required).
* :func:`centroid_label_findings`: a VerSe centroid must lie on its own label in the mask, not
  on another vertebra or background.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from verse_etl.levels import MOSMED_LEVELS as LEVELS
from verse_etl.levels import VERSE_LEVELS

SPINE_ORDER: tuple[str, ...] = (*LEVELS[:19], "T13", *LEVELS[19:], "L6")
"""Level names from cranial to caudal, the optional T13 and L6 included."""
OPTIONAL_LEVELS = frozenset({"T13", "L6"})
"""Levels a spine may have; their absence is no gap."""
_COLUMNS = (("ant", "anterior"), ("mid", "middle"), ("post", "posterior"))


def _name(level: object, index: object) -> str:
    return str(level) if isinstance(level, str) else f"vertebra {index} (no level)"


def _empty(df: pd.DataFrame) -> pd.Series:
    return pd.Series([None] * len(df), index=df.index, dtype=object)


def _add(texts: list[str | None], i: int, text: str) -> None:
    """Add ``text`` to what was found in the row at position ``i``."""
    texts[i] = text if texts[i] is None else f"{texts[i]}; {text}"


def mosmed_order_findings(df: pd.DataFrame) -> pd.Series:
    """Cranio-caudal order and overlap of each expert's vertebrae (``mosmed_vertebrae`` rows).

    Within a study, release and expert the vertebrae are taken in level order where every one
    has a level, else in list order (``vertebra_index``: cranial to caudal in both releases).
    For each neighbouring pair both rows are flagged when the caudal centre (mean world z of the
    six points) is not below the cranial one, or when, for a column (anterior, middle,
    posterior), the caudal vertebra's superior endplate point lies above the cranial vertebra's
    inferior endplate point: the two bodies overlap along the axis. Touching points are allowed.

    Returns
    -------
    pandas.Series of str or None, aligned with ``df``.

    Examples
    --------
    >>> cols = {f"{c}_{e}_z_mm": [z + d] for c in ("ant", "mid", "post")
    ...         for e, d in (("sup", 10.0), ("inf", -10.0)) for z in [0.0]}
    >>> one = pd.DataFrame(cols)
    >>> two = one.copy()
    >>> for c in two.columns:
    ...     two[c] = two[c] - 15.0
    >>> df = pd.concat([one, two], ignore_index=True).assign(folder="F", release="v2",
    ...     expert="expert1", vertebra_index=[0, 1], level=["T7", "T8"])
    >>> mosmed_order_findings(df).tolist()[0]
    'expert1: T8 overlaps T7 (superior endplate point above T7 inferior one: anterior by 5.0 mm, middle by 5.0 mm, posterior by 5.0 mm)'
    """
    found = _empty(df)
    if df.empty:
        return found
    # Plain arrays: scalar .loc access per pair is what made this slow on whole tables.
    z = {
        (c, e): df[f"{c}_{e}_z_mm"].to_numpy(dtype=float)
        for c, _ in _COLUMNS
        for e in ("sup", "inf")
    }
    centre = sum(z.values()) / len(z)
    levels = df["level"].to_numpy(dtype=object)
    numbers = df["vertebra_index"].to_numpy()
    texts: list[str | None] = [None] * len(df)
    groups = df.groupby(["folder", "release", "expert"], sort=False).indices
    for (_, _, expert), positions in groups.items():
        members = [int(i) for i in positions]
        if all(isinstance(levels[i], str) for i in members):
            order = sorted(members, key=lambda i: LEVELS.index(str(levels[i])))
        else:
            order = sorted(members, key=lambda i: int(numbers[i]))
        for a, b in itertools.pairwise(order):
            upper, lower = _name(levels[a], numbers[a]), _name(levels[b], numbers[b])
            if not centre[b] < centre[a]:
                text = (
                    f"{expert}: {lower} (centre z {centre[b]:.1f} mm) is not below {upper} "
                    f"({centre[a]:.1f} mm)"
                )
                _add(texts, a, text)
                _add(texts, b, text)
                continue
            overlaps = [
                f"{word} by {z[(c, 'sup')][b] - z[(c, 'inf')][a]:.1f} mm"
                for c, word in _COLUMNS
                if z[(c, "sup")][b] > z[(c, "inf")][a]
            ]
            if overlaps:
                text = (
                    f"{expert}: {lower} overlaps {upper} (superior endplate point above {upper} "
                    f"inferior one: {', '.join(overlaps)})"
                )
                _add(texts, a, text)
                _add(texts, b, text)
    return pd.Series(texts, index=df.index, dtype=object)


def _gaps(levels: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """Neighbouring levels (in spine order) with required levels missing between them."""
    present = sorted(set(levels), key=SPINE_ORDER.index)
    out = []
    for a, b in itertools.pairwise(present):
        between = SPINE_ORDER[SPINE_ORDER.index(a) + 1 : SPINE_ORDER.index(b)]
        missing = [m for m in between if m not in OPTIONAL_LEVELS]
        if missing:
            out.append((a, b, missing))
    return out


def level_gap_findings(df: pd.DataFrame, by: Sequence[str], who: str | None = None) -> pd.Series:
    """Rows on either side of a gap in the run of levels of each group.

    Parameters
    ----------
    df
        Rows with a ``level`` column (None where unknown: not taken into account).
    by
        Columns of one group: ``folder, release, expert`` (MosMed), ``scan_id`` (VerSe).
    who
        Column named at the start of the text (e.g. ``expert``), or None.

    Examples
    --------
    >>> df = pd.DataFrame({"scan_id": ["a"] * 4, "level": ["T11", "T12", "L2", "L3"]})
    >>> level_gap_findings(df, ["scan_id"]).tolist()
    [None, 'L2 follows T12: L1 missing', 'L2 follows T12: L1 missing', None]
    >>> level_gap_findings(df.assign(level=["T12", "T13", "L1", "L2"]), ["scan_id"]).tolist()
    [None, None, None, None]
    """
    texts: list[str | None] = [None] * len(df)
    # Positions per group and plain arrays: a sub-frame per group (groupby iteration) cost
    # ~0.5 ms a group, most of the time of writing the vertebra tables.
    levels = df["level"].to_numpy(dtype=object)
    names = df[who].to_numpy(dtype=object) if who else None
    known = np.fromiter((isinstance(v, str) and v in SPINE_ORDER for v in levels), bool, len(df))
    where = np.flatnonzero(known)  # positions in df of the rows grouped
    for positions in df[known].groupby(list(by), sort=False).indices.values():
        rows = where[positions]
        for a, b, missing in _gaps([str(levels[i]) for i in rows]):
            prefix = f"{names[rows[0]]}: " if names is not None else ""
            text = f"{prefix}{b} follows {a}: {', '.join(missing)} missing"
            for i in rows:
                if levels[i] in (a, b):
                    _add(texts, i, text)
    return pd.Series(texts, index=df.index, dtype=object)


def centroid_label_findings(df: pd.DataFrame) -> pd.Series:
    """VerSe ``vertebrae`` rows whose centroid lies on another label or on background.

    Examples
    --------
    >>> df = pd.DataFrame({"label": [1, 2, 3], "level": ["C1", "C2", "C3"],
    ...     "mask_label_at_centroid": pd.array([0, 3, 3], dtype="Int64")})
    >>> centroid_label_findings(df).tolist()
    ['the centroid of C1 lies on background (mask 0)', 'the centroid of C2 lies on C3 (mask label 3)', None]
    """
    found = _empty(df)
    at = pd.array(df["mask_label_at_centroid"], dtype="Int64")
    for position, index in enumerate(df.index):
        value = at[position]
        if value is pd.NA or int(value) == int(df.loc[index, "label"]):
            continue
        level = df.loc[index, "level"]
        where = (
            "background (mask 0)"
            if int(value) == 0
            else f"{VERSE_LEVELS.get(int(value), 'an unknown label')} (mask label {int(value)})"
        )
        found[index] = f"the centroid of {level} lies on {where}"
    return found


def passes(findings: pd.Series) -> pd.Series:
    """True where a row has no finding."""
    return pd.Series(np.array([f is None for f in findings], dtype=bool), index=findings.index)
