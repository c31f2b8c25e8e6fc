"""Synthetic DICOM studies that match real MosMed keypoint annotation files of either release.

Spec: ``shared/specs/MOSMED.md`` §1.1 (v1 schema), §1.2 (v2 schema), §1.3 (coordinates), §5
(fixture recipe). For each study Folder (one v1 file, one v2 file, or both) the study
``<out>/mosmed/dicom/<Folder>/...`` gets a thin series with the files' exact SeriesInstanceUID
(trailing '.' included), 512 x 512 pixels, 0.8 mm slices and ``floor(max k) + 1 +
MARGIN_SLICES`` slices, plus a 5 mm decoy series; each annotation file is copied byte for byte
to ``<out>/mosmed/annotation/<Folder>.json`` (v1) or ``annotation_v2/<Folder>.json`` (v2), the
release read from the file's content.

The phantom vertebrae are rebuilt from the keypoints: the experts' vertebrae (of both releases)
are matched by their position along k, each matched group is averaged, and a body is built whose
endplates pass through the averaged points
(:func:`verse_etl_sample.phantom.vertebra_from_keypoints`), so bone lies under every reader's
points. A group takes its level from the v2 labels where it has one (neighbours counted from the
nearest labelled group otherwise; T1 downwards without any v2 file). Nothing about fractures is
invented: the heights are the readers'.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verse_etl.errors import InputError
from verse_etl.mosmed.annotations import ANNOTATED_LEVELS, LEVELS, normalise_level
from verse_etl_sample.manifest import MosmedStudyManifest, MosmedVertebraManifest
from verse_etl_sample.mosmed import (
    REAL_PIXEL_SPACINGS,
    real_style_series_uid,
    rounded_heights,
    study_plan,
    thin_and_decoy,
    write_study,
)
from verse_etl_sample.output import write_bytes_atomic
from verse_etl_sample.phantom import (
    Trunk,
    Vertebra,
    build_phantom,
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
LEVEL_NAMES = LEVELS
"""C1..L5 in order: the VerSe label of a level is its index + 1."""
ANNOTATION_FOLDERS = {"v1": "annotation", "v2": "annotation_v2"}
"""Where each release's files go below ``<out>/mosmed`` (``mosmed.annotation_dirs``)."""


@dataclass(frozen=True)
class AnnotationInput:
    """A checked annotation file (v1 or v2).

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
    release
        ``"v1"`` (bare point lists) or ``"v2"`` (objects with ``segments`` and ``type``).
    levels
        Expert key -> level of each vertebra as a table level name (``T7`` for ``Th7``); None
        throughout for v1.
    """

    path: Path
    raw: bytes
    folder: str
    series_uid: str
    experts: dict[str, list[np.ndarray]]
    release: str = "v1"
    levels: dict[str, list[str | None]] | None = None


def _fail(path: Path, problem: str, check: str = "annotation_format") -> InputError:
    return InputError(path, problem, "fix or remove the file, then rerun", check=check)


def read_sample_annotation(path: Path) -> AnnotationInput:
    """Read and check one annotation file of either release.

    Parameters
    ----------
    path
        ``<Folder>.json`` in the v1 (MOSMED.md §1.1) or v2 (§1.2) format; the release is read
        from the vertebra objects (point lists: v1; ``segments`` objects: v2).

    Returns
    -------
    AnnotationInput

    Raises
    ------
    InputError
        If the file is not JSON, misses a key, names an unsafe folder, mixes the releases, a
        v2 vertebra has no known ``type`` level, or a vertebra is not six finite ``[row, col, k]``
        points inside a 512 x 512 image with ``k >= 0``.
    """
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(
            path, f"not valid JSON (expected a v1 annotation object, got {e})", "json"
        ) from e
    folder, uid, annotation = _header(path, data)
    release = _release(path, annotation)
    experts: dict[str, list[np.ndarray]] = {}
    levels: dict[str, list[str | None]] = {}
    for key, verts in annotation.items():
        if not isinstance(verts, list) or not verts:
            raise _fail(
                path, f"Annotation.{key} is {verts!r:.60} (expected a non-empty list of vertebrae)"
            )
        read = [_vertebra(path, f"Annotation.{key}[{i}]", v, release) for i, v in enumerate(verts)]
        experts[str(key)] = [a for a, _ in read]
        levels[str(key)] = [level for _, level in read]
    return AnnotationInput(
        path=path,
        raw=raw,
        folder=folder,
        series_uid=uid,
        experts=experts,
        release=release,
        levels=levels,
    )


