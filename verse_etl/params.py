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
    and ``blocksize`` (bytes, 0 = Blosc decides) configure the Blosc codec of every chunk. ``pyramid_levels`` downsampled levels (each keeping every second voxel) follow level
    0 for viewers and QC. ``threads`` encode chunks while the source is decoded; ``verify``
    reads every shard back and compares it with the source voxels before the store is
    published.
    """

    chunks: tuple[int, int, int] = (64, 64, 64)
    shard_chunks: tuple[int, int, int] = (8, 8, 2)
    codec: str = "zstd"
    level: int = 1
    shuffle: bool | str = "shuffle"
    blocksize: int = 262144
    pyramid_levels: int = 2
    threads: int = 2
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
        shuffle = {True: "shuffle", False: "noshuffle"}.get(self.shuffle, self.shuffle)  # type: ignore[call-overload]
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
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParamsError(
                    f"params.yaml: volumes.{name} is {value!r} (expected an integer >= {low}); "
                    "fix the value"
                )
        if self.pyramid_levels and self.chunks[2] % 2:
            raise ParamsError(
                f"params.yaml: volumes.chunks is {list(self.chunks)} with pyramid_levels "
                f"{self.pyramid_levels} (expected an even last size, so that every second voxel "
                "of a chunk row is every second voxel of the volume); fix the value"
            )
        if not isinstance(self.verify, bool):
            raise ParamsError(
                f"params.yaml: volumes.verify is {self.verify!r} (expected true or false); "
                "fix the value"
            )


@dataclass(frozen=True)
class CheckParams:
    """What a failed data check does (``params.yaml: checks``).

    ``default`` applies to every check not named in ``modes``. ``warn`` and ``ignore`` keep the
    build going (``warn`` still writes a quarantine row); ``raise`` fails the build at the end,
    after every good case has been written.
    """

    default: str = "warn"
    modes: Mapping[str, str] = field(default_factory=dict)
    min_island_voxels: int = 10

    def __post_init__(self) -> None:
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
class BuildParams:
    """Everything one build needs, assembled from ``params.yaml``."""

    out: str = "data/build"
    sources: SourceParams = field(default_factory=SourceParams)
    volumes: VolumeParams = field(default_factory=VolumeParams)
    checks: CheckParams = field(default_factory=CheckParams)
    workers: int = 2


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    sample: SampleParams = field(default_factory=SampleParams)
    build: BuildParams = field(default_factory=BuildParams)


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
    return items  # type: ignore[return-value]


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
    unknown = sorted(set(data) - {"sample", "sources", "volumes", "checks", "build"})
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown section(s) {unknown} "
            "(expected sample, sources, volumes, checks, build); remove or rename them"
        )
    build = dict(data.get("build") or {})
    out = str(build.pop("out", BuildParams.out))
    workers = int(build.pop("workers", BuildParams.workers))
    if build:
        raise ParamsError(
            f"params.yaml: unknown key(s) {sorted(build)} in build (expected out, workers); "
            "remove or rename them"
        )
    return Params(
        sample=_section(SampleParams, data.get("sample"), "sample"),
        build=BuildParams(
            out=out,
            workers=workers,
            sources=_section(SourceParams, data.get("sources"), "sources"),
            volumes=_section(VolumeParams, data.get("volumes"), "volumes"),
            checks=_section(CheckParams, data.get("checks"), "checks"),
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
