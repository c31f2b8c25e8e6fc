"""The sample writes the labelled v2 release like anchor-free-genant's files, and the edge cases
deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.file_digests import file_digests
from verse_etl.mosmed.annotations import ANNOTATED_LEVELS
from verse_etl_sample import write_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sample")
    manifest = write_sample(
        out, seed=2, verse_cases=4, mosmed_studies=2, size="tiny", edge_cases=True
    )
    return out, manifest


def test_v2_files_have_the_v2_schema_and_the_v1_identifiers(sample) -> None:
    out, manifest = sample
    for study in manifest.mosmed:
        v1 = json.loads((out / study.annotation).read_text())
        v2 = json.loads((out / study.annotation_v2).read_text())
        assert study.annotation_v2.name == study.annotation.name
        assert (v2["Folder"], v2["SeriesInstanceUID"]) == (v1["Folder"], v1["SeriesInstanceUID"])
        levels = [v.level for v in study.vertebrae]
        for key, indices in study.v2_experts:
            vertebrae = v2["Annotation"][key]
            assert [v["type"] for v in vertebrae] == [levels[i].replace("T", "Th") for i in indices]
            assert all(v["type"] in ANNOTATED_LEVELS for v in vertebrae)
            assert all(np.asarray(v["segments"]).shape == (3, 2, 3) for v in vertebrae)
        # The first v1 reader re-read the study under another key (renumbered, as in the real
        # releases): most vertebrae identical, some moved.
        first = next(iter(v1["Annotation"]))
        ((v1_key, v2_key),) = study.same_readers
        assert v1_key == first and v2_key == next(iter(v2["Annotation"])) and v2_key != first
        assert v2_key not in v1["Annotation"]
        same = [
            np.asarray(a).reshape(6, 3).tolist() == np.asarray(b["segments"]).reshape(6, 3).tolist()
            for a, b in zip(v1["Annotation"][first], v2["Annotation"][v2_key], strict=False)
        ]
        assert 0.5 < np.mean(same) < 1


def test_same_seed_same_bytes_with_edge_cases(sample, tmp_path: Path) -> None:
    out, manifest = sample
    again = write_sample(
        tmp_path, seed=2, verse_cases=4, mosmed_studies=2, size="tiny", edge_cases=True
    )
    assert file_digests(out / "mosmed") == file_digests(tmp_path / "mosmed")
    assert again.edge_cases == manifest.edge_cases
    assert set(manifest.files) == {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert (
        (out / manifest.edge_cases.id_mapping)
        .read_text()
        .startswith(  # type: ignore[union-attr]
            "old_folder,old_series_uid,folder,series_uid\n"
        )
    )