def _header(path: Path, data: object) -> tuple[str, str, dict]:
    """Folder, SeriesInstanceUID and the Annotation object of a parsed file, checked."""
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
    return folder, uid, annotation


def _release(path: Path, annotation: dict) -> str:
    """``v2`` if the vertebrae are objects, ``v1`` if point lists; never both in one file."""
    kinds = {
        "v2" if isinstance(v, dict) else "v1"
        for verts in annotation.values()
        if isinstance(verts, list)
        for v in verts
    }
    if len(kinds) > 1:
        raise _fail(
            path,
            "mixes v1 vertebrae (point lists) and v2 vertebrae (objects with 'segments') "
            "(expected one release per file)",
        )
    return kinds.pop() if kinds else "v1"


def _vertebra(path: Path, where: str, v: object, release: str) -> tuple[np.ndarray, str | None]:
    """One vertebra: six finite ``[row, col, k]`` points inside the image, and its level (v2)."""
    level = None
    if release == "v2":
        if not isinstance(v, dict) or "segments" not in v:
            raise _fail(
                path, f"{where} is {v!r:.60} (expected a v2 object with 'segments', 'type')"
            )
        level = normalise_level(v.get("type"))
        if level is None:
            raise _fail(
                path,
                f"{where} has type {v.get('type')!r} (expected one of "
                f"{ANNOTATED_LEVELS[0]}..{ANNOTATED_LEVELS[-1]})",
            )
        v = v["segments"]
        if isinstance(v, list) and all(isinstance(s, list) for s in v):
            v = [p for s in v for p in s]
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as e:
        raise _fail(path, f"{where} is not numeric (expected 6x3 numbers, got {v!r:.60})") from e
    if a.shape != (6, 3):
        raise _fail(path, f"{where} has shape {a.shape} (expected 6 points of [row, col, k])")
    if not np.all(np.isfinite(a)):
        raise _fail(path, f"{where} holds NaN or infinity (expected finite coordinates)")
    if a[:, :2].min() < 0 or a[:, :2].max() >= MATRIX or a[:, 2].min() < 0:
        raise _fail(
            path,
            f"{where} has a point outside the image (expected 0 <= row, col < {MATRIX} and "
            f"k >= 0, got rows {a[:, 0].min():.1f}-{a[:, 0].max():.1f}, cols "
            f"{a[:, 1].min():.0f}-{a[:, 1].max():.0f}, k min {a[:, 2].min():.1f})",
        )
    return a, level


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


def _group_levels(
    groups: list[list[tuple[str, int]]], levels: dict[str, list[str | None]]
) -> list[int]:
    """VerSe label of each matched group: its v2 level where a member has one, else counted from
    the nearest labelled group; T1 downwards without any label."""
    known: dict[int, int] = {}
    for g, members in enumerate(groups):
        names = [levels[e][i] for e, i in members if levels.get(e) and levels[e][i]]
        if names:
            level = max(set(names), key=lambda n: (names.count(n), n))
            known[g] = LEVEL_NAMES.index(level)
    first_thoracic = LEVEL_NAMES.index("T1")
    out = []
    for g in range(len(groups)):
        if known:
            anchor = min(known, key=lambda k: (abs(k - g), k))
            index = known[anchor] + (g - anchor)
        else:
            index = first_thoracic + g
        out.append(min(max(index, 0), len(LEVEL_NAMES) - 1) + 1)  # VerSe label = index + 1
    return out


