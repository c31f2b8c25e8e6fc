"""QC pictures, in the spirit of VerSe's own ``*_seg-vert_snp.png``, drawn from the Zarr stores.

VerSe (one PNG per scan): a lateral maximum-intensity projection of the whole field of view with
the labels' projection and every level name, then a sagittal and a coronal *curved* reformation
that follow the spine through the centroids (so every vertebral body is cut through its middle,
however curved the spine), all in a bone window with the labels as a coloured overlay. Failed
quality checks are drawn where they fail: a centroid outside its own label, label islands, a
mask label without a centroid, a centroid without a mask label.

MosMed (one PNG per annotated series): one sagittal panel per annotation release (v1, v2), each
vertebra shown on the sagittal slice it was annotated on, every expert's keypoints and height
segments in a colour-blind-safe colour (Okabe-Ito), and beside each vertebra its level name and
each expert's Genant grade and anterior/middle/posterior heights.

Geometry. Every panel is a regular grid in world RAS+ millimetres (``pixel_mm`` per pixel, 1 mm
by default; superior up; anterior on the left of sagittal panels; the patient's right on the left
of coronal panels), and each pixel is sampled from the store through the store's own
``verse_etl.affine`` (stored indices -> RAS+ mm), so proportions are true for any orientation,
spacing, axis order or oblique grid. Voxels are read at the pyramid level closest to the pixel
size, box by box on the stored chunk grid (at most ``slab_bytes`` of image and labels at a
time), so memory does not grow with the scan. Each picture comes with a JSON sidecar (same name,
``.json``) giving the panels' geometry and where every level name and check note was drawn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from verse_etl.cases.records import write_text_atomic
from verse_etl.io.atomic import open_new
from verse_etl.levels import VERSE_LEVELS
from verse_etl.ngff import label_color as ngff_label_color
from verse_etl.stores.boxes import read_box, shard_layout
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH

WINDOW = (-450.0, 1350.0)
"""Bone window (HU): centre 450, width 1800."""
PIXEL_MM = 1.0
"""Pixel size of the VerSe pictures (mm), as the release's snapshots."""
MOSMED_PIXEL_MM = 0.5
"""Pixel size of the MosMed panels (mm): keypoints of different experts lie 1-2 mm apart."""
MOSMED_MARGIN_MM = 50.0
"""MosMed panels show the keypoints' extent and this much around it."""
SLAB_BYTES = 32 * 2**20
"""Most bytes of image plus labels read from a store at a time."""
TEXT = (250, 250, 255)
"""Colour of level names and check notes: no CT grey, label tint or marker has it, so a test
can find the text in the picture."""
OUTLINE = (0, 0, 0)
FLAG = (255, 0, 255)
LEADER = (170, 170, 170)
"""Check markers (rings and crosses; their notes say what failed, so colour is not needed)."""
EXPERT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
)
"""Okabe & Ito's colour-blind-safe palette (its black left out: it vanishes on CT)."""
FONT_PX = 14
TITLE_PX = 22
ROOM_PX = 400
"""Room under the panels for texts pushed down past the others (cropped off when unused)."""
NOTES_PX = 220
"""Width of the column that says which checks failed, beside the panels."""
GAP_PX = 10
HU_FILL = -1024


Typeface = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font(size: int = FONT_PX) -> Typeface:
    """The TrueType font bundled with Pillow (>= 10.1), scalable, needs no system fonts."""
    return ImageFont.load_default(size=size)


def label_color(label: int) -> tuple[int, int, int]:
    """The label's colour, the same as the store's NGFF ``image-label`` colours."""
    r, g, b, _ = ngff_label_color(int(label))
    return int(r), int(g), int(b)


@dataclass(frozen=True)
class Panel:
    """Where a panel sits in the picture and which world plane it shows.

    Column ``c`` and row ``r`` of the picture (pixel centres at ``+ 0.5``) show the world point
    whose ``across_axis`` coordinate is ``across_max_mm - (c - left + 0.5) * pixel_mm`` and whose
    z is ``z_max_mm - (r - top + 0.5) * pixel_mm``: superior up, and anterior (sagittal,
    ``across_axis`` 1) or the patient's right (coronal, ``across_axis`` 0) on the left.
    """

    name: str
    left: int
    top: int
    width: int
    height: int
    pixel_mm: float
    across_axis: int
    across_max_mm: float
    z_max_mm: float

    def pixel(self, world: Sequence[float] | np.ndarray) -> tuple[float, float]:
        """Picture coordinates ``(x, y)`` of a world RAS+ point (in-plane part).

        Examples
        --------
        >>> p = Panel("sagittal", 10, 20, 100, 200, 1.0, 1, 50.0, 80.0)
        >>> p.pixel((0.0, 50.0, 80.0)), p.pixel((0.0, 40.0, 60.0))
        ((10.0, 20.0), (20.0, 40.0))
        """
        x = self.left + (self.across_max_mm - float(world[self.across_axis])) / self.pixel_mm
        y = self.top + (self.z_max_mm - float(world[2])) / self.pixel_mm
        return x, y

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates of the pixel centres: across (per column) and z (per row)."""
        across = self.across_max_mm - (np.arange(self.width) + 0.5) * self.pixel_mm
        z = self.z_max_mm - (np.arange(self.height) + 0.5) * self.pixel_mm
        return across, z


@dataclass(frozen=True)
class Placement:
    """A text drawn on the picture: a level name, a check note or a legend line."""

    panel: str
    kind: str  # "level", "check" or "note"
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (picture pixels, inclusive-exclusive)
    anchor: tuple[float, float] | None = None  # the point it names (picture pixels)
    world_mm: tuple[float, float, float] | None = None  # that point in RAS+ mm
    label: int | None = None


@dataclass
class Picture:
    """A written QC picture and what is drawn where (also written as a JSON sidecar)."""

    png: Path
    width: int
    height: int
    level: int
    pixel_mm: float
    panels: list[Panel] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)

    def to_json(self) -> str:
        data = {
            "png": self.png.name,
            "width": self.width,
            "height": self.height,
            "pyramid_level": self.level,
            "pixel_mm": self.pixel_mm,
            "panels": [asdict(p) for p in self.panels],
            "placements": [asdict(p) for p in self.placements],
        }
        return json.dumps(data, indent=1)


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    image: zarr.Array
    labels: zarr.Array | None
    affine: np.ndarray  # of the level read: stored indices of that level -> RAS+ mm
    level: int
    box_min: np.ndarray  # world bounding box of the whole volume (voxel edges), RAS+ mm
    box_max: np.ndarray


def _array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` of a store this pipeline wrote (an array there, never a group)."""
    node = group[path]
    assert isinstance(node, zarr.Array), f"{path}: a group where the store has an array"
    return node


