"""Every volume store of a build opens in the three Python OME-Zarr readers (ome-zarr-models
strict, ome-zarr-py, ngff-zarr), and CT, labels and table centroids line up in their NGFF space."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import zarr

from verse_etl.dataset import Dataset
from verse_etl.geometry.store_frame import axis_codes
from verse_etl.ngff import NGFF_AXES, display_affine, display_points, ngff_coordinates


def _stores(out: Path) -> list[Path]:
    stores = sorted((out / "volumes").rglob("*.zarr"))
    assert stores, f"{out}: no stores"
    return stores


def test_ome_zarr_models_accepts_every_image_and_label_image_strictly(tiny_build) -> None:
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    out, *_ = tiny_build
    labelled = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict: a ValidationWarning fails the test
        for store in _stores(out):
            root = zarr.open_group(store, mode="r")
            image = Image.from_zarr(root)
            axes = image.ome_attributes.multiscales[0].axes
            assert tuple(a.name for a in axes) == NGFF_AXES
            if "labels" in root:
                Labels.from_zarr(root["labels"])
                ImageLabel.from_zarr(root["labels/vertebrae"])
                labelled += 1
    assert labelled == 4  # the four VerSe scans


def test_ome_zarr_py_reads_image_and_labels_with_their_transforms(tiny_build) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    out, *_ = tiny_build
    for store in _stores(out):
        nodes = list(Reader(parse_url(str(store)))())
        images = [n for n in nodes if n.load(Multiscales) and not n.load(Label)]
        labels = [n for n in nodes if n.load(Label)]
        root = zarr.open_group(store, mode="r")
        assert len(images) == 1
        np.testing.assert_array_equal(np.asarray(images[0].data[1]), root["1"][...])
        transforms = images[0].metadata["coordinateTransformations"]
        assert transforms == [
            d["coordinateTransformations"] for d in root.attrs["ome"]["multiscales"][0]["datasets"]
        ]
        if "labels" in root:
            assert len(labels) == 1
            assert labels[0].metadata["coordinateTransformations"] == transforms
            np.testing.assert_array_equal(
                np.asarray(labels[0].data[0]), root["labels/vertebrae/0"][...]
            )


def test_ngff_zarr_validates_and_reads_every_store(tiny_build) -> None:
    from ngff_zarr import from_ngff_zarr

    out, *_ = tiny_build
    for store in _stores(out):
        groups = [store] + ([store / "labels/vertebrae"] if (store / "labels").exists() else [])
        for group in groups:
            multiscales = from_ngff_zarr(group, validate=True)
            assert multiscales.images[0].dims == NGFF_AXES
            level0 = zarr.open_array(group / "0", mode="r")
            assert level0.metadata.dimension_names == NGFF_AXES
            np.testing.assert_array_equal(
                np.asarray(multiscales.images[2].data), group_level(group)
            )


def group_level(group: Path) -> np.ndarray:
    return zarr.open_array(group / "2", mode="r")[...]


def _scale_translation(dataset: dict) -> tuple[np.ndarray, np.ndarray]:
    transforms = {t["type"]: np.array(t[t["type"]]) for t in dataset["coordinateTransformations"]}
    return transforms["scale"], transforms["translation"]


def test_centroids_land_on_their_label_in_ngff_space(tiny_build) -> None:
    """What a napari user overlays: the tables' RAS+ centroids, as points in the NGFF space of the
    image and label layers, fall in the store voxel the table names at every level, and at level 0
    that voxel of the store's label image holds the label the table says (probed at build time
    in the source frame)."""
    out, *_ = tiny_build
    ds = Dataset(out)
    checked = 0
    for case_id in ds.ids:
        case = ds.case(case_id)
        if case.source != "verse":
            continue
        rows = case.vertebrae[case.vertebrae["in_centroids"] & case.vertebrae["in_mask"]]
        rows = rows[rows["mask_label_at_centroid"].notna()]
        points = ngff_coordinates(
            case.affine, rows[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
        )
        # The store frame's voxel columns: the source's centroids permuted and flipped the way
        # the arrays were, and on the same world point through the store affine.
        centroids = rows[["centroid_store_z", "centroid_store_y", "centroid_store_x"]].to_numpy()
        source = rows[["centroid_i", "centroid_j", "centroid_k"]].to_numpy()
        np.testing.assert_allclose(case.frame.to_store_index(source), centroids, atol=1e-9)
        np.testing.assert_allclose(
            centroids @ case.affine[:3, :3].T + case.affine[:3, 3],
            rows[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(),
            atol=1e-4,
        )
        # Right way up: store axes grow toward superior, posterior, the patient's left.
        assert axis_codes(case.affine) == "SPL", case.id
        for group in ("", "labels/vertebrae"):
            ome = zarr.open_group(case.store / group, mode="r").attrs["ome"]
            for level, dataset in enumerate(ome["multiscales"][0]["datasets"]):
                scale, translation = _scale_translation(dataset)
                # A viewer's voxel of an NGFF point: (point - translation) / scale.
                np.testing.assert_allclose(
                    (points - translation) / scale, centroids / 2**level, atol=1e-6
                )
        # The radiological display frame (napari layers' affine): image voxels and the tables'
        # RAS+ points land together, and the frame's axes are superior, posterior, left.
        world = rows[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
        frame = display_affine(case.affine)
        shown = centroids @ frame[:3, :3].T + frame[:3, 3]
        np.testing.assert_allclose(shown, display_points(world), atol=1e-4)
        right, anterior, superior = display_points(np.eye(3))
        assert superior[0] > 0 and anterior[1] < 0 and right[2] < 0
        labels = zarr.open_array(case.store / "labels/vertebrae/0", mode="r")
        nearest = np.floor(centroids + 0.5).astype(int)  # as the table's probe rounds
        found = labels.get_coordinate_selection(tuple(nearest.T))
        np.testing.assert_array_equal(found, rows["mask_label_at_centroid"].to_numpy(int))
        checked += len(rows)
    assert checked > 0
