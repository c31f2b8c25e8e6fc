"""Build one MosMed study: clean CT series to Zarr stores; series, keypoint and quarantine rows.

1. The study's files: ``dicom/<Folder>/**``, or ``dicom/<Folder>.tar.gz`` unpacked safely into a
   temporary folder (:mod:`verse_etl.io.archives`) that is deleted afterwards.
2. Headers read and grouped by SeriesInstanceUID (:mod:`verse_etl.io.dicom`); files that are not
   DICOM images are recorded, never silently skipped.
3. Each series checked (:mod:`verse_etl.geometry.series`); a clean volume is streamed slice by
   slice into its store (:mod:`verse_etl.mosmed.store`), a tilted one resampled first, anything
   else is reported with its verdict and not converted. A store is keyed by its own inputs (the
   series' files, the volume and geometry parameters, the store code): a study rebuilt because
   an annotation file changed reuses the stores its previous result kept.
4. Each annotation file (v1 or v2; current or older identifiers) is matched to its series by
   Folder and exact SeriesInstanceUID; its points go to the store's index space and to world
   RAS+ mm; heights, ratios and grades follow (:mod:`verse_etl.mosmed.measures`); the v1 and v2
   readers are paired by identical keypoints (:mod:`verse_etl.mosmed.expert_matching`) and v1
   vertebrae take their level from the matching v2 vertebra (:mod:`verse_etl.mosmed.matching`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from verse_etl.cases.hashing import case_code_identity, fingerprint
from verse_etl.cases.records import (
    CaseResult,
    QuarantineRecord,
    discovery_result,
    load_cached,
    load_saved,
    quarantine_record,
    relative,
    relative_names,
    write_text_atomic,
)
from verse_etl.cases.seal import seal_case
from verse_etl.cases.stat_cache import DigestCache
from verse_etl.errors import InputError, blame, is_transient, output_trouble
from verse_etl.geometry.series import (
    GeometryTolerances,
    SeriesGeometry,
    check_series,
    store_slice_index,
)
from verse_etl.geometry.store_frame import store_frame
from verse_etl.geometry.tilt import TiltGrid
from verse_etl.io.archives import MEMBER_SEPARATOR, unpack_archive
from verse_etl.io.dicom import irregular_files, scan_files, walk_files
from verse_etl.mosmed.annotations import AnnotationFile, read_annotation
from verse_etl.mosmed.keypoints import (
    expert_pairs,
    grade,
    transfer_levels,
    vertebra_row,
)
from verse_etl.mosmed.series import series_row
from verse_etl.mosmed.store import (
    SeriesStore,
    resampling_grid,
    reusable_store,
    series_sources,
    series_store_key,
    write_clean_store,
    write_resampled_store,
)
from verse_etl.params import InputLimits, MosmedParams, VolumeParams
from verse_etl.paths import case_result_path, digest_cache_path
from verse_etl.schemas.mosmed_expert_pairs import MOSMED_EXPERT_PAIRS
from verse_etl.schemas.mosmed_vertebrae import MOSMED_VERTEBRAE
from verse_etl.schemas.series import SERIES
from verse_etl.sources.mosmed import MosmedStudy, discovery_problems

SOURCE = "mosmed"
MOSMED_FORMAT = 5
"""Bump when the rows of a MosMed study change meaning, so that saved results are recomputed."""


def tolerances(params: MosmedParams) -> GeometryTolerances:
    """The geometry tolerances of ``params``."""
    return GeometryTolerances(
        slice_mm=params.slice_tolerance_mm,
        in_plane_mm=params.in_plane_tolerance_mm,
        orientation=params.orientation_tolerance,
    )


def build_mosmed_study(
    study: MosmedStudy,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    params: MosmedParams | None = None,
    store_exists: Callable[[Path], bool] = Path.exists,
    limits: InputLimits | None = None,
    rehash: bool = False,
) -> CaseResult:
    """Convert one study and return its rows; reuse the saved result if nothing changed.

    Parameters
    ----------
    study
        From :func:`verse_etl.sources.mosmed.discover_mosmed`.
    root
        MosMed source root (paths in rows and records are relative to it).
    out
        Build root.
    volumes
        Store layout.
    params
        Geometry tolerances, Genant grading and where archives are unpacked.
    store_exists
        Whether a saved result's store is still there (see :mod:`verse_etl.publish.staging`).
    limits
        Inputs refused before they are read (``params.yaml: checks.limits``).
    rehash
        Read and hash every source file; else a file whose stat is unchanged since it was
        hashed keeps its digest (:mod:`verse_etl.cases.stat_cache`).

    Returns
    -------
    CaseResult
        Whatever the study's files raise stays in the study: an error no reader anticipated
        quarantines it with one record (:func:`verse_etl.cases.seal.seal_case`).
    """
    params = params or MosmedParams()
    limits = limits or InputLimits()
    first = study.dicom_dir or study.archive or (study.annotations or [root])[0]
    return seal_case(
        lambda: _build_study(study, root, out, volumes, params, store_exists, limits, rehash),
        SOURCE,
        study.folder,
        first,
        root,
        out,
        SERIES.name,
    )


def _build_study(
    study: MosmedStudy,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    params: MosmedParams,
    store_exists: Callable[[Path], bool],
    limits: InputLimits,
    rehash: bool,
) -> CaseResult:
    sources = _source_files(study)
    digests = DigestCache(digest_cache_path(out, SOURCE, study.folder), rehash)
    try:
        files = [*sources, *study.annotations]
        names = dict(zip(files, relative_names(files, root), strict=True))
        hashes = {names[p]: digests.sha256(p) for p in files}
    except OSError as e:
        if is_transient(e) or output_trouble(e):
            raise
        # An unreadable file quarantines the study. The result is saved (table assembly reads
        # saved results) under an empty fingerprint, which no build matches: a fixed file is
        # picked up by the next build.
        result = CaseResult(source=SOURCE, case_id=study.folder, fingerprint="")
        file = Path(getattr(e, "filename", None) or study.dicom_dir or study.archive or root)
        result.flag(
            relative(file, root),
            "read",
            f"cannot read ({e})",
            fix="check the file's permissions and the disk",
        )
        write_text_atomic(case_result_path(out, SOURCE, study.folder), result.to_json())
        return result
    digests.save()  # out of the try: a failed write is the output's trouble, not the input's
    key = mosmed_study_key(study, hashes, volumes, params, limits)
    cache = case_result_path(out, SOURCE, study.folder)
    cached = load_cached(cache, key)
    if cached is not None and all(
        store_exists(out / row["store_path"])
        for row in cached.rows.get(SERIES.name, [])
        if row["store_path"]
    ):
        return cached
    # The result saved by an earlier build (another key): its series' stores may still serve.
    previous = load_saved(cache)
    stores = _Stores(
        out, hashes, previous.stores if previous is not None else {}, store_exists, volumes
    )
    result = CaseResult(source=SOURCE, case_id=study.folder, fingerprint=key)
    annotations = _read_annotations(study, root, result, limits)
    series: dict[str, tuple[SeriesGeometry, dict[str, Any], TiltGrid | None]] = {}
    if not study.has_images:
        for ann in annotations:
            result.flag(
                relative(ann.path, root),
                "study_missing",
                f"no study dicom/{study.folder} (folder or .tar.gz) for this annotation; "
                f"{len(ann.vertebrae)} annotated vertebrae left out",
                table=MOSMED_VERTEBRAE.name,
            )
    else:
        folder_names = {p: names[p] for p in sources}
        with _study_files(study, folder_names, root, params, result) as study_names:
            series = _convert_series(
                study, study_names, root, stores, params, annotations, result, limits
            )
    _add_vertebrae(result, study, annotations, series, root, params)
    write_text_atomic(cache, result.to_json())
    return result


def _source_files(study: MosmedStudy) -> list[Path]:
    """The study's image files (its folder's files, or its archive) hashed into its key."""
    sources = walk_files(study.dicom_dir) if study.dicom_dir else []
    if study.dicom_dir is None and study.archive is not None:
        sources = [study.archive]
    return sources


def mosmed_study_key(
    study: MosmedStudy,
    hashes: dict[str, str],
    volumes: VolumeParams,
    params: MosmedParams,
    limits: InputLimits,
) -> str:
    """The case key of a study whose files (images and annotations) have the sha256 ``hashes``
    (by path relative to the source root)."""
    return fingerprint(
        case_code_identity("verse_etl.mosmed.case"),
        MOSMED_FORMAT,
        hashes,
        volumes,
        asdict(tolerances(params)),
        params.genant,
        params.tilt,
        [asdict(m) for m in study.id_mappings],
        limits,
    )


def saved_mosmed_result(
    study: MosmedStudy,
    root: Path,
    out: Path,
    volumes: VolumeParams,
    params: MosmedParams,
    limits: InputLimits,
) -> CaseResult | None:
    """The saved result a build would reuse for ``study`` as it is, found without reading any
    source file: None if a file's stat differs from its stat cache, the key differs, or a store
    of the result is gone (see :func:`verse_etl.verse.case.saved_verse_result`)."""
    digests = DigestCache(digest_cache_path(out, SOURCE, study.folder))
    files = [*_source_files(study), *study.annotations]
    found = []
    for path in files:
        digest = digests.cached_sha256(path)
        if digest is None:
            return None
        found.append(digest)
    hashes = dict(zip(relative_names(files, root), found, strict=True))
    key = mosmed_study_key(study, hashes, volumes, params, limits)
    cached = load_cached(case_result_path(out, SOURCE, study.folder), key)
    if cached is None or not all(
        (out / row["store_path"] / "zarr.json").is_file()
        for row in cached.rows.get(SERIES.name, [])
        if row["store_path"]
    ):
        return None
    return cached


def source_results(root: Path, annotation_dirs: Sequence[str]) -> list[CaseResult]:
    """What a MosMed source gives beyond its studies: the files discovery could not place
    (:func:`verse_etl.sources.mosmed.discovery_problems`), if any. The caller saves them."""
    problems = discovery_problems(root, annotation_dirs)
    return [discovery_result(SOURCE, problems, root)] if problems else []


def drop_duplicate_series(
    results: Sequence[CaseResult],
) -> tuple[list[CaseResult], list[QuarantineRecord]]:
    """Keep one copy of a series found in more than one study folder; record the others.

    A copied study (``dicom/<Folder>_copy/``, a folder beside its ``.tar.gz``, a re-export)
    holds the same SeriesInstanceUIDs as the original: without this both copies fail the
    ``series`` table's uniqueness check and the good study loses its series and vertebrae.
    The rule, like VerSe's for scans found twice: the copy kept is a converted one before one
    that was not, then the first by source path (``dicom/<Folder>``); every other copy becomes a
    ``duplicate_series`` record naming the copy kept, and leaves its series and keypoint rows
    out. Saved case results are not changed: the choice is made again at every assembly.

    Returns
    -------
    list of CaseResult, list of QuarantineRecord
        The results without the rows of the copies left out, and one record per copy.
    """
    copies: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if result.source == SOURCE:
            for row in result.rows.get(SERIES.name, []):
                copies.setdefault(row["series_uid"], []).append(row)
    left_out: dict[tuple[str, str], dict[str, Any]] = {}
    for uid, rows in copies.items():
        ranked = sorted(rows, key=lambda r: (not r["is_volume"], r["source_path"], r["folder"]))
        left_out.update({(row["folder"], uid): ranked[0] for row in ranked[1:]})
    if not left_out:
        return list(results), []
    records: list[QuarantineRecord] = []
    kept_results: list[CaseResult] = []
    for result in results:
        by_table = result.rows
        if result.source == SOURCE and any(
            (r["folder"], r["series_uid"]) in left_out for r in by_table.get(SERIES.name, [])
        ):
            by_table = {
                table: [
                    r for r in table_rows if (r.get("folder"), r.get("series_uid")) not in left_out
                ]
                if table in (SERIES.name, MOSMED_VERTEBRAE.name)
                else table_rows
                for table, table_rows in by_table.items()
            }
            result = replace(result, rows=by_table)
        kept_results.append(result)
    for (folder, uid), kept in sorted(left_out.items()):
        row = next(r for r in copies[uid] if r["folder"] == folder)
        points = sum(
            (r.get("folder"), r.get("series_uid")) == (folder, uid)
            for res in results
            for r in res.rows.get(MOSMED_VERTEBRAE.name, [])
        )
        path = row["source_path"]
        records.append(
            quarantine_record(
                SOURCE,
                folder,
                path,
                "duplicate_series",
                f"series {uid} is also in {kept['source_path']} (study {kept['folder']}); that "
                f"copy was kept, this one left out with its {points} keypoint row(s)",
                fix="remove one of the copies",
                table=SERIES.name,
            )
        )
    return kept_results, records


def _record(
    result: CaseResult, error: InputError, root: Path, names: dict[Path, str], table: str = ""
) -> None:
    """Quarantine ``error`` under the file's source name (archive members as archive!/member)."""
    result.flag_error(error, root, table=table, file=names.get(Path(error.path)))