def _ours(group: zarr.Group) -> dict[str, Any]:
    """The ``verse_etl`` attributes the store writer put on the image group."""
    return dict(group.attrs["verse_etl"])  # type: ignore[arg-type]  # a JSON object we wrote


def _open_source(store: Path, pixel_mm: float) -> _Source:
    """The coarsest pyramid level that keeps every axis at most about 1.4 pixels (or as fine as
    level 0 has it), with its affine; the world box from level 0. Levels halve every axis, so
    a thin-slice axis decides: 0.32 x 0.32 x 1.25 mm stays at level 0 (level 1 would make the
    slices 2.5 mm), 0.7 x 0.7 x 0.5 mm reads level 1."""
    group = zarr.open_group(store, mode="r")
    affine0 = np.asarray(_ours(group)["affine"], dtype=float).reshape(4, 4)
    shape0 = np.array(_array(group, IMAGE_PATH).shape)
    spacing0 = np.linalg.norm(affine0[:3, :3], axis=0)
    limit = np.maximum(spacing0, pixel_mm * math.sqrt(2))
    label_group = LABELS_PATH.rsplit("/", 1)[0]
    chosen = 0
    for level in sorted(int(k) for k in group.array_keys() if k.isdigit()):
        if np.all(spacing0 * 2**level <= limit):
            chosen = max(chosen, level)
    labels = None
    if label_group in group:
        name = f"{label_group}/{chosen}"
        labels = _array(group, name) if name in group else None
    scale = np.diag([2.0**chosen] * 3 + [1.0])
    edges = np.array(
        [
            [a, b, c]
            for a in (-0.5, shape0[0] - 0.5)
            for b in (-0.5, shape0[1] - 0.5)
            for c in (-0.5, shape0[2] - 0.5)
        ]
    )
    world = edges @ affine0[:3, :3].T + affine0[:3, 3]
    return _Source(
        image=_array(group, str(chosen)),
        labels=labels,
        affine=affine0 @ scale,
        level=chosen,
        box_min=world.min(axis=0),
        box_max=world.max(axis=0),
    )


