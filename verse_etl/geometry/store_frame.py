"""The store frame: volumes stored the right way up for viewers, by lossless axis permutation and flips.

OME-NGFF 0.5, which every reader in use implements (ome-zarr-py and napari-ome-zarr,
ome-zarr-models, ngff-zarr), maps array indices to space by a per-axis ``scale`` and
``translation`` only: no rotation, no axis permutation. NGFF 0.6 adds ``rotation``, ``affine`` and
``mapAxis`` (RFC-5), but the readers above do not display 0.6 stores on Python 3.11. A viewer
therefore shows the array axes as they are stored: napari puts axis 0 on the slider and axes 1, 2
on the screen's rows and columns. So the arrays are stored in one anatomical order,
:data:`STORE_AXES` ``"SPL"``: index 0 grows toward superior, 1 toward posterior, 2 toward the
patient's left. Axial slices then appear in radiological convention (anterior up, the patient's
right on the viewer's left), whatever the acquisition (axial ``LPS``, sagittal ``PIR``, ...).

The store frame is the source's voxel grid with its axes permuted and reversed: no voxel is
resampled, the voxel digest and every value stay the source's, and the exact source affine is
kept (tables ``affine``, store attribute ``verse_etl.source_affine``). For an oblique grid the
permutation is the one closest to ``SPL`` (each source axis goes to the anatomical axis it runs
most along, as ``nibabel.orientations.io_orientation`` chooses); the store affine
(:meth:`StoreFrame.store_affine`) still maps store indices to RAS+ mm exactly.

Only numpy is imported: the light reader uses this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STORE_AXES = "SPL"
"""Anatomical direction in which store index 0, 1, 2 grows: superior, posterior, patient's left."""

# RAS+ world axis (0 x right, 1 y anterior, 2 z superior) -> (store axis, sign of that world
# coordinate as the store index grows): S is +z, P is -y, L is -x.
_STORE_OF_WORLD = {2: (0, 1.0), 1: (1, -1.0), 0: (2, -1.0)}