# -- files ----------------------------------------------------------------------------------


@contextmanager
def _study_files(
    study: MosmedStudy,
    names: dict[Path, str],
    root: Path,
    params: MosmedParams,
    result: CaseResult,
) -> Iterator[dict[Path, str]]:
    """Yield every file of the study: local path -> name relative to the source root.

    ``names`` are the study folder's files and their names as already made for the fingerprint
    (unused for an archive, which is unpacked here)."""
    if study.dicom_dir is not None:
        if study.archive is not None:
            result.flag(
                relative(study.archive, root),
                "archive_unused",
                f"both dicom/{study.folder}/ and this archive exist; the folder was converted "
                "and the archive ignored",
                fix="remove one of the two",
            )
        for path in irregular_files(study.dicom_dir):
            result.flag(
                relative(path, root),
                "not_regular_file",
                "not a regular file (a broken or folder link, a FIFO, a socket or a device); "
                "not read, the rest of the study is",
                fix="replace it with the file it stands for, or remove it",
            )
        yield names
        return
    assert study.archive is not None
    archive_name = relative(study.archive, root)
    with tempfile.TemporaryDirectory(
        prefix="verse-etl-unpack-", dir=params.unpack_dir or None
    ) as tmp:
        try:
            unpacked = unpack_archive(study.archive, Path(tmp))
        except InputError as e:
            _record(result, e, root, {}, table=SERIES.name)
            yield {}
            return
        for refusal in unpacked.refused:
            member = refusal.path.split(MEMBER_SEPARATOR, 1)[1]
            result.flag(
                f"{archive_name}{MEMBER_SEPARATOR}{member}",
                refusal.check,
                refusal.problem,
                table=SERIES.name,
                fix=refusal.fix,
            )
        yield {f.path: f"{archive_name}{MEMBER_SEPARATOR}{f.member}" for f in unpacked.files}


