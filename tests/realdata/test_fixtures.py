"""The real files in ../shared/fixtures go through ingestion and validation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from verse_etl.schemas import ScansTable, VertebraeTable

from verse_etl.geometry.affines import apply_affine
from verse_etl.mosmed.annotations import read_annotation
from verse_etl.params import VolumeParams
from verse_etl.report.qc import TEXT, label_color, verse_picture
from verse_etl.sources.verse import discover_verse
from verse_etl.stores.volumes import IMAGE_PATH, LABELS_PATH, open_array, read_source_order
from verse_etl.verse.case import build_verse_scan

SUB = "sub-verse004"
BODY_CENTROID_MM = 5.0
"""How close the world centroid must be to the centre of mass of the vertebral body."""


@pytest.fixture(scope="module")
def verse004(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VerSe'19 release folder around the real sub-verse004 mask and centroids.

    The real CT is not shipped; a CT is made on the mask's exact grid (same header, int16 HU) so
    that the real mask and centroid file run through the same code as a full case.
    """
    fixture = shared / "fixtures" / "verse" / SUB
    root = tmp_path_factory.mktemp("verse")
    raw = root / "dataset-verse19training" / "rawdata" / SUB
    der = root / "dataset-verse19training" / "derivatives" / SUB
    raw.mkdir(parents=True)
    der.mkdir(parents=True)
    for f in fixture.iterdir():
        shutil.copy(f, der / f.name)
    mask = nib.load(str(fixture / f"{SUB}_seg-vert_msk.nii.gz"))
    labels = np.asanyarray(mask.dataobj)
    ct = np.where(labels > 0, 700, -1000).astype(np.int16)
    img = nib.Nifti1Image(ct, mask.affine, mask.header)
    img.set_data_dtype(np.int16)
    nib.save(img, str(raw / f"{SUB}_ct.nii.gz"))
    return root


def test_real_mask_header_is_what_the_spec_says(shared: Path) -> None:
    img = nib.load(str(shared / "fixtures" / "verse" / SUB / f"{SUB}_seg-vert_msk.nii.gz"))
    assert img.get_data_dtype() == np.float64
    assert "".join(nib.aff2axcodes(img.affine)) == "PIR"
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 2)


def _body_centre_of_mass(world: np.ndarray) -> np.ndarray:
    """Centre of mass of the vertebral body among the world points (RAS mm) of one vertebra.

    The centroid files give the vertebral-BODY centroid, while the mask also holds the posterior
    arch (pedicles, laminae, spinous process). The two are separated by the spinal canal: in a
    3 mm band around the vertebra's mid-sagittal plane (median x), the largest gap along the
    anterior (+y) axis between mask voxels is the canal; the body is every voxel of the label
    anterior of it. No fraction or threshold is tuned to the data.
    """
    x_mid = np.median(world[:, 0])
    band = np.sort(world[np.abs(world[:, 0] - x_mid) < 3.0, 1])
    gap = int(np.argmax(np.diff(band)))
    back_of_body = band[gap + 1]
    return world[world[:, 1] >= back_of_body].mean(axis=0)


