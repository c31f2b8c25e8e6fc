"""A spine phantom defined in world RAS+ millimetres, sampled on any voxel grid.

The phantom is a list of solids painted in a fixed order on top of air (-1000 HU):

1. the trunk, an elliptic cylinder of soft tissue (40 HU) along the S axis, with two lungs
   (-850 HU) over the thoracic levels;
2. intervertebral discs (80 HU, label 0);
3. the posterior arch of every vertebra (canal ring plus spinous process, 700 HU);
4. the vertebral bodies: cortical shell (1000 HU) around a cancellous core (250 HU).

Bodies are painted last so that the six endplate keypoints of a body (the VerSe centroid and the
MosMed annotation both refer to the body) always sit on bone, whatever the neighbours do.

Every vertebra lives in its own orthonormal frame: ``right`` (R, +x), ``anterior`` and
``superior`` (both in the sagittal plane; the spine curves only in that plane). In that frame a
body is the set of points ``(w, s, t)`` (w along right, s along anterior, t along superior) with

* ``((s - s_mid) / half_depth)**2 + (w / half_width)**2 <= 1`` (elliptic cross-section), and
* ``t_inf(s) <= t <= t_sup(s)``, where ``t_sup`` and ``t_inf`` are the quadratics through the
  three superior and the three inferior endplate keypoints.

So a keypoint fixes the endplate height where it sits: lowering the anterior keypoints makes a
wedge fracture, lowering the middle ones a biconcave one and lowering all of them a crush
fracture. Labels follow the VerSe label map (VERSE.md §3): 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6,
28 T13.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

AIR_HU = -1000
SOFT_TISSUE_HU = 40
LUNG_HU = -850
DISC_HU = 80
ARCH_HU = 700
CORTICAL_HU = 1000
CANCELLOUS_HU = 250

FractureType = Literal["normal", "wedge", "biconcave", "crush", "unknown"]

# Keypoints sit this fraction of the half depth away from the body centre, i.e. just inside the
# anterior and posterior walls, where a reader clicks the endplate corners.
KEYPOINT_DEPTH_FRACTION = 0.75

LEVEL_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{i + 7: f"T{i}" for i in range(1, 13)},
    **{i + 19: f"L{i}" for i in range(1, 7)},
    28: "T13",
}
"""VerSe label -> level name (VERSE.md §3; sacrum 26 and coccyx 27 are never built)."""


def spine_labels(*, t13: bool = False, l6: bool = False) -> tuple[int, ...]:
    """VerSe labels of a whole C1-L5 spine in cranio-caudal order.

    Parameters
    ----------
    t13
        Insert a thirteenth thoracic vertebra (label 28) between T12 and L1.
    l6
        Append a sixth lumbar vertebra (label 25).

    Returns
    -------
    tuple of int
        Labels, cranial first.

    Examples
    --------
    >>> spine_labels(t13=True)[17:22]
    (18, 19, 28, 20, 21)
    """
    labels = list(range(1, 20)) + ([28] if t13 else []) + list(range(20, 25)) + ([25] if l6 else [])
    return tuple(labels)


# Anatomical position used to interpolate sizes: C1 = 0 ... T12 = 18, L1 = 19 ... L6 = 24.
def _position(label: int) -> float:
    return 18.5 if label == 28 else float(label - 1)


# Typical adult sizes in mm at anchor positions (posterior body height, depth, width, disc
# thickness below, canal radius, spinous process length). Interpolated linearly in between.
_ANCHORS = np.array(
    [
        # pos, height, depth, width, disc, canal, spinous
        [0.0, 11.0, 14.0, 17.0, 4.0, 8.0, 8.0],
        [6.0, 14.0, 16.0, 23.0, 5.0, 7.0, 14.0],
        [7.0, 15.5, 17.0, 25.0, 4.0, 7.0, 20.0],
        [18.0, 22.5, 29.0, 37.0, 6.0, 7.5, 22.0],
        [19.0, 24.5, 31.0, 41.0, 8.0, 9.0, 20.0],
        [24.0, 27.5, 35.0, 49.0, 10.0, 10.0, 18.0],
    ]
)

# Sagittal tilt of the superior axis towards anterior, in degrees, at anchor positions: cervical
# lordosis, thoracic kyphosis (apex near T7) and lumbar lordosis (apex near L3). Positive means
# the vertebra leans forward, as Th1 does in the real MosMed annotations (about 28 degrees).
_TILT_ANCHORS = np.array(
    [
        [0.0, -8.0],
        [3.0, 0.0],
        [6.0, 14.0],
        [7.0, 20.0],
        [10.0, 10.0],
        [13.0, 0.0],
        [17.0, -10.0],
        [19.0, -10.0],
        [21.0, 0.0],
        [24.0, 14.0],
    ]
)


def level_size(label: int) -> dict[str, float]:
    """Typical size of a vertebra, in mm.

    Parameters
    ----------
    label
        VerSe label.

    Returns
    -------
    dict
        ``height`` (posterior body height), ``depth`` (antero-posterior), ``width`` (lateral),
        ``disc`` (thickness of the disc below), ``canal`` (spinal canal radius), ``spinous``
        (spinous process length).

    Examples
    --------
    >>> round(level_size(20)["height"], 1)
    24.5
    """
    pos = _position(label)
    values = [float(np.interp(pos, _ANCHORS[:, 0], _ANCHORS[:, c])) for c in range(1, 7)]
    return dict(zip(("height", "depth", "width", "disc", "canal", "spinous"), values, strict=True))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _quadratic_through(s: Sequence[float], t: Sequence[float]) -> np.ndarray:
    """Coefficients ``(c0, c1, c2)`` of ``c0 + c1 s + c2 s**2`` through three points."""
    vander = np.vander(np.asarray(s, dtype=float), 3, increasing=True)
    try:
        return np.linalg.solve(vander, np.asarray(t, dtype=float))
    except np.linalg.LinAlgError:
        # Two keypoints at the same depth: fall back to a flat endplate at their mean height.
        return np.array([float(np.mean(t)), 0.0, 0.0])


def _poly(c: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    return c[0] + s * (c[1] + s * c[2])


@dataclass(eq=False)
class Vertebra:
    """One vertebra: body, arch and keypoints, in world RAS+ mm.

    Build it with :func:`vertebra_from_heights` or :func:`vertebra_from_keypoints`.

    Attributes
    ----------
    label
        VerSe label.
    origin
        Origin of the local frame, world mm, shape (3,).
    frame
        Rows ``right``, ``anterior``, ``superior``; world unit vectors, shape (3, 3).
    sup, inf
        Quadratic coefficients of the superior and inferior endplate heights ``t(s)``.
    s_front, s_back
        Anterior and posterior wall positions along ``anterior``.
    half_width
        Lateral semi-axis of the body, mm.
    keypoints
        World mm, shape (6, 3), order ant_sup, ant_inf, mid_sup, mid_inf, post_sup, post_inf.
    fracture
        What the heights simulate.
    """

    label: int
    origin: np.ndarray
    frame: np.ndarray
    sup: np.ndarray
    inf: np.ndarray
    s_front: float
    s_back: float
    half_width: float
    keypoints: np.ndarray
    canal_radius: float
    spinous_length: float
    fracture: FractureType = "normal"
    centroid: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.centroid = self._body_centroid()

    @property
    def level(self) -> str:
        """Level name, e.g. ``"T7"``."""
        return LEVEL_NAMES.get(self.label, str(self.label))

    @property
    def s_mid(self) -> float:
        """Centre of the elliptic cross-section along ``anterior``."""
        return 0.5 * (self.s_front + self.s_back)

    @property
    def half_depth(self) -> float:
        """Antero-posterior semi-axis of the body, mm."""
        return 0.5 * (self.s_front - self.s_back)

    def heights_mm(self) -> tuple[float, float, float]:
        """Anterior, middle and posterior body heights between the keypoint pairs, mm."""
        h = np.linalg.norm(self.keypoints[1::2] - self.keypoints[0::2], axis=1)
        return float(h[0]), float(h[1]), float(h[2])

    def world(self, w: float, s: float, t: float) -> np.ndarray:
        """World position of local coordinates ``(w, s, t)``."""
        return self.origin + w * self.frame[0] + s * self.frame[1] + t * self.frame[2]

    def _body_centroid(self) -> np.ndarray:
        # Integrate over the elliptic cross-section on a fine (s, w) grid; along t each column is
        # a segment [t_inf, t_sup], whose mass and centre are exact.
        n = 201
        s = self.s_mid + self.half_depth * np.linspace(-1, 1, n)
        w = self.half_width * np.linspace(-1, 1, n)
        ss, ww = np.meshgrid(s, w, indexing="ij")
        inside = ((ss - self.s_mid) / self.half_depth) ** 2 + (ww / self.half_width) ** 2 <= 1
        top, bottom = _poly(self.sup, ss), _poly(self.inf, ss)
        mass = np.where(inside, np.clip(top - bottom, 0, None), 0.0)
        total = mass.sum()
        if total <= 0:
            raise ValueError(f"vertebra {self.level}: endplates cross everywhere (empty body)")
        local = [
            0.0,  # the cross-section is symmetric about the mid-sagittal plane
            float((mass * ss).sum() / total),
            float((mass * 0.5 * (top + bottom)).sum() / total),
        ]
        return self.world(*local)

    def local_box(self) -> np.ndarray:
        """Corners of a local box holding body and arch, world mm, shape (8, 3)."""
        arch_back = self.s_back - 2 * self.canal_radius - 6.0 - self.spinous_length
        half_w = max(self.half_width, self.canal_radius + 6.0)
        s_grid = np.linspace(self.s_back, self.s_front, 9)
        t_top = float(_poly(self.sup, s_grid).max()) + 1.0
        t_bottom = float(_poly(self.inf, s_grid).min()) - 1.0 - 0.6 * self.spinous_length
        corners = [
            self.world(w, s, t)
            for w in (-half_w, half_w)
            for s in (arch_back, self.s_front + 1.0)
            for t in (t_bottom, t_top)
        ]
        return np.array(corners)


def vertebra_from_heights(
    label: int,
    center: np.ndarray,
    tilt_deg: float,
    heights: tuple[float, float, float],
    *,
    depth: float,
    width: float,
    canal_radius: float,
    spinous_length: float,
    fracture: FractureType = "normal",
) -> Vertebra:
    """A vertebra with a symmetric body of given anterior/middle/posterior heights.

    Parameters
    ----------
    label
        VerSe label.
    center
        Centre of the body (origin of the local frame), world RAS+ mm.
    tilt_deg
        Rotation of the superior axis towards anterior about the R axis, degrees.
    heights
        Anterior, middle and posterior body heights in mm, measured at the keypoint depths.
    depth, width
        Antero-posterior and lateral extent of the body, mm.
    canal_radius, spinous_length
        Posterior arch dimensions, mm.
    fracture
        What the heights simulate (kept for manifests).

    Returns
    -------
    Vertebra
    """
    theta = np.deg2rad(tilt_deg)
    right = np.array([1.0, 0.0, 0.0])
    anterior = np.array([0.0, np.cos(theta), -np.sin(theta)])
    superior = np.array([0.0, np.sin(theta), np.cos(theta)])
    frame = np.stack([right, anterior, superior])
    half_depth = depth / 2
    s_key = KEYPOINT_DEPTH_FRACTION * half_depth
    s_points = (s_key, 0.0, -s_key)
    h_a, h_m, h_p = heights
    sup = _quadratic_through(s_points, (h_a / 2, h_m / 2, h_p / 2))
    inf = _quadratic_through(s_points, (-h_a / 2, -h_m / 2, -h_p / 2))
    center = np.asarray(center, dtype=float)
    keypoints = np.array(
        [
            center + s * anterior + sign * h / 2 * superior
            for s, h in zip(s_points, heights, strict=True)
            for sign in (1.0, -1.0)
        ]
    )
    return Vertebra(
        label=label,
        origin=center,
        frame=frame,
        sup=sup,
        inf=inf,
        s_front=half_depth,
        s_back=-half_depth,
        half_width=width / 2,
        keypoints=keypoints,
        canal_radius=canal_radius,
        spinous_length=spinous_length,
        fracture=fracture,
    )


def vertebra_from_keypoints(
    label: int,
    keypoints: np.ndarray,
    *,
    fracture: FractureType = "unknown",
    depth_fraction: float = KEYPOINT_DEPTH_FRACTION,
) -> Vertebra:
    """A vertebra whose endplates pass through six given keypoints.

    The keypoints must lie (nearly) in one sagittal plane, as MosMed annotations do: their
    column index is constant within a vertebra.

    Parameters
    ----------
    label
        VerSe label to paint (any; MosMed v1 annotations carry none).
    keypoints
        World RAS+ mm, shape (6, 3), order ant_sup, ant_inf, mid_sup, mid_inf, post_sup,
        post_inf.
    fracture
        Kept for manifests.
    depth_fraction
        Where the keypoints sit between the body centre (0) and the walls (1); smaller values
        give a deeper body, which keeps several readers' diverging points on bone.

    Returns
    -------
    Vertebra
        Body walls just outside the anterior and posterior keypoints; width 1.3 x depth; arch
        sized like a mid-thoracic vertebra.
    """
    k = np.asarray(keypoints, dtype=float).reshape(6, 3)
    origin = k.mean(axis=0)
    right = np.array([1.0, 0.0, 0.0])
    ant_dir = 0.5 * (k[0] + k[1]) - 0.5 * (k[4] + k[5])
    ant_dir[0] = 0.0  # keep the frame in the sagittal plane
    if np.linalg.norm(ant_dir) < 1e-6:
        ant_dir = np.array([0.0, 1.0, 0.0])
    anterior = _unit(ant_dir)
    superior = np.cross(right, anterior)
    frame = np.stack([right, anterior, superior])
    local = (k - origin) @ frame.T  # columns w, s, t
    s, t = local[:, 1], local[:, 2]
    sup = _quadratic_through(s[[0, 2, 4]], t[[0, 2, 4]])
    inf = _quadratic_through(s[[1, 3, 5]], t[[1, 3, 5]])
    s_ant, s_post = 0.5 * (s[0] + s[1]), 0.5 * (s[4] + s[5])
    half_depth = max(0.5 * (s_ant - s_post), 1.0) / depth_fraction
    s_mid = 0.5 * (s_ant + s_post)
    size = level_size(14)
    return Vertebra(
        label=label,
        origin=origin,
        frame=frame,
        sup=sup,
        inf=inf,
        s_front=s_mid + half_depth,
        s_back=s_mid - half_depth,
        half_width=1.3 * half_depth,
        keypoints=k,
        canal_radius=size["canal"],
        spinous_length=size["spinous"],
        fracture=fracture,
    )


@dataclass(eq=False)
class Disc:
    """An intervertebral disc: an elliptic cylinder between two bodies, world mm."""

    origin: np.ndarray
    frame: np.ndarray
    half_height: float
    half_depth: float
    half_width: float

    def local_box(self) -> np.ndarray:
        """Corners of the bounding box, world mm, shape (8, 3)."""
        r, a, u = self.frame
        return np.array(
            [
                self.origin + w * r + s * a + t * u
                for w in (-self.half_width, self.half_width)
                for s in (-self.half_depth, self.half_depth)
                for t in (-self.half_height, self.half_height)
            ]
        )


def disc_between(upper: Vertebra, lower: Vertebra) -> Disc:
    """The disc filling the gap between two consecutive bodies.

    It reaches 3 mm into both bodies so that concave endplates leave no gap; the bodies, painted
    later, overwrite the overlap.
    """
    top = upper.world(0.0, upper.s_mid, float(_poly(upper.inf, upper.s_mid)))
    bottom = lower.world(0.0, lower.s_mid, float(_poly(lower.sup, lower.s_mid)))
    axis = top - bottom
    length = float(np.linalg.norm(axis))
    superior = _unit(axis) if length > 1e-6 else _unit(upper.frame[2] + lower.frame[2])
    right = np.array([1.0, 0.0, 0.0])
    anterior = _unit(np.cross(superior, right))
    return Disc(
        origin=0.5 * (top + bottom),
        frame=np.stack([right, anterior, superior]),
        half_height=0.5 * length + 3.0,
        half_depth=0.5 * (upper.half_depth + lower.half_depth),
        half_width=0.5 * (upper.half_width + lower.half_width),
    )


@dataclass(eq=False)
class Trunk:
    """Soft-tissue elliptic cylinder along S with two lungs, world mm.

    ``lungs_z`` is the (inferior, superior) z range of the lungs, or None for no lungs.
    """

    center_xy: tuple[float, float]
    semi_axes: tuple[float, float] = (165.0, 115.0)
    lungs_z: tuple[float, float] | None = None
    lung_offset: tuple[float, float] = (80.0, 10.0)
    lung_semi_axes: tuple[float, float] = (55.0, 80.0)


@dataclass(eq=False)
class Phantom:
    """The whole phantom: trunk, vertebrae (cranial first) and the discs between them.

    Attributes
    ----------
    trunk
        Soft tissue and lungs.
    vertebrae
        Cranial first.
    discs
        One per consecutive pair of vertebrae.
    shell_mm
        Cortical shell thickness; make it at least about half a voxel so that coarse grids
        still show a shell.
    """

    trunk: Trunk
    vertebrae: list[Vertebra]
    discs: list[Disc]
    shell_mm: float = 1.2

    def by_label(self, label: int) -> Vertebra:
        """The vertebra with this VerSe label."""
        for v in self.vertebrae:
            if v.label == label:
                return v
        raise KeyError(label)

    def landmarks(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Ground truth per vertebra, in world RAS+ mm.

        Returns
        -------
        dict
            label -> (vertebral-body centroid, shape (3,); endplate keypoints, shape (6, 3) in
            the order ant_sup, ant_inf, mid_sup, mid_inf, post_sup, post_inf, all in the body's
            mid-sagittal plane).
        """
        return {v.label: (v.centroid.copy(), v.keypoints.copy()) for v in self.vertebrae}


