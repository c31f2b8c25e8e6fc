"""Anatomy checks with modes, on the real MosMed annotation files and the real VerSe mask.

MosMed rows are made from the 20 real v1 and v2 files with a plain geometry (0.7 mm pixels,
0.8 mm slices, InstanceNumber head to feet): the order and overlap of the readers' points are
theirs. VerSe rows come from the real sub-verse004 mask and centroid file through the library,
with defects made from the real file (a centroid moved onto a neighbour, one onto background, a
vertebra taken out).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from verse_etl.schemas import MosmedVertebraeTable, VertebraeTable

from verse_etl.mosmed.annotations import POINT_NAMES, read_annotation
from verse_etl.mosmed.measures import deformity_ratios, heights_mm
from verse_etl.params import CheckParams, VolumeParams
from verse_etl.sources.verse import discover_verse
from verse_etl.tables.validation import validate_table
from verse_etl.verse.case import build_verse_scan

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
MOSMED = SHARED / "fixtures" / "mosmed"
SUB = "sub-verse004"
SPACING = np.array([0.7, 0.7, 0.8])  # row, column, slice


def _mosmed_rows(drop: tuple[str, str, str, str] | None = None) -> pd.DataFrame:
    rows = []
    for release, folder in (("v1", "annotation"), ("v2", "annotation_v2")):
        for path in sorted((MOSMED / folder).glob("*.json")):
            ann = read_annotation(path)
            for v in ann.vertebrae:
                if drop == (path.stem, release, v.expert, v.level):
                    continue
                p = np.asarray(v.points)
                # RAS: x from the column, y anterior (rows grow posterior), z down with k.
                world = np.column_stack([p[:, 1], -p[:, 0], -p[:, 2]]) * SPACING[[1, 0, 2]]
                h = heights_mm(world)
                row = {
                    "folder": ann.folder,
                    "series_uid": ann.series_uid,
                    "release": release,
                    "expert": v.expert,
                    "vertebra_index": v.index,
                    "level": v.level,
                    "level_source": "annotation" if v.level else None,
                    "id_match": "exact",
                    "annotation_path": f"{folder}/{path.name}",
                    "store_path": "store.zarr",
                    "series_rows": 512,
                    "series_columns": 512,
                    "series_slices": 600,
                    "height_ant_mm": h[0],
                    "height_mid_mm": h[1],
                    "height_post_mm": h[2],
                    **{f"{k}_ratio": r for k, r in deformity_ratios(*h).items()},
                    "crush_ratio": None,
                    "genant_grade": 0,
                    "source": "mosmed",
                }
                for name, point, w in zip(POINT_NAMES, p, world, strict=True):
                    row.update(
                        {
                            f"{name}_{a}": float(c)
                            for a, c in zip(("row", "col", "k"), point, strict=True)
                        }
                    )
                    row[f"{name}_slice"] = float(point[2])
                    row.update({f"{name}_{a}_mm": float(c) for a, c in zip("xyz", w, strict=True)})
                rows.append(row)
    return pd.DataFrame(rows)


def _validate(df: pd.DataFrame, model, table: str, checks: CheckParams):
    return validate_table(
        df,
        model,
        table=table,
        source_of=lambda row: row["source"],
        case_of=lambda row: row["folder"] if "folder" in row else row["scan_id"],
        file_of=lambda row, _check: row.get("annotation_path", row.get("scan_id")),
        checks=checks,
    )


@pytest.fixture(scope="module")
def mosmed_rows() -> pd.DataFrame:
    return _mosmed_rows()


def test_real_v2_file_where_every_expert_overlaps_consecutive_levels(mosmed_rows) -> None:
    good, records = _validate(mosmed_rows, MosmedVertebraeTable, "mosmed_vertebrae", CheckParams())
    assert len(good) == len(mosmed_rows)  # quality checks keep the rows
    order = [r for r in records if r.check == "vertebra_order"]
    assert {r.check for r in records} == {"vertebra_order"}  # no level gap in the real files
    study = "RLADD02000049805_RLSDD02000049736"
    flagged = [r for r in order if r.case_id == study and "annotation_v2/" in r.file]
    experts = {json.loads(r.record)["expert"] for r in flagged}
    assert experts == {"expert1", "expert2", "expert3"}  # every expert of the v2 file
    for expert in experts:
        assert any(f"{expert}: T3 overlaps T2 (" in r.reason for r in flagged), expert
        assert any(f"{expert}: T4 overlaps T3 (" in r.reason for r in flagged), expert
    reason = next(r.reason for r in flagged if "expert1: T4 overlaps T3" in r.reason)
    assert reason.startswith(f"annotation_v2/{study}.json: mosmed_vertebrae row (")
    assert "anterior by 0.6 mm" in reason and reason.endswith("the row is kept")
    # Modes (on that study's rows): ignore writes nothing, raise marks the records as failing.
    mine = mosmed_rows[mosmed_rows["folder"] == study]
    _, ignored = _validate(
        mine,
        MosmedVertebraeTable,
        "mosmed_vertebrae",
        CheckParams(modes={"vertebra_order": "ignore"}),
    )
    assert not ignored
    _, raised = _validate(
        mine,
        MosmedVertebraeTable,
        "mosmed_vertebrae",
        CheckParams(modes={"vertebra_order": "raise"}),
    )
    assert {r.severity for r in raised} == {"raise"}
    assert len(raised) == len([r for r in order if r.case_id == study])


def test_level_gap_in_one_expert_is_flagged_with_the_missing_level() -> None:
    study = "RLADD02000049805_RLSDD02000049736"
    df = _mosmed_rows(drop=(study, "v2", "expert2", "T6"))
    _, records = _validate(
        df,
        MosmedVertebraeTable,
        "mosmed_vertebrae",
        CheckParams(modes={"vertebra_order": "ignore"}),
    )
    assert [r.check for r in records] == ["level_sequence_gap"] * 2
    levels = sorted(json.loads(r.record)["level"] for r in records)
    assert levels == ["T5", "T7"]
    assert all("expert2: T7 follows T5: T6 missing" in r.reason for r in records)


@pytest.fixture(scope="module")
def verse004_defects(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The real sub-verse004 mask and centroids, with the centroid of T9 (label 16) moved onto
    T10's, the centroid of L5 (24) moved onto background, and L1 (20) erased from mask and
    centroids; the CT is made on the mask's grid (the real one is not shipped)."""
    fixture = SHARED / "fixtures" / "verse" / SUB
    root = tmp_path_factory.mktemp("verse")
    raw = root / "dataset-verse19training" / "rawdata" / SUB
    der = root / "dataset-verse19training" / "derivatives" / SUB
    raw.mkdir(parents=True)
    der.mkdir(parents=True)
    shutil.copy(fixture / f"{SUB}_seg-subreg_ctd.json", der)
    mask = nib.load(str(fixture / f"{SUB}_seg-vert_msk.nii.gz"))
    labels = np.asanyarray(mask.dataobj)
    edited = np.where(labels == 20, 0, labels)
    nib.save(
        nib.Nifti1Image(edited, mask.affine, mask.header),
        str(der / mask.get_filename().split("/")[-1]),
    )
    ctd = json.loads((fixture / f"{SUB}_seg-subreg_ctd.json").read_text())
    by_label = {e["label"]: e for e in ctd[1:]}
    moved = [ctd[0]]
    for entry in ctd[1:]:
        if entry["label"] == 20:
            continue
        if entry["label"] == 16:
            entry = {**by_label[17], "label": 16}
        if entry["label"] == 24:
            entry = {**entry, "X": 1.0, "Y": 1.0, "Z": 1.0}  # a corner: air
        moved.append(entry)
    (der / f"{SUB}_seg-subreg_ctd.json").write_text(json.dumps(moved))
    ct = np.where(edited > 0, 700, -1000).astype(np.int16)
    img = nib.Nifti1Image(ct, mask.affine, mask.header)
    img.set_data_dtype(np.int16)
    nib.save(img, str(raw / f"{SUB}_ct.nii.gz"))
    (scan,) = discover_verse(root)
    out = tmp_path_factory.mktemp("out")
    result = build_verse_scan(
        scan, root, out, VolumeParams(chunks=(32, 32, 32), shard_chunks=(4, 4, 2))
    )
    return pd.DataFrame(result.rows["vertebrae"]).assign(source="verse", release="verse19")


