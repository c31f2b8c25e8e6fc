"""Output paths from identifiers the sources control (file names, DICOM headers): readable when
ordinary, otherwise one bounded, collision-free name; and nothing written or deleted outside the
build root, whatever an identifier or a planted symbolic link says."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.dicom_factory import write_series
from verse_etl.cases.outputs import prune_source, remove_path
from verse_etl.errors import OutputPathError, VerseEtlError
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.paths import (
    READABLE_MAX,
    case_result_path,
    ensure_inside,
    mosmed_store_path,
    safe_name,
    verse_store_path,
)
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.targets import Target

REAL_UID = "1.2.643.5.1.13.13.12.2.77.8252.604378326291304.583."  # MosMed UIDs end in '.'
REAL_FOLDER = "RLAD95D386-84122_RLSD95D386-84122"

HOSTILE = [
    "..",
    ".",
    "",
    "../../etc/passwd",
    "/abs/x",
    "a/b",
    "a\\b",
    "a\x00b",
    "x" * 300,  # over NAME_MAX
    "é" * 200,  # 400 bytes in UTF-8
    "\udcff",  # an undecodable byte from the file system, as Python keeps it
    "CON",
    "nul.txt",
    " lead",
    "-rf",
    "~home",
    "1.2.3.",  # a folder name ending in '.' (Windows drops it)
]

# Groups of identifiers that are distinct but look alike, or are one name where letter case is
# not significant (macOS, Windows, SMB shares).
LOOK_ALIKES = [
    ["1.2.3.", "1.2.3", "1.2.3..", "1.2.3\u00b7", "1.2.3\u2024"],
    ["ABC", "abc", "Abc", "\u0410BC", "\uff21BC", "ABC\u200b"],
    ["x" * 300, "x" * 301, "x" * 300 + "y", "X" * 300],
    ["..", ".", "", "/", "_", "~"],
]


def _is_safe(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and not any(c in name for c in "/\\\x00")
        and name.isascii()
        and len(name.encode()) <= 255
        and not name.startswith(("-", "."))
        and not name.endswith(".")
    )


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_ordinary_identifiers_stay_readable(case: str) -> None:
    assert safe_name(REAL_UID, case, ".zarr") == f"{REAL_UID}.zarr"  # type: ignore[arg-type]
    assert safe_name("1.2.3", case, ".zarr") == "1.2.3.zarr"  # type: ignore[arg-type]
    assert safe_name("verse004", "lower", ".zarr") == "verse004.zarr"
    assert safe_name(REAL_FOLDER, "upper") == REAL_FOLDER
    assert safe_name("9" * READABLE_MAX, case) == "9" * READABLE_MAX  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["lower", "upper"])
@pytest.mark.parametrize("identifier", HOSTILE)
def test_hostile_identifiers_become_one_safe_bounded_name(identifier: str, case: str) -> None:
    for suffix in ("", ".zarr", ".json"):
        name = safe_name(identifier, case, suffix)  # type: ignore[arg-type]
        assert _is_safe(name), name
        assert name == safe_name(identifier, case, suffix)  # type: ignore[arg-type]
        assert len(name) <= 81 + len(suffix)


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_names_never_collide_even_where_case_does_not_count(case: str) -> None:
    rng = random.Random(13)
    alphabet = "aAbB.._-/\\\x00é\u0430\uff21 ~123"
    randoms = {"".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3000)}
    groups = [*LOOK_ALIKES, sorted(randoms)]
    for group in groups:
        for suffix in ("", ".zarr"):
            names = [safe_name(i, case, suffix).casefold() for i in group]  # type: ignore[arg-type]
            assert len(set(names)) == len(group), group


def test_store_and_case_paths_of_hostile_identifiers_stay_in_their_folder(tmp_path: Path) -> None:
    for identifier in HOSTILE:
        store = mosmed_store_path(tmp_path, identifier, identifier)
        assert store.parent.parent == tmp_path / "volumes" / "mosmed"
        assert verse_store_path(tmp_path, identifier).parent == tmp_path / "volumes" / "verse"
        for source in ("verse", "mosmed"):
            assert case_result_path(tmp_path, source, identifier).parent == (
                tmp_path / "cases" / source
            )


def test_hostile_series_uids_are_built_inside_the_output_and_kept_in_rows_and_attributes(
    tmp_path: Path,
) -> None:
    root, out = tmp_path / "mosmed", tmp_path / "build" / "out"
    volume = np.arange(16 * 16 * 3, dtype=np.int16).reshape(16, 16, 3)
    uids = ["../../../escape", "/abs/escape", "9" * 300, "1.2.3.", "1.2.3", "1.2.3\u00b7", "A.B"]
    uids += ["a.b"]
    for i, uid in enumerate(uids):
        write_series(root / "dicom" / "rlad..x" / f"s{i}", volume, series_uid=uid)
    params = VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0)
    (study,) = discover_mosmed(root)
    result = build_mosmed_study(study, root, out, params)
    rows = {row["series_uid"]: row for row in result.rows["series"]}
    assert set(rows) == set(uids)
    stores = {row["store_path"] for row in rows.values()}
    assert len(stores) == len(uids)  # look-alikes get stores of their own
    for uid, row in rows.items():
        store = out / row["store_path"]
        assert store.resolve().parent.parent == (out / "volumes" / "mosmed").resolve()
        assert zarr.open_group(store, mode="r").attrs["verse_etl"]["series_uid"] == uid
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"mosmed", "build"}  # nothing beside the output or the sources
    assert sorted(p.name for p in (out / "volumes" / "mosmed").iterdir()) == [
        safe_name("rlad..x", "upper")
    ]
    saved = json.loads(case_result_path(out, "mosmed", "rlad..x").read_text())
    assert saved["case_id"] == "rlad..x"
    rerun = build_mosmed_study(study, root, out, params)  # every store found again
    assert not rerun.converted


def test_prune_refuses_to_delete_through_a_planted_symbolic_link(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    (outside / "x.zarr").mkdir(parents=True)
    (outside / "x.zarr" / "zarr.json").write_text("{}")
    out = tmp_path / "build"
    (out / "volumes" / "mosmed").mkdir(parents=True)
    (out / "volumes" / "mosmed" / "EVIL").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputPathError, match=r"EVIL/x\.zarr: path outside the build root"):
        prune_source(out, "mosmed", [])
    assert (outside / "x.zarr" / "zarr.json").exists()
    remove_path(out / "volumes" / "mosmed" / "EVIL", out)  # the link itself may go
    assert (outside / "x.zarr" / "zarr.json").exists()
    assert not (out / "volumes" / "mosmed" / "EVIL").exists()


def test_a_store_path_through_a_symbolic_link_is_refused_before_writing(tmp_path: Path) -> None:
    outside, out = tmp_path / "elsewhere", tmp_path / "build"
    outside.mkdir()
    (out / "volumes" / "mosmed").mkdir(parents=True)
    (out / "volumes" / "mosmed" / REAL_FOLDER).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputPathError) as raised:
        mosmed_store_path(out, REAL_FOLDER, REAL_UID)
    assert isinstance(raised.value, VerseEtlError) and REAL_UID in str(raised.value)
    with pytest.raises(OutputPathError):
        ensure_inside(out, Path("/etc/passwd"))
    with pytest.raises(OutputPathError):
        ensure_inside(out, out)
    with pytest.raises(OutputPathError):
        remove_path(out / ".." / "elsewhere", out)
    assert outside.exists()


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/abs/x", "..", "a\x00b"])
def test_a_target_refuses_paths_outside_its_root(rel: str) -> None:
    target = Target("memory://verse-etl-paths/build")
    with pytest.raises(OutputPathError, match="outside the build root"):
        target.path(rel)
    with pytest.raises(OutputPathError):
        target.remove(rel)


def test_a_target_never_deletes_its_root() -> None:
    target = Target("memory://verse-etl-paths/build")
    assert target.path("volumes/a/../b.zarr") == "/verse-etl-paths/build/volumes/b.zarr"
    with pytest.raises(OutputPathError, match="build root itself"):
        target.remove("")
