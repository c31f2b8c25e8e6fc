"""Read a built or pulled dataset from Python without knowing its file layout: cases, and training
samples for PyTorch or MONAI.

::

    ds = Dataset("data/build")                      # or "s3://bucket/prefix" (extra `s3`)
    case = ds.case("verse004")                      # lazy volumes, tables rows
    case.image.shape, case.affine.shape             # ((161, 338, 61), (4, 4))
    sample = ds[0]                                  # dict: image, label, affine, spacing, id, ...

    train = Dataset("data/build", sources=("verse",), patch_size=(96, 96, 96), transform=aug)
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate, num_workers=2)

Only numpy, zarr and pyarrow are imported to read cases and samples (pandas on first use of a
``Case`` table attribute): none of the build stack (Prefect, DVC, Dask, pydicom, nibabel,
pandera). Volumes are Zarr arrays read lazily: a patch reads only the chunks it overlaps.

Arrays are in the store frame (:mod:`verse_etl.geometry.store_frame`): axes 0, 1, 2 grow toward superior,
posterior and the patient's left, whatever the source's acquisition; ``affine`` maps the indices
of the returned array (a patch's own indices for a patch) to RAS+ mm exactly. ``Case.frame``
leads back to the source's voxel order (``Case.source_affine``).
"""

from __future__ import annotations

import importlib
import os
import posixpath
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verse_etl.errors import InputError, UnknownCaseError
from verse_etl.geometry.store_frame import StoreFrame, frame_between
from verse_etl.paths import IMAGE_PATH, LABELS_PATH, TABLES_DIR, VOLUMES_DIR

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import zarr

SOURCES = ("verse", "mosmed")
_CASE_TABLES = ("scans", "series", "vertebrae", "mosmed_vertebrae", "verse_fracture_grades")


class VolumesNotPulledError(InputError):
    """The tables of a release are there but a case's volume store is not (pulled tables only)."""


def _is_url(path: str | Path) -> bool:
    return "://" in str(path)


@dataclass
class Case:
    """One scan (VerSe) or series (MosMed) of a built dataset. Volumes load on access."""

    id: str
    source: str
    store: Path | str  # the Zarr store: a folder, or a URL (str) for a release on object storage
    affine: np.ndarray  # store voxel indices -> RAS+ mm (4x4)
    rows: dict[str, Any]  # its row of scans (VerSe) or series (MosMed)
    vertebra_rows: list[dict[str, Any]] = field(default_factory=list)  # vertebrae / keypoints
    grade_rows: list[dict[str, Any]] = field(default_factory=list)  # VerSe'19 grades
    storage_options: dict[str, Any] | None = None
    source_affine: np.ndarray | None = None  # source voxel indices -> RAS+ mm (None: affine)

    @cached_property
    def frame(self) -> StoreFrame:
        """How the source's voxel axes became the store's (reads the image's metadata)."""
        source = self.affine if self.source_affine is None else self.source_affine
        return frame_between(source, self.affine, self.image.shape)

    @property
    def image(self) -> zarr.Array:
        """The CT in HU, native dtype (int16), axes as in ``affine``."""
        return _open_array(self.store, IMAGE_PATH, self.storage_options)

    @property
    def mask(self) -> zarr.Array | None:
        """The vertebra label image (uint8, VerSe label map), or None if the case has none."""
        if self.source != "verse":
            return None
        return _open_array(self.store, LABELS_PATH, self.storage_options)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along each array axis."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]  # a tuple of 3 (one per axis): tuple() of a generator is typed variable-length

    @cached_property
    def metadata(self) -> pd.Series:
        """Its row of ``scans`` or ``series`` (pandas)."""
        import pandas as pd

        return pd.Series(self.rows, name=self.id)

    @cached_property
    def vertebrae(self) -> pd.DataFrame:
        """VerSe: its ``vertebrae`` rows; MosMed: its ``mosmed_vertebrae`` keypoint rows."""
        import pandas as pd

        return pd.DataFrame(self.vertebra_rows)

    @cached_property
    def fracture_grades(self) -> pd.DataFrame:
        """VerSe'19 fracture grades where the table has the scan, else empty."""
        import pandas as pd

        return pd.DataFrame(self.grade_rows)


