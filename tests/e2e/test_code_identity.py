"""The code that builds a case is part of its cache key: a changed reader rebuilds the cases it
reads, an unchanged code tree (wherever it lies) reuses them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.dvc_project import ROOT
from verse_etl.cases.hashing import code_identity
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.params import VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.sources.verse import discover_verse
from verse_etl.verse.case import build_verse_scan

PARAMS = VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0)

# What a worker does with each case, run by the Python of this venv on the package at
# PYTHONPATH (a copy of verse_etl, changed or not); prints which cases were built.
BUILD = """
import json, sys
from pathlib import Path
import verse_etl
from verse_etl.mosmed.case import build_mosmed_study
from verse_etl.verse.case import build_verse_scan
from verse_etl.params import VolumeParams
from verse_etl.sources.mosmed import discover_mosmed
from verse_etl.sources.verse import discover_verse

src, out = Path(sys.argv[1]), Path(sys.argv[2])
params = VolumeParams(chunks=(16, 16, 16), shard_chunks=(1, 1, 1), pyramid_levels=0)
passes = []
for _ in range(2):  # the second pass finds what the first one built with this code
    built = {s.scan_id: build_verse_scan(s, src / "verse", out, params).converted
             for s in discover_verse(src / "verse")}
    built |= {s.folder: build_mosmed_study(s, src / "mosmed", out, params).converted
              for s in discover_mosmed(src / "mosmed")}
    passes.append(built)
print(json.dumps({"package": verse_etl.__file__, "passes": passes}))
"""


def _copy_package(dest: Path) -> Path:
    """The package as a wheel installs it: schemas/ and flows/ inside verse_etl/."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "verse_etl", dest / "verse_etl", ignore=ignore)
    for folder in ("schemas", "flows"):
        shutil.copytree(ROOT / folder, dest / "verse_etl" / folder, ignore=ignore)
    return dest


def _build_twice_with(code: Path, src: Path, out: Path) -> list[dict[str, bool]]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(src), str(out)],
        cwd=code,  # not the project: its verse_etl would come first on sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(code.resolve())  # the copy ran
    return report["passes"]


def test_a_changed_nifti_reader_rebuilds_the_verse_cases_and_only_them(tmp_path: Path) -> None:
    from verse_etl_sample import write_sample

    src, out = tmp_path / "src", tmp_path / "out"
    manifest = write_sample(src, seed=2, verse_cases=4, mosmed_studies=1, size="tiny")

    def build() -> dict[str, bool]:
        built = {
            s.scan_id: build_verse_scan(s, src / "verse", out, PARAMS).converted
            for s in discover_verse(src / "verse")
        }
        return built | {
            s.folder: build_mosmed_study(s, src / "mosmed", out, PARAMS).converted
            for s in discover_mosmed(src / "mosmed")
        }

    first = build()
    assert all(first.values()) and len(first) == len(manifest.verse) + len(manifest.mosmed)
    assert not any(build().values())  # the same code: everything is reused

    # A fix in the NIfTI reader: every VerSe scan is built again, the MosMed study (which does
    # not read NIfTI) is not.
    code = _copy_package(tmp_path / "code")
    nifti = code / "verse_etl" / "io" / "nifti.py"
    text = nifti.read_text()
    fixed = text.replace(
        "def read_nifti_info(",
        "def read_nifti_info(*args, **kwargs):  # fixed\n"
        "    return _read_nifti_info(*args, **kwargs)\n\n\n"
        "def _read_nifti_info(",
        1,
    )
    assert fixed != text
    nifti.write_text(fixed)
    rebuilt, again = _build_twice_with(code, src, out)
    assert {k for k, v in rebuilt.items() if v} == {s.scan_id for s in manifest.verse}
    assert not any(again.values())  # once built by the fixed code, reused by it


def test_code_identity_follows_the_modules_a_case_imports(tmp_path: Path) -> None:
    code = _copy_package(tmp_path)
    verse, mosmed = ("verse_etl.verse.case",), ("verse_etl.mosmed.case",)
    before = {e: code_identity(code, e) for e in (verse, mosmed)}
    assert before == {e: code_identity(ROOT, e) for e in (verse, mosmed)}  # location-free
    code_identity.cache_clear()
    (code / "verse_etl" / "report" / "page.py").write_text("# not imported by any case builder\n")
    assert {e: code_identity(code, e) for e in (verse, mosmed)} == before
    code_identity.cache_clear()
    dicom = code / "verse_etl" / "io" / "dicom.py"
    dicom.write_text(dicom.read_text() + "\n# a change\n")
    assert code_identity(code, verse) == before[verse]
    assert code_identity(code, mosmed) != before[mosmed]
    code_identity.cache_clear()
