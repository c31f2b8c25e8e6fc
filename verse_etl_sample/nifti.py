"""Streaming writer of gzipped NIfTI-1 single files, as the VerSe masks are stored.

Spec: NIfTI-1 (https://nifti.nimh.nih.gov/nifti-1/). The 348-byte header is nibabel's own
(``Nifti1Image(data, affine)`` defaults, exactly what the organisers' nibabel wrote: vox_offset
352, qform_code 0, sform_code 2, xyzt_units 0, scl_slope 1 / scl_inter 0 on disk, which nibabel
reports as NaN after loading), followed by the 4-byte empty extension flag and the voxels in
Fortran order. Fortran order makes the last array axis the slowest, so slabs along that axis are
contiguous runs of the file and a volume of any size is written with one slab in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from verse_etl_sample.output import atomic_file, gzip_member


def stored_affine(affine: np.ndarray) -> np.ndarray:
    """The affine a reader gets back: NIfTI keeps the sform as float32.

    Sample geometry (phantom sampling, centroid voxel coordinates) uses this rounded matrix so
    that what is written agrees exactly with what is read.

    Examples
    --------
    >>> bool(stored_affine(np.diag([0.1, 1.0, 1.0, 1.0]))[0, 0] == np.float32(0.1))
    True
    """
    return np.asarray(affine, dtype=np.float32).astype(np.float64)


def nifti_header_bytes(shape: tuple[int, int, int], dtype: np.dtype, affine: np.ndarray) -> bytes:
    """Header plus extension flag (352 bytes) of the file nibabel would write for this image.

    Parameters
    ----------
    shape
        Array shape.
    dtype
        On-disk dtype (stored unscaled).
    affine
        4x4 voxel -> RAS+ mm.

    Returns
    -------
    bytes
        Identical to ``nib.Nifti1Image(arr, affine).to_bytes()[:352]`` for an array ``arr`` of
        that shape and dtype.
    """
    # A zero-strided array carries shape and dtype without allocating the volume.
    proxy = np.broadcast_to(np.zeros((), dtype=dtype), shape)
    img = nib.Nifti1Image(proxy, affine)
    img.update_header()
    hdr = img.header
    hdr.set_slope_inter(1.0, 0.0)  # what nibabel's ArrayWriter records for unscaled data
    buf = io.BytesIO()
    hdr.write_to(buf)
    data = buf.getvalue()
    if len(data) != 352:
        raise AssertionError(f"unexpected NIfTI header size {len(data)}")
    return data


def write_nifti_gz(
    path: Path,
    shape: tuple[int, int, int],
    dtype: np.dtype | type,
    affine: np.ndarray,
    slabs: Iterable[np.ndarray],
) -> None:
    """Write a ``.nii.gz`` from slabs along the last axis, atomically and deterministically.

    Parameters
    ----------
    path
        Target file.
    shape
        Full array shape (n0, n1, n2).
    dtype
        On-disk dtype; each slab is cast to it.
    affine
        4x4 voxel -> RAS+ mm.
    slabs
        Arrays of shape (n0, n1, d) covering axis 2 in order.

    Raises
    ------
    ValueError
        If the slabs do not cover the last axis exactly.
    """
    dtype = np.dtype(dtype)
    header = nifti_header_bytes(shape, dtype, affine)
    seen = 0
    with atomic_file(path) as raw, gzip_member(raw) as gz:
        gz.write(header)
        for slab in slabs:
            if slab.shape[:2] != tuple(shape[:2]):
                raise ValueError(f"{path}: slab shape {slab.shape} does not fit volume {shape}")
            # Fortran order of (n0, n1, d) = C order of its transpose.
            gz.write(np.ascontiguousarray(slab.astype(dtype, copy=False).T).tobytes())
            seen += slab.shape[2]
        if seen != shape[2]:
            raise ValueError(f"{path}: slabs cover {seen} of {shape[2]} slices")