def _voxels(affine: np.ndarray, world: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest stored voxel of each world point (n, 3); -1 in the first column when outside."""
    inverse = np.linalg.inv(affine)
    index = world @ inverse[:3, :3].T
    index += inverse[:3, 3]  # in place: a panel has up to millions of points
    index = np.rint(index, out=index).astype(np.int64)
    # One comparison per coordinate: a negative index read as unsigned is past every shape.
    inside = (index.view(np.uint64) < np.asarray(shape, dtype=np.uint64)).all(axis=1)
    index[~inside, 0] = -1
    return index


def _box_grid(
    shape: Sequence[int], chunks: Sequence[int], voxel_bytes: int, budget: int, split: int
) -> tuple[int, int]:
    """The boxes that tile a stored array, each at most ``budget`` bytes (``voxel_bytes`` of
    image plus labels per voxel), on the stored chunk grid where the budget allows: their
    extent along the first axis and along axis ``split`` (1 or 2; whole along the third).

    Whole planes along the first axis, as many chunk depths as fit; when one chunk depth of
    whole planes is over the budget, one chunk depth cut along ``split`` into whole chunk rows.
    A chunk is then decoded once: a box edge inside a chunk decodes it for each box it touches
    (42-plane slabs of 64-plane chunks decoded each chunk 1.7 times). Below one chunk row,
    whole planes, as many as fit (at least one).

    Examples
    --------
    >>> _box_grid((229, 512, 512), (64, 64, 64), 3, 32 << 20, 1)  # 64 planes: 48 MiB
    (64, 320)
    >>> _box_grid((229, 512, 512), (64, 64, 64), 3, 64 << 20, 1)
    (64, 512)
    >>> _box_grid((229, 512, 512), (64, 64, 64), 3, 1 << 20, 1)  # one chunk row: 6 MiB
    (1, 512)
    """
    plane = voxel_bytes * int(np.prod(shape[1:]))
    planes = max(1, min(shape[0], budget // max(plane, 1)))
    depth = min(chunks[0], shape[0])
    if planes >= depth:
        return (planes // depth * depth if planes < shape[0] else planes), shape[split]
    line = (
        voxel_bytes * depth * int(np.prod([n for a, n in enumerate(shape) if a not in (0, split)]))
    )
    rows = budget // max(line, 1) // chunks[split] * chunks[split]
    if rows == 0:  # not one chunk row within the budget: planes, off the chunk grid
        return planes, shape[split]
    return depth, rows


def _group_by_box(
    voxels: np.ndarray, depth: int, rows: int, split: int, across: int
) -> Callable[[int], np.ndarray]:
    """For voxel indices ``(n, 3)`` (-1 in the first column when outside), a function giving
    the positions of those inside box ``b`` of a :func:`_box_grid` (row-major, ``across``
    boxes along ``split``), in one sort rather than a pass over every voxel per box."""
    box = np.where(voxels[:, 0] >= 0, voxels[:, 0] // depth * across + voxels[:, split] // rows, -1)
    order = np.argsort(box, kind="stable")
    ends = np.searchsorted(box[order], np.arange(box.max(initial=-1) + 2), side="left")

    def group(b: int) -> np.ndarray:
        return order[ends[b] : ends[b + 1]] if b + 1 < len(ends) else order[:0]

    return group


class _Reader:
    """One pass over a store, box by box: gathers sampled voxels and a lateral projection."""

    def __init__(self, source: _Source, slab_bytes: int) -> None:
        self.source = source
        self.slab_bytes = slab_bytes
        # Boxes are read from the shard files directly (verse_etl.stores.boxes: a third of
        # zarr's CPU for the same chunks), through zarr for any other layout.
        self.layouts = (
            shard_layout(source.image),
            shard_layout(source.labels) if source.labels is not None else None,
        )

    def run(
        self, samples: Sequence[np.ndarray], project_axis: int | None
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray] | None]:
        """HU and labels at each set of voxel indices ``(n, 3)``; and, if ``project_axis`` is
        given, the maximum HU and maximum label along that stored axis (2-D, the other axes)."""
        image, labels = self.source.image, self.source.labels
        shape = image.shape
        values = [
            (np.full(len(s), HU_FILL, dtype=np.int16), np.zeros(len(s), dtype=np.uint8))
            for s in samples
        ]
        projection = None
        if project_axis is not None:
            rest = tuple(n for a, n in enumerate(shape) if a != project_axis)
            projection = (np.full(rest, HU_FILL, np.int16), np.zeros(rest, np.uint8))
        # Boxes are cut along an axis other than the projected one, so that (but along the
        # first axis) each box holds whole lines of the projection.
        split = 2 if project_axis == 1 else 1
        depth, rows = _box_grid(
            shape, image.chunks, image.dtype.itemsize + 1, self.slab_bytes, split
        )
        across = -(-shape[split] // rows)
        # Each sampled voxel's box, found once: group(n) gives those of box n.
        groups = [_group_by_box(s, depth, rows, split, across) for s in samples]
        for n in range(-(-shape[0] // depth) * across):
            i0, j0 = n // across * depth, n % across * rows
            box = [slice(i0, min(shape[0], i0 + depth)), slice(0, shape[1]), slice(0, shape[2])]
            box[split] = slice(j0, min(shape[split], j0 + rows))
            start = np.array([box[0].start, box[1].start, box[2].start])
            wanted = [group(n) for group in groups]
            if projection is None and not any(len(w) for w in wanted):
                continue
            # Without a projection only the box around the sampled voxels is read (a thin
            # curved plane touches few chunks); a projection needs the whole box.
            if projection is None:
                picked = np.concatenate([s[w] for s, w in zip(samples, wanted, strict=True)])
                start, stop = picked.min(axis=0), picked.max(axis=0) + 1
                box[1:] = [slice(int(start[a]), int(stop[a])) for a in (1, 2)]
                start[0] = box[0].start
            hu = read_box(image, tuple(box), self.layouts[0])
            lab = read_box(labels, tuple(box), self.layouts[1]) if labels is not None else None
            for s, w, (v_hu, v_lab) in zip(samples, wanted, values, strict=True):
                if len(w):
                    at = tuple(s[w, a] - start[a] for a in range(3))
                    v_hu[w] = hu[at]
                    if lab is not None:
                        v_lab[w] = lab[at]
            if projection is not None:
                p_hu, p_lab = projection
                onto = tuple(cut for a, cut in enumerate(box) if a != project_axis)
                if project_axis == 0:  # boxes along the projected axis: the maximum of theirs
                    np.maximum(p_hu[onto], hu.max(axis=0), out=p_hu[onto])
                    if lab is not None:
                        np.maximum(p_lab[onto], lab.max(axis=0), out=p_lab[onto])
                else:  # each box holds the whole lines it projects
                    p_hu[onto] = hu.max(axis=project_axis)
                    if lab is not None:
                        p_lab[onto] = lab.max(axis=project_axis)
        return values, projection


# --- drawing ------------------------------------------------------------------------------------


def _rgb(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bone-windowed grey with the labels blended in their colours; uint8 (rows, cols, 3)."""
    lo, hi = WINDOW
    grey = np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    lut = np.array([(0, 0, 0), *(label_color(v) for v in range(1, 256))], dtype=np.float32)
    on = labels > 0
    rgb[on] = 0.55 * rgb[on] + 0.45 * lut[labels[on]]
    return rgb.astype(np.uint8)


def _spine_curve(points: np.ndarray, z: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """World (x, y) of the spine at each height ``z``: the vertebra points (n, 3) joined
    piecewise linearly by height, constant beyond the ends."""
    if len(points) == 0:
        return np.tile(fallback[:2], (len(z), 1))
    order = np.argsort(points[:, 2])
    zs = points[order, 2]
    return np.stack([np.interp(z, zs, points[order, a]) for a in (0, 1)], axis=1)


def _panel_world(panel: Panel, curve: np.ndarray) -> np.ndarray:
    """World points of every pixel of a curved panel: the plane follows ``curve`` (per row)."""
    across, z = panel.centres()
    world = np.empty((panel.height, panel.width, 3))
    world[..., panel.across_axis] = across[None, :]
    world[..., 2] = z[:, None]
    other = 1 - panel.across_axis
    world[..., other] = curve[:, other][:, None]
    return world.reshape(-1, 3)


def _lateral_pixels(source: _Source, panel: Panel, lr: int) -> np.ndarray:
    """Indices into the lateral projection (over the two stored axes other than ``lr``) of each
    pixel of ``panel``: the projection's in-plane voxel grid mapped through the affine's (y, z)
    rows, with the projected axis at its middle."""
    a, b = (n for n in range(3) if n != lr)
    shape = source.image.shape
    m = source.affine[1:3][:, [a, b]]
    offset = source.affine[1:3, 3] + source.affine[1:3, lr] * (shape[lr] - 1) / 2
    across, z = panel.centres()
    yz = np.stack(np.broadcast_arrays(across[None, :], z[:, None]), axis=-1).reshape(-1, 2)
    ab = np.rint((yz - offset) @ np.linalg.inv(m).T).astype(np.int64)
    inside = (ab[:, 0] >= 0) & (ab[:, 0] < shape[a]) & (ab[:, 1] >= 0) & (ab[:, 1] < shape[b])
    ab[~inside] = -1
    return ab


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    typeface: Typeface,
) -> None:
    """Bold text with a black outline: legible on bone, soft tissue and label colours alike."""
    draw.text(xy, text, font=typeface, fill=OUTLINE, stroke_width=2, stroke_fill=OUTLINE)
    draw.text(xy, text, font=typeface, fill=colour, stroke_width=1, stroke_fill=colour)


def _width(text: str) -> int:
    """Width in pixels of ``text`` as :func:`_text` draws it."""
    return int(font().getbbox(text, stroke_width=2)[2])


def _text_box(draw: ImageDraw.ImageDraw, text: str, typeface: Typeface) -> tuple[int, int]:
    _, _, x1, y1 = draw.textbbox((0, 0), text, font=typeface, stroke_width=2)
    return int(x1), int(y1)  # whole pixels already (drawn at the origin); typed as float


class _Labeller:
    """Places texts beside points without overlap (pushed down in order of height)."""

    def __init__(self, draw: ImageDraw.ImageDraw, typeface: Typeface) -> None:
        self.draw = draw
        self.font = typeface
        self.taken: list[tuple[int, int, int, int]] = []
        self.placements: list[Placement] = []

    def _free(self, box: tuple[int, int, int, int]) -> bool:
        return all(
            box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in self.taken
        )

    def place(
        self,
        panel: Panel,
        kind: str,
        lines: Sequence[tuple[str, tuple[int, int, int]]],
        anchor: tuple[float, float],
        side: str,
        world: Sequence[float] | np.ndarray | None = None,
        label: int | None = None,
        x: int | None = None,
        clear: float = 0.0,
        typeface: Typeface | None = None,
    ) -> Placement:
        """Draw ``lines`` (text, colour) on ``side`` of ``anchor``, ``clear`` pixels further out
        (past the vertebra), moved down past texts already placed; a grey leader line joins a
        moved text to its anchor. ``x`` fixes the left edge instead."""
        typeface = typeface or self.font
        sizes = [_text_box(self.draw, text, typeface) for text, _ in lines]
        w = max(s[0] for s in sizes)
        h = sum(s[1] + 1 for s in sizes)
        ax, ay = anchor
        lo_x, hi_x = panel.left, panel.left + panel.width
        gap = 8 + clear
        x0 = round(ax - gap - w) if side == "left" else round(ax + gap)
        if x0 < lo_x:
            x0 = round(ax + gap)
        if x0 + w > hi_x:
            x0 = max(lo_x, round(ax - gap - w))
        if x is not None:
            x0 = x
        y0 = round(ay - h / 2)
        y0 = max(panel.top, min(y0, panel.top + panel.height - h))
        box = (x0, y0, x0 + w, y0 + h)
        start = box
        for _ in range(400):  # push down past texts already there ...
            if self._free(box):
                break
            box = (x0, box[1] + 2, x0 + w, box[3] + 2)
        if box[3] > panel.top + panel.height:  # ... or, past the bottom, up
            up = start
            while up[1] > panel.top and not self._free(up):
                up = (x0, up[1] - 2, x0 + w, up[3] - 2)
            if self._free(up) and up[1] >= panel.top:
                box = up
        self.taken.append(box)
        if abs((box[1] + box[3]) / 2 - ay) > h or min(abs(box[0] - ax), abs(box[2] - ax)) > gap + 4:
            edge = box[2] if box[2] <= ax else box[0]
            self.draw.line([(ax, ay), (edge, (box[1] + box[3]) / 2)], fill=LEADER, width=1)
        y = box[1]
        for (text, colour), (_, th) in zip(lines, sizes, strict=True):
            _text(self.draw, (box[0], y), text, colour, typeface)
            y += th + 1
        placement = Placement(
            panel=panel.name,
            kind=kind,
            text="\n".join(text for text, _ in lines),
            box=box,
            anchor=(float(ax), float(ay)),
            world_mm=tuple(float(v) for v in world) if world is not None else None,  # type: ignore[arg-type]  # a tuple of 3 (one per axis): tuple() of a generator is typed variable-length
            label=label,
        )
        self.placements.append(placement)
        return placement

    def note(self, panel_name: str, text: str, xy: tuple[int, int]) -> Placement:
        w, h = _text_box(self.draw, text, self.font)
        box = (xy[0], xy[1], xy[0] + w, xy[1] + h)
        _text(self.draw, xy, text, TEXT, self.font)
        placement = Placement(panel=panel_name, kind="note", text=text, box=box)
        self.placements.append(placement)
        return placement


def _clearance(labels: np.ndarray, panel: Panel, xy: tuple[float, float], label: int) -> float:
    """Pixels from ``xy`` left to the front edge of ``label`` in its row of the panel, so that
    a name put there does not cover the vertebra (0 when the row does not hold it)."""
    row = round(xy[1] - panel.top - 0.5)
    if not 0 <= row < panel.height:
        return 0.0
    cols = np.flatnonzero(labels[row] == label)
    return max(0.0, xy[0] - panel.left - float(cols[0])) if len(cols) else 0.0


def _dot(draw: ImageDraw.ImageDraw, xy: tuple[float, float], colour: tuple[int, int, int]) -> None:
    x, y = xy
    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=OUTLINE)