def test_real_verse_case_ingests_and_validates(verse004: Path, tmp_path: Path) -> None:
    (scan,) = discover_verse(verse004)
    assert (scan.scan_id, scan.patient_id, scan.release, scan.split) == (
        "verse004",
        "verse004",
        "verse19",
        "training",
    )
    result = build_verse_scan(
        scan, verse004, tmp_path, VolumeParams(chunks=(32, 32, 32), shard_chunks=(4, 4, 2))
    )
    assert not result.quarantine, result.quarantine
    scans = ScansTable.validate(pd.DataFrame(result.rows["scans"]).assign(source="verse"))
    vertebrae = VertebraeTable.validate(
        pd.DataFrame(result.rows["vertebrae"]).assign(source="verse", release="verse19")
    )
    assert scans.loc[0, "orientation"] == "PIR"
    assert scans.loc[0, "mask_dtype"] == "float64"
    # The centroid file lists T9..L5 (16..24), and so does the mask.
    ctd = json.loads(scan.centroids.read_bytes())
    assert sorted(vertebrae["label"]) == sorted(e["label"] for e in ctd[1:])
    assert vertebrae["in_mask"].all() and vertebrae["in_centroids"].all()
    assert list(vertebrae["level"]) == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]

    # The store holds the real mask as uint8 labels, voxel for voxel, with the source affine.
    store = tmp_path / scans.loc[0, "store_path"]
    mask_file = nib.load(str(scan.mask.path))
    source = np.asanyarray(mask_file.dataobj)
    stored = open_array(store, LABELS_PATH)[...]
    assert stored.dtype == np.uint8
    # Stored the right way up (an oblique PIR scan: axes permuted and flipped toward superior,
    # posterior, left, as nibabel turns it), and back in the source's order voxel for voxel.
    turn = nib.orientations.ornt_transform(
        nib.io_orientation(mask_file.affine), nib.orientations.axcodes2ornt(("S", "P", "L"))
    )
    upright = nib.orientations.apply_orientation(source.astype(np.uint8), turn)
    np.testing.assert_array_equal(stored, upright)
    np.testing.assert_array_equal(read_source_order(store, LABELS_PATH), source.astype(np.uint8))
    store_affine = np.asarray(scans.loc[0, "store_affine"], dtype=float).reshape(4, 4)
    np.testing.assert_allclose(
        store_affine, mask_file.affine @ nib.orientations.inv_ornt_aff(turn, source.shape)
    )
    assert open_array(store, IMAGE_PATH).dtype == np.int16
    affine = np.asarray(scans.loc[0, "affine"], dtype=float).reshape(4, 4)
    np.testing.assert_allclose(affine, mask_file.affine)

    spacing = scans.loc[0, ["spacing_i_mm", "spacing_j_mm", "spacing_k_mm"]].astype(float)
    for row in vertebrae.itertuples():
        voxels = np.argwhere(source == row.label)
        world_voxels = apply_affine(affine, voxels)
        centroid = np.array([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm])
        body = _body_centre_of_mass(world_voxels)
        whole = world_voxels.mean(axis=0)
        # World centroid (file's PIR voxel indices through the oblique affine) on the body.
        assert np.linalg.norm(centroid - body) < BODY_CENTROID_MM, (row.level, centroid, body)
        # ... and the whole-vertebra centre of mass is not (the arch pulls it back, -y).
        assert np.linalg.norm(centroid - whole) > BODY_CENTROID_MM, (row.level, centroid, whole)
        assert centroid[1] > whole[1]
        # The table's own statistics agree with the mask.
        np.testing.assert_allclose([row.com_x_mm, row.com_y_mm, row.com_z_mm], whole, atol=1e-6)
        assert row.mask_voxels == len(voxels) and row.n_components == 1
        assert (row.bbox_i_min, row.bbox_k_max) == (voxels[:, 0].min(), voxels[:, 2].max())
        assert row.volume_mm3 == pytest.approx(row.mask_voxels * np.prod(spacing), rel=1e-6)
        assert row.mask_label_at_centroid == row.label


def test_real_annotations_parse_with_right_counts_and_as_v2(shared: Path, tmp_path: Path) -> None:
    """Every real (v1) file parses completely; rewritten in the v2 schema (segments + type) it
    gives the same points. The table checks run on these files in tests/e2e
    (test_real_annotations_*), where their series exist."""
    files = sorted((shared / "fixtures" / "mosmed" / "annotation").glob("*.json"))
    assert len(files) == 20
    for path in files:
        raw = json.loads(path.read_text())
        parsed = read_annotation(path)
        assert parsed.release == "v1" and not parsed.problems
        assert parsed.folder == path.stem == raw["Folder"]
        assert parsed.series_uid == raw["SeriesInstanceUID"] and parsed.series_uid.endswith(".")
        assert parsed.experts == tuple(raw["Annotation"])
        for expert, vertebrae in raw["Annotation"].items():
            mine = [v for v in parsed.vertebrae if v.expert == expert]
            assert [v.points for v in mine] == [tuple(map(tuple, v)) for v in vertebrae]
        v2 = {
            **raw,
            "Annotation": {
                e: [
                    {"segments": np.asarray(v).reshape(3, 2, 3).tolist(), "type": f"Th{1 + i % 12}"}
                    for i, v in enumerate(vs)
                ]
                for e, vs in raw["Annotation"].items()
            },
        }
        (tmp_path / path.name).write_text(json.dumps(v2))
        again = read_annotation(tmp_path / path.name)
        assert again.release == "v2" and not again.problems
        assert [v.points for v in again.vertebrae] == [v.points for v in parsed.vertebrae]