def build_phantom(vertebrae: list[Vertebra], trunk: Trunk, *, shell_mm: float = 1.2) -> Phantom:
    """Assemble a phantom and add the discs between consecutive vertebrae."""
    discs = [disc_between(a, b) for a, b in itertools.pairwise(vertebrae)]
    return Phantom(trunk=trunk, vertebrae=vertebrae, discs=discs, shell_mm=shell_mm)


def build_spine(
    labels: Sequence[int],
    *,
    top: np.ndarray,
    rng: np.random.Generator,
    fractures: dict[int, tuple[FractureType, float]] | None = None,
    curvature: float = 1.0,
    lateral_mm: float = 3.0,
    anchor: tuple[int, np.ndarray] | None = None,
) -> list[Vertebra]:
    """Stack vertebrae along a curved spine, cranial first.

    Parameters
    ----------
    labels
        VerSe labels in cranio-caudal order (see :func:`spine_labels`).
    top
        World position of the first body centre, mm.
    rng
        Seeded generator for the small per-vertebra size variation.
    fractures
        ``label -> (type, ratio)``: a wedge lowers the anterior height to ``ratio`` of the
        posterior one (the middle half as much), a biconcave lowers the middle one, a crush
        multiplies all three heights by ``ratio``.
    curvature
        Scales the sagittal tilt profile (kyphosis/lordosis).
    lateral_mm
        Amplitude of a gentle lateral (scoliotic) drift of the body centres.
    anchor
        ``(label, point)``: translate the spine so that this vertebra's body centroid lands on
        ``point`` (world mm); ``top`` then only sets the shape of the curve.

    Returns
    -------
    list of Vertebra
    """
    fractures = fractures or {}
    phase = rng.uniform(0, 2 * np.pi)
    out: list[Vertebra] = []
    center = np.asarray(top, dtype=float).copy()
    previous: tuple[np.ndarray, float, float] | None = None  # superior axis, half extent, disc
    for index, label in enumerate(labels):
        size = level_size(label)
        jitter = rng.uniform(0.96, 1.04, size=3)
        height, depth, width = (
            size["height"] * jitter[0],
            size["depth"] * jitter[1],
            size["width"] * jitter[2],
        )
        tilt = curvature * float(
            np.interp(_position(label), _TILT_ANCHORS[:, 0], _TILT_ANCHORS[:, 1])
        )
        # Normal bodies: anterior slightly lower than posterior, endplates slightly concave.
        h_a, h_m, h_p = 0.95 * height, 0.92 * height, height
        kind, ratio = fractures.get(label, ("normal", 1.0))
        if kind == "wedge":
            h_a = ratio * h_p
            h_m = h_m * (1 - 0.5 * (1 - ratio))
        elif kind == "biconcave":
            h_m = ratio * h_p
        elif kind == "crush":
            h_a, h_m, h_p = ratio * h_a, ratio * h_m, ratio * h_p
        theta = np.deg2rad(tilt)
        superior = np.array([0.0, np.sin(theta), np.cos(theta)])
        half_extent = 0.5 * max(h_a, h_m, h_p)
        if previous is not None:
            prev_sup, prev_half, disc = previous
            mid = _unit(prev_sup + superior)
            center = center - prev_sup * prev_half - mid * disc - superior * half_extent
        center[0] = top[0] + lateral_mm * np.sin(phase + 0.35 * index)
        out.append(
            vertebra_from_heights(
                label,
                center.copy(),
                tilt,
                (h_a, h_m, h_p),
                depth=depth,
                width=width,
                canal_radius=size["canal"],
                spinous_length=size["spinous"],
                fracture=kind,
            )
        )
        previous = (superior, half_extent, size["disc"])
    if anchor is not None:
        label, point = anchor
        delta = np.asarray(point, dtype=float) - next(v for v in out if v.label == label).centroid
        out = [translated(v, delta) for v in out]
    return out


