"""`verse-etl fetch` against the loopback mirror: first fetch, resume, digest mismatch, upstream
change, the unpacked annotation releases, the derived mapping, the MosMed manual step."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.http_server import Served, etag_of
from tests.source_standins import mirror_path, new_dvc_project, old_identifiers
from verse_etl.cli import app
from verse_etl.mosmed.images import check_mosmed_images, render_images_report
from verse_etl.sources.catalog import ENTRIES, ID_MAPPING, select_entries
from verse_etl.sources.dvc_imports import dvc_file_of, read_import
from verse_etl.sources.fetch import (
    check_upstream,
    fetch_sources,
    list_sources,
    render_checks,
    render_outcomes,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def mirror(catalog_mirror: Served):
    """The session's mirror, restored after the test (tests change upstream files)."""
    files = dict(catalog_mirror.files)
    catalog_mirror.requests.clear()
    yield catalog_mirror
    catalog_mirror.files.clear()
    catalog_mirror.files.update(files)
    catalog_mirror.cut_after.clear()


def by_name(outcomes) -> dict:
    return {o.name: o for o in outcomes}


@pytest.fixture(scope="module")
def fetched(catalog_mirror: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after one fetch of the whole catalog from the mirror."""
    project = new_dvc_project(tmp_path_factory.mktemp("fetched") / "project")
    outcomes = fetch_sources(project, project / "raw", ENTRIES, catalog_mirror.base_url)
    assert not [o for o in outcomes if o.error], render_outcomes(outcomes)
    return project


def test_first_fetch_pins_every_entry_in_the_layout_the_build_reads(
    fetched: Path, catalog_mirror: Served, catalog_sample: Path
) -> None:
    raw = fetched / "raw"
    for entry in ENTRIES:
        path = raw / entry.dest
        assert path.read_bytes() == catalog_mirror.files[mirror_path(entry)], entry.name
        record = read_import(dvc_file_of(path))
        assert record is not None and record.entry == entry.name
        assert record.url == catalog_mirror.base_url + mirror_path(entry)
        assert record.etag == etag_of(path.read_bytes()) and record.size == path.stat().st_size
        assert record.md5 and record.sha256 and len(record.sha256) == 64
        # DVC's own view: the import is in its cache and the workspace matches it
        assert (
            fetched / ".dvc" / "cache" / "files" / "md5" / record.md5[:2] / record.md5[2:]
        ).is_file()
    assert (raw / "verse" / "dataset-verse19training.zip").stat().st_size > 10_000
    for release, folder in (("annotation", "annotation"), ("annotation_v2", "annotation_v2")):
        unpacked = sorted(p.name for p in (raw / "mosmed" / folder).iterdir())
        assert unpacked == sorted(p.name for p in (catalog_sample / "mosmed" / release).iterdir())
    with open(raw / ID_MAPPING.dest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    current = {p.stem for p in (catalog_sample / "mosmed" / "annotation").glob("*.json")}
    assert {r["folder"] for r in rows} == current
    assert {(r["old_folder"], r["old_series_uid"]) for r in rows} == {
        old_identifiers(i) for i in range(2)
    }


def test_second_fetch_downloads_nothing_and_says_so(fetched: Path, mirror: Served) -> None:
    outcomes = fetch_sources(fetched, fetched / "raw", ENTRIES, mirror.base_url)
    assert {o.action for o in outcomes} == {"present"}, render_outcomes(outcomes)
    assert render_outcomes(outcomes).splitlines()[-1].startswith("nothing to fetch")
    assert mirror.gets() == []  # verified from DVC's state, not downloaded again
    states = list_sources(fetched / "raw")
    assert all(s.present and s.record is not None for s in states)


def test_check_reports_an_upstream_change_without_downloading(
    fetched: Path, mirror: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    grades = next(e for e in ENTRIES if e.name == "verse19-grades")
    mirror.files[mirror_path(grades)] = b"a corrected spreadsheet"
    checks = {c.name: c for c in check_upstream(fetched, fetched / "raw", ENTRIES)}
    assert checks["verse19-grades"].status == "changed"
    assert checks["verse19-grades"].upstream_etag == etag_of(b"a corrected spreadsheet")
    assert {c.status for n, c in checks.items() if n != "verse19-grades"} == {"unchanged"}
    assert "1 upstream change(s)" in render_checks(list(checks.values()))
    monkeypatch.chdir(fetched)  # the command: the change is its exit status
    result = CliRunner().invoke(app, ["fetch", "--check", "verse19"])
    assert result.exit_code == 1 and "verse19-grades: changed" in result.output, result.output
    # nothing was downloaded: the pinned file and its .dvc are as they were
    path = fetched / "raw" / grades.dest
    assert path.read_bytes() != b"a corrected spreadsheet"
    assert read_import(dvc_file_of(path)).etag == etag_of(path.read_bytes())


def test_upstream_change_of_a_pinned_file_is_refused_and_nothing_published(
    fetched: Path, mirror: Served
) -> None:
    entry = next(e for e in ENTRIES if e.name == "verse19-validation")
    path = fetched / "raw" / entry.dest
    pinned = dvc_file_of(path).read_text()
    kept = path.read_bytes()
    path.unlink()
    mirror.files[mirror_path(entry)] = b"PK other bytes under the same name"
    (outcome,) = fetch_sources(fetched, fetched / "raw", (entry,), mirror.base_url)
    assert outcome.action == "failed" and "sha256 mismatch" in outcome.detail
    assert not path.exists() and not list(
        (fetched / "raw" / ".partial").glob("*verse19validation*")
    )
    assert dvc_file_of(path).read_text() == pinned  # the pin still names the first bytes
    path.write_bytes(kept)  # restore the module's project


def test_cut_download_resumes_with_a_range_request(tmp_path: Path, mirror: Served) -> None:
    project = new_dvc_project(tmp_path / "project")
    (entry,) = select_entries(["verse20-training"])
    body = mirror.files[mirror_path(entry)]
    mirror.cut_after[mirror_path(entry)] = len(body) // 3
    (first,) = fetch_sources(project, project / "raw", (entry,), mirror.base_url)
    path = project / "raw" / entry.dest
    assert first.action == "failed" and "interrupted" in first.detail
    assert not path.exists() and not dvc_file_of(path).exists()
    (second,) = fetch_sources(project, project / "raw", (entry,), mirror.base_url)
    assert second.action == "resumed", second.detail
    (range_get,) = [h for p, h in mirror.gets() if p == mirror_path(entry) and "Range" in h]
    assert range_get["Range"] == f"bytes={len(body) // 3}-" and range_get["If-Range"] == etag_of(
        body
    )
    assert path.read_bytes() == body and read_import(dvc_file_of(path)).md5


def test_resume_after_an_upstream_change_starts_again(tmp_path: Path, mirror: Served) -> None:
    project = new_dvc_project(tmp_path / "project")
    (entry,) = select_entries(["verse19-test"])
    mirror.cut_after[mirror_path(entry)] = 100
    fetch_sources(project, project / "raw", (entry,), mirror.base_url)
    new = mirror.files[mirror_path(entry)] + b"appended upstream"
    mirror.files[mirror_path(entry)] = new
    (outcome,) = fetch_sources(project, project / "raw", (entry,), mirror.base_url)
    assert outcome.action == "fetched"  # If-Range did not match: the whole new file came
    assert (project / "raw" / entry.dest).read_bytes() == new


def test_unknown_source_name_is_refused() -> None:
    from verse_etl.errors import ParamsError

    with pytest.raises(ParamsError, match=r"unknown source\(s\) \['verse21'\]"):
        select_entries(["verse21"])
    assert {e.group for e in select_entries(["verse19", "mosmed-annotations"])} == {
        "verse19",
        "mosmed-annotations",
    }


def test_mosmed_images_check_lists_what_is_missing(fetched: Path, catalog_sample: Path) -> None:
    mosmed = fetched / "raw" / "mosmed"
    report = check_mosmed_images(mosmed)
    assert report.missing and not report.complete
    studies = sorted((catalog_sample / "mosmed" / "dicom").iterdir())
    shutil.copytree(studies[0], mosmed / "dicom" / studies[0].name)
    placed = mosmed / "dicom" / studies[1].name
    shutil.copytree(studies[1], placed)
    for extra in sorted(p for p in placed.rglob("*") if p.is_file())[:-20]:
        extra.unlink()  # an incomplete copy: 20 files left
    report = check_mosmed_images(mosmed)
    text = render_images_report(report)
    assert report.missing == () and not report.complete
    bad = next(s for s in report.studies if s.folder == studies[1].name)
    assert bad.files == 20 and "fewer than the" in bad.problems[0], text
    good = next(s for s in report.studies if s.folder == studies[0].name)
    assert good.ok and good.dicom_files == good.files >= good.min_slices > 0
    shutil.rmtree(placed)
    shutil.copytree(studies[1], placed)
    assert check_mosmed_images(mosmed).complete
    shutil.rmtree(mosmed / "dicom")
    # linked instead of placed: DVC would not hash the images, so it is not complete
    (mosmed / "dicom").symlink_to(catalog_sample / "mosmed" / "dicom")
    linked = check_mosmed_images(mosmed)
    assert linked.missing == () and not linked.complete
    assert "symbolic link" in render_images_report(linked)
    (mosmed / "dicom").unlink()


def test_an_unreachable_source_fails_alone_and_names_the_published_copies(
    tmp_path: Path, mirror: Served
) -> None:
    project = new_dvc_project(tmp_path / "project")
    entries = select_entries(["verse19-training", "verse20-test"])
    del mirror.files[mirror_path(entries[0])]  # the publisher's link is dead
    first, second = fetch_sources(project, project / "raw", entries, mirror.base_url)
    assert first.action == "failed" and "HTTP 404" in first.detail
    assert "other published copies: https://osf.io/nqjyw/" in first.detail
    assert second.action == "fetched" and (project / "raw" / entries[1].dest).is_file()
    assert not (project / "raw" / entries[0].dest).exists()


def test_a_sha256_counts_only_for_the_bytes_it_was_computed_on(fetched: Path) -> None:
    path = fetched / "raw" / "verse" / "ryai190138_appendixe1.xlsx"
    record = read_import(dvc_file_of(path))
    assert record.sha256 is not None
    # what `dvc update` leaves: a new output md5 under the old meta
    stage = yaml.safe_load(dvc_file_of(path).read_text())
    stage["outs"][0]["md5"] = "0" * 32
    other = path.with_name("other.xlsx.dvc")
    other.write_text(yaml.safe_dump(stage))
    assert read_import(other).sha256 is None and read_import(other).md5 == "0" * 32
    other.unlink()


def test_a_file_downloaded_by_hand_is_adopted_if_its_size_matches_upstream(
    tmp_path: Path, mirror: Served
) -> None:
    project = new_dvc_project(tmp_path / "project")
    good, bad = select_entries(["verse20-validation", "verse20-test"])
    for entry, body in ((good, mirror.files[mirror_path(good)]), (bad, b"truncated")):
        (project / "raw" / entry.dest).parent.mkdir(parents=True, exist_ok=True)
        (project / "raw" / entry.dest).write_bytes(body)
    adopted, refused = fetch_sources(project, project / "raw", (good, bad), mirror.base_url)
    assert adopted.action == "adopted", adopted.detail
    record = read_import(dvc_file_of(project / "raw" / good.dest))
    assert record.etag == etag_of(mirror.files[mirror_path(good)]) and record.sha256
    assert refused.action == "failed" and "upstream size" in refused.detail
    assert not dvc_file_of(project / "raw" / bad.dest).exists()  # nothing half-pinned
