"""params.yaml is read strictly: unknown keys and bad values are errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from verse_etl.errors import ParamsError
from verse_etl.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.build.volumes.chunks == (64, 64, 64)
    assert params.build.sources.verse == "data/sample/verse"
    assert params.build.checks.mode("anything") == "warn"
    assert params.build.mosmed.genant.thresholds == (0.20, 0.25, 0.40)
    assert params.build.mosmed.annotation_dirs == ("annotation", "annotation_v2")


@pytest.mark.parametrize(
    "text, match",
    [
        ("volumes: {chunks: [64, 64]}\n", "volumes.chunks"),
        ("volumes: {codec: snappy}\n", "volumes.codec"),
        ("volumes: {shuffle: bytes}\n", "volumes.shuffle"),
        ("volumes: {threads: 0}\n", "volumes.threads"),
        ("volumes: {encoder_nice: 20}\n", "volumes.encoder_nice"),
        ("volumes: {encoder_nice: -1}\n", "volumes.encoder_nice"),
        ("volumes: {pyramid_levels: -1}\n", "volumes.pyramid_levels"),
        ("volumes: {chunks: [64, 64, 63]}\n", "expected even sizes"),
        ("volumes: {verify: maybe}\n", "volumes.verify"),
        ("volume: {}\n", "unknown section"),
        ("checks: {default: explode}\n", "checks mode"),
        ("checks: {min_island_voxels: 0}\n", "checks.min_island_voxels"),
        ("checks: {geometry_tolerance_mm: -1}\n", "checks.geometry_tolerance_mm"),
        ("sample: {size: huge}\n", "sample.size"),
        ("build: {outdir: x}\n", "unknown key"),
        ("[1, 2\n", "not valid YAML"),
        ("mosmed: {genant: {closed: both}}\n", "mosmed.genant.closed"),
        ("mosmed: {genant: {thresholds: [0.4, 0.25, 0.2]}}\n", "mosmed.genant.thresholds"),
        ("mosmed: {genant: {ratios: [height]}}\n", "mosmed.genant.ratios"),
        ("mosmed: {genant: {threshold: 1}}\n", "unknown key"),
        ("mosmed: {slice_tolerance_mm: -1}\n", "mosmed.slice_tolerance_mm"),
        ("mosmed: {annotation_dirs: [../elsewhere]}\n", "mosmed.annotation_dirs"),
    ],
)
def test_bad_params_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=match) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_volume_shuffle_accepts_booleans_of_older_files(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("volumes: {shuffle: false, pyramid_levels: 0, chunks: [64, 64, 63]}\n")
    volumes = load_params(path).build.volumes
    assert volumes.shuffle == "noshuffle" and volumes.chunks == (64, 64, 63)
    path.write_text("volumes: {shuffle: true}\n")
    assert load_params(path).build.volumes.shuffle == "shuffle"