def test_real_verse_qc_picture_shows_every_level_with_true_proportions(
    verse004: Path, tmp_path: Path
) -> None:
    """The QC picture of the real (PIR, oblique, 1 x 1 x 2 mm) mask: all nine levels named beside
    their centroids in every panel, each centroid's dot on its own vertebra, and a vertebral
    body as tall and as deep in the sagittal panel (pixels) as in the mask (world mm)."""
    (scan,) = discover_verse(verse004)
    result = build_verse_scan(
        scan, verse004, tmp_path, VolumeParams(chunks=(32, 32, 32), shard_chunks=(4, 4, 2))
    )
    vertebrae = pd.DataFrame(result.rows["vertebrae"])
    store = tmp_path / result.rows["scans"][0]["store_path"]
    picture = verse_picture(store, vertebrae, tmp_path / "verse004.png", title="verse004")
    pixels = np.asarray(Image.open(picture.png).convert("RGB"))
    assert pixels.shape[:2] == (picture.height, picture.width)

    mask = nib.load(str(scan.mask.path))
    labels = np.asanyarray(mask.dataobj).astype(np.uint8)
    inverse = np.linalg.inv(mask.affine)

    def label_at(world: np.ndarray) -> np.ndarray:
        index = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        inside = np.all((index >= 0) & (index < labels.shape), axis=1)
        out = np.zeros(len(world), np.uint8)
        out[inside] = labels[tuple(index[inside].T)]
        return out

    # Panels span the field of view at 1 mm per pixel: 338 mm tall (the mask's I axis).
    corners = np.array(
        [[a, b, c] for a in (-0.5, 160.5) for b in (-0.5, 337.5) for c in (-0.5, 60.5)]
    )
    world = apply_affine(mask.affine, corners)
    lateral, sagittal, coronal = picture.panels
    assert picture.pixel_mm == 1.0 and lateral.height == math.ceil(np.ptp(world[:, 2]))
    assert (lateral.width, coronal.width) == (
        math.ceil(np.ptp(world[:, 1])),
        math.ceil(np.ptp(world[:, 0])),
    )

    levels = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    text = np.all(pixels == TEXT, axis=2)
    for panel in picture.panels:
        placed = {
            p.text: p for p in picture.placements if p.panel == panel.name and p.kind == "level"
        }
        assert sorted(placed, key=levels.index) == levels
        for row in vertebrae.itertuples():
            p = placed[row.level]
            centroid = np.array([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm])
            x, y = panel.pixel(centroid)
            assert p.anchor == pytest.approx((x, y)) and p.world_mm == pytest.approx(
                tuple(centroid)
            )
            x0, y0, x1, y1 = p.box
            assert x1 <= x + 1 and abs((y0 + y1) / 2 - y) < 12  # beside it, level with it
            assert text[y0:y1, x0:x1].sum() >= 10  # and really drawn there
            if panel.name != "lateral":
                # Just outside the dot (radius 3) the picture shows the vertebra's own label.
                ring = [
                    pixels[round(y) + dy, round(x) + dx] for dx, dy in ((5, 0), (0, 5), (0, -5))
                ]
                blended = 0.55 * np.clip((700 + 450) / 1800, 0, 1) * 255 + 0.45 * np.array(
                    label_color(row.label)
                )
                assert any(np.abs(c.astype(float) - blended).max() <= 2 for c in ring), row.level

    # True proportions: L1's body measured in the sagittal panel through its centroid equals the
    # mask measured along the same world lines (tall: along z on the spine curve; deep: along y).
    l1 = vertebrae.set_index("level").loc["L1"]
    c = np.array([l1.centroid_x_mm, l1.centroid_y_mm, l1.centroid_z_mm])
    x, y = (round(v) for v in sagittal.pixel(c))
    grey = np.clip((700 + 450) / 1800, 0, 1) * 255
    colour = 0.55 * grey + 0.45 * np.array(label_color(20))
    ctd = vertebrae.sort_values("centroid_z_mm")

    def curve_x(z: np.ndarray) -> np.ndarray:
        return np.interp(z, ctd.centroid_z_mm, ctd.centroid_x_mm)

    def measured(line: np.ndarray) -> int:
        hits = np.flatnonzero(np.all(np.abs(line.astype(float) - colour) <= 2, axis=1))
        return int(hits[-1] - hits[0] + 1)

    # Tall: the column 5 px posterior of the dot (which covers the centroid's own column).
    column = pixels[sagittal.top : sagittal.top + sagittal.height, x + 5]
    zs = np.linspace(c[2] - 40, c[2] + 40, 1601)
    line = np.stack([curve_x(zs), np.full_like(zs, c[1] - 5 * sagittal.pixel_mm), zs], axis=1)
    tall_mm = np.ptp(zs[label_at(line) == 20])
    assert abs(measured(column) * sagittal.pixel_mm - tall_mm) <= 2.5, (measured(column), tall_mm)
    # Deep: the row 3 px above the centroid (the name beside it is on the anterior side only).
    row = pixels[y - 3, x + 4 : sagittal.left + sagittal.width]
    ys = np.linspace(c[1] - 4 - 80, c[1] - 4, 1601)
    z_up = c[2] + 3 * sagittal.pixel_mm
    line = np.stack([np.full_like(ys, curve_x(z_up)), ys, np.full_like(ys, z_up)], axis=1)
    inside = ys[label_at(line) == 20]
    deep_mm = c[1] - 4 - inside.min()  # from the dot's edge back to the body's posterior wall
    assert abs(measured(row) * sagittal.pixel_mm - deep_mm) <= 2.5, (measured(row), deep_mm)
