"""Is a DICOM series one clean volume? Slice order, geometry checks, verdict and affine.

Spec: DICOM PS3.3 C.7.6.2.1.1 (ImagePositionPatient, ImageOrientationPatient). The checks are
those of idc-index's ``volume_geometry_index`` (ImagingDataCommons/idc-index-data,
``scripts/sql/volume_geometry_index.sql``): one orientation, orthogonal direction cosines, unique
slice positions, constant in-plane position, one PixelSpacing, one matrix size, uniform slice
spacing; plus what a converter must say out loud rather than stack: gantry tilt, missing slices,
localizers mixed into the series.

Conventions
-----------
* Slices are ordered by their position along the slice normal ``n = row_dir x col_dir``
  (ascending; feet to head for an axial head-first series), never by InstanceNumber or file name.
* A volume is stored as ``array[row, column, slice]``: axis 0 is the DICOM pixel row (the
  direction of the column cosines), axis 1 the pixel column (the row cosines), axis 2 the
  position-sorted slice.
* DICOM patient coordinates are LPS+ (x to the patient's left, y posterior, z superior); every
  affine here is **RAS+** (x right, y anterior, z superior), ``RAS = diag(-1, -1, 1) @ LPS``, as
  in NIfTI and nibabel (see :func:`verse_etl.geometry.affines.dicom_affine`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from verse_etl.geometry.affines import axcodes, dicom_affine

if TYPE_CHECKING:  # type hints only: geometry stays free of the DICOM reader (and pydicom)
    from verse_etl.io.dicom import SliceHeader

VERDICTS: tuple[str, ...] = (
    "volume",
    "no_geometry",
    "localizer",
    "single_slice",
    "not_a_volume",
    "mixed_orientation",
    "not_orthogonal",
    "mixed_matrix",
    "gantry_tilt",
    "in_plane_shift",
    "missing_slices",
    "uneven_spacing",
)
"""Possible verdicts, most severe first after ``volume``; a series gets the first that applies.