# -- series ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stores:
    """Where a study's series stores go, and the stores an earlier build of the study kept."""

    out: Path
    hashes: dict[str, str]  # sha256 of the study's files, by path relative to the source root
    kept: dict[str, dict[str, Any]]  # CaseResult.stores of the study's saved result
    store_exists: Callable[[Path], bool]
    volumes: VolumeParams

    def get(
        self,
        result: CaseResult,
        folder: str,
        uid: str,
        key: str,
        write: Callable[[], SeriesStore],
    ) -> SeriesStore:
        """The series' store under ``key``: the kept one if still there, else written by ``write()``;
        kept in ``result`` either way."""
        store = reusable_store(self.kept, folder, uid, key, self.out, self.store_exists)
        if store is None:
            store = write()
            result.stores_written += 1
        result.stores[store.store_path] = store.to_dict()
        return store


def _convert_series(
    study: MosmedStudy,
    names: dict[Path, str],
    root: Path,
    stores: _Stores,
    params: MosmedParams,
    annotations: list[AnnotationFile],
    result: CaseResult,
    limits: InputLimits,
) -> dict[str, tuple[SeriesGeometry, dict[str, Any], TiltGrid | None]]:
    """Check every series; convert the clean ones (or reuse their stores). Returns UID ->
    (geometry, series row)."""
    scan = scan_files(sorted(names), limits, study.folder)
    for skipped in scan.skipped:
        result.flag(
            names[skipped.path],
            "not_dicom_image",
            f"{skipped.reason}; ignored",
        )
    for error in scan.errors:
        _record(result, error, root, names, table=SERIES.name)
    annotated = {
        target
        for ann in annotations
        if (target := _match_series(ann, study, set(scan.series), _derived(scan.series))[0])
        is not None
    }
    source_path = relative(study.dicom_dir or study.archive, root)  # type: ignore[arg-type]  # discovery gives one of the two
    archive = relative(study.archive, root) if study.dicom_dir is None else None  # type: ignore[arg-type]  # discovery gives one of the two
    converted: dict[str, tuple[SeriesGeometry, dict[str, Any], TiltGrid | None]] = {}
    for uid in sorted(scan.series):
        headers = scan.series[uid]
        geometry = check_series(headers, tolerances(params))
        row = series_row(study.folder, uid, headers, geometry, source_path)
        row["annotated"] = uid in annotated
        where = _common_parent(names[h.path] for h in headers)
        grid, convertible = _triage(result, row, headers, geometry, where, names, params, limits)
        if grid is not None or (geometry.is_volume and convertible):
            # The store depends on the series' own files, not on the annotations: reused as it
            # is when its own key is unchanged (verse_etl/mosmed/store.py).
            sources = series_sources([names[h.path] for h in headers], stores.hashes, archive)
            key = series_store_key(
                study.folder, uid, sources, stores.volumes, tolerances(params), params.tilt, limits
            )
            if grid is not None:
                grid = _store_resampled(
                    result, row, geometry, grid, key, where, root, names, stores
                )
            else:
                _store_clean(result, row, geometry, key, where, root, names, stores)
        converted[uid] = (geometry, row, grid)
        result.add(SERIES.name, row)
    return converted