def _open_array(store: Path | str, path: str, storage_options: dict[str, Any] | None) -> zarr.Array:
    import zarr

    if _is_url(store):
        return zarr.open_array(
            f"{str(store).rstrip('/')}/{path}", mode="r", storage_options=storage_options or {}
        )
    return zarr.open_array(Path(store) / path, mode="r")


def patch_affine(affine: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """Affine of a patch whose index 0 is voxel ``offset`` of the array ``affine`` describes.

    Examples
    --------
    >>> patch_affine(np.diag([2.0, 2.0, 2.0, 1.0]), (1, 0, -2))[:3, 3].tolist()
    [2.0, 0.0, -4.0]
    """
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(offset, dtype=float)
    return np.asarray(affine, dtype=float) @ shift


def read_patch(
    array: Any, offset: Sequence[int], size: Sequence[int], fill: int | float = 0
) -> np.ndarray:
    """The ``size`` block of ``array`` starting at ``offset`` (may lie partly outside: filled
    with ``fill``). Only the part inside is read, so a Zarr array reads only the chunks it
    overlaps.

    Examples
    --------
    >>> read_patch(np.arange(5), (3,), (4,), fill=-1).tolist()
    [3, 4, -1, -1]
    """
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for start, n, dim in zip(offset, size, array.shape, strict=True):
        lo, hi = max(start, 0), min(start + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def random_offset(
    shape: Sequence[int], size: Sequence[int], rng: np.random.Generator
) -> tuple[int, ...]:
    """A uniformly random patch origin: inside the volume where the patch fits, else centred
    at random so that the volume lies inside the patch.

    Examples
    --------
    >>> random_offset((100, 50, 10), (96, 50, 16), np.random.default_rng(0))
    (4, 0, -2)
    """
    return tuple(
        int(rng.integers(min(0, d - n), max(0, d - n) + 1))
        for d, n in zip(shape, size, strict=True)
    )


def _repeated(value: str, n: int) -> pa.Array:
    """A string column of ``n`` times ``value``, built from buffers: ``pa.array`` of Python
    objects would import pandas (pyarrow checks for pandas inputs), which a reader must not."""
    import pyarrow as pa

    data = value.encode()
    offsets = (np.arange(n + 1, dtype=np.int32) * len(data)).tobytes()
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


class Dataset:
    """A built verse-etl dataset (after ``dvc repro``, ``dvc pull`` or ``dvc get``) as training
    samples, and as cases.

    ``ds[i]`` (or ``ds["verse004"]``) is a sample dict, as MONAI-style dictionary transforms
    expect: ``image`` (channel first, ``(1, X, Y, Z)``, int16 HU), ``label`` (``(1, X, Y, Z)``
    uint8, or None without a label image), ``affine`` (4x4, indices of ``image`` -> RAS+ mm),
    ``spacing`` (mm per axis), ``id``, ``source``, ``offset`` (the patch origin in the stored
    volume) and ``vertebrae`` (its table rows as dicts). ``transform`` is applied to each sample.
    ``ds.case(id)`` gives the lazy :class:`Case`. Picklable and small, so a PyTorch DataLoader
    can use it with worker processes; use :func:`collate` to batch samples.

    Parameters
    ----------
    path
        Build folder, or an fsspec URL (``s3://bucket/prefix``; needs the ``s3`` extra).
    sources
        Which sources' cases to include (``("verse",)``: the labelled VerSe scans only).
    patch_size
        Read a random patch of this size per sample instead of the whole volume (patches
        overhanging the volume are filled with ``fill_hu`` and label 0).
    seed
        Seed of the patch positions: sample ``i`` of epoch ``e`` is the same in every process.
    transform
        Called with each sample dict; its result is what ``ds[i]`` returns.
    storage_options
        fsspec options for a URL (e.g. ``{"endpoint_url": ...}``).

    Raises
    ------
    InputError
        If ``path`` holds no tables (``dvc pull`` first).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sources: Sequence[str] = SOURCES,
        patch_size: Sequence[int] | None = None,
        seed: int = 0,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        fill_hu: int = -1024,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = str(path).rstrip("/") if _is_url(path) else None
        self.path = Path(path) if self.url is None else None
        self.sources = tuple(sources)
        self.patch_size = tuple(int(n) for n in patch_size) if patch_size is not None else None
        self.seed = seed
        self.epoch = 0
        self.transform = transform
        self.fill_hu = fill_hu
        self.storage_options = storage_options
        self._tables_dir = TABLES_DIR
        if self.url is not None:
            from verse_etl.targets import read_pointer

            # An object-store build: the generation its pointer names now, kept for the life of
            # this dataset so that its tables never mix two builds.
            published = read_pointer(self._fs, self.url)
            self._tables_dir = posixpath.join(published, TABLES_DIR)
        if not any(self._exists(f"{self._tables_dir}/{t}") for t in ("scans", "series")):
            raise InputError(
                str(path),
                "not a built dataset (expected tables/scans/ or tables/series/)",
                "run `dvc pull` (or `dvc repro`) in the project, or pass the build folder",
                check="dataset",
            )

    # -- files -------------------------------------------------------------------------------

    @cached_property
    def _fs(self) -> Any:
        import fsspec

        protocol = self.url.split("://", 1)[0] if self.url else "file"
        return fsspec.filesystem(protocol, **(self.storage_options or {}))

    def _location(self, relative: str) -> str:
        if self.url is not None:
            return posixpath.join(self.url, relative)
        assert self.path is not None
        return str(self.path / relative)

    def _exists(self, relative: str) -> bool:
        if self.url is None:
            return os.path.exists(self._location(relative))
        return bool(self._fs.exists(self._location(relative)))

    def _read_table(self, name: str) -> pa.Table | None:
        """All partitions of table ``name``, partition keys as string columns (contract order).

        Each file is read with the Parquet reader alone: ``pyarrow.dataset`` would import pandas.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        pattern = f"{self._tables_dir}/{name}/source=*/release=*/*.parquet"
        if self.url is None:
            assert self.path is not None
            files = [str(f) for f in sorted(self.path.glob(pattern))]
        else:
            files = sorted(self._fs.glob(self._location(pattern)))
        if not files:
            return None
        parts = []
        for file in files:
            if self.url is None:
                table = pq.ParquetFile(file).read()
            else:
                with self._fs.open(file, "rb") as f:
                    table = pq.ParquetFile(f).read()
            for folder in file.split("/")[-3:-1]:  # source=..., release=...
                key, _, value = folder.partition("=")
                table = table.append_column(key, _repeated(value, table.num_rows))
            parts.append(table)
        return pa.concat_tables(parts)

    @cached_property
    def _tables(self) -> dict[str, pa.Table]:
        found = {name: self._read_table(name) for name in _CASE_TABLES}
        return {name: table for name, table in found.items() if table is not None}

    def __getstate__(self) -> dict[str, Any]:
        # Workers re-read the tables (small) rather than receive them through a pipe.
        state = self.__dict__.copy()
        for key in ("_tables", "_fs", "ids", "_index", "_rows_by_case"):
            state.pop(key, None)
        return state

    # -- cases -------------------------------------------------------------------------------

    @cached_property
    def _index(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Case id -> (source, its scans/series row), in the order of ``ids``."""
        index: dict[str, tuple[str, dict[str, Any]]] = {}
        scans, series = self._tables.get("scans"), self._tables.get("series")
        if "verse" in self.sources and scans is not None:
            for row in scans.sort_by("scan_id").to_pylist():
                index[row["scan_id"]] = ("verse", row)
        if "mosmed" in self.sources and series is not None:
            for row in series.sort_by(
                [("folder", "ascending"), ("series_uid", "ascending")]
            ).to_pylist():
                if row["store_path"]:
                    index[row["series_uid"]] = ("mosmed", row)
        return index

    @cached_property
    def ids(self) -> list[str]:
        """Case ids: VerSe scans, then converted MosMed series (each sorted)."""
        return list(self._index)

    @cached_property
    def _rows_by_case(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for table, key in (
            ("vertebrae", "scan_id"),
            ("mosmed_vertebrae", "series_uid"),
            ("verse_fracture_grades", "scan_id"),
        ):
            if table in self._tables:
                for row in self._tables[table].to_pylist():
                    grouped.setdefault((table, row[key]), []).append(row)
        return grouped

    def __len__(self) -> int:
        return len(self.ids)

    def case(self, key: str | int) -> Case:
        """The case with id ``key`` (or at position ``key``); volumes stay on disk.

        Raises
        ------
        UnknownCaseError
            (a ``KeyError``) If there is no such case (unknown id, or a MosMed series that was not converted).
        VolumesNotPulledError
            If its store is missing: the tables were pulled without the volumes.
        """
        case_id = self.ids[key] if isinstance(key, int) else key
        if case_id not in self._index:
            where = self.url or self.path
            raise UnknownCaseError(
                f"{where}: no case {case_id!r} in this build (expected one of Dataset.ids); "
                "check the id, or build the case first"
            )
        source, row = self._index[case_id]
        relative = row["store_path"]
        if not self._exists(f"{relative}/zarr.json"):
            out = f"{self.url or self.path}/{VOLUMES_DIR}/{source}"
            raise VolumesNotPulledError(
                self._location(relative),
                "volume store not found (the tables are there, the volumes are not)",
                f"run `dvc pull {out}` in the project; outside it, `dvc get <repo> "
                f"data/build/{VOLUMES_DIR}/{source} --rev <tag> -o {out}` (data/build: the "
                "project's build.out; see the README's \"Getting a release\" for the remote)",
                check="dataset",
            )
        table = "vertebrae" if source == "verse" else "mosmed_vertebrae"
        source_affine = np.asarray(row["affine"], dtype=float).reshape(4, 4)
        # Builds before the store frame stored arrays in the source's axis order.
        store_affine = np.asarray(row.get("store_affine") or row["affine"], float).reshape(4, 4)
        return Case(
            id=case_id,
            source=source,
            store=self._location(relative) if self.url else Path(self._location(relative)),
            affine=store_affine,
            source_affine=source_affine,
            rows=row,
            vertebra_rows=self._rows_by_case.get((table, case_id), []),
            grade_rows=self._rows_by_case.get(("verse_fracture_grades", case_id), []),
            storage_options=self.storage_options,
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # -- samples -----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Draw new patch positions (call once per epoch, as with a DistributedSampler)."""
        self.epoch = epoch

    def __getitem__(self, key: str | int) -> Any:
        index = key if isinstance(key, int) else self.ids.index(key)
        case = self.case(index)
        image, mask = case.image, case.mask
        ct: np.ndarray
        label: np.ndarray | None
        if self.patch_size is None:
            offset: tuple[int, ...] = (0, 0, 0)
            ct = np.asarray(image[...])
            label = np.asarray(mask[...]) if mask is not None else None
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            offset = random_offset(image.shape, self.patch_size, rng)
            ct = read_patch(image, offset, self.patch_size, fill=self.fill_hu)
            label = read_patch(mask, offset, self.patch_size) if mask is not None else None
        sample = {
            "image": ct[np.newaxis],
            "label": label[np.newaxis] if label is not None else None,
            "affine": patch_affine(case.affine, offset),
            "spacing": np.asarray(case.spacing_mm),
            "offset": np.asarray(offset),
            "id": case.id,
            "source": case.source,
            "vertebrae": case.vertebra_rows,
        }
        return self.transform(sample) if self.transform is not None else sample


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch sample dicts: arrays of one shape are stacked (as torch tensors when torch is
    installed, else numpy), everything else (ids, vertebrae rows, missing labels) becomes a list.

    Pass it as ``collate_fn`` to ``torch.utils.data.DataLoader``: torch's default collate cannot
    batch the variable-length ``vertebrae`` rows or a missing ``label``.
    """
    # torch is optional (installed or not, the same code type-checks).
    torch: Any = sys.modules.get("torch")
    if torch is None:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            torch = None
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
            stacked = np.stack(values)
            batch[key] = torch.from_numpy(stacked) if torch is not None else stacked
        elif torch is not None and all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