``no_geometry``: a slice lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing, or
its orientation is not a pair of direction cosines. ``localizer``: every image is a scout.
``single_slice``: one image. ``not_a_volume``: slices share positions (repeated or dynamic
acquisitions). ``mixed_orientation``: more than one ImageOrientationPatient. ``not_orthogonal``:
row and column cosines not orthonormal. ``mixed_matrix``: more than one Rows x Columns or
PixelSpacing. ``gantry_tilt``: positions move within the image plane in proportion to the
slice position (sheared volume). ``in_plane_shift``: they move otherwise. ``missing_slices``:
gaps that are whole multiples of the slice step. ``uneven_spacing``: other irregular gaps.
"""

ORDERS: tuple[str, ...] = (
    "ascending",
    "descending",
    "unordered",
    "duplicate",
    "missing",
    "unknown",
)
"""How InstanceNumber runs along the position-sorted slices (``unknown``: they cannot be
sorted by position)."""


@dataclass(frozen=True)
class GeometryTolerances:
    """Tolerances of the geometry checks (``params.yaml: mosmed``).

    ``slice_mm`` (idc-index ``sliceIntervalTolerance``, dcm2niix ``kSliceTolerance``) bounds how
    far a slice interval or a slice position may be from a regular grid; ``in_plane_mm``
    (idc-index ``inPlaneTolerance``) how far ImagePositionPatient may move within the image
    plane; ``orientation`` how far direction cosines may be from unit length and orthogonality,
    and from one slice to the next. Positions closer than ``duplicate_mm`` are the same.
    """

    slice_mm: float = 0.2
    in_plane_mm: float = 0.1
    orientation: float = 0.01
    duplicate_mm: float = 0.01


@dataclass(frozen=True)
class GeometryChecks:
    """The idc-index boolean checks. False also when a check could not run (no geometry)."""

    single_orientation: bool = False
    orthogonal_orientation: bool = False
    unique_slice_positions: bool = False
    consistent_in_plane_row: bool = False
    consistent_in_plane_col: bool = False
    consistent_pixel_spacing: bool = False
    consistent_image_dimensions: bool = False
    uniform_slice_spacing: bool = False


@dataclass(frozen=True)
class SeriesGeometry:
    """A series sorted along its slice normal, with its checks, verdict and (if clean) affine.

    Attributes
    ----------
    slices
        Image slices (localizers removed), ascending along the slice normal when the
        geometry allows, else in file order.
    localizers
        Images of the series whose ImageType says LOCALIZER, set aside.
    shape
        ``(rows, columns, slices)`` of the volume the slices make.
    affine
        RAS+ affine of ``array[row, column, slice]``, only for a clean volume (else None).
    orientation
        Axis codes of ``[row, column, slice]`` (e.g. ``PLS``) where the orientation is known.
    pixel_spacing
        PixelSpacing of the first slice: (between rows, between columns) in mm.
    slice_step_mm
        Median distance between neighbouring slice positions along the normal.
    slice_spacing_mm
        First-to-last distance along the normal over ``slices - 1``: the store's slice spacing.
    tilt_deg
        Angle between the slice-to-slice step and the slice normal (0 when not sheared).
    missing_slices
        Slices missing from gaps that are whole multiples of the slice step.
    instance_order
        One of :data:`ORDERS`: how InstanceNumber runs along the sorted slices.
    checks
        The idc-index checks.
    verdict
        One of :data:`VERDICTS`: the most severe finding, or ``volume``.
    findings
        Every verdict that applies, most severe first (empty for a clean volume).
    problems
        What is wrong, with numbers, one string per failed check.
    """

    slices: tuple[SliceHeader, ...]
    localizers: tuple[SliceHeader, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray | None
    orientation: str | None
    pixel_spacing: tuple[float, float] | None
    slice_step_mm: float | None
    slice_spacing_mm: float | None
    tilt_deg: float | None
    missing_slices: int
    instance_order: str
    checks: GeometryChecks
    verdict: str
    findings: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def is_volume(self) -> bool:
        """True if every check passed: the slices stack into a regular 3-D grid."""
        return self.verdict == "volume"

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        """Voxel size of ``[row, column, slice]`` in mm (None unless a clean volume)."""
        if self.pixel_spacing is None or self.slice_spacing_mm is None or not self.is_volume:
            return None
        return (self.pixel_spacing[0], self.pixel_spacing[1], self.slice_spacing_mm)


def instance_order(numbers: list[int | None]) -> str:
    """How InstanceNumber runs along slices sorted by position.

    Examples
    --------
    >>> instance_order([3, 2, 1]), instance_order([1, 2, 4]), instance_order([1, 3, 2])
    ('descending', 'ascending', 'unordered')
    >>> instance_order([1, None]), instance_order([1, 1])
    ('missing', 'duplicate')
    """
    if any(n is None for n in numbers):
        return "missing"
    values = np.asarray(numbers, dtype=np.int64)
    if len(set(values.tolist())) != len(values):
        return "duplicate"
    steps = np.diff(values)
    if np.all(steps > 0):
        return "ascending"
    if np.all(steps < 0):
        return "descending"
    return "unordered"


def check_series(
    headers: list[SliceHeader], tolerances: GeometryTolerances | None = None
) -> SeriesGeometry:
    """Sort one series along its slice normal and decide whether it is a clean volume.

    Localizer images (ImageType LOCALIZER) are set aside first and reported in
    ``localizers``; every other image must fit the grid. Nothing here raises for bad data: the
    verdict and ``problems`` say what is wrong.

    The driver: set localizers aside, refuse a series without geometry, sort along the normal,
    run the ``_chk_*`` checks in :data:`_CHECKS` order (each returns its verdict and problem, or
    None) and give the affine of a clean volume.

    Parameters
    ----------
    headers
        Every image file of one SeriesInstanceUID, in any order.
    tolerances
        See :class:`GeometryTolerances`.
    """
    tol = tolerances or GeometryTolerances()
    localizers = tuple(h for h in headers if h.is_localizer)
    slices = [h for h in headers if not h.is_localizer]
    first = (slices or list(localizers))[0]
    empty = SeriesGeometry(
        slices=tuple(slices),
        localizers=localizers,
        shape=(first.rows, first.columns, len(slices)),
        affine=None,
        orientation=None,
        pixel_spacing=first.pixel_spacing,
        slice_step_mm=None,
        slice_spacing_mm=None,
        tilt_deg=None,
        missing_slices=0,
        instance_order="unknown",
        checks=GeometryChecks(),
        verdict="localizer",
        findings=("localizer",),
        problems=(),
    )
    unusable = _chk_localizers_only(slices, localizers) or _chk_geometry_present(slices)
    if unusable is not None:
        verdict, problem = unusable
        return replace(empty, verdict=verdict, findings=(verdict,), problems=(problem,))
    stack = _sort_along_normal(slices, tol)
    failed = [f for f in (check(stack, tol) for check in _CHECKS) if f is not None]
    findings = tuple(sorted({v for v, _ in failed}, key=VERDICTS.index))
    verdict = findings[0] if findings else "volume"
    ps = (float(stack.spacings[0][0]), float(stack.spacings[0][1]))
    affine = None
    if verdict == "volume":
        step_vec = (stack.positions[-1] - stack.positions[0]) / (len(stack.slices) - 1)
        affine = dicom_affine(stack.iop, stack.positions[0], ps, step_vec)
    orientation = axcodes(
        affine
        if affine is not None
        else dicom_affine(stack.iop, stack.positions[0], ps, stack.normal)
    )
    return SeriesGeometry(
        slices=tuple(stack.slices),
        localizers=localizers,
        shape=(first.rows, first.columns, len(stack.slices)),
        affine=affine,
        orientation=orientation,
        pixel_spacing=ps,
        slice_step_mm=stack.grid.step if stack.grid else None,
        slice_spacing_mm=stack.grid.spacing if stack.grid else None,
        tilt_deg=round(stack.tilt[0], 6) if stack.tilt else None,
        missing_slices=stack.grid.missing if stack.grid else 0,
        instance_order=instance_order([h.instance_number for h in stack.slices]),
        checks=_idc_checks(stack, tol),
        verdict=verdict,
        findings=findings,
        problems=tuple(problem for _, problem in failed),
    )


_Finding = tuple[str, str]
"""A failed check: its verdict (one of :data:`VERDICTS`) and what is wrong, with numbers."""


@dataclass(frozen=True)
class _Grid:
    """Where the slices sit along the normal (series with at least two distinct positions).

    ``step``: median distinct interval; ``spacing``: first-to-last over ``n - 1`` (None if
    positions repeat); ``uniform``: every slice on that regular grid; ``missing`` and
    ``irregular``: gaps that are / are not whole multiples of ``step`` (counted only when not
    uniform).
    """

    step: float
    spacing: float | None
    uniform: bool
    missing: int
    irregular: int
    distinct: np.ndarray


@dataclass(frozen=True)
class _Stack:
    """The non-localizer slices sorted along the normal, with what the checks measure on them."""

    slices: list[SliceHeader]
    iop: np.ndarray  # ImageOrientationPatient of the first slice in file order
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray  # unit slice normal, row_dir x col_dir
    iops: np.ndarray  # (n, 6) per slice, file order
    spacings: np.ndarray  # (n, 2) PixelSpacing per slice, file order
    dims: frozenset[tuple[int, int]]
    positions: np.ndarray  # (n, 3) ImagePositionPatient, sorted
    along: np.ndarray  # (n,) position along the normal, ascending
    in_row: np.ndarray  # (n,) position along the row cosines
    in_col: np.ndarray  # (n,) position along the column cosines
    intervals: np.ndarray  # (n - 1,) neighbouring distances along the normal
    n_distinct: int
    unique: bool
    tilt: tuple[float, float] | None  # (tilt degrees, residual mm) with >= 2 distinct positions
    grid: _Grid | None  # with >= 2 distinct positions


def _chk_localizers_only(
    slices: list[SliceHeader], localizers: tuple[SliceHeader, ...]
) -> _Finding | None:
    if slices:
        return None
    return "localizer", f"all {len(localizers)} image(s) are localizers (scouts)"


def _chk_geometry_present(slices: list[SliceHeader]) -> _Finding | None:
    incomplete = [
        h for h in slices if h.position is None or h.orientation is None or h.pixel_spacing is None
    ]
    if incomplete:
        return (
            "no_geometry",
            f"{len(incomplete)} of {len(slices)} slice(s) lack a valid ImagePositionPatient, "
            f"ImageOrientationPatient or PixelSpacing (e.g. {incomplete[0].path.name})",
        )
    iop = np.asarray(slices[0].orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir), np.linalg.norm(normal)) < 0.5:
        return (
            "no_geometry",
            f"ImageOrientationPatient {iop.round(5).tolist()} is not a pair of direction "
            "cosines (orientation undefined)",
        )
    return None


def _sort_along_normal(slices: list[SliceHeader], tol: GeometryTolerances) -> _Stack:
    """Sort the slices along the normal of the first one's orientation and measure them.

    InstanceNumber and the path only break exact ties, for determinism.
    """
    iop = np.asarray(slices[0].orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    normal = normal / np.linalg.norm(normal)
    positions = np.asarray([h.position for h in slices], dtype=float)
    along = positions @ normal
    order = sorted(
        range(len(slices)),
        key=lambda i: (along[i], slices[i].instance_number or 0, str(slices[i].path)),
    )
    positions, along = positions[order], along[order]
    intervals = np.diff(along)
    unique = bool(np.all(intervals > tol.duplicate_mm))
    n_distinct = 1 + int(np.sum(intervals > tol.duplicate_mm))
    in_row, in_col = positions @ row_dir, positions @ col_dir
    several = n_distinct >= 2
    return _Stack(
        slices=[slices[i] for i in order],
        iop=iop,
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        iops=np.asarray([h.orientation for h in slices], dtype=float),
        spacings=np.asarray([h.pixel_spacing for h in slices], dtype=float),
        dims=frozenset((h.rows, h.columns) for h in slices),
        positions=positions,
        along=along,
        in_row=in_row,
        in_col=in_col,
        intervals=intervals,
        n_distinct=n_distinct,
        unique=unique,
        tilt=_shear(along, in_row, in_col) if several else None,
        grid=_slice_grid(along, intervals, unique, tol) if several else None,
    )


def _slice_grid(
    along: np.ndarray, intervals: np.ndarray, unique: bool, tol: GeometryTolerances
) -> _Grid:
    """Step, spacing and regularity of at least two distinct positions along the normal."""
    distinct = intervals[intervals > tol.duplicate_mm]
    step = float(np.median(distinct))
    spacing = float((along[-1] - along[0]) / (len(along) - 1)) if unique else None
    uniform = False
    if spacing is not None:
        grid = along[0] + spacing * np.arange(len(along))
        uniform = bool(
            np.max(np.abs(intervals - spacing)) <= tol.slice_mm
            and np.max(np.abs(along - grid)) <= tol.slice_mm
        )
    missing = irregular = 0
    if not uniform:
        multiples = np.rint(distinct / step)
        whole = np.abs(distinct - multiples * step) <= tol.slice_mm
        missing = int(np.sum((multiples - 1)[whole & (multiples >= 2)]))
        irregular = int(np.sum(~whole))
    return _Grid(step, spacing, uniform, missing, irregular, distinct)


def _orthogonal(stack: _Stack, tol: GeometryTolerances) -> bool:
    return bool(
        abs(np.linalg.norm(stack.row_dir) - 1) <= tol.orientation
        and abs(np.linalg.norm(stack.col_dir) - 1) <= tol.orientation
        and abs(float(stack.row_dir @ stack.col_dir)) <= tol.orientation
    )


def _single_orientation(stack: _Stack, tol: GeometryTolerances) -> bool:
    return bool(np.max(np.abs(stack.iops - stack.iop)) <= tol.orientation)


def _consistent_spacing(stack: _Stack) -> bool:
    return bool(np.max(np.abs(stack.spacings - stack.spacings[0])) <= 1e-4)


def _in_plane_still(stack: _Stack, tol: GeometryTolerances) -> tuple[bool, bool]:
    """Whether the positions stay put along the row and along the column cosines."""
    return (
        bool(np.ptp(stack.in_row) < tol.in_plane_mm),
        bool(np.ptp(stack.in_col) < tol.in_plane_mm),
    )


def _chk_positions(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    n = len(stack.slices)
    if n == 1:
        return "single_slice", "only 1 slice: not a volume"
    if stack.n_distinct == 1:
        return (
            "not_a_volume",
            f"all {n} slices share one position along the normal "
            f"({stack.along[0]:.3f} mm): a repeated or dynamic single slice, not a volume",
        )
    if not stack.unique:
        return (
            "not_a_volume",
            f"{n - stack.n_distinct} slice(s) duplicate another position "
            "(overlapping stacks or several acquisitions in one series)",
        )
    return None


def _chk_orientation(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    if _single_orientation(stack, tol):
        return None
    return (
        "mixed_orientation",
        f"slices have {len({tuple(np.round(o, 3)) for o in stack.iops})} orientations "
        "(a localizer or another plane mixed into the series)",
    )


def _chk_orthogonal(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    if _orthogonal(stack, tol):
        return None
    return (
        "not_orthogonal",
        f"ImageOrientationPatient {stack.iop.round(5).tolist()} is not orthonormal "
        f"(tolerance {tol.orientation})",
    )


def _chk_matrix(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    if len(stack.dims) == 1 and _consistent_spacing(stack):
        return None
    return (
        "mixed_matrix",
        f"slices have {len(stack.dims)} matrix size(s) and "
        f"{len({tuple(s) for s in stack.spacings.round(5)})} PixelSpacing value(s)",
    )


def _chk_in_plane(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    if stack.tilt is None or all(_in_plane_still(stack, tol)):
        return None
    tilt, shift = stack.tilt
    if shift <= tol.in_plane_mm and tilt > 0:
        return (
            "gantry_tilt",
            f"gantry tilt of {tilt:.2f} degrees: slice positions move within the image "
            "plane as they advance (sheared volume)",
        )
    return (
        "in_plane_shift",
        f"slice positions move within the image plane by up to "
        f"{max(np.ptp(stack.in_row), np.ptp(stack.in_col)):.3f} mm, not in proportion to the "
        "slice position",
    )


def _chk_spacing(stack: _Stack, tol: GeometryTolerances) -> _Finding | None:
    grid = stack.grid
    # Repeated positions are not_a_volume already; a uniform grid is fine.
    if grid is None or grid.uniform or not stack.unique:
        return None
    if grid.irregular == 0 and grid.missing > 0:
        return (
            "missing_slices",
            f"{grid.missing} slice(s) missing: gaps of a whole multiple of the "
            f"{grid.step:.4f} mm step",
        )
    detail = f"; {grid.missing} slice(s) missing" if grid.missing else ""
    return (
        "uneven_spacing",
        f"slice spacing is not uniform (intervals {grid.distinct.min():.4f}.."
        f"{grid.distinct.max():.4f} mm, median {grid.step:.4f} mm, tolerance "
        f"{tol.slice_mm} mm{detail})",
    )


_CHECKS = (
    _chk_positions,
    _chk_orientation,
    _chk_orthogonal,
    _chk_matrix,
    _chk_in_plane,
    _chk_spacing,
)
"""The checks of a series with geometry, in the order their problems are listed."""


def _idc_checks(stack: _Stack, tol: GeometryTolerances) -> GeometryChecks:
    row_still, col_still = _in_plane_still(stack, tol)
    return GeometryChecks(
        single_orientation=_single_orientation(stack, tol),
        orthogonal_orientation=_orthogonal(stack, tol),
        unique_slice_positions=stack.unique and len(stack.slices) > 1,
        consistent_in_plane_row=row_still,
        consistent_in_plane_col=col_still,
        consistent_pixel_spacing=_consistent_spacing(stack),
        consistent_image_dimensions=len(stack.dims) == 1,
        uniform_slice_spacing=stack.grid is not None and stack.grid.uniform,
    )


def _shear(along: np.ndarray, in_row: np.ndarray, in_col: np.ndarray) -> tuple[float, float]:
    """Tilt angle (degrees) of the in-plane drift per mm along the normal, and the largest
    distance (mm) of an in-plane position from that straight drift."""
    x = along - along.mean()
    denom = float(x @ x)
    residual = 0.0
    slopes = []
    for values in (in_row, in_col):
        slope = float(x @ (values - values.mean())) / denom
        slopes.append(slope)
        fit = values.mean() + slope * x
        residual = max(residual, float(np.max(np.abs(values - fit))))
    return float(np.degrees(np.arctan(np.hypot(slopes[0], slopes[1])))), residual


def store_slice_index(k: np.ndarray | float, geometry: SeriesGeometry) -> np.ndarray:
    """Map a slice index in InstanceNumber order to the position-sorted store index.

    Annotation points give ``k`` as the 0-based (fractional) position of a slice in the series
    sorted by InstanceNumber (MOSMED.md §1.3); the store sorts slices by position. For a clean
    volume whose InstanceNumber runs monotonically the map is ``k`` (same direction) or
    ``n - 1 - k`` (opposite), exact for fractional ``k`` too because the grid is regular.

    Raises
    ------
    ValueError
        If InstanceNumber is missing, repeated or not monotonic along the slices: ``k`` then
        has no geometric meaning.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(shape=(512, 512, 300), instance_order="descending")
    >>> float(store_slice_index(10.25, g))
    288.75
    """
    n = geometry.shape[2]
    k = np.asarray(k, dtype=float)
    if geometry.instance_order == "ascending":
        return k
    if geometry.instance_order == "descending":
        return (n - 1) - k
    raise ValueError(
        f"InstanceNumber is {geometry.instance_order} along the slices (expected monotonic), so "
        "an InstanceNumber-order slice index cannot be placed"
    )