def _triage(
    result: CaseResult,
    row: dict[str, Any],
    headers: Sequence[Any],
    geometry: SeriesGeometry,
    where: str,
    names: dict[Path, str],
    params: MosmedParams,
    limits: InputLimits,
) -> tuple[TiltGrid | None, bool]:
    """What becomes of a checked series: the grid to resample it onto (a correctable one), and
    whether it may be converted at all (not above ``limits.max_voxels``); flags what is set
    aside, too large or not a clean volume."""
    uid = row["series_uid"]
    if geometry.localizers and geometry.slices:
        result.flag(
            where,
            "localizer_removed",
            f"series {uid}: {len(geometry.localizers)} localizer image(s) set aside from "
            f"{len(headers)} (ImageType LOCALIZER), e.g. {names[geometry.localizers[0].path]}",
            table=SERIES.name,
        )
    grid = resampling_grid(geometry, params)
    shape = grid.shape if grid is not None else geometry.shape
    voxels = shape and int(np.prod(shape, dtype=np.int64))
    too_large = (geometry.is_volume or grid is not None) and voxels > limits.max_voxels
    if too_large:
        result.flag(
            where,
            "too_large",
            f"series {uid} has {voxels} voxels {shape} (expected at most "
            f"checks.limits.max_voxels = {limits.max_voxels}); not converted",
            table=SERIES.name,
            fix="raise the limit if the series is real",
        )
        row["problems"] = f"too large: {voxels} voxels"
        return None, False
    if not geometry.is_volume:
        done = (
            f"resampled onto a regular unsheared grid ({', '.join(grid.corrections)}; "
            "mosmed.tilt = correct)"
            if grid is not None
            else "not converted"
        )
        result.flag(
            where,
            f"series_{geometry.verdict}",
            f"series {uid} is not a clean volume ({'; '.join(geometry.problems)}); {done}",
            table=SERIES.name,
        )
    return grid, True


