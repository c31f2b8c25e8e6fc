"""Synthetic DICOM studies that match real MosMed v1 keypoint annotation files.

Spec: ``shared/specs/MOSMED.md`` §1.1 (v1 schema), §1.3 (coordinates), §5 (fixture recipe).
For each ``<Folder>.json`` the study ``<out>/mosmed/dicom/<Folder>/...`` gets a thin series with
the file's exact SeriesInstanceUID (trailing '.' included), 512 x 512 pixels, 0.8 mm slices and
``floor(max k) + 1 + MARGIN_SLICES`` slices, plus a 5 mm decoy series; the annotation file is
copied byte for byte to ``<out>/mosmed/annotation/<Folder>.json``.

The phantom vertebrae are rebuilt from the keypoints: the experts' vertebrae are matched by
their position along k, each matched group is averaged, and a body is built whose endplates pass
through the averaged points (:func:`verse_etl.sample.phantom.vertebra_from_keypoints`), so bone
lies under every reader's points. Nothing about fractures is invented: the heights are the
readers'.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verse_etl.errors import InputError
from verse_etl.sample.manifest import MosmedStudyManifest, MosmedVertebraManifest
from verse_etl.sample.mosmed import (
    REAL_PIXEL_SPACINGS,
    real_style_series_uid,
    rounded_heights,
    study_plan,
    thin_and_decoy,
    write_study,
)
from verse_etl.sample.output import write_bytes_atomic
from verse_etl.sample.phantom import (
    Trunk,
    Vertebra,
    build_phantom,
    spine_labels,
    vertebra_from_keypoints,
    voxel_to_world,
)

MATRIX = 512
SLICE_SPACING_MM = 0.8
SLICE_THICKNESS_MM = 1.0
MARGIN_SLICES = 6
# Keypoints sit at 70 % of the half depth: readers disagree by a few pixels along rows, and the
# deeper body keeps all of their points on bone.
DEPTH_FRACTION = 0.7
_SAFE_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class AnnotationInput:
    """A checked v1 annotation file.

    Attributes
    ----------
    path
        Where it was read.
    raw
        Its exact bytes (copied unchanged).
    folder, series_uid
        Study folder and SeriesInstanceUID, verbatim.
    experts
        Expert key -> vertebrae, each a (6, 3) float array ``[row, col, k]``, file order.
    """

    path: Path
    raw: bytes
    folder: str
    series_uid: str
    experts: dict[str, list[np.ndarray]]


def _fail(path: Path, problem: str, check: str = "annotation_format") -> InputError:
    return InputError(path, problem, "fix or remove the file, then rerun", check=check)


def read_v1_annotation(path: Path) -> AnnotationInput:
    """Read and check one v1 annotation file.

    Parameters
    ----------
    path
        ``<Folder>.json`` in the v1 format (MOSMED.md §1.1).

    Returns
    -------
    AnnotationInput

    Raises
    ------
    InputError
        If the file is not JSON, misses a key, names an unsafe folder, or a vertebra is not six
        finite ``[row, col, k]`` points inside a 512 x 512 image with ``k >= 0``.
    """
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(
            path, f"not valid JSON (expected a v1 annotation object, got {e})", "json"
        ) from e
    if not isinstance(data, dict):
        raise _fail(path, f"top level is {type(data).__name__} (expected an object)")
    missing = [k for k in ("Folder", "SeriesInstanceUID", "Annotation") if k not in data]
    if missing:
        raise _fail(
            path, f"missing keys {missing} (expected Folder, SeriesInstanceUID, Annotation)"
        )
    folder, uid, annotation = data["Folder"], data["SeriesInstanceUID"], data["Annotation"]
    if not isinstance(folder, str) or not _SAFE_FOLDER.match(folder) or folder in (".", ".."):
        raise _fail(path, f"Folder is {folder!r} (expected one plain folder name)")
    if not isinstance(uid, str) or not 0 < len(uid) <= 64:
        raise _fail(path, f"SeriesInstanceUID is {uid!r} (expected a string of 1-64 characters)")
    if not isinstance(annotation, dict) or not annotation:
        raise _fail(
            path, f"Annotation is {annotation!r:.60} (expected a non-empty object of experts)"
        )
    experts: dict[str, list[np.ndarray]] = {}
    for key, verts in annotation.items():
        if not isinstance(verts, list) or not verts:
            raise _fail(
                path, f"Annotation.{key} is {verts!r:.60} (expected a non-empty list of vertebrae)"
            )
        arrays = []
        for i, v in enumerate(verts):
            where = f"Annotation.{key}[{i}]"
            if isinstance(v, dict):
                raise _fail(
                    path,
                    f"{where} is an object (expected a 6x3 list as in v1 files; v2 files with "
                    "'segments' are not supported)",
                )
            try:
                a = np.asarray(v, dtype=float)
            except (TypeError, ValueError) as e:
                raise _fail(
                    path, f"{where} is not numeric (expected 6x3 numbers, got {v!r:.60})"
                ) from e
            if a.shape != (6, 3):
                raise _fail(
                    path, f"{where} has shape {a.shape} (expected 6 points of [row, col, k])"
                )
            if not np.all(np.isfinite(a)):
                raise _fail(path, f"{where} holds NaN or infinity (expected finite coordinates)")
            if a[:, :2].min() < 0 or a[:, :2].max() >= MATRIX or a[:, 2].min() < 0:
                raise _fail(
                    path,
                    f"{where} has a point outside the image (expected 0 <= row, col < {MATRIX} and "
                    f"k >= 0, got rows {a[:, 0].min():.1f}-{a[:, 0].max():.1f}, cols "
                    f"{a[:, 1].min():.0f}-{a[:, 1].max():.0f}, k min {a[:, 2].min():.1f})",
                )
            arrays.append(a)
        experts[str(key)] = arrays
    return AnnotationInput(path=path, raw=raw, folder=folder, series_uid=uid, experts=experts)


def match_vertebrae(experts: dict[str, list[np.ndarray]]) -> list[list[tuple[str, int]]]:
    """Group the experts' vertebrae that show the same vertebra, cranial first.

    Vertebrae are sorted by their mean k; one joins the current group if its centre is within
    half a vertebra height of the group's centre and its expert is not in the group yet.

    Parameters
    ----------
    experts
        As in :class:`AnnotationInput`.

    Returns
    -------
    list of groups
        Each group lists ``(expert, index in that expert's list)``.
    """
    items = []
    for key, verts in experts.items():
        for i, v in enumerate(verts):
            height = float(np.mean(np.abs(v[1::2, 2] - v[0::2, 2])))
            items.append((float(v[:, 2].mean()), max(height, 1.0), key, i))
    items.sort(key=lambda t: (t[0], t[2], t[3]))
    groups: list[list[tuple[float, float, str, int]]] = []
    for item in items:
        if groups:
            g = groups[-1]
            centre = float(np.mean([m[0] for m in g]))
            height = float(np.mean([m[1] for m in g]))
            if abs(item[0] - centre) < 0.5 * height and item[2] not in {m[2] for m in g}:
                g.append(item)
                continue
        groups.append([item])
    return [[(m[2], m[3]) for m in g] for g in groups]


def _folder_digest(folder: str) -> int:
    # Per-folder randomness and fake ids: adding or removing annotation files leaves the other
    # studies byte-identical.
    return int.from_bytes(hashlib.sha256(folder.encode("utf-8")).digest()[:8], "little")


def write_annotation_study(
    out: Path, ann: AnnotationInput, *, seed: int, transfer_syntax: str = "rle"
) -> tuple[MosmedStudyManifest, list[Path]]:
    """Write the DICOM study matching one annotation file, and copy the file.

    Parameters
    ----------
    out
        Output root; files go below ``out / "mosmed"``.
    ann
        A checked annotation (:func:`read_v1_annotation`).
    seed
        Base seed; the study's generator also depends on the folder name.
    transfer_syntax
        ``"rle"`` (default: about 40 x smaller than uncompressed) or ``"explicit"``.

    Returns
    -------
    manifest : MosmedStudyManifest
    files : list of Path
    """
    digest = _folder_digest(ann.folder)
    rng = np.random.default_rng([seed, 3, digest])
    pixel_spacing = float(rng.choice(REAL_PIXEL_SPACINGS))
    dz = SLICE_SPACING_MM
    max_k = max(float(v[:, 2].max()) for verts in ann.experts.values() for v in verts)
    n_slices = math.floor(max_k) + 1 + MARGIN_SLICES
    z0 = round(float(rng.uniform(-150.0, -30.0)), 1)
    study, kernels = study_plan(
        ann.folder, digest % 10**6, rng, signed=False, transfer_syntax=transfer_syntax
    )
    decoy_uid = real_style_series_uid(rng)
    thin, decoy = thin_and_decoy(
        series_uid=ann.series_uid,
        decoy_uid=decoy_uid,
        rows=MATRIX,
        pixel_spacing=pixel_spacing,
        slice_spacing=dz,
        slice_thickness=SLICE_THICKNESS_MM,
        n_slices=n_slices,
        fov_centre_ras=(0.0, 0.0),
        z0=z0,
        kernels=kernels,
    )
    affine = thin.affine()

    groups = match_vertebrae(ann.experts)
    names = spine_labels()[7:]  # T1 downwards: a guess, v1 files carry no labels
    vertebrae: list[Vertebra] = []
    for g, members in enumerate(groups):
        mean_vox = np.mean([ann.experts[e][i] for e, i in members], axis=0)
        label = names[min(g, len(names) - 1)]
        vertebrae.append(
            vertebra_from_keypoints(
                label, voxel_to_world(affine, mean_vox), depth_fraction=DEPTH_FRACTION
            )
        )
    centres = np.array([v.centroid for v in vertebrae])
    spine_y = float(np.median(centres[:, 1]))
    z_first, z_last = float(centres[0, 2]), float(centres[-1, 2])
    trunk = Trunk(
        center_xy=(float(np.median(centres[:, 0])), spine_y + 55.0),
        lungs_z=(z_first + 0.75 * (z_last - z_first), z_first + 15.0),
    )
    phantom = build_phantom(vertebrae, trunk, shell_mm=1.2)
    written = write_study(out / "mosmed" / "dicom", study, [thin, decoy], phantom, rng)
    annotation_path = out / "mosmed" / "annotation" / f"{ann.folder}.json"
    write_bytes_atomic(annotation_path, ann.raw)

    index_of = {m: g for g, members in enumerate(groups) for m in members}
    experts = tuple(
        (key, tuple(index_of[(key, i)] for i in range(len(verts))))
        for key, verts in ann.experts.items()
    )
    # Heights between the readers' averaged points (the phantom's keypoints), in mm.
    vert_manifest = [
        MosmedVertebraManifest(
            label=v.label,
            level=v.level,
            fracture="unknown",
            heights_mm=rounded_heights(v.heights_mm()),
        )
        for v in vertebrae
    ]
    manifest = MosmedStudyManifest(
        folder=ann.folder,
        series_uid=ann.series_uid,
        decoy_series_uid=decoy_uid,
        study_uid=study.study_uid,
        annotation=annotation_path.relative_to(out),
        files=tuple(p.relative_to(out) for p in written[ann.series_uid]),
        decoy_files=tuple(p.relative_to(out) for p in written[decoy_uid]),
        rows=MATRIX,
        columns=MATRIX,
        n_slices=n_slices,
        pixel_spacing_mm=pixel_spacing,
        slice_spacing_mm=dz,
        signed=False,
        transfer_syntax=study.transfer_syntax,
        vertebrae=tuple(vert_manifest),
        experts=experts,
    )
    files = [p for paths in written.values() for p in paths] + [annotation_path]
    return manifest, files


def read_annotation_dir(annotations_dir: Path) -> list[AnnotationInput]:
    """Read every ``*.json`` of a folder (sorted by name) and check folder names are unique.

    Raises
    ------
    InputError
        If the folder is missing or empty, a file is malformed, or two files name the same
        Folder.
    """
    if not annotations_dir.is_dir():
        raise InputError(
            annotations_dir,
            "annotation folder not found (expected a folder of v1 <Folder>.json files)",
            "check the --annotations path",
            check="missing",
        )
    paths = sorted(annotations_dir.glob("*.json"))
    if not paths:
        raise InputError(
            annotations_dir,
            "no annotation files (expected *.json v1 files, got none)",
            "point --annotations at the folder holding <Folder>.json files",
            check="missing",
        )
    inputs = [read_v1_annotation(p) for p in paths]
    seen: dict[str, Path] = {}
    for ann in inputs:
        if ann.folder in seen:
            raise InputError(
                ann.path,
                f"Folder {ann.folder!r} is also used by {seen[ann.folder].name} (expected one "
                "file per study)",
                "remove one of the two files",
                check="duplicate",
            )
        seen[ann.folder] = ann.path
    return inputs