def _ring(draw: ImageDraw.ImageDraw, xy: tuple[float, float], radius: float) -> None:
    x, y = xy
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=FLAG, width=2)


def _cross(draw: ImageDraw.ImageDraw, xy: tuple[float, float], r: float = 6) -> None:
    x, y = xy
    draw.line([(x - r, y - r), (x + r, y + r)], fill=FLAG, width=2)
    draw.line([(x - r, y + r), (x + r, y - r)], fill=FLAG, width=2)


def _below(labeller: _Labeller, bottom: int) -> int:
    """First footer row: under the panels and under any text pushed below them."""
    return max([bottom, *(p.box[3] for p in labeller.placements)]) + 6


def _save(canvas: Image.Image, picture: Picture) -> Picture:
    out_png = picture.png
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    with open_new(tmp) as f:  # never through a link planted under the temporary name
        canvas.save(f, format="PNG", optimize=False)
    tmp.replace(out_png)
    write_text_atomic(out_png.with_suffix(".json"), picture.to_json())
    return picture


def _layout(
    boxes: Sequence[tuple[str, int, int]],
    min_: np.ndarray,
    max_: np.ndarray,
    pixel_mm: float,
    top: int,
) -> list[Panel]:
    """Panels ``(name, across_axis, width)`` side by side under the title bar."""
    panels, left = [], 0
    height = max(1, math.ceil((max_[2] - min_[2]) / pixel_mm))
    for name, axis, width in boxes:
        panels.append(
            Panel(name, left, top, width, height, pixel_mm, axis, float(max_[axis]), float(max_[2]))
        )
        left += width + GAP_PX
    return panels