def _store_resampled(
    result: CaseResult,
    row: dict[str, Any],
    geometry: SeriesGeometry,
    grid: TiltGrid,
    key: str,
    where: str,
    root: Path,
    names: dict[Path, str],
    stores: _Stores,
) -> TiltGrid | None:
    """Resample a tilted or unevenly spaced series into its store named by ``key`` (or reuse
    it); its row's store columns. Returns the grid, or None if the pixel data could not be read
    (recorded)."""
    uid, folder = row["series_uid"], row["folder"]
    try:
        with blame(root / where, f"resampling series {uid}"):
            stored = stores.get(
                result,
                folder,
                uid,
                key,
                lambda: write_resampled_store(
                    stores.out, geometry, grid, stores.volumes, folder, uid, key
                ),
            )
    except InputError as e:
        _record(result, e, root, names, table=SERIES.name)
        row["problems"] += f"; pixel data: {e.problem}"
        return None
    row.update(
        store_path=stored.store_path,
        voxel_xxh3=stored.voxel_xxh3,
        hu_min=stored.hu_min,
        hu_max=stored.hu_max,
        affine=[float(v) for v in grid.affine.reshape(-1)],
        store_affine=_store_affine(grid.affine, grid.shape),
        spacing_slice_mm=grid.slice_mm,
        correction=",".join(grid.corrections),
        acquired_positions_mm=[
            float(v) for v in (grid.acquired_positions() * [-1, -1, 1]).reshape(-1)
        ],
    )
    return grid


