"""The fetch helpers on the real MosMed annotation files in ../shared: the identifier mapping
derived from renamed copies, and the manual-step check of placed images."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

from verse_etl.mosmed.images import check_mosmed_images
from verse_etl.sources.fetch import derive_id_mapping


def _triples(value: object) -> list[list[float]]:
    """Every [x, y, z] number triple nested in a JSON value (v1 point lists, v2 segments)."""
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, float | int) for v in value)
    ):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _triples(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _triples(v)]
    return []


def test_mapping_pairs_each_real_file_with_its_renamed_copy(shared: Path) -> None:
    real = shared / "fixtures" / "mosmed" / "annotation"
    new = {p.name: p.read_bytes() for p in sorted(real.glob("*.json"))}
    old, expected = {}, set()
    for i, data in enumerate(new.values()):
        doc = json.loads(data)
        current = (doc["Folder"], doc["SeriesInstanceUID"])
        doc["Folder"], doc["SeriesInstanceUID"] = f"RLAD-OLD-{i:03d}", f"1.2.276.0.7230010.3.{i}"
        old[f"{doc['Folder']}.json"] = json.dumps(doc, indent=2).encode()
        expected.add((doc["Folder"], doc["SeriesInstanceUID"], *current))
    rows = list(csv.reader(io.StringIO(derive_id_mapping(old, new, real))))
    assert rows[0] == ["old_folder", "old_series_uid", "folder", "series_uid"]
    assert {tuple(r) for r in rows[1:]} == expected and len(rows) - 1 == len(new) > 0


def test_image_check_lists_every_real_annotated_study_as_missing(
    shared: Path, tmp_path: Path
) -> None:
    root = tmp_path / "mosmed"
    for name in ("annotation", "annotation_v2"):
        shutil.copytree(shared / "fixtures" / "mosmed" / name, root / name)
    report = check_mosmed_images(root)
    stems = sorted(p.stem for p in (root / "annotation").glob("*.json"))
    assert report.missing == tuple(stems) and not report.complete
    for study in report.studies:
        points = [
            t
            for name in ("annotation", "annotation_v2")
            for t in _triples(
                json.loads((root / name / f"{study.folder}.json").read_text())["Annotation"]
            )
        ]
        assert study.min_slices == max(math.floor(p[2]) + 1 for p in points) > 1