# --- VerSe --------------------------------------------------------------------------------------


def _f(value: Any) -> float:
    return float(value) if value is not None and not pd.isna(value) else math.nan


def _vertebra_points(vertebrae: pd.DataFrame) -> list[dict]:
    """One entry per vertebra row: level, label, where it is drawn, and which checks fail."""
    points = []
    for row in vertebrae.itertuples():
        centroid = np.array([_f(getattr(row, f"centroid_{a}_mm", None)) for a in "xyz"])
        com = np.array([_f(getattr(row, f"com_{a}_mm", None)) for a in "xyz"])
        has_centroid = bool(getattr(row, "in_centroids", True)) and np.isfinite(centroid).all()
        at: np.ndarray | None = centroid if has_centroid else com
        if at is not None and not np.isfinite(at).all():
            at = None
        in_mask = bool(getattr(row, "in_mask", True))
        checks = []
        at_label = getattr(row, "mask_label_at_centroid", None)
        known = has_centroid and in_mask and at_label is not None and not pd.isna(at_label)
        if known and at_label is not None and int(at_label) != int(row.label):
            inside = VERSE_LEVELS.get(int(at_label), "background") if at_label else "background"
            checks.append(f"centroid in {inside}")
        if in_mask and not has_centroid:
            checks.append("no centroid")
        if has_centroid and not in_mask:
            checks.append("not in mask")
        if has_centroid and not bool(getattr(row, "centroid_in_volume", True)):
            checks.append("centroid outside volume")
        points.append(
            {
                "label": int(row.label),
                "level": str(row.level),
                "at": at,
                "centroid": has_centroid,
                "checks": checks,
                "islands": int(getattr(row, "n_islands", 0) or 0),
                "bbox": [
                    getattr(row, f"bbox_{a}_{e}", None) for a in "ijk" for e in ("min", "max")
                ],
            }
        )
    return points