@dataclass(frozen=True)
class StoreFrame:
    """How a source volume's voxel axes become the store's.

    Source axis ``i`` is store axis ``axes[i]``, reversed when ``flips[i]``: source voxel ``v``
    is store voxel ``w`` with ``w[axes[i]] = v[i]`` (or ``shape[i] - 1 - v[i]``).

    Examples
    --------
    >>> frame = StoreFrame(axes=(2, 1, 0), flips=(True, True, False), shape=(4, 5, 6))
    >>> frame.store_shape
    (6, 5, 4)
    >>> frame.to_store_index([[0, 0, 0], [3, 4, 5]]).tolist()
    [[0.0, 4.0, 3.0], [5.0, 0.0, 0.0]]
    >>> frame.to_source_index(frame.to_store_index([[1, 2, 3]])).tolist()
    [[1.0, 2.0, 3.0]]
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    shape: tuple[int, int, int]  # of the source

    @classmethod
    def identity(cls, shape: Sequence[int]) -> StoreFrame:
        """The frame of a volume stored as its source is (no permutation, no flip)."""
        return cls((0, 1, 2), (False, False, False), tuple(int(n) for n in shape))  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length

    @property
    def is_identity(self) -> bool:
        """Store and source share their voxel frame."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    @property
    def store_shape(self) -> tuple[int, int, int]:
        """Shape of the stored array."""
        out = [0, 0, 0]
        for i, a in enumerate(self.axes):
            out[a] = self.shape[i]
        return tuple(out)  # type: ignore[return-value]  # three axes: tuple() is typed variable-length

    @property
    def stream_axis(self) -> int:
        """The store axis along which the source's last (slowest) axis runs."""
        return self.axes[2]

    @property
    def stream_reversed(self) -> bool:
        """Source slices arrive in decreasing store index along :attr:`stream_axis`."""
        return self.flips[2]

    def source_axes(self) -> tuple[int, int, int]:
        """``source_axes()[a]``: the source axis that store axis ``a`` comes from."""
        out = [0, 0, 0]
        for i, a in enumerate(self.axes):
            out[a] = i
        return tuple(out)  # type: ignore[return-value]  # three axes: tuple() is typed variable-length

    def to_store(self, array: np.ndarray) -> np.ndarray:
        """A view of a source-ordered block (``(n0, n1, n2)``, any extent) in store axis order.

        Flips reverse the block itself, so a block that is not the whole volume lands at the
        mirrored position: see :meth:`store_range` for where a slab of the source goes.

        Examples
        --------
        >>> frame = StoreFrame(axes=(2, 1, 0), flips=(True, False, False), shape=(2, 1, 3))
        >>> frame.to_store(np.arange(6).reshape(2, 1, 3))[:, 0].tolist()
        [[3, 0], [4, 1], [5, 2]]
        """
        flipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return flipped.transpose(self.source_axes())

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_store`: a store-ordered block viewed in source axis order."""
        source = array.transpose(self.axes)
        return source[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def store_range(self, k0: int, depth: int) -> tuple[int, int]:
        """Store indices ``[lo, hi)`` along :attr:`stream_axis` of source slices
        ``k0 .. k0 + depth - 1``.

        Examples
        --------
        >>> StoreFrame((0, 1, 2), (False, False, True), (4, 4, 10)).store_range(0, 3)
        (7, 10)
        """
        if self.stream_reversed:
            return self.shape[2] - k0 - depth, self.shape[2] - k0
        return k0, k0 + depth

    def index_matrix(self) -> np.ndarray:
        """4x4 mapping store indices to source indices (``v = M @ w``): a signed permutation
        plus the shift of the flipped axes.

        Examples
        --------
        >>> StoreFrame((1, 0, 2), (True, False, False), (3, 4, 5)).index_matrix()[:3].tolist()
        [[0.0, -1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
        """
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for i, (a, f) in enumerate(zip(self.axes, self.flips, strict=True)):
            m[i, a] = -1.0 if f else 1.0
            m[i, 3] = self.shape[i] - 1 if f else 0.0
        return m

    def store_affine(self, source_affine: np.ndarray) -> np.ndarray:
        """4x4 store indices -> RAS+ mm, exactly the source's geometry (products with 0, 1, -1 and
        a whole-number shift: no rounding beyond the source affine's own additions).

        Examples
        --------
        >>> lps = np.diag([-0.5, -0.5, 2.0, 1.0])  # i to the patient's left, j posterior, k up
        >>> frame = store_frame(lps, (4, 4, 3))
        >>> frame.axes, frame.flips
        ((2, 1, 0), (False, False, False))
        >>> frame.store_affine(lps)[:3, :3].tolist()
        [[0.0, 0.0, -0.5], [0.0, -0.5, 0.0], [2.0, 0.0, 0.0]]
        """
        return np.asarray(source_affine, dtype=float) @ self.index_matrix()

    def to_store_index(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """``(n, 3)`` source voxel coordinates (fractional allowed) -> store voxel coordinates."""
        pts = np.asarray(points, dtype=float).reshape(-1, 3)
        out = np.empty_like(pts)
        for i, (a, f) in enumerate(zip(self.axes, self.flips, strict=True)):
            out[:, a] = self.shape[i] - 1 - pts[:, i] if f else pts[:, i]
        return out

    def to_source_index(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """``(n, 3)`` store voxel coordinates -> source voxel coordinates."""
        pts = np.asarray(points, dtype=float).reshape(-1, 3)
        out = np.empty_like(pts)
        for i, (a, f) in enumerate(zip(self.axes, self.flips, strict=True)):
            out[:, i] = self.shape[i] - 1 - pts[:, a] if f else pts[:, a]
        return out


def store_frame(affine: np.ndarray, shape: Sequence[int]) -> StoreFrame:
    """The store frame of a source volume: its axes permuted and flipped toward :data:`STORE_AXES`.

    Each source axis goes to the world axis it runs most along (largest direction cosine first,
    so an oblique grid still gets a permutation), then to the store axis of that world axis.

    Examples
    --------
    >>> pir = np.array([[0, 0, -1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
    >>> f = store_frame(pir, (10, 20, 30))  # sagittal slices, stacked toward the patient's left
    >>> f.axes, f.flips, f.store_shape
    ((1, 0, 2), (False, True, False), (20, 10, 30))
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    cosines = np.abs(a / np.linalg.norm(a, axis=0))
    world = [-1, -1, -1]
    # Greedy on the largest cosine: source axis -> world axis, one each.
    for flat in np.argsort(-cosines, axis=None, kind="stable"):
        w, i = divmod(int(flat), 3)
        if world[i] < 0 and w not in world:
            world[i] = w
    axes, flips = [], []
    for i, w in enumerate(world):
        store_axis, sign = _STORE_OF_WORLD[w]
        axes.append(store_axis)
        flips.append(bool(np.sign(a[w, i]) != sign))
    return StoreFrame(tuple(axes), tuple(flips), tuple(int(n) for n in shape))  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length


def frame_between(
    source_affine: np.ndarray, store_affine: np.ndarray, store_shape: Sequence[int]
) -> StoreFrame:
    """The store frame that relates two recorded affines of the same grid (a reader's way back
    to the source's voxel order, e.g. to export the source's NIfTI layout).

    Raises
    ------
    ValueError
        If the two affines are not the same grid up to axis permutation and flips.

    Examples
    --------
    >>> frame = StoreFrame((1, 0, 2), (False, True, False), (10, 20, 30))
    >>> source = np.diag([0.5, 0.5, 2.0, 1.0])
    >>> frame_between(source, frame.store_affine(source), frame.store_shape) == frame
    True
    """
    m = np.linalg.solve(np.asarray(source_affine, float), np.asarray(store_affine, float))
    signs = np.rint(m[:3, :3])
    if (
        not np.allclose(m[:3, :3], signs, atol=1e-6)
        or sorted(np.abs(signs).sum(axis=0).tolist() + np.abs(signs).sum(axis=1).tolist())
        != [1.0] * 6
    ):
        raise ValueError("the affines are not one grid up to axis permutation and flips")
    axes = tuple(int(np.flatnonzero(signs[i])[0]) for i in range(3))
    flips = tuple(bool(signs[i, axes[i]] < 0) for i in range(3))
    shape = tuple(int(store_shape[a]) for a in axes)
    return StoreFrame(axes, flips, shape)  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length


def frame_of_attributes(attributes: dict[str, Any]) -> StoreFrame:
    """The store frame a store's ``verse_etl`` attributes record (:func:`frame_attributes`);
    the identity for a store without one (written in the source's axis order)."""
    turn = attributes.get("source_to_store")
    if turn is None:
        return StoreFrame.identity(attributes["source_shape"])
    return StoreFrame(
        tuple(int(a) for a in turn["axes"]),  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
        tuple(bool(f) for f in turn["flips"]),  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
        tuple(int(n) for n in attributes["source_shape"]),  # type: ignore[arg-type]  # three axes: tuple() is typed variable-length
    )


def axis_codes(affine: np.ndarray) -> str:
    """Anatomical direction each array axis of ``affine`` grows toward, nearest axis (numpy only).

    Examples
    --------
    >>> axis_codes(np.diag([-1.0, -1.0, 1.0, 1.0]))
    'LPS'
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    codes = ("LR", "PA", "IS")
    out = ""
    for i in range(3):
        w = int(np.argmax(np.abs(a[:, i])))
        out += codes[w][1] if a[w, i] > 0 else codes[w][0]
    return out


def frame_attributes(source_affine: np.ndarray, frame: StoreFrame) -> dict[str, Any]:
    """The geometry a store records in its ``verse_etl`` attributes: the store affine (what its
    indices mean), the exact source affine and how the source's axes became the store's."""
    source = np.asarray(source_affine, dtype=float)
    store = frame.store_affine(source)
    return {
        "affine": [[float(v) for v in row] for row in store],
        "orientation": axis_codes(store),
        "spacing_mm": [float(v) for v in np.linalg.norm(store[:3, :3], axis=0)],
        "axes": "store frame: index 0, 1, 2 grow toward superior, posterior, patient's left "
        "(nearest axes); affine maps store indices to RAS+ mm",
        "source_affine": [[float(v) for v in row] for row in source],
        "source_orientation": axis_codes(source),
        "source_shape": list(frame.shape),
        "source_to_store": {"axes": list(frame.axes), "flips": list(frame.flips)},
    }