def _store_clean(
    result: CaseResult,
    row: dict[str, Any],
    geometry: SeriesGeometry,
    key: str,
    where: str,
    root: Path,
    names: dict[Path, str],
    stores: _Stores,
) -> None:
    """Convert a clean volume into its store named by ``key`` (or reuse it); its row's store
    columns (or the pixel-data problem, recorded)."""
    uid, folder = row["series_uid"], row["folder"]
    try:
        with blame(root / where, f"converting series {uid}"):
            stored = stores.get(
                result,
                folder,
                uid,
                key,
                lambda: write_clean_store(stores.out, geometry, stores.volumes, folder, uid, key),
            )
    except InputError as e:
        _record(result, e, root, names, table=SERIES.name)
        row["problems"] = f"pixel data: {e.problem}"
        return
    lo, hi = stored.hu_min, stored.hu_max
    if lo == hi:
        slope = geometry.slices[0].slope
        result.flag(
            where,
            "voxel_constant",
            f"series {uid}: every voxel is {lo:g} HU"
            + (" (RescaleSlope is 0)" if slope == 0 else "")
            + " (expected a CT with contrast); kept",
            table=SERIES.name,
            fix="check the pixel data and the rescale tags",
        )
    row.update(
        is_volume=True,
        store_path=stored.store_path,
        voxel_xxh3=stored.voxel_xxh3,
        hu_min=lo,
        hu_max=hi,
        affine=[float(v) for v in geometry.affine.reshape(-1)],  # type: ignore[union-attr]  # a clean volume: affine set
        store_affine=_store_affine(geometry.affine, geometry.shape),  # type: ignore[arg-type]  # a clean volume: affine and shape set
    )