def _islands(store: Path, point: dict, index_affine: np.ndarray | None) -> list[np.ndarray]:
    """World centres of the ``n_islands`` smallest pieces of a label, read from level 0 inside
    the label's bounding box only. The table's box is in the voxel indices of ``index_affine``
    (the scan's source affine; None: the store's own), carried to the store's indices through
    world space, so a store kept in another axis order is read at the right place."""
    bbox = point["bbox"]
    if point["islands"] <= 0 or any(v is None or pd.isna(v) for v in bbox):
        return []
    group = zarr.open_group(store, mode="r")
    if LABELS_PATH not in group:
        return []
    labels = _array(group, LABELS_PATH)
    affine = np.asarray(_ours(group)["affine"], dtype=float).reshape(4, 4)
    source = affine if index_affine is None else np.asarray(index_affine, float).reshape(4, 4)
    corners = np.array(
        [
            [i, j, k]
            for i in (bbox[0], bbox[1])
            for j in (bbox[2], bbox[3])
            for k in (bbox[4], bbox[5])
        ],
        dtype=float,
    )
    world = corners @ source[:3, :3].T + source[:3, 3]
    inverse = np.linalg.inv(affine)
    index = world @ inverse[:3, :3].T + inverse[:3, 3]
    lo = np.clip(np.floor(index.min(axis=0) + 0.5).astype(int), 0, None)
    hi = np.minimum(np.floor(index.max(axis=0) + 0.5).astype(int) + 1, labels.shape)
    region = np.asarray(labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    pieces, n = ndimage.label(region == point["label"], structure=np.ones((3, 3, 3)))
    if n < 2:
        return []
    sizes = np.bincount(pieces.ravel())[1:]
    smallest = np.argsort(sizes, kind="stable")[: min(point["islands"], n - 1)] + 1
    centres = ndimage.center_of_mass(pieces > 0, pieces, smallest)
    return [affine[:3, :3] @ (np.asarray(c) + lo) + affine[:3, 3] for c in centres]


def verse_picture(
    store: Path,
    vertebrae: pd.DataFrame,
    out_png: Path,
    title: str = "",
    pixel_mm: float = PIXEL_MM,
    slab_bytes: int = SLAB_BYTES,
    index_affine: np.ndarray | None = None,
) -> Picture:
    """Lateral projection + curved sagittal + curved coronal QC picture of one VerSe store.

    Parameters
    ----------
    store
        The scan's Zarr store (image ``0``, labels ``labels/vertebrae/0``, pyramids optional).
    vertebrae
        The scan's rows of the ``vertebrae`` table (centroids and COM in RAS+ mm, checks).
    out_png
        Where to write the picture; its placements go to the same name with ``.json``.
    title
        First line under the panels (scan id, release, orientation).
    pixel_mm
        Pixel size; the pyramid level read is the one closest to it.
    slab_bytes
        Most bytes of image and labels read at a time.
    index_affine
        Affine of the voxel indices in ``vertebrae`` (``bbox_*``): the scan's ``affine``. None
        when they are the store's own indices.

    Returns
    -------
    Picture
        Size, panels and where every level name and check note was drawn.
    """
    source = _open_source(store, pixel_mm)
    lo, hi = source.box_min, source.box_max
    points = _vertebra_points(vertebrae)
    located = np.array([p["at"] for p in points if p["at"] is not None]).reshape(-1, 3)
    curve_points = np.array(
        [p["at"] for p in points if p["at"] is not None and p["centroid"]]
    ).reshape(-1, 3)
    if len(curve_points) == 0:
        curve_points = located
    width_y = max(1, math.ceil((hi[1] - lo[1]) / pixel_mm))
    width_x = max(1, math.ceil((hi[0] - lo[0]) / pixel_mm))
    panels = _layout(
        [("lateral", 1, width_y), ("sagittal", 1, width_y), ("coronal", 0, width_x)],
        lo, hi, pixel_mm, TITLE_PX,
    )  # fmt: skip
    lateral, sagittal, coronal = panels
    _, z = sagittal.centres()
    curve = _spine_curve(curve_points, z, (lo + hi) / 2)
    shape = source.image.shape
    samples = [_voxels(source.affine, _panel_world(p, curve), shape) for p in (sagittal, coronal)]
    lr = int(
        np.argmax(np.abs(source.affine[0, :3]) / np.linalg.norm(source.affine[:3, :3], axis=0))
    )
    values, projection = _Reader(source, slab_bytes).run(samples, project_axis=lr)
    assert projection is not None
    ab = _lateral_pixels(source, lateral, lr)
    lat_hu = np.where(ab[:, 0] >= 0, projection[0][ab[:, 0], ab[:, 1]], HU_FILL)
    lat_lab = np.where(ab[:, 0] >= 0, projection[1][ab[:, 0], ab[:, 1]], 0)
    rasters = [(lat_hu, lat_lab), *values]

    footer_lines = [p for p in points if p["checks"] or p["islands"]]
    footer = _verse_footer(footer_lines, title, source, pixel_mm)
    height = TITLE_PX + lateral.height + ROOM_PX + (FONT_PX + 5) * len(footer)
    width = coronal.left + coronal.width + (GAP_PX + NOTES_PX if footer_lines else 0)
    width = max(width, *(_width(line) + 8 for line in footer))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    for panel, (hu, lab) in zip(panels, rasters, strict=True):
        rgb = _rgb(hu.reshape(panel.height, panel.width), lab.reshape(panel.height, panel.width))
        canvas.paste(Image.fromarray(rgb), (panel.left, panel.top))
    draw = ImageDraw.Draw(canvas)
    typeface = font()
    labeller = _Labeller(draw, typeface)
    titles = {
        "lateral": "lateral projection",
        "sagittal": "sagittal, curved",
        "coronal": "coronal, curved",
    }
    for panel in panels:
        labeller.note(panel.name, titles[panel.name], (panel.left + 2, 3))

    islands = {p["label"]: _islands(store, p, index_affine) for p in points if p["islands"]}
    order = sorted((p for p in points if p["at"] is not None), key=lambda p: -float(p["at"][2]))
    for panel in panels:  # markers first, so that no marker covers a name
        _draw_markers(draw, panel, order, islands)
    for panel, (_, lab) in zip(panels, rasters, strict=True):
        _place_levels(labeller, panel, lab.reshape(panel.height, panel.width), order)
    # What failed, in a column right of the panels, level with where it failed (coronal panel).
    _place_checks(labeller, coronal, points, order, islands)
    top = _below(labeller, TITLE_PX + lateral.height)
    return _finish(canvas, labeller, footer, top, out_png, source.level, pixel_mm, panels)


def _verse_footer(failing: list[dict], title: str, source: _Source, pixel_mm: float) -> list[str]:
    """The lines under the panels: what failed per level, the title, voxel and pixel size."""
    voxel = np.linalg.norm(source.affine[:3, :3], axis=0) / 2**source.level
    footer = []
    for p in failing:
        failed = [*p["checks"], *([f"{p['islands']} island(s)"] if p["islands"] else [])]
        footer.append(f"{p['level']}: {', '.join(failed)}")
    footer += [title] if title else []
    footer.append(
        f"voxel {'x'.join(f'{v:.2f}' for v in voxel)} mm, read at pyramid level {source.level}; "
        f"1 px = {pixel_mm:g} mm"
    )
    return footer


def _draw_markers(
    draw: ImageDraw.ImageDraw, panel: Panel, order: list[dict], islands: dict[int, list]
) -> None:
    """A dot per centroid (a cross where only the centre of mass is known), a ring where a
    check failed, a smaller ring per label island."""
    for p in order:
        xy = panel.pixel(p["at"])
        if p["centroid"]:
            _dot(draw, xy, label_color(p["label"]))
        else:
            _cross(draw, xy)
        if p["checks"]:
            _ring(draw, xy, 8)
    for centres in islands.values():
        for centre in centres:
            _ring(draw, panel.pixel(centre), 6)


def _place_levels(labeller: _Labeller, panel: Panel, lab: np.ndarray, order: list[dict]) -> None:
    """Each level's name left of its point, clear of its own label's voxels."""
    for p in order:
        xy = panel.pixel(p["at"])
        clear = _clearance(lab, panel, xy, p["label"])
        labeller.place(
            panel, "level", [(p["level"], TEXT)], xy, "left", p["at"], p["label"], clear=clear
        )


def _place_checks(
    labeller: _Labeller,
    coronal: Panel,
    points: list[dict],
    order: list[dict],
    islands: dict[int, list],
) -> None:
    """Failed checks and label islands, right of the coronal panel, level with where."""
    notes_left = coronal.left + coronal.width + GAP_PX
    for p in order:
        if p["checks"]:
            text = f"{p['level']}: {', '.join(p['checks'])}"
            xy = coronal.pixel(p["at"])
            labeller.place(
                coronal, "check", [(text, TEXT)], xy, "right", p["at"], p["label"], notes_left
            )
    for label, centres in islands.items():
        level = next(p["level"] for p in points if p["label"] == label)
        for centre in centres:
            xy = coronal.pixel(centre)
            labeller.place(
                coronal,
                "check",
                [(f"{level}: island", TEXT)],
                xy,
                "right",
                centre,
                label,
                notes_left,
            )


def _finish(
    canvas: Image.Image,
    labeller: _Labeller,
    footer: list[str],
    top: int,
    out_png: Path,
    level: int,
    pixel_mm: float,
    panels: Sequence[Panel],
) -> Picture:
    """Write the footer lines from ``top`` down, crop the canvas below them, save."""
    y = top
    for line in footer:
        labeller.note("footer", line, (4, y))
        y += FONT_PX + 5
    canvas = canvas.crop((0, 0, canvas.width, y))
    picture = Picture(
        png=out_png,
        width=canvas.width,
        height=y,
        level=level,
        pixel_mm=pixel_mm,
        panels=list(panels),
        placements=labeller.placements,
    )
    return _save(canvas, picture)


# --- MosMed -------------------------------------------------------------------------------------

_ENDS = ("ant", "mid", "post")


def _keypoint_world(row: object, name: str, end: str) -> np.ndarray:
    return np.array([_f(getattr(row, f"{name}_{end}_{a}_mm", None)) for a in "xyz"])


def expert_colours(experts: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """A palette colour per expert, in sorted order (cycling after seven experts)."""
    return {e: EXPERT_COLOURS[n % len(EXPERT_COLOURS)] for n, e in enumerate(sorted(set(experts)))}


def _vertebra_key(row: Any) -> str:
    level = str(getattr(row, "level", "") or "")
    return (
        level
        if level and level.lower() not in ("nan", "none", "unknown")
        else f"#{row.vertebra_index}"
    )


def mosmed_picture(
    store: Path,
    keypoints: pd.DataFrame,
    out_png: Path,
    title: str = "",
    pixel_mm: float = MOSMED_PIXEL_MM,
    slab_bytes: int = SLAB_BYTES,
) -> Picture:
    """One sagittal panel per annotation release of one MosMed series, with every expert's
    keypoints, height segments, Genant grades and the level names.

    Each vertebra is shown on the sagittal plane it was annotated on (the median world x of its
    keypoints over the release's experts; between vertebrae the nearest one's plane).
    """
    source = _open_source(store, pixel_mm)
    lo, hi = source.box_min.copy(), source.box_max.copy()
    ends = [c for c in keypoints.columns if c.endswith(("_x_mm", "_y_mm", "_z_mm"))]
    points = keypoints[sorted(ends)].to_numpy(dtype=float).reshape(-1, 3) if ends else []
    points = np.asarray(points).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points):  # the spine and some context, not the whole chest
        near_lo = np.maximum(lo, points.min(axis=0) - MOSMED_MARGIN_MM)
        near_hi = np.minimum(hi, points.max(axis=0) + MOSMED_MARGIN_MM)
        if np.all(near_hi > near_lo):  # else the keypoints miss the volume: show all of it
            lo, hi = near_lo, near_hi
    releases = sorted(keypoints["release"].unique()) if "release" in keypoints else ["v1"]
    releases = releases or ["v1"]
    colours = expert_colours(keypoints["expert"]) if len(keypoints) else {}
    width_y = max(1, math.ceil((hi[1] - lo[1]) / pixel_mm))
    legend_h = FONT_PX + 8
    panels = _layout(
        [(str(r), 1, width_y) for r in releases], lo, hi, pixel_mm, TITLE_PX + legend_h
    )
    shape = source.image.shape
    per_release: list[tuple[pd.DataFrame, dict[str, dict]]] = []
    samples = []
    for panel, release in zip(panels, releases, strict=True):
        rows = keypoints[keypoints["release"] == release] if "release" in keypoints else keypoints
        groups = _vertebra_groups(rows)
        per_release.append((rows, groups))
        centres = [g for g in groups.values() if g["centre"] is not None]
        _, z = panel.centres()
        curve = np.tile((lo + hi) / 2, (len(z), 1))
        if centres:
            gz = np.array([g["centre"][2] for g in centres])
            gx = np.array([g["x"] for g in centres])
            nearest = np.argmin(np.abs(z[:, None] - gz[None, :]), axis=1)
            curve[:, 0] = gx[nearest]
        samples.append(_voxels(source.affine, _panel_world(panel, curve), shape))
    values, _ = _Reader(source, slab_bytes).run(samples, project_axis=None)

    footer = [title] if title else []
    footer.append(
        f"G0-G3: Genant grade; heights anterior/middle/posterior (mm) per expert; "
        f"1 px = {pixel_mm:g} mm"
    )
    height = panels[0].top + panels[0].height + ROOM_PX + (FONT_PX + 5) * len(footer)
    width = max(panels[-1].left + panels[-1].width, *(_width(line) + 8 for line in footer))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    for panel, (hu, _) in zip(panels, values, strict=True):
        canvas.paste(
            Image.fromarray(
                _rgb(
                    hu.reshape(panel.height, panel.width),
                    np.zeros((panel.height, panel.width), np.uint8),
                )
            ),
            (panel.left, panel.top),
        )
    draw = ImageDraw.Draw(canvas)
    typeface, small = font(), font(FONT_PX - 2)
    labeller = _Labeller(draw, typeface)
    for panel, (rows, groups) in zip(panels, per_release, strict=True):
        n_experts = rows["expert"].nunique() if len(rows) else 0
        labeller.note(panel.name, f"{panel.name}: {n_experts} expert(s)", (panel.left + 2, 3))
        _draw_legend(draw, panel, rows, colours, typeface)
        for row in rows.itertuples():
            _draw_keypoints(draw, panel, row, colours[row.expert])
        _place_grades(labeller, panel, groups, colours, small)
    top = _below(labeller, panels[0].top + panels[0].height)
    return _finish(canvas, labeller, footer, top, out_png, source.level, pixel_mm, panels)


def _vertebra_groups(rows: pd.DataFrame) -> dict[str, dict]:
    """One release's keypoint rows per vertebra: every expert's points and rows, the centre
    and median x of the finite points (None without any)."""
    groups: dict[str, dict] = {}
    for row in rows.itertuples():
        pts = np.array([_keypoint_world(row, n, e) for n in _ENDS for e in ("sup", "inf")])
        g = groups.setdefault(_vertebra_key(row), {"points": [], "rows": []})
        g["points"].append(pts)
        g["rows"].append(row)
    for g in groups.values():
        pts = np.concatenate(g["points"])
        pts = pts[np.isfinite(pts).all(axis=1)]
        g["centre"] = pts.mean(axis=0) if len(pts) else None
        g["x"] = float(np.median(pts[:, 0])) if len(pts) else None
    return groups


def _draw_legend(
    draw: ImageDraw.ImageDraw,
    panel: Panel,
    rows: pd.DataFrame,
    colours: dict[str, tuple[int, int, int]],
    typeface: Typeface,
) -> None:
    """A colour square and the name of each expert, under the panel's title."""
    x = panel.left + 2
    for expert in sorted(rows["expert"].unique()) if len(rows) else []:
        draw.rectangle([x, TITLE_PX + 2, x + 10, TITLE_PX + 12], fill=colours[expert])
        x += 13
        w, _ = _text_box(draw, expert, typeface)
        _text(draw, (x, TITLE_PX), expert, colours[expert], typeface)
        x += w + 8


def _draw_keypoints(
    draw: ImageDraw.ImageDraw, panel: Panel, row: Any, colour: tuple[int, int, int]
) -> None:
    """One expert's vertebra: a line from superior to inferior point per column (ant, mid,
    post), circles at the ends; columns with a missing point are left out."""
    for name in _ENDS:
        ends = [panel.pixel(_keypoint_world(row, name, e)) for e in ("sup", "inf")]
        if not all(np.isfinite(v) for xy in ends for v in xy):
            continue
        draw.line(ends, fill=colour, width=1)
        for ex, ey in ends:
            draw.ellipse([ex - 2, ey - 2, ex + 2, ey + 2], outline=colour)


def _place_grades(
    labeller: _Labeller,
    panel: Panel,
    groups: dict[str, dict],
    colours: dict[str, tuple[int, int, int]],
    small: Typeface,
) -> None:
    """Per vertebra, cranial first: its level on the left, each expert's grade and heights on
    the right, clear of the keypoints."""
    for key, g in sorted(
        groups.items(),
        key=lambda kv: -(kv[1]["centre"][2] if kv[1]["centre"] is not None else 0),
    ):
        if g["centre"] is None:
            continue
        xy = panel.pixel(g["centre"])
        pts = np.concatenate(g["points"])
        xs = [panel.pixel(q)[0] for q in pts[np.isfinite(pts).all(axis=1)]]
        front, back = xy[0] - min(xs), max(xs) - xy[0]
        labeller.place(panel, "level", [(key, TEXT)], xy, "left", g["centre"], clear=front)
        lines = []
        for row in sorted(g["rows"], key=lambda r: r.expert):
            heights = "/".join(f"{_f(getattr(row, f'height_{n}_mm', None)):.0f}" for n in _ENDS)
            lines.append((f"G{int(row.genant_grade)} {heights}", colours[row.expert]))
        if lines:
            labeller.place(
                panel, "grades", lines, xy, "right", g["centre"], clear=back, typeface=small
            )