def test_real_verse_centroid_on_another_label_or_background_and_a_gap(verse004_defects) -> None:
    _, records = _validate(verse004_defects, VertebraeTable, "vertebrae", CheckParams())
    mine = ("centroid_outside_label", "level_sequence_gap")
    found = {(r.check, json.loads(r.record)["level"]): r.reason for r in records if r.check in mine}
    # (moving a centroid also breaks the existing craniocaudal_order check: not counted here)
    assert set(found) == {
        ("centroid_outside_label", "T9"),
        ("centroid_outside_label", "L5"),
        ("level_sequence_gap", "T12"),
        ("level_sequence_gap", "L2"),
    }
    assert (
        "the centroid of T9 lies on T10 (mask label 17)" in found[("centroid_outside_label", "T9")]
    )
    assert (
        "the centroid of L5 lies on background (mask 0)" in found[("centroid_outside_label", "L5")]
    )
    assert "L2 follows T12: L1 missing" in found[("level_sequence_gap", "L2")]
    _, ignored = _validate(
        verse004_defects,
        VertebraeTable,
        "vertebrae",
        CheckParams(modes={"centroid_outside_label": "ignore", "level_sequence_gap": "raise"}),
    )
    assert {(r.check, r.severity) for r in ignored if r.check in mine} == {
        ("level_sequence_gap", "raise")
    }