def _common_parent(names: Iterator[str] | Any) -> str:
    parts = [n.split("/")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


# -- annotations ----------------------------------------------------------------------------


def _read_annotations(
    study: MosmedStudy, root: Path, result: CaseResult, limits: InputLimits
) -> list[AnnotationFile]:
    """Parse every annotation file of the study; keep one per release (exact identifiers win)."""
    parsed: list[AnnotationFile] = []
    old_folders = {m.old_folder for m in study.id_mappings if m.folder == study.folder}
    for path in study.annotations:
        rel = relative(path, root)
        try:
            with blame(path, "reading the annotation"):
                ann = read_annotation(path, limits)
        except InputError as e:
            result.flag(rel, e.check, e.problem, table=MOSMED_VERTEBRAE.name, fix=e.fix)
            continue
        for problem in ann.problems:
            result.flag(
                rel, problem.check, problem.problem, table=MOSMED_VERTEBRAE.name, fix=problem.fix
            )
        if ann.folder != path.stem:
            result.flag(
                rel,
                "annotation_folder",
                f"Folder is {ann.folder!r} (expected the file stem {path.stem!r})",
                table=MOSMED_VERTEBRAE.name,
                fix="rename the file or fix its Folder",
            )
            continue
        if ann.folder != study.folder and ann.folder not in old_folders:
            result.flag(
                rel,
                "annotation_folder",
                f"Folder {ann.folder!r} is neither {study.folder!r} nor mapped to it",
                table=MOSMED_VERTEBRAE.name,
                fix="check mosmed.id_mapping",
            )
            continue
        parsed.append(ann)
    kept: list[AnnotationFile] = []
    for release in ("v1", "v2"):
        same = sorted(
            (a for a in parsed if a.release == release),
            key=lambda a: (a.folder != study.folder, str(a.path)),
        )
        kept.extend(same[:1])
        for extra in same[1:]:
            result.flag(
                relative(extra.path, root),
                "annotation_duplicate",
                f"a second {release} annotation of study {study.folder} (kept "
                f"{relative(same[0].path, root)}); {len(extra.vertebrae)} vertebrae left out",
                table=MOSMED_VERTEBRAE.name,
                fix="remove one of the files",
            )
    return kept


def _match_series(
    ann: AnnotationFile, study: MosmedStudy, uids: set[str], derived: dict[str, int] | None = None
) -> tuple[str | None, str]:
    """The study's series an annotation refers to, and how: ``exact`` ids, ``mapping`` (older
    ids), or ``folder``: the study's files carry no UIDs (``derived``: derived UID -> image
    count, :mod:`verse_etl.io.series_identity`) and exactly one such series holds every slice
    the annotation points at."""
    exact_folder = ann.folder == study.folder
    if ann.series_uid in uids:
        return ann.series_uid, "exact" if exact_folder else "mapping"
    for m in study.id_mappings:
        if m.old_series_uid == ann.series_uid and m.folder == study.folder and m.series_uid in uids:
            return m.series_uid, "mapping"
    if derived and ann.vertebrae:
        last_k = max(p[2] for v in ann.vertebrae for p in v.points)
        fits = sorted(uid for uid, n in derived.items() if n > last_k)
        if len(fits) == 1:
            return fits[0], "folder"
    return None, "exact" if exact_folder else "mapping"


def _derived(series: dict[str, list[Any]]) -> dict[str, int]:
    """Derived UID -> images that are not localizers, for the series without UIDs."""
    return {
        uid: sum(not h.is_localizer for h in headers)
        for uid, headers in series.items()
        if headers and headers[0].uid_derived
    }


def _add_vertebrae(
    result: CaseResult,
    study: MosmedStudy,
    annotations: list[AnnotationFile],
    series: dict[str, tuple[SeriesGeometry, dict[str, Any], TiltGrid | None]],
    root: Path,
    params: MosmedParams,
) -> None:
    rows_by_release: dict[str, list[dict[str, Any]]] = {}
    for ann in annotations:
        rel = relative(ann.path, root)
        if not series:
            if study.has_images:
                result.flag(
                    rel,
                    "series_missing",
                    f"no DICOM image in dicom/{study.folder}; {len(ann.vertebrae)} annotated "
                    "vertebrae left out",
                    table=MOSMED_VERTEBRAE.name,
                )
            continue
        derived = {
            uid: len(geometry.slices)
            for uid, (geometry, row, _) in series.items()
            if row["series_uid_derived"]
        }
        uid, id_match = _match_series(ann, study, set(series), derived)
        if uid is None:
            result.flag(
                rel,
                "series_missing",
                f"no series with SeriesInstanceUID {ann.series_uid!r} in dicom/{study.folder}"
                f"{' (nor a mapped one)' if study.id_mappings else ''}; "
                f"{len(ann.vertebrae)} annotated vertebrae left out",
                table=MOSMED_VERTEBRAE.name,
            )
            continue
        geometry, series_row, grid = series[uid]
        if series_row["store_path"] is None:
            result.flag(
                rel,
                "series_not_volume",
                f"series {uid} was not converted ({series_row['verdict']}: "
                f"{series_row['problems']}); {len(ann.vertebrae)} annotated vertebrae left out",
                table=MOSMED_VERTEBRAE.name,
            )
            continue
        try:
            store_slice_index(0.0, geometry)
        except ValueError as e:
            result.flag(
                rel,
                "instance_order",
                f"series {uid}: {e}; {len(ann.vertebrae)} annotated vertebrae left out",
                table=MOSMED_VERTEBRAE.name,
                fix="the annotation's k (InstanceNumber order) needs unique, monotonic "
                "InstanceNumbers",
            )
            continue
        rows = [
            vertebra_row(ann, v, uid, id_match, rel, geometry, series_row, grid)
            for v in ann.vertebrae
        ]
        rows_by_release[ann.release] = rows
    v1, v2 = rows_by_release.get("v1", []), rows_by_release.get("v2", [])
    same_reader: dict[str, str] = {}
    if v1 and v2 and _uid(v1) == _uid(v2):
        pairs = expert_pairs(v1, v2)
        same_reader = {p["expert_v1"]: p["expert_v2"] for p in pairs if p["same_reader"]}
        for pair in pairs:
            result.add(MOSMED_EXPERT_PAIRS.name, pair)
    transfer_levels(v1, v2, same_reader)
    for rows in (v1, v2):
        grade(rows, params)
        for row in rows:
            result.add(MOSMED_VERTEBRAE.name, row)


def _uid(rows: list[dict[str, Any]]) -> str | None:
    return rows[0]["series_uid"] if rows else None


def _store_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> list[float]:
    """The series table's ``store_affine``: store indices -> RAS+ mm (store_frame.py)."""
    return [float(v) for v in store_frame(affine, shape).store_affine(affine).reshape(-1)]
