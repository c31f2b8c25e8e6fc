"""Other shapes of the same synthetic VerSe scans: release zips, MICCAI flat copies, duplicates,
and defective files, for tests of discovery and checks (``shared/specs/VERSE.md`` §1, §4, §7).

None of this is in the default sample (``write_sample``), which stays small and clean; tests
call these helpers on a sample they wrote. Every helper writes atomically and deterministically.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from verse_etl_sample.manifest import VerseScanManifest
from verse_etl_sample.nifti import write_nifti_gz
from verse_etl_sample.output import atomic_file, gzip_member, write_text_atomic

RELEASE_ZIPS: dict[str, str] = {
    "dataset-verse19training": "dataset-verse19training.zip",
    "dataset-verse19validation": "dataset-verse19validation.zip",
    "dataset-verse19test": "dataset-verse19test.zip",
    "dataset-01training": "dataset-verse20training.zip",
    "dataset-02validation": "dataset-verse20validation.zip",
    "dataset-03test": "dataset-verse20test.zip",
}
"""Release folder -> the zip it is published in (VerSe'20 zips unpack to dataset-0N...)."""
MICCAI_AXES = {"verse19": "IPL", "verse20": "PIR"}
_WORLD = {
    "R": (1, 0, 0),
    "L": (-1, 0, 0),
    "A": (0, 1, 0),
    "P": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}


def zip_release(
    verse_root: Path, dataset_dir: str, *, wrapper: str | None = None, remove: bool = True
) -> Path:
    """Pack ``verse_root/dataset_dir`` into its published zip beside it.

    Parameters
    ----------
    verse_root
        Folder holding the release folder.
    dataset_dir
        Release folder name, e.g. ``dataset-01training`` (-> ``dataset-verse20training.zip``).
    wrapper
        Extra top folder inside the zip (some re-packed copies nest the release folder).
    remove
        Delete the folder afterwards, so that only the zip holds the release.

    Returns
    -------
    Path
        The zip written (members sorted, fixed times: byte-stable).
    """
    folder = verse_root / dataset_dir
    target = verse_root / RELEASE_ZIPS[dataset_dir]
    with atomic_file(target) as raw, zipfile.ZipFile(raw, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(verse_root).as_posix()
            if wrapper:
                name = f"{wrapper}/{name}"
            entry = zipfile.ZipInfo(name, date_time=(2020, 6, 1, 0, 0, 0))
            # Stored, as already-gzipped files gain nothing; JSON is deflated like zip tools do.
            entry.compress_type = (
                zipfile.ZIP_STORED if path.suffix == ".gz" else zipfile.ZIP_DEFLATED
            )
            archive.writestr(entry, path.read_bytes())
    if remove:
        shutil.rmtree(folder)
    return target


def miccai_coordinates(
    voxel: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], axes: str
) -> np.ndarray:
    """Voxel indices of a centroid -> the MICCAI millimetre coordinates along ``axes``.

    Worked out from the affine alone (not from axis-code strings): for each MICCAI axis, the
    image axis most aligned with its world direction, its index flipped (``n - 1 - x``) if that
    image axis points the other way, times the voxel size.

    Examples
    --------
    >>> miccai_coordinates(np.array([1.0, 2.0, 3.0]), np.diag([-1.0, -1.0, 1.0, 1.0]),
    ...                    (10, 10, 10), "PIR").tolist()
    [2.0, 6.0, 8.0]
    """
    linear = np.asarray(affine, dtype=float)[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    out = []
    for code in axes:
        direction = np.asarray(_WORLD[code], dtype=float)
        alignment = (linear / sizes).T @ direction
        axis = int(np.argmax(np.abs(alignment)))
        index = voxel[axis] if alignment[axis] > 0 else shape[axis] - 1 - voxel[axis]
        out.append(float(index * sizes[axis]))
    return np.array(out)


def write_miccai_copy(
    sample_root: Path,
    scan: VerseScanManifest,
    folder: Path,
    release: str,
    *,
    misnamed: bool = False,
) -> dict[str, Path]:
    """Write a scan as the MICCAI-challenge release names it, with millimetre centroids.

    VerSe'19 style: ``verse201.nii.gz``, ``verse201_seg.nii.gz``, ``verse201_ctd.json`` (series id
    only). VerSe'20 style: ``GL003_CT-ax.nii.gz``, ``..._seg.nii.gz``, ``..._iso-ctd.json``, or for
    a split scan ``verse401_verse201_CT-ax...``; ``misnamed`` writes the centroid file as the two
    misnamed files of the release are (``GL124_CT_ax-iso-ctd.json``).

    Returns
    -------
    dict
        ``ct``, ``mask``, ``centroids`` paths written.
    """
    if release == "verse19":
        stem = scan.scan_id
        names = (f"{stem}.nii.gz", f"{stem}_seg.nii.gz", f"{stem}_ctd.json")
    else:
        ident = scan.patient_id.upper() if scan.patient_id.startswith("gl") else scan.patient_id
        if scan.scan_id != scan.patient_id:
            ident = f"{ident}_{scan.scan_id}"
        stem = f"{ident}_CT-ax"
        ctd = f"{ident}_CT_ax-iso-ctd.json" if misnamed else f"{stem}_iso-ctd.json"
        names = (f"{stem}.nii.gz", f"{stem}_seg.nii.gz", ctd)
    ct, mask, centroids = (folder / n for n in names)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_root / scan.ct, ct)
    shutil.copyfile(sample_root / scan.mask, mask)
    img = cast(nib.Nifti1Image, nib.load(str(sample_root / scan.ct)))  # written by the sample
    entries = json.loads((sample_root / scan.centroids).read_text())[1:]
    axes = MICCAI_AXES[release]
    converted = []
    for e in entries:
        mm = miccai_coordinates(
            np.array([e["X"], e["Y"], e["Z"]], dtype=float), img.affine, img.shape, axes
        )
        converted.append(
            {"label": e["label"], "X": round(mm[0], 3), "Y": round(mm[1], 3), "Z": round(mm[2], 3)}
        )
    write_text_atomic(centroids, json.dumps(converted))
    return {"ct": ct, "mask": mask, "centroids": centroids}


def copy_scan(sample_root: Path, scan: VerseScanManifest, dataset_dir: str) -> Path:
    """Copy a scan's files into another release folder (the VerSe'19/'20 overlap).

    Returns
    -------
    Path
        The copied CT.
    """
    target_root = sample_root / "verse" / dataset_dir
    copied = None
    for rel in (scan.ct, scan.sidecar, scan.mask, scan.centroids, scan.snapshot):
        source = sample_root / rel
        inner = source.relative_to(sample_root / "verse" / scan.dataset_dir)
        target = target_root / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if rel == scan.ct:
            copied = target
    assert copied is not None
    return copied


def rewrite_mask(
    path: Path,
    change: Callable[[np.ndarray], np.ndarray],
    *,
    dtype: np.dtype | type | None = None,
    affine: np.ndarray | None = None,
) -> None:
    """Rewrite a (small) mask file with ``change(labels)``, optionally another dtype or affine.

    ``change`` gets the labels as float64 (so it may write non-integer values) and returns the
    new array; the header conventions of the release are kept (see ``sample.nifti``).
    """
    img = cast(nib.Nifti1Image, nib.load(str(path)))  # a NIfTI-1 file of the sample
    labels = np.asanyarray(img.dataobj).astype(np.float64)
    new = change(labels)
    target = np.dtype(dtype) if dtype is not None else img.get_data_dtype()
    write_nifti_gz(
        path,
        new.shape,
        target,
        img.affine if affine is None else affine,
        [new[:, :, k : k + 8] for k in range(0, new.shape[2], 8)],
    )


def rewrite_sform(path: Path, affine: np.ndarray) -> None:
    """Write ``affine`` into a ``.nii.gz`` header as its sform (qform_code set to 0), as is.

    Unlike nibabel, which refuses to store an affine it cannot decompose, this writes any
    values, NaN or a singular matrix included: for files with a broken affine.
    """
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:254] = np.int16(0).tobytes()  # qform_code 0: only the sform describes the grid
    raw[280:328] = np.asarray(affine, dtype="<f4")[:3].tobytes()  # srow_x, srow_y, srow_z
    with atomic_file(path) as f, gzip_member(f) as gz:
        gz.write(bytes(raw))


def rewrite_centroids(path: Path, change: Callable[[list[dict]], list[dict]]) -> None:
    """Rewrite a centroid file's entries (the direction element, if any, is kept first)."""
    data = json.loads(path.read_text())
    head = data[:1] if data and isinstance(data[0], dict) and "direction" in data[0] else []
    write_text_atomic(path, json.dumps(head + change(data[len(head) :])))
