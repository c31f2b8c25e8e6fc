"""A case result's saved JSON: the bytes the case cache and the tables' freshness key are made of."""

from __future__ import annotations

import json
import math

import pytest

from verse_etl.cases.records import CASE_FORMAT, CaseResult, QuarantineRecord


def _result() -> CaseResult:
    result = CaseResult(source="mosmed", case_id="s1", fingerprint="f" * 64)
    result.add("series", {"series_uid": "1.2", "spacing": (0.7, 0.7, 1.0), "hu_p99": math.nan})
    result.add("series", {"series_uid": "1.3", "levels": ["T7", None], "n": 3})
    result.flag("a/b.dcm", "geometry", "slices not evenly spaced", fix="re-export", table="series")
    result.stores["volumes/mosmed/s1.zarr"] = {"key": "k", "hu": {"counts": [1, 2], "offset": -1}}
    return result


def test_saved_json_is_every_field_but_the_build_counters_sorted_and_round_trips() -> None:
    result = _result()
    text = result.to_json()
    payload = json.loads(text)
    expected = {
        "format": CASE_FORMAT,
        "source": "mosmed",
        "case_id": "s1",
        "fingerprint": "f" * 64,
        "rows": {
            "series": [
                {"series_uid": "1.2", "spacing": [0.7, 0.7, 1.0], "hu_p99": math.nan},
                {"series_uid": "1.3", "levels": ["T7", None], "n": 3},
            ]
        },
        "quarantine": [vars(result.quarantine[0])],
        "stores": {"volumes/mosmed/s1.zarr": {"key": "k", "hu": {"counts": [1, 2], "offset": -1}}},
    }
    assert json.dumps(payload, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert text == json.dumps(expected, sort_keys=True, allow_nan=True)  # the same bytes
    loaded = CaseResult.from_json(text)
    assert loaded is not None and loaded.to_json() == text
    assert isinstance(loaded.quarantine[0], QuarantineRecord)
    # No stores: the key is left out, as results written before stores were kept read.
    assert "stores" not in json.loads(CaseResult("verse", "v", "f").to_json())


def test_a_value_json_cannot_keep_is_refused_naming_its_type() -> None:
    result = CaseResult("verse", "v", "f")
    result.add("scans", {"when": object()})
    with pytest.raises(TypeError, match="object is not a value a case result keeps"):
        result.to_json()


def test_names_of_many_files_are_those_of_one_file_at_a_time(tmp_path) -> None:
    from verse_etl.cases.records import relative, relative_names

    root = tmp_path / "mosmed"
    (root / "dicom" / "s1").mkdir(parents=True)
    (root / "dicom" / "s1" / "a.dcm").write_bytes(b"")
    (root / "dicom" / "s1" / "gone.dcm").symlink_to(tmp_path / "missing.dcm")  # named as the link
    (root / "via").symlink_to(root / "dicom")  # a linked folder: named where it leads
    (tmp_path / "outside.dcm").write_bytes(b"")
    paths = [
        root / "dicom" / "s1" / "a.dcm",
        root / "dicom" / "s1" / "gone.dcm",
        root / "via" / "s1" / "a.dcm",
        f"{root / 'a.zip'}!/../../etc/x",
        tmp_path / "outside.dcm",
        root,
        root / "via" / "..",  # a Path keeps "..": its folder resolved, as for any name
        f"{root}//dicom/./s1/a.dcm",  # text: normalised first
    ]
    names = relative_names(paths, root)
    assert names == [relative(p, root) for p in paths]
    assert names == [
        "dicom/s1/a.dcm",
        "dicom/s1/gone.dcm",
        "dicom/s1/a.dcm",
        "a.zip!/../../etc/x",
        (tmp_path / "outside.dcm").as_posix(),
        ".",
        "dicom/..",
        "dicom/s1/a.dcm",
    ]