def write_annotation_study(
    out: Path,
    annotations: AnnotationInput | Sequence[AnnotationInput],
    *,
    seed: int,
    transfer_syntax: str = "rle",
) -> tuple[MosmedStudyManifest, list[Path]]:
    """Write the DICOM study matching one study's annotation files, and copy the files.

    Parameters
    ----------
    out
        Output root; files go below ``out / "mosmed"``.
    annotations
        The checked annotation files of one study (:func:`read_sample_annotation`): a v1 file,
        a v2 file, or one of each (same Folder and SeriesInstanceUID).
    seed
        Base seed; the study's generator also depends on the folder name.
    transfer_syntax
        ``"rle"`` (default: about 40 x smaller than uncompressed) or ``"explicit"``.

    Returns
    -------
    manifest : MosmedStudyManifest
        ``annotation`` is the v1 copy (the v2 one for a v2-only study); ``experts`` and
        ``v2_experts`` index the matched vertebrae of each release.
    files : list of Path
    """
    anns = [annotations] if isinstance(annotations, AnnotationInput) else list(annotations)
    by_release = {a.release: a for a in anns}
    if len(by_release) != len(anns) or len({(a.folder, a.series_uid) for a in anns}) != 1:
        raise InputError(
            anns[0].path,
            "annotation files of one study must be of different releases and name the same "
            f"Folder and SeriesInstanceUID (got {[(a.release, a.folder, a.series_uid) for a in anns]})",
            "pass at most one v1 and one v2 file per study",
            check="annotation_release",
        )
    ann = anns[0]
    # Expert keys of both releases side by side: the releases renumbered their readers.
    experts = {f"{a.release}:{k}": v for a in anns for k, v in a.experts.items()}
    levels = {f"{a.release}:{k}": v for a in anns for k, v in (a.levels or {}).items()}
    digest = _folder_digest(ann.folder)
    rng = np.random.default_rng([seed, 3, digest])
    pixel_spacing = float(rng.choice(REAL_PIXEL_SPACINGS))
    dz = SLICE_SPACING_MM
    max_k = max(float(v[:, 2].max()) for verts in experts.values() for v in verts)
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

    groups = match_vertebrae(experts)
    labels = _group_levels(groups, levels)
    vertebrae: list[Vertebra] = []
    for members, label in zip(groups, labels, strict=True):
        mean_vox = np.mean([experts[e][i] for e, i in members], axis=0)
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
    copies: dict[str, Path] = {}
    for a in anns:
        copies[a.release] = out / "mosmed" / ANNOTATION_FOLDERS[a.release] / f"{a.folder}.json"
        write_bytes_atomic(copies[a.release], a.raw)

    index_of = {m: g for g, members in enumerate(groups) for m in members}

    def indices(release: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        a = by_release.get(release)
        if a is None:
            return ()
        return tuple(
            (key, tuple(index_of[(f"{release}:{key}", i)] for i in range(len(verts))))
            for key, verts in a.experts.items()
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
        annotation=copies.get("v1", copies.get("v2")).relative_to(out),  # type: ignore[union-attr]  # at least one copy made
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
        experts=indices("v1"),
        annotation_v2=copies["v2"].relative_to(out) if "v2" in copies else None,
        v2_experts=indices("v2"),
    )
    files = [p for paths in written.values() for p in paths] + list(copies.values())
    return manifest, files


def read_annotation_dir(
    annotations_dirs: Path | Sequence[Path],
) -> list[list[AnnotationInput]]:
    """Read every ``*.json`` of one or more folders and group the files by study.

    Parameters
    ----------
    annotations_dirs
        Folders of ``<Folder>.json`` files of either release (e.g. the published
        ``annotation`` and ``annotation_v2``); each file's release is read from its content.

    Returns
    -------
    list of studies, by Folder name; each the study's files, v1 first.

    Raises
    ------
    InputError
        If a folder is missing or empty, a file is malformed, two files of one release name the
        same Folder, or a study's v1 and v2 files name different SeriesInstanceUIDs.
    """
    dirs = (
        [Path(annotations_dirs)]
        if isinstance(annotations_dirs, (str, Path))
        else list(map(Path, annotations_dirs))
    )
    paths: list[Path] = []
    for folder in dirs:
        if not folder.is_dir():
            raise InputError(
                folder,
                "annotation folder not found (expected a folder of v1 or v2 <Folder>.json files)",
                "check the --annotations path",
                check="missing",
            )
        found = sorted(folder.glob("*.json"))
        if not found:
            raise InputError(
                folder,
                "no annotation files (expected *.json v1 or v2 files, got none)",
                "point --annotations at the folder holding <Folder>.json files",
                check="missing",
            )
        paths += found
    studies: dict[str, dict[str, AnnotationInput]] = {}
    for ann in (read_sample_annotation(p) for p in paths):
        same = studies.setdefault(ann.folder, {})
        if ann.release in same:
            raise InputError(
                ann.path,
                f"Folder {ann.folder!r} is also used by {same[ann.release].path} (expected one "
                f"{ann.release} file per study)",
                "remove one of the two files",
                check="duplicate",
            )
        other = next(iter(same.values()), None)
        if other is not None and other.series_uid != ann.series_uid:
            raise InputError(
                ann.path,
                f"SeriesInstanceUID {ann.series_uid!r} differs from {other.series_uid!r} in "
                f"{other.path} (expected both releases of study {ann.folder!r} to name one series)",
                "check that the two files belong to the same study",
                check="annotation_release",
            )
        same[ann.release] = ann
    return [[files[r] for r in ("v1", "v2") if r in files] for _, files in sorted(studies.items())]