def translated(v: Vertebra, delta: np.ndarray) -> Vertebra:
    """A copy of ``v`` moved by ``delta`` (world mm)."""
    return replace(v, origin=v.origin + delta, keypoints=v.keypoints + delta)


# ------------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class Slab:
    """Phantom values for voxels ``[:, :, k0:k0 + hu.shape[2]]`` of a grid.

    ``hu`` is int16 Hounsfield units, ``label`` uint8 VerSe labels; both (n0, n1, depth), in the
    grid's own array-axis order.
    """

    k0: int
    hu: np.ndarray
    label: np.ndarray


def _voxel_box(
    corners: np.ndarray, inverse: np.ndarray, shape: tuple[int, int, int]
) -> tuple[int, int, int, int, int, int] | None:
    """Voxel index ranges (half-open, clipped) covering world points ``corners``."""
    ijk = corners @ inverse[:3, :3].T + inverse[:3, 3]
    lo = np.floor(ijk.min(axis=0)).astype(int)
    hi = np.ceil(ijk.max(axis=0)).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    return lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]


def _local_coords(
    affine: np.ndarray,
    origin: np.ndarray,
    frame: np.ndarray,
    box: tuple[int, int, int, int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local (w, s, t) of the voxels in ``box``; each an (n0, n1, n2) float array.

    Voxel -> local is affine, so each coordinate is an outer sum of three 1-D ramps.
    """
    i0, i1, j0, j1, k0, k1 = box
    i = np.arange(i0, i1, dtype=float)[:, None, None]
    j = np.arange(j0, j1, dtype=float)[None, :, None]
    k = np.arange(k0, k1, dtype=float)[None, None, :]
    m = frame @ affine[:3, :3]
    c = frame @ (affine[:3, 3] - origin)
    w, s, t = (m[r, 0] * i + m[r, 1] * j + (m[r, 2] * k + c[r]) for r in range(3))
    return w, s, t


def _clip_k(
    box: tuple[int, int, int, int, int, int] | None, k0: int, k1: int
) -> tuple[int, int, int, int, int, int] | None:
    """The part of a voxel box inside slab ``[k0, k1)`` along axis 2, or None."""
    if box is None:
        return None
    i0, i1, j0, j1, b0, b1 = box
    lo, hi = max(b0, k0), min(b1, k1)
    return None if hi <= lo else (i0, i1, j0, j1, lo, hi)


def _paint_body(
    v: Vertebra, w: np.ndarray, s: np.ndarray, t: np.ndarray, shell_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    q = np.sqrt(((s - v.s_mid) / v.half_depth) ** 2 + (w / v.half_width) ** 2)
    top = _poly(v.sup, s)
    bottom = _poly(v.inf, s)
    inside = (q <= 1.0) & (t <= top) & (t >= bottom)
    # Distance to the nearest surface, approximated per direction (endplates are nearly flat).
    edge = np.minimum(np.minimum(top - t, t - bottom), (1.0 - q) * min(v.half_depth, v.half_width))
    shell = inside & (edge < shell_mm)
    return inside, shell


def _paint_arch(v: Vertebra, w: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    thickness = 5.0
    s_canal = v.s_back - v.canal_radius
    t_mid = 0.5 * float(_poly(v.sup, v.s_back) + _poly(v.inf, v.s_back))
    half_h = 0.3 * float(_poly(v.sup, v.s_back) - _poly(v.inf, v.s_back))
    r = np.sqrt((s - s_canal) ** 2 + w**2)
    ring = (r >= v.canal_radius) & (r <= v.canal_radius + thickness) & (s <= v.s_back)
    ring &= np.abs(t - t_mid) <= half_h
    # Spinous process: a thin plate running backwards and down from the back of the ring.
    s_start = s_canal - v.canal_radius - thickness + 1.0
    back = s_start - s  # > 0 behind the ring
    droop = 0.6 * back
    spinous = (back >= 0) & (back <= v.spinous_length) & (np.abs(w) <= 3.5)
    spinous &= (t <= t_mid + 0.5 * half_h - droop) & (t >= t_mid - half_h - droop)
    return ring | spinous


def _paint_disc(d: Disc, w: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return ((s / d.half_depth) ** 2 + (w / d.half_width) ** 2 <= 1.0) & (np.abs(t) <= d.half_height)


def _background(
    trunk: Trunk, affine: np.ndarray, shape: tuple[int, int, int], k0: int, k1: int
) -> np.ndarray:
    i = np.arange(shape[0], dtype=float)[:, None, None]
    j = np.arange(shape[1], dtype=float)[None, :, None]
    k = np.arange(k0, k1, dtype=float)[None, None, :]
    x = affine[0, 0] * i + affine[0, 1] * j + (affine[0, 2] * k + affine[0, 3])
    y = affine[1, 0] * i + affine[1, 1] * j + (affine[1, 2] * k + affine[1, 3])
    cx, cy = trunk.center_xy
    ax, ay = trunk.semi_axes
    hu = np.full((shape[0], shape[1], k1 - k0), AIR_HU, dtype=np.int16)
    hu[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0] = SOFT_TISSUE_HU
    if trunk.lungs_z is not None:
        z = affine[2, 0] * i + affine[2, 1] * j + (affine[2, 2] * k + affine[2, 3])
        z_lo, z_hi = trunk.lungs_z
        lx, ly = trunk.lung_semi_axes
        in_z = (z >= z_lo) & (z <= z_hi)
        for side in (-1.0, 1.0):
            lung = ((x - cx - side * trunk.lung_offset[0]) / lx) ** 2 + (
                (y - cy - trunk.lung_offset[1]) / ly
            ) ** 2 <= 1.0
            hu[lung & in_z] = LUNG_HU
    return hu


def iter_slabs(
    phantom: Phantom,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    *,
    labelled: set[int] | frozenset[int] | None = None,
    depth: int = 8,
    noise_hu: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Iterator[Slab]:
    """Sample the phantom on a voxel grid, slab by slab along the last array axis.

    Parameters
    ----------
    phantom
        What to sample.
    shape
        Grid shape (n0, n1, n2).
    affine
        4x4 voxel index -> world RAS+ mm.
    labelled
        Labels to write into the label array; other vertebrae are bone in ``hu`` but 0 in
        ``label`` (an annotator left them out). None labels every vertebra.
    depth
        Slab thickness along axis 2; memory is about ``40 * n0 * n1 * depth`` bytes.
    noise_hu
        Standard deviation of Gaussian noise added to ``hu`` (0 = none). Needs ``rng``.
    rng
        Seeded generator for the noise; consumed in slab order, so the output is deterministic.

    Yields
    ------
    Slab
        ``hu`` int16 (clipped to -1024..3071) and ``label`` uint8, shape (n0, n1, d).
    """
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    affine = np.asarray(affine, dtype=float)
    inverse = np.linalg.inv(affine)
    if noise_hu > 0 and rng is None:
        raise ValueError("noise_hu > 0 needs a seeded rng")
    # Paint order: discs, arches, bodies (bodies last so keypoints always sit on bone).
    boxes_disc = [(d, _voxel_box(d.local_box(), inverse, shape)) for d in phantom.discs]
    boxes_vert = [(v, _voxel_box(v.local_box(), inverse, shape)) for v in phantom.vertebrae]
    # Axial grids (slab axis along z only, no in-plane tilt) have the same trunk in every slice.
    axial = np.allclose(affine[:2, 2], 0) and np.allclose(affine[2, :2], 0)
    cached: dict[bool, np.ndarray] = {}
    for k0 in range(0, shape[2], depth):
        k1 = min(k0 + depth, shape[2])
        if axial:
            hu = _axial_trunk(phantom.trunk, affine, shape, k0, k1, cached)
        else:
            hu = _background(phantom.trunk, affine, shape, k0, k1)
        label = np.zeros(hu.shape, dtype=np.uint8)
        _paint_spine(hu, label, k0, k1, affine, boxes_disc, boxes_vert, labelled, phantom.shell_mm)
        if noise_hu > 0 and rng is not None:
            noise = rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
            hu = np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)
        else:
            np.clip(hu, -1024, 3071, out=hu)
        yield Slab(k0=k0, hu=hu, label=label)


def _axial_trunk(
    trunk: Trunk,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    k0: int,
    k1: int,
    cached: dict[bool, np.ndarray],
) -> np.ndarray:
    """Slices k0..k1 of the trunk on an axial grid: one slice with lungs, one without, reused
    (``cached``) for every slice of the same kind."""
    hu = np.empty((shape[0], shape[1], k1 - k0), dtype=np.int16)
    for kk in range(k0, k1):
        z = affine[2, 2] * kk + affine[2, 3]
        lungs = trunk.lungs_z is not None and (trunk.lungs_z[0] <= z <= trunk.lungs_z[1])
        if lungs not in cached:
            cached[lungs] = _background(trunk, affine, shape, kk, kk + 1)[:, :, 0]
        hu[:, :, kk - k0] = cached[lungs]
    return hu


def _paint_spine(
    hu: np.ndarray,
    label: np.ndarray,
    k0: int,
    k1: int,
    affine: np.ndarray,
    boxes_disc: list,
    boxes_vert: list,
    labelled: set[int] | frozenset[int] | None,
    shell_mm: float,
) -> None:
    """Paint the discs, then every arch, then every body into the slab ``hu``/``label`` (slices
    k0..k1): bodies last so that keypoints always sit on bone."""
    for disc, box in boxes_disc:
        b = _clip_k(box, k0, k1)
        if b is not None:
            w, s, t = _local_coords(affine, disc.origin, disc.frame, b)
            m = _paint_disc(disc, w, s, t)
            view = hu[b[0] : b[1], b[2] : b[3], b[4] - k0 : b[5] - k0]
            view[m] = DISC_HU
    for stage in ("arch", "body"):
        for v, box in boxes_vert:
            b = _clip_k(box, k0, k1)
            if b is None:
                continue
            w, s, t = _local_coords(affine, v.origin, v.frame, b)
            view = hu[b[0] : b[1], b[2] : b[3], b[4] - k0 : b[5] - k0]
            lview = label[b[0] : b[1], b[2] : b[3], b[4] - k0 : b[5] - k0]
            value = v.label if labelled is None or v.label in labelled else 0
            if stage == "arch":
                m = _paint_arch(v, w, s, t)
                view[m] = ARCH_HU
                lview[m] = value
            else:
                inside, shell = _paint_body(v, w, s, t, shell_mm)
                view[inside] = CANCELLOUS_HU
                view[shell] = CORTICAL_HU
                lview[inside] = value


def sample_volume(
    phantom: Phantom,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    *,
    labelled: set[int] | frozenset[int] | None = None,
    depth: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-volume, noise-free convenience wrapper of :func:`iter_slabs` (small grids only).

    Returns
    -------
    hu : ndarray of int16, shape ``shape``
    label : ndarray of uint8, shape ``shape``
    """
    hu = np.empty(shape, dtype=np.int16)
    label = np.empty(shape, dtype=np.uint8)
    for slab in iter_slabs(phantom, shape, affine, labelled=labelled, depth=depth):
        d = slab.hu.shape[2]
        hu[:, :, slab.k0 : slab.k0 + d] = slab.hu
        label[:, :, slab.k0 : slab.k0 + d] = slab.label
    return hu, label


def world_to_voxel(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map world mm points (..., 3) to continuous voxel indices with ``inv(affine)``.

    Examples
    --------
    >>> world_to_voxel(np.diag([2.0, 2.0, 2.0, 1.0]), np.array([4.0, 2.0, 0.0]))
    array([2., 1., 0.])
    """
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    pts = np.asarray(points, dtype=float)
    return pts @ inverse[:3, :3].T + inverse[:3, 3]


def voxel_to_world(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map continuous voxel indices (..., 3) to world mm with ``affine``.

    Examples
    --------
    >>> voxel_to_world(np.diag([2.0, 2.0, 2.0, 1.0]), np.array([2.0, 1.0, 0.0]))
    array([4., 2., 0.])
    """
    a = np.asarray(affine, dtype=float)
    pts = np.asarray(points, dtype=float)
    return pts @ a[:3, :3].T + a[:3, 3]
