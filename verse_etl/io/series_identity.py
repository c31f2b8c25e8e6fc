"""Series identity without UIDs: images whose SeriesInstanceUID is missing or empty.

De-identification pipelines often blank the Study, Series and SOP Instance UIDs. dcm2niix still
converts such files: with no UID to tell series apart it compares what the images say about
themselves (``isSameSet`` in ``nii_dicom_batch.cpp``: series number, acquisition, image type,
matrix and orientation). The same is done here, within one study folder: images without a UID
are grouped by

* the study folder (the case; folders are never merged),
* SeriesNumber and AcquisitionNumber,
* ImageType (a localizer never joins the axial images),
* the geometry: Rows, Columns, PixelSpacing and ImageOrientationPatient (rounded to 1e-4),

and each group gets a deterministic identifier derived from that key and from the group's slices
(InstanceNumber and ImagePositionPatient): the same files give the same identifier in every
build, on every machine. It has the form of a UUID-derived UID (``2.25.<decimal>``, DICOM PS3.5
B.2) so that it fits wherever a SeriesInstanceUID goes, and the ``series`` table says that it was
derived (``series_uid_derived``), never read.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # io.dicom calls this module while it groups a study's files
    from verse_etl.io.dicom import SliceHeader

DERIVED_UID_ROOT = "2.25."
"""UUID-derived UID root (DICOM PS3.5 B.2): ``2.25.`` then a 128-bit number in decimal."""

_ROUND = 4  # decimals of spacing and direction cosines in the grouping key


def _rounded(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(v, _ROUND) + 0.0 for v in values)


def identity_key(header: SliceHeader, folder: str) -> tuple[object, ...]:
    """What decides which UID-less images form one series (see the module docstring).

    Examples
    --------
    >>> from pathlib import Path
    >>> from verse_etl.io.dicom import SliceHeader
    >>> h = SliceHeader(path=Path("a"), series_uid="", study_uid="", instance_number=1,
    ...     position=(0, 0, 0), orientation=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.5, 0.5),
    ...     rows=512, columns=512, slope=1, intercept=0, image_type=("ORIGINAL", "AXIAL"),
    ...     attributes={"SeriesNumber": 2})
    >>> identity_key(h, "F")
    ('F', '2', '', ('ORIGINAL', 'AXIAL'), 512, 512, (0.5, 0.5), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    """
    number = header.attributes.get("SeriesNumber")
    return (
        folder,
        "" if number in (None, "") else str(number),
        "" if header.acquisition_number is None else str(header.acquisition_number),
        tuple(v.strip().upper() for v in header.image_type),
        header.rows,
        header.columns,
        _rounded(header.pixel_spacing),
        _rounded(header.orientation),
    )


def derived_series_uid(key: tuple[object, ...], headers: Iterable[SliceHeader]) -> str:
    """A stable UID for one group: the grouping key and the group's slices, hashed.

    The slices enter as sorted ``(InstanceNumber, ImagePositionPatient)`` pairs, so the value
    does not depend on file names, file order or the machine.
    """
    slices = sorted(
        (
            -1 if h.instance_number is None else h.instance_number,
            _rounded(h.position) or (),
        )
        for h in headers
    )
    digest = hashlib.sha256(repr((key, slices)).encode()).digest()
    return DERIVED_UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def group_without_uid(headers: Iterable[SliceHeader], folder: str) -> dict[str, list[SliceHeader]]:
    """Group images without SeriesInstanceUID into series and name each by a derived UID.

    Parameters
    ----------
    headers
        Images of one study whose SeriesInstanceUID is missing or empty, in file order.
    folder
        The study folder name (part of the identity: studies are never merged).

    Returns
    -------
    dict
        Derived UID -> the group's headers (file order), each with ``series_uid`` set to the
        derived UID and ``uid_derived`` True.
    """
    groups: dict[tuple[object, ...], list[SliceHeader]] = defaultdict(list)
    for header in headers:
        groups[identity_key(header, folder)].append(header)
    out: dict[str, list[SliceHeader]] = {}
    for key, members in groups.items():
        uid = derived_series_uid(key, members)
        out[uid] = [dataclasses.replace(h, series_uid=uid, uid_derived=True) for h in members]
    return out
