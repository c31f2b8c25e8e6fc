"""Studies are found as folders and archives; annotations of both releases and older identifiers
find their study."""

from __future__ import annotations

from pathlib import Path

import pytest

from verse_etl.errors import InputError
from verse_etl.sources.mosmed import IdMapping, discover_mosmed, read_id_mapping


def test_folders_archives_and_annotation_dirs(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    (dicom / "A" / "x").mkdir(parents=True)
    (dicom / "B.tar.gz").write_bytes(b"")
    (dicom / "C").mkdir()
    (dicom / "C.tar.gz").write_bytes(b"")
    (dicom / "notes.txt").write_text("")
    for d, stems in {"annotation": ["A", "B", "OLD", "Z"], "annotation_v2": ["A"]}.items():
        (tmp_path / d).mkdir()
        for stem in stems:
            (tmp_path / d / f"{stem}.json").write_text("{}")
    mapping = IdMapping("OLD", "1.2.276.1", "C", "1.2.643.1.")
    studies = {s.folder: s for s in discover_mosmed(tmp_path, id_mappings=[mapping])}
    assert sorted(studies) == ["A", "B", "C", "Z"]
    assert studies["A"].dicom_dir == dicom / "A" and studies["A"].archive is None
    assert [p.parent.name for p in studies["A"].annotations] == ["annotation", "annotation_v2"]
    assert studies["B"].archive == dicom / "B.tar.gz" and studies["B"].dicom_dir is None
    assert studies["C"].dicom_dir == dicom / "C" and studies["C"].archive == dicom / "C.tar.gz"
    assert [p.name for p in studies["C"].annotations] == ["OLD.json"]
    assert studies["C"].id_mappings == (mapping,)
    assert not studies["Z"].has_images
    # Only the folders named in params are annotation folders.
    only_v1 = {s.folder: s for s in discover_mosmed(tmp_path, annotation_dirs=["annotation"])}
    assert [p.parent.name for p in only_v1["A"].annotations] == ["annotation"]


def test_mapping_csv_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text(
        "\ufeffold_folder,old_series_uid,folder,series_uid\nOLD,1.2.276.1,NEW,1.2.643.1.\n",
        encoding="utf-8",
    )
    assert read_id_mapping(path) == (IdMapping("OLD", "1.2.276.1", "NEW", "1.2.643.1."),)
    for text, match in [
        ("old,new\nA,B\n", "lacks column"),
        ("old_folder,old_series_uid,folder,series_uid\nA,,B,C\n", "line 2: empty"),
        ("old_folder,old_series_uid,folder,series_uid\nA,1,B,2\nA,3,C,4\n", "maps to both"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=match):
            read_id_mapping(path)
    with pytest.raises(InputError, match="not found"):
        read_id_mapping(tmp_path / "missing.csv")
