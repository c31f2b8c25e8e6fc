"""Stray files at the top of MosMed's dicom/ folder get a quarantine record, never silence."""

from __future__ import annotations

from pathlib import Path

from verse_etl.mosmed.case import source_results
from verse_etl.sources.mosmed import discover_mosmed


def test_stray_files_at_the_top_of_dicom_are_recorded(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    (dicom / "STUDY").mkdir(parents=True)
    (dicom / "STUDY" / "IM0001").write_bytes(b"\0" * 8)
    for name in ("DICOMDIR", "README.txt", "study.zip"):
        (dicom / name).write_bytes(b"x")
    assert [s.folder for s in discover_mosmed(tmp_path)] == ["STUDY"]
    (result,) = source_results(tmp_path, ("annotation", "annotation_v2"))
    found = {(q.file, q.check) for q in result.quarantine}
    assert found == {
        ("dicom/DICOMDIR", "study_unplaced"),
        ("dicom/README.txt", "study_unplaced"),
        ("dicom/study.zip", "study_unplaced"),
    }
    assert all("not a study" in q.reason for q in result.quarantine)
