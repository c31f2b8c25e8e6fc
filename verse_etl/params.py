"""Typed, frozen views of the sections of ``params.yaml``.

Library code never reads ``params.yaml`` itself: the CLI (or a flow) loads the file once with
:func:`load_params` and hands these objects down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from verse_etl.errors import ParamsError

SampleSize = Literal["tiny", "small", "real"]
SAMPLE_SIZES: tuple[str, ...] = ("tiny", "small", "real")
CODECS: tuple[str, ...] = ("zstd", "lz4", "blosclz", "zlib")
SHUFFLES: tuple[str, ...] = ("shuffle", "bitshuffle", "noshuffle")
CHECK_MODES: tuple[str, ...] = ("ignore", "warn", "raise")
GENANT_RATIOS: tuple[str, ...] = ("deformity", "wedge", "biconcave", "crush")
BIN_CLOSED: tuple[str, ...] = ("left", "right")


@dataclass(frozen=True)
class SampleParams:
    """How ``verse-etl sample`` builds the built-in sample (``params.yaml: sample``)."""

    out: str = "data/sample"
    seed: int = 0
    verse_cases: int = 6
    mosmed_studies: int = 2
    size: SampleSize = "small"

    def __post_init__(self) -> None:
        if self.size not in SAMPLE_SIZES:
            raise ParamsError(
                f"params.yaml: sample.size is {self.size!r} (expected one of {SAMPLE_SIZES}); "
                "fix the value"
            )


@dataclass(frozen=True)
class SourceParams:
    """Where the raw sources live (``params.yaml: sources``). Empty string = source not used."""

    verse: str = "data/sample/verse"
    mosmed: str = "data/sample/mosmed"


@dataclass(frozen=True)
class VolumeParams:
    """Chunked Zarr layout of every volume store (``params.yaml: volumes``).

    ``chunks`` is the read unit (random access); a shard groups ``shard_chunks`` chunks per axis
    into one file so that a scan is a handful of files for DVC to hash. ``codec``, ``level``,
    ``shuffle`` (``shuffle``, ``bitshuffle``, ``noshuffle``; true/false mean shuffle/noshuffle)
    and ``blocksize`` (bytes, 0 = Blosc decides) configure the Blosc codec of every chunk.
    ``pyramid_levels`` downsampled levels (each keeping every second voxel) follow level 0 for
    viewers and QC. ``threads`` encode chunks while the source is decoded, at niceness
    ``encoder_nice`` above the decoding thread (0..19) so that the decoder, the critical path,
    is never kept off a core by them; ``verify`` decodes
    every chunk after encoding and compares it with the source voxels, and reads every shard
    file back and compares it with the verified chunks, before the store is published.
    """

    chunks: tuple[int, int, int] = (64, 64, 64)
    shard_chunks: tuple[int, int, int] = (8, 8, 2)
    codec: str = "zstd"
    level: int = 1
    shuffle: bool | str = "shuffle"
    blocksize: int = 524288
    pyramid_levels: int = 2
    threads: int = 2
    encoder_nice: int = 5
    verify: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", _triple("volumes.chunks", self.chunks))
        object.__setattr__(self, "shard_chunks", _triple("volumes.shard_chunks", self.shard_chunks))
        if self.codec not in CODECS:
            raise ParamsError(
                f"params.yaml: volumes.codec is {self.codec!r} (expected one of {CODECS}); "
                "pick a Blosc compressor"
            )
        # true/false as written before bit shuffling was offered
        shuffle = (
            ("shuffle" if self.shuffle else "noshuffle")
            if isinstance(self.shuffle, bool)
            else self.shuffle
        )
        if shuffle not in SHUFFLES:
            raise ParamsError(
                f"params.yaml: volumes.shuffle is {self.shuffle!r} (expected one of {SHUFFLES}); "
                "fix the value"
            )
        object.__setattr__(self, "shuffle", shuffle)
        if not 0 <= int(self.level) <= 9:
            raise ParamsError(
                f"params.yaml: volumes.level is {self.level} (expected 0..9); fix the value"
            )
        for name, value, low in (
            ("blocksize", self.blocksize, 0),
            ("pyramid_levels", self.pyramid_levels, 0),
            ("threads", self.threads, 1),
            ("encoder_nice", self.encoder_nice, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParamsError(
                    f"params.yaml: volumes.{name} is {value!r} (expected an integer >= {low}); "
                    "fix the value"
                )
        if self.encoder_nice > 19:
            raise ParamsError(
                f"params.yaml: volumes.encoder_nice is {self.encoder_nice} (expected 0..19, a "
                "Unix niceness added to the encoder threads'); fix the value"
            )
        if self.pyramid_levels and any(c % 2 for c in self.chunks):
            # Stores stream along whichever axis the source's slices run (store_frame.py).
            raise ParamsError(
                f"params.yaml: volumes.chunks is {list(self.chunks)} with pyramid_levels "
                f"{self.pyramid_levels} (expected even sizes, so that every second voxel "
                "of a chunk row is every second voxel of the volume); fix the value"
            )
        if not isinstance(self.verify, bool):
            raise ParamsError(
                f"params.yaml: volumes.verify is {self.verify!r} (expected true or false); "
                "fix the value"
            )


@dataclass(frozen=True)
class InputLimits:
    """Inputs refused before anything is allocated or parsed (``params.yaml: checks.limits``).

    ``max_voxels``: most voxels of one volume (a NIfTI shape, a DICOM series' rows x columns x
    slices); ``max_slice_pixels``: most pixels of one slice (the unit a reader allocates and a
    store stages); a header claiming more is refused (check ``too_large``) instead of failing
    an allocation. ``max_json_bytes`` and ``max_json_depth`` bound centroid, sidecar and
    annotation files (checks ``too_large``, ``too_deep``); real ones are a few KiB, 4 deep.
    """

    max_voxels: int = 1 << 31
    max_slice_pixels: int = 1 << 24
    max_json_bytes: int = 16 << 20
    max_json_depth: int = 32

    def __post_init__(self) -> None:
        for name in ("max_voxels", "max_slice_pixels", "max_json_bytes", "max_json_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParamsError(
                    f"params.yaml: checks.limits.{name} is {value!r} (expected an integer "
                    ">= 1); fix the value"
                )


@dataclass(frozen=True)
class CheckParams:
    """What a failed data check does (``params.yaml: checks``).

    ``default`` applies to every check not named in ``modes``. ``warn`` and ``ignore`` keep the
    build going (``warn`` still writes a quarantine row); ``raise`` fails the build at the end,
    after every good case has been written.

    ``limits``: inputs refused before they are read (:class:`InputLimits`).

    ``min_island_voxels``: a connected piece of a vertebra label smaller than this is a spurious
    island (check ``label_islands``). ``geometry_tolerance_mm``: how far apart (at the volume's
    corners) image and mask affines may be before the mask is refused (``image_mask_geometry``).
    """

    default: str = "warn"
    modes: Mapping[str, str] = field(default_factory=dict)
    min_island_voxels: int = 10
    geometry_tolerance_mm: float = 0.01
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self) -> None:
        if isinstance(self.limits, Mapping):
            object.__setattr__(self, "limits", _section(InputLimits, self.limits, "checks.limits"))
        if int(self.min_island_voxels) < 1:
            raise ParamsError(
                f"params.yaml: checks.min_island_voxels is {self.min_island_voxels} "
                "(expected an integer >= 1); fix the value"
            )
        if not float(self.geometry_tolerance_mm) >= 0:
            raise ParamsError(
                f"params.yaml: checks.geometry_tolerance_mm is {self.geometry_tolerance_mm} "
                "(expected a number >= 0); fix the value"
            )
        for name, mode in [("default", self.default), *self.modes.items()]:
            if mode not in CHECK_MODES:
                raise ParamsError(
                    f"params.yaml: checks mode for {name!r} is {mode!r} "
                    f"(expected one of {CHECK_MODES}); fix the value"
                )

    def mode(self, check: str) -> str:
        """Return the mode (ignore, warn, raise) for ``check``."""
        return self.modes.get(check, self.default)


@dataclass(frozen=True)
class GenantParams:
    """How a height-reduction ratio becomes a Genant grade (``params.yaml: mosmed.genant``).

    ``thresholds`` are the ratios at which grades 1, 2 and 3 start (Genant 1993: about 20 %,
    25 % and 40 % height reduction). ``closed`` says on which side a bin is closed: ``left``
    puts a ratio equal to a threshold into the higher grade (``[0.20, 0.25) -> 1``), ``right``
    into the lower one (``(0.20, 0.25] -> 1``). The grade is taken from the largest of the
    ``ratios`` named (see :mod:`verse_etl.mosmed.measures`).
    """

    thresholds: tuple[float, float, float] = (0.20, 0.25, 0.40)
    closed: str = "left"
    ratios: tuple[str, ...] = ("deformity",)

    def __post_init__(self) -> None:
        try:
            thresholds = tuple(float(v) for v in self.thresholds)
        except (TypeError, ValueError) as e:
            raise ParamsError(
                f"params.yaml: mosmed.genant.thresholds is {self.thresholds!r} "
                "(expected three increasing ratios in 0..1); fix the value"
            ) from e
        if len(thresholds) != 3 or not 0 < thresholds[0] < thresholds[1] < thresholds[2] < 1:
            raise ParamsError(
                f"params.yaml: mosmed.genant.thresholds is {self.thresholds!r} "
                "(expected three increasing ratios in 0..1); fix the value"
            )
        object.__setattr__(self, "thresholds", thresholds)
        if self.closed not in BIN_CLOSED:
            raise ParamsError(
                f"params.yaml: mosmed.genant.closed is {self.closed!r} "
                f"(expected one of {BIN_CLOSED}); fix the value"
            )
        ratios = (self.ratios,) if isinstance(self.ratios, str) else tuple(self.ratios)
        if not ratios or any(r not in GENANT_RATIOS for r in ratios):
            raise ParamsError(
                f"params.yaml: mosmed.genant.ratios is {self.ratios!r} "
                f"(expected a non-empty list of {GENANT_RATIOS}); fix the value"
            )
        object.__setattr__(self, "ratios", ratios)


@dataclass(frozen=True)
class MosmedParams:
    """MosMed study conversion (``params.yaml: mosmed``).

    Geometry tolerances follow idc-index's volume geometry table (which takes its slice
    tolerance from dcm2niix): ``slice_tolerance_mm`` bounds how far a slice may sit from a
    regular grid, ``in_plane_tolerance_mm`` how far ImagePositionPatient may move within the
    image plane before the series counts as sheared (gantry tilt), ``orientation_tolerance``
    how far direction cosines may be from unit length, orthogonality and equality. ``tilt``:
    ``correct`` resamples a series whose only findings are gantry tilt, uneven spacing or
    missing slices onto a regular unsheared grid (:mod:`verse_etl.geometry.tilt`); ``report`` leaves
    it unconverted.
    """

    annotation_dirs: tuple[str, ...] = ("annotation", "annotation_v2")
    id_mapping: str = ""
    unpack_dir: str = ""
    slice_tolerance_mm: float = 0.2
    in_plane_tolerance_mm: float = 0.1
    orientation_tolerance: float = 0.01
    genant: GenantParams = field(default_factory=GenantParams)
    # correct: a tilted or unevenly spaced series is resampled onto a regular grid (as
    # dcm2niix's _Tilt_Eq); report: it is reported and not converted.
    tilt: str = "correct"

    def __post_init__(self) -> None:
        if self.tilt not in ("correct", "report"):
            raise ParamsError(
                f"params.yaml: mosmed.tilt is {self.tilt!r} (expected correct or report); "
                "fix the value"
            )
        dirs = (
            (self.annotation_dirs,)
            if isinstance(self.annotation_dirs, str)
            else tuple(str(d) for d in self.annotation_dirs)
        )
        if any(not d or Path(d).is_absolute() or ".." in Path(d).parts for d in dirs):
            raise ParamsError(
                f"params.yaml: mosmed.annotation_dirs is {self.annotation_dirs!r} "
                "(expected folder names below the MosMed root); fix the value"
            )
        object.__setattr__(self, "annotation_dirs", dirs)
        if isinstance(self.genant, Mapping):
            object.__setattr__(self, "genant", _section(GenantParams, self.genant, "mosmed.genant"))
        for name in ("slice_tolerance_mm", "in_plane_tolerance_mm", "orientation_tolerance"):
            value = getattr(self, name)
            try:
                ok = 0 < float(value) < 10
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ParamsError(
                    f"params.yaml: mosmed.{name} is {value!r} (expected a number in (0, 10)); "
                    "fix the value"
                )
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class BuildParams:
    """Everything one build needs, assembled from ``params.yaml``."""

    out: str = "data/build"  # a folder, or an fsspec URL (s3://bucket/prefix)
    # Where cases are built before they are published to a URL ``out`` ('' = system temp).
    work: str = ""
    sources: SourceParams = field(default_factory=SourceParams)
    volumes: VolumeParams = field(default_factory=VolumeParams)
    checks: CheckParams = field(default_factory=CheckParams)
    workers: int = 2
    # Per-case time limit for the task runner (0: none). In worker threads Prefect can only stop
    # a case between blocking calls, so this bounds runaway cases, not a single slow read.
    case_timeout_s: int = 0
    mosmed: MosmedParams = field(default_factory=MosmedParams)
    # Delete the outputs of cases no longer in a given source (see verse_etl.publish.pruning): only when
    # asked, never for a source left out, a missing folder, or more than prune_max_loss of the
    # previous cases at once.
    prune: bool = False
    prune_max_loss: float = 0.25
    # Read and hash every source file, even those whose stat (size, mtime, ctime, inode,
    # device) is unchanged since they were last hashed (see verse_etl.cases.stat_cache).
    rehash: bool = False

    def __post_init__(self) -> None:
        for name in ("prune", "rehash"):
            if not isinstance(getattr(self, name), bool):
                raise ParamsError(
                    f"params.yaml: build.{name} is {getattr(self, name)!r} (expected true or "
                    "false); fix the value"
                )
        try:
            ok = 0.0 <= float(self.prune_max_loss) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParamsError(
                f"params.yaml: build.prune_max_loss is {self.prune_max_loss!r} (expected a "
                "fraction in [0, 1]); fix the value"
            )
        object.__setattr__(self, "prune_max_loss", float(self.prune_max_loss))


@dataclass(frozen=True)
class ScheduleParams:
    """Scheduled builds (``params.yaml: schedule``), served by ``verse-etl serve``."""

    cron: str = "0 3 * * *"
    deployment: str = "nightly"
    remote: str | None = None  # None: the default DVC remote
    push: bool = True

    def __post_init__(self) -> None:
        if len(self.cron.split()) != 5:
            raise ParamsError(
                f"params.yaml: schedule.cron is {self.cron!r} (expected five cron fields, "
                "e.g. '0 3 * * *'); fix the value"
            )


@dataclass(frozen=True)
class FetchParams:
    """``verse-etl fetch``: where the catalog's sources go, and an optional mirror."""

    root: str = "raw"  # fetch root: raw/verse, raw/mosmed (the source roots), raw/archives
    base_url: str = ""  # a mirror keeping each publisher's host and path ('' = the publishers)


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    sample: SampleParams = field(default_factory=SampleParams)
    build: BuildParams = field(default_factory=BuildParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    fetch: FetchParams = field(default_factory=FetchParams)


def _triple(name: str, value: Any) -> tuple[int, int, int]:
    try:
        items = tuple(int(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ParamsError(
            f"params.yaml: {name} is {value!r} (expected three positive integers); fix the value"
        ) from e
    if len(items) != 3 or min(items) < 1:
        raise ParamsError(
            f"params.yaml: {name} is {value!r} (expected three positive integers); fix the value"
        )
    return items


def _section(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown key(s) {unknown} in {where} (expected some of {sorted(known)}); "
            "remove or rename them"
        )
    return cls(**data)


def params_from_mapping(data: Mapping[str, Any]) -> Params:
    """Build :class:`Params` from the parsed YAML mapping, rejecting unknown keys."""
    data = dict(data or {})
    sections = {
        "sample",
        "sources",
        "volumes",
        "checks",
        "build",
        "mosmed",
        "schedule",
        "fetch",
    }
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown section(s) {unknown} (expected some of {sorted(sections)}); "
            "remove or rename them"
        )
    build = dict(data.get("build") or {})
    out = str(build.pop("out", BuildParams.out))
    workers = int(build.pop("workers", BuildParams.workers))
    case_timeout_s = int(build.pop("case_timeout_s", BuildParams.case_timeout_s))
    work = str(build.pop("work", BuildParams.work) or "")
    prune = build.pop("prune", BuildParams.prune)
    prune_max_loss = build.pop("prune_max_loss", BuildParams.prune_max_loss)
    rehash = build.pop("rehash", BuildParams.rehash)
    if build:
        raise ParamsError(
            f"params.yaml: unknown key(s) {sorted(build)} in build (expected out, work, workers, "
            "case_timeout_s, prune, prune_max_loss, rehash); remove or rename them"
        )
    return Params(
        sample=_section(SampleParams, data.get("sample"), "sample"),
        schedule=_section(ScheduleParams, data.get("schedule"), "schedule"),
        fetch=_section(FetchParams, data.get("fetch"), "fetch"),
        build=BuildParams(
            out=out,
            work=work,
            workers=workers,
            case_timeout_s=case_timeout_s,
            prune=prune,
            prune_max_loss=prune_max_loss,
            rehash=rehash,
            sources=_section(SourceParams, data.get("sources"), "sources"),
            volumes=_section(VolumeParams, data.get("volumes"), "volumes"),
            checks=_section(CheckParams, data.get("checks"), "checks"),
            mosmed=_section(MosmedParams, data.get("mosmed"), "mosmed"),
        ),
    )


def load_params(path: Path) -> Params:
    """Read and validate ``params.yaml``.

    Raises
    ------
    ParamsError
        If the file is missing, is not YAML, or holds unknown keys or bad values.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ParamsError(
            f"{path}: file not found; run from the project root or pass --params"
        ) from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e}); fix the syntax") from e
    if data is not None and not isinstance(data, Mapping):
        raise ParamsError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return params_from_mapping(data or {})
    except ParamsError as e:
        raise ParamsError(str(e).replace("params.yaml", str(path), 1)) from e
