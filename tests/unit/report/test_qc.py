"""QC pictures: true proportions for any orientation, level names where the vertebrae are, checks
drawn where they fail, bounded reads. Phantoms are boxes of known size in world millimetres,
measured in the picture's pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from verse_etl.params import VolumeParams
from verse_etl.report.qc import FLAG, TEXT, Picture, label_color, mosmed_picture, verse_picture
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, StoreWriter

PARAMS = VolumeParams(chunks=(16, 16, 16), shard_chunks=(2, 2, 2), pyramid_levels=1, threads=1)
BOX = {20: ((-15.0, 25.0), (-18.0, 2.0), (-10.0, 50.0))}
"""L1: 40 mm (x) by 20 mm (y) by 60 mm (z), off the origin."""


def _rotation_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


FAMILIES = {
    # array axes -> RAS directions (columns), voxel sizes
    "RAS": (np.eye(3), (0.8, 1.2, 2.5)),
    "LPS": (np.diag([-1.0, -1.0, 1.0]), (0.7, 0.9, 2.0)),
    "PIR": (np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), (0.9, 1.3, 2.2)),
    "oblique": (
        _rotation_x(25) @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float),
        (1.1, 0.8, 1.9),
    ),
}


def _grid(directions: np.ndarray, spacing, half: float = 55.0) -> tuple[np.ndarray, tuple]:
    """An affine whose grid covers the world cube [-half, half]^3 (+ a margin)."""
    m = directions @ np.diag(spacing)
    corners = np.array(
        [[a, b, c] for a in (-half, half) for b in (-half, half) for c in (-half, half)]
    )
    voxels = corners @ np.linalg.inv(m).T
    vmin, vmax = voxels.min(axis=0), voxels.max(axis=0)
    shape = tuple(int(n) for n in np.ceil(vmax - vmin) + 1)
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = m @ vmin
    return affine, shape


def _phantom(affine: np.ndarray, shape: tuple, boxes: dict) -> tuple[np.ndarray, np.ndarray]:
    """HU 1000 in labelled boxes (world RAS+ mm ranges), -1000 elsewhere."""
    index = np.ogrid[: shape[0], : shape[1], : shape[2]]
    world = [
        sum(np.float32(affine[a, b]) * index[b] for b in range(3)) + np.float32(affine[a, 3])
        for a in range(3)
    ]
    labels = np.zeros(shape, np.uint8)
    for label, ranges in boxes.items():
        inside = np.ones(shape, bool)
        for w, (lo, hi) in zip(world, ranges, strict=True):
            inside &= (w >= lo) & (w <= hi)
        labels[inside] = label
    return np.where(labels > 0, 1000, -1000).astype(np.int16), labels


def _write_store(path: Path, affine: np.ndarray, hu: np.ndarray, labels: np.ndarray) -> Path:
    with StoreWriter(path, PARAMS, {"verse_etl": {"affine": affine.tolist()}}, affine=affine) as w:
        w.write_array(IMAGE_PATH, hu.shape, np.dtype(np.int16), [(0, hu)])
        w.write_array(
            LABELS_PATH, labels.shape, np.dtype(np.uint8), [(0, labels)],
            label_names={20: "L1", 21: "L2", 22: "L3"},
        )  # fmt: skip
    return path


def _row(label: int, level: str, centroid, **extra) -> dict:
    row = {
        "label": label, "level": level, "in_mask": True, "in_centroids": centroid is not None,
        "centroid_in_volume": centroid is not None, "n_islands": 0,
        **{f"centroid_{a}_mm": (centroid[n] if centroid is not None else np.nan) for n, a in enumerate("xyz")},
        **{f"com_{a}_mm": np.nan for a in "xyz"},
        "mask_label_at_centroid": label if centroid is not None else pd.NA,
        **{f"bbox_{a}_{e}": pd.NA for a in "ijk" for e in ("min", "max")},
    }  # fmt: skip
    row.update(extra)
    return row


def _centre(ranges) -> tuple[float, float, float]:
    return tuple((lo + hi) / 2 for lo, hi in ranges)


def _extent(mask: np.ndarray) -> int:
    where = np.flatnonzero(mask)
    return int(where[-1] - where[0] + 1) if len(where) else 0


def _panel_pixels(picture: Picture, pixels: np.ndarray, name: str):
    panel = next(p for p in picture.panels if p.name == name)
    return panel, pixels[
        panel.top : panel.top + panel.height, panel.left : panel.left + panel.width
    ]


def _assert_text_where_placed(picture: Picture, pixels: np.ndarray) -> None:
    """Text-coloured pixels are inside the placed boxes, and every box has some."""
    text = np.all(pixels == TEXT, axis=2)
    inside = np.zeros_like(text)
    for p in picture.placements:
        x0, y0, x1, y1 = p.box
        inside[y0:y1, x0:x1] = True
        if p.kind in ("level", "check", "note"):
            assert text[y0:y1, x0:x1].sum() >= 8, p
    assert not (text & ~inside).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_panels_show_true_proportions(family: str, tmp_path: Path) -> None:
    directions, spacing = FAMILIES[family]
    affine, shape = _grid(directions, spacing)
    hu, labels = _phantom(affine, shape, BOX)
    store = _write_store(tmp_path / "s.zarr", affine, hu, labels)
    centre = _centre(BOX[20])
    vertebrae = pd.DataFrame([_row(20, "L1", centre)])
    picture = verse_picture(store, vertebrae, tmp_path / "s.png")
    pixels = np.asarray(Image.open(picture.png).convert("RGB"))
    assert pixels.shape[:2] == (picture.height, picture.width)
    level_spacing = np.array(spacing) * 2**picture.level
    tolerance = level_spacing.max() + 1.0  # nearest-voxel sampling: one voxel either way
    expected = {"lateral": (20, 60), "sagittal": (20, 60), "coronal": (40, 60)}
    for name, (width_mm, height_mm) in expected.items():
        panel, view = _panel_pixels(picture, pixels, name)
        bright = view.max(axis=2) > 60
        ax, ay = panel.pixel(centre)
        row, col = round(ay - panel.top), round(ax - panel.left)
        # Measured away from the name beside the centroid (rows) and through the dot (columns).
        width = _extent(bright[row - 20]) * panel.pixel_mm
        height = _extent(bright[:, col]) * panel.pixel_mm
        assert abs(width - width_mm) <= tolerance, (name, width, height)
        assert abs(height - height_mm) <= tolerance, (name, width, height)
        # The centroid's dot and name sit at the middle of the box as measured in pixels.
        cols = np.flatnonzero(bright[row - 20])
        rows = np.flatnonzero(bright[:, col])
        assert abs((cols[0] + cols[-1]) / 2 - (ax - panel.left)) <= tolerance
        assert abs((rows[0] + rows[-1]) / 2 - (ay - panel.top)) <= tolerance
        (name_at,) = [p for p in picture.placements if p.panel == name and p.kind == "level"]
        assert name_at.text == "L1" and name_at.anchor == pytest.approx((ax, ay))
        assert abs((name_at.box[1] + name_at.box[3]) / 2 - ay) < 3
    _assert_text_where_placed(picture, pixels)
    sidecar = json.loads(picture.png.with_suffix(".json").read_text())
    assert [p["name"] for p in sidecar["panels"]] == ["lateral", "sagittal", "coronal"]


@pytest.mark.parametrize(
    "directions",
    [
        FAMILIES["oblique"],  # the lateral projection along stored axis 2
        FAMILIES["RAS"],  # along axis 0: the maximum over boxes
        (np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float), (1.1, 0.8, 1.9)),  # along axis 1
    ],
    ids=["lr-axis-2", "lr-axis-0", "lr-axis-1"],
)
def test_reads_in_slabs_give_the_same_picture(tmp_path: Path, directions) -> None:
    """Read at once, in slabs of whole chunk depths (16 planes) and in boxes cut along a
    second axis (5 planes' worth: one chunk depth by chunk rows): the same picture."""
    affine, shape = _grid(*directions)
    store = _write_store(tmp_path / "s.zarr", affine, *_phantom(affine, shape, BOX))
    vertebrae = pd.DataFrame([_row(20, "L1", _centre(BOX[20]))])
    whole = verse_picture(store, vertebrae, tmp_path / "a.png", slab_bytes=1 << 30)
    expected = np.asarray(Image.open(whole.png))
    plane = int(np.prod(shape[1:])) * 3  # image + labels bytes of a plane
    for planes in (16, 5):
        sliced = verse_picture(store, vertebrae, tmp_path / "b.png", slab_bytes=planes * plane)
        assert np.array_equal(expected, np.asarray(Image.open(sliced.png))), planes


def test_failed_checks_are_drawn_where_they_fail(tmp_path: Path) -> None:
    boxes = {
        20: ((-10.0, 10.0), (-10.0, 10.0), (20.0, 40.0)),
        21: ((-10.0, 10.0), (-10.0, 10.0), (-5.0, 15.0)),
        22: ((-10.0, 10.0), (-10.0, 10.0), (-30.0, -10.0)),
    }
    affine, shape = _grid(np.eye(3), (1.0, 1.0, 1.0))
    hu, labels = _phantom(affine, shape, boxes)
    island = np.array([30.0, 0.0, 5.0])  # a piece of L2 beside the spine
    i, j, k = np.rint(np.linalg.inv(affine) @ [*island, 1])[:3].astype(int)
    labels[i : i + 2, j : j + 2, k : k + 2] = 21
    hu[i : i + 2, j : j + 2, k : k + 2] = 1000
    store = _write_store(tmp_path / "s.zarr", affine, hu, labels)
    l1_off = (0.0, 0.0, 17.5)  # the L1 centroid sits in the gap above L2
    l2 = np.argwhere(labels == 21)
    rows = [
        _row(20, "L1", l1_off, mask_label_at_centroid=0),
        _row(21, "L2", _centre(boxes[21]), n_islands=1,
             **{f"bbox_{a}_{e}": int(getattr(l2[:, n], e)()) for n, a in enumerate("ijk") for e in ("min", "max")}),
        _row(22, "L3", None, **dict(zip(("com_x_mm", "com_y_mm", "com_z_mm"), _centre(boxes[22]), strict=True))),
    ]  # fmt: skip
    picture = verse_picture(store, pd.DataFrame(rows), tmp_path / "s.png")
    pixels = np.asarray(Image.open(picture.png).convert("RGB"))
    flag = np.all(pixels == FLAG, axis=2)
    checks = {p.text: p for p in picture.placements if p.kind == "check"}
    coronal = picture.panels[-1]
    for text, where in (
        ("L1: centroid in background", l1_off),
        ("L2: island", island),
        ("L3: no centroid", _centre(boxes[22])),
    ):
        # Said beside the panels, level with the place (within the push past other notes) ...
        placed = checks.pop(text)
        x, y = coronal.pixel(where)
        assert placed.panel == "coronal" and placed.anchor == pytest.approx((x, y), abs=1.5)
        assert placed.box[0] >= coronal.left + coronal.width and abs(placed.box[1] - y) < 30
        for panel in picture.panels:
            # ... and marked where it is in every panel (ring or cross in the flag colour).
            x, y = panel.pixel(where)
            near = flag[round(y) - 10 : round(y) + 11, round(x) - 10 : round(x) + 11]
            assert near.sum() >= 10, (panel.name, text)
    assert not checks
    for panel in picture.panels:
        # Every vertebra has its name in every panel, L3 at its centre of mass.
        names = {p.text for p in picture.placements if p.panel == panel.name and p.kind == "level"}
        assert names == {"L1", "L2", "L3"}
    _assert_text_where_placed(picture, pixels)
    assert TEXT not in {label_color(v) for v in range(1, 256)}

    # The table's boxes in the source's axis order (here k, i, j) and its affine: same island.
    order = [2, 0, 1]
    source_affine = affine[:, [*order, 3]]
    bbox = {
        f"bbox_{a}_{e}": int(getattr(l2[:, order[n]], e)())
        for n, a in enumerate("ijk")
        for e in ("min", "max")
    }
    rows[1].update(bbox)
    again = verse_picture(store, pd.DataFrame(rows), tmp_path / "t.png", index_affine=source_affine)
    (island_again,) = [p for p in again.placements if p.text == "L2: island"]
    assert island_again.world_mm == pytest.approx(tuple(island + 0.5), abs=0.01)


def test_mosmed_panels_per_release_with_expert_colours_and_grades(tmp_path: Path) -> None:
    affine, shape = _grid(np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 2.0))
    # T7 is annotated on the sagittal plane x = -8, T8 on x = +8; each body exists only there.
    plane = {"T7": -8.0, "T8": 8.0}
    boxes = {
        1: ((-10.0, -6.0), (-10.0, 10.0), (5.0, 25.0)),
        2: ((6.0, 10.0), (-10.0, 10.0), (-25.0, -5.0)),
    }
    hu, _ = _phantom(affine, shape, boxes)
    store = _write_store(tmp_path / "m.zarr", affine, hu, np.zeros(shape, np.uint8))
    rows = []
    for release, experts in (("v1", ("expert0", "expert3")), ("v2", ("expert1",))):
        for n, expert in enumerate(experts):
            for index, (level, (_, _, (z0, z1))) in enumerate(
                zip(("T7", "T8"), boxes.values(), strict=True)
            ):
                row = {"release": release, "expert": expert, "vertebra_index": index, "level": level,
                       "genant_grade": index + n, "height_ant_mm": 20.0, "height_mid_mm": 19.0,
                       "height_post_mm": 21.0}  # fmt: skip
                for name, y in (("ant", 9.0), ("mid", 0.0), ("post", -9.0)):
                    for end, z in (("sup", z1), ("inf", z0)):
                        for a, v in zip("xyz", (plane[level] + n * 0.5, y, z), strict=True):
                            row[f"{name}_{end}_{a}_mm"] = v
                rows.append(row)
    picture = mosmed_picture(store, pd.DataFrame(rows), tmp_path / "m.png")
    pixels = np.asarray(Image.open(picture.png).convert("RGB"))
    # Read in 8-plane slabs, each only around the sampled voxels: the same picture.
    sliced = mosmed_picture(
        store, pd.DataFrame(rows), tmp_path / "n.png", slab_bytes=8 * 3 * int(np.prod(shape[1:]))
    )
    assert np.array_equal(np.asarray(Image.open(sliced.png).convert("RGB")), pixels)
    assert [p.name for p in picture.panels] == ["v1", "v2"]
    for panel, n_experts in zip(picture.panels, (2, 1), strict=True):
        grades = [p for p in picture.placements if p.panel == panel.name and p.kind == "grades"]
        assert len(grades) == 2 and all(len(g.text.split("\n")) == n_experts for g in grades)
        assert grades[0].text.split("\n")[0] == "G0 20/19/21"
        names = {
            p.text: p for p in picture.placements if p.panel == panel.name and p.kind == "level"
        }
        assert set(names) == {"T7", "T8"}
        x, y = panel.pixel((plane["T7"], 0.0, 15.0))
        assert names["T7"].anchor == pytest.approx((x, y), abs=2)
        # Both bodies show (bone grey between the anterior and middle keypoints): each vertebra
        # is drawn on its own plane, where one flat slice would miss one of them.
        for level, z in (("T7", 15.0), ("T8", -15.0)):
            x, y = panel.pixel((plane[level], 4.5, z))
            assert pixels[round(y), round(x)].min() > 150, (panel.name, level)
    # Each expert's keypoint segments are drawn in its own palette colour.
    from verse_etl.report.qc import expert_colours

    colours = expert_colours(["expert0", "expert1", "expert3"])
    assert len(set(colours.values())) == 3
    for colour in colours.values():
        assert np.all(pixels == colour, axis=2).sum() > 20
    _assert_text_where_placed(picture, pixels)


@pytest.mark.parametrize(
    ("spacing", "level"), [((0.5, 0.5, 0.5), 1), ((0.32, 0.32, 1.25), 0), ((1.0, 1.0, 2.0), 0)]
)
def test_reads_the_pyramid_level_nearest_1_mm_without_coarsening_thin_axes(
    spacing: tuple, level: int, tmp_path: Path
) -> None:
    affine, shape = _grid(np.eye(3), spacing, half=20.0)
    box = {20: ((-5.0, 5.0), (-5.0, 5.0), (-5.0, 5.0))}
    store = _write_store(tmp_path / "s.zarr", affine, *_phantom(affine, shape, box))
    picture = verse_picture(
        store, pd.DataFrame([_row(20, "L1", (0.0, 0.0, 0.0))]), tmp_path / "p.png"
    )
    assert picture.level == level
