"""The dataset card: what a build holds, where it comes from, and the obligations it carries.

Written beside the tables by every build (``tables/DATASET_CARD.md``), deterministic (no clock),
so that a released dataset carries its sources, licences and required citations with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from verse_etl import __version__
from verse_etl.cases.hashing import code_identity
from verse_etl.cases.records import write_text_atomic
from verse_etl.params import BuildParams
from verse_etl.paths import TABLES_DIR, table_dir
from verse_etl.schemas import TABLES
from verse_etl.tables.parquet import read_table

CARD_NAME = "DATASET_CARD.md"


@dataclass(frozen=True)
class SourceInfo:
    """A source dataset and what using it obliges the user to do."""

    name: str
    licence: str
    url: str
    citations: tuple[str, ...]


VERSE = SourceInfo(
    name="VerSe'19 and VerSe'20 (subject-based releases)",
    licence="CC BY-SA 4.0",
    url="https://github.com/anjany/verse",
    citations=(
        "Sekuboyina A. et al. VerSe: A Vertebrae labelling and segmentation benchmark for "
        "multi-detector CT images. Medical Image Analysis 73 (2021) 102166.",
        "Löffler M.T. et al. A Vertebral Segmentation Dataset with Fracture Grading. "
        "Radiology: Artificial Intelligence 2(4) (2020) e190138.",
        "Liebl H. et al. A computed tomography vertebral segmentation dataset with anatomical "
        "variations and multi-vendor scanner data. Scientific Data 8 (2021) 284.",
    ),
)
MOSMED_CT = SourceInfo(
    name="MosMed CTLungCa-500 (chest CT)",
    licence="as stated by mosmed.ai: share and adapt with attribution",
    url="https://mosmed.ai/en/data-sets/ct_lungcancer_500/",
    citations=(
        "Morozov S.P., Kulberg N.S., Gombolevskiy V.A., Ledikhova N.A., Sokolina I.A., "
        "Vladzimirskiy A.V., Bardin A.S. MosMedData CTLungCa-500. Database registration "
        "RU 2018620500.",
    ),
)
MOSMED_FRACTURES = SourceInfo(
    name="MosMed vertebral-fracture keypoint annotation",
    licence="CC BY-NC 4.0 (non-commercial use only)",
    url="https://github.com/neuro-ml/vertebral-fractures-severity",
    citations=(
        "Pisov M. et al. Keypoints Localization for Joint Vertebra Detection and Fracture "
        "Severity Quantification. MICCAI 2020 (arXiv:2005.11960).",
        "Zakharov A., Pisov M. et al. Interpretable vertebral fracture quantification via "
        "anchor-free landmarks localization. Medical Image Analysis 83 (2023) 102646 "
        "(labelled release, arXiv:2204.06818).",
    ),
)

_PACKAGES = ("nibabel", "pydicom", "zarr", "pyarrow", "pandera", "prefect", "dvc", "isal")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def render_card(tables: dict[str, pd.DataFrame], params: BuildParams) -> str:
    """The card for a build whose validated tables are ``tables``."""
    scans = tables.get("scans", pd.DataFrame())
    series = tables.get("series", pd.DataFrame())
    keypoints = tables.get("mosmed_vertebrae", pd.DataFrame())
    quarantine = tables.get("quarantine", pd.DataFrame())
    used = []
    if not scans.empty:
        used.append(VERSE)
    if not series.empty:
        used.append(MOSMED_CT)
    if not keypoints.empty:
        used.append(MOSMED_FRACTURES)
    lines = [
        "# Dataset card: verse-etl build",
        "",
        "Spine CT from public datasets as one validated dataset: CT volumes and vertebra label",
        "images as Zarr v3 stores, metadata as Parquet tables (see the data dictionary).",
        "",
        "## Contents",
        "",
        "| table | rows |",
        "|---|---:|",
        *[f"| {name} | {len(df)} |" for name, df in tables.items()],
        "",
    ]
    if not scans.empty:
        lines += [
            "VerSe scans by release and split:",
            "",
            "| release | split | scans | patients |",
            "|---|---|---:|---:|",
        ]
        grouped = scans.groupby(["release", "split"]).agg(
            scans=("scan_id", "size"), patients=("patient_id", "nunique")
        )
        lines += [
            f"| {r} | {s} | {row.scans} | {row.patients} |" for (r, s), row in grouped.iterrows()
        ]
        lines.append("")
    if not keypoints.empty:
        lines.append(
            f"MosMed keypoints: {keypoints['folder'].nunique()} studies, "
            f"{keypoints['expert'].nunique()} experts, {len(keypoints)} annotated vertebrae."
        )
        lines.append("")
    lines += [
        f"Quarantined records: {len(quarantine)} (see the `quarantine` table for file, check and reason).",
        "",
    ]
    lines += ["## Sources, licences and required citations", ""]
    if not used:
        lines.append("No source data in this build.")
    for source in used:
        lines += [
            f"### {source.name}",
            "",
            f"- Licence: {source.licence}",
            f"- Source: {source.url}",
            "- Cite:",
        ]
        lines += [f"  - {citation}" for citation in source.citations]
        lines.append("")
    if any(s is MOSMED_FRACTURES for s in used):
        lines += [
            "The fracture annotation's CC BY-NC 4.0 licence applies to every table derived from it",
            "(`mosmed_vertebrae` and what is computed from it): no commercial use.",
            "",
        ]
    lines += [
        "## How it was built",
        "",
        f"- verse-etl {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in _PACKAGES),
        f"- Source roots: VerSe `{params.sources.verse or '-'}`, MosMed `{params.sources.mosmed or '-'}`",
        f"- Volumes: chunks {list(params.volumes.chunks)}, shard chunks {list(params.volumes.shard_chunks)}, "
        f"Blosc {params.volumes.codec} level {params.volumes.level}",
        f"- Checks: default mode `{params.checks.default}`, per check {dict(params.checks.modes) or '{}'}",
        "",
    ]
    return "\n".join(lines)


def card_path(out: Path) -> Path:
    """Where the card of the build at ``out`` is written."""
    return out / TABLES_DIR / CARD_NAME


def card_inputs(params: BuildParams) -> dict[str, Any]:
    """What the card holds beyond the tables (its code, versions and parameters): with the
    tables' own inputs, the key of unchanged tables and card
    (:mod:`verse_etl.tables.freshness`)."""
    import verse_etl

    root = Path(verse_etl.__file__).resolve().parent.parent
    return {
        "code": code_identity(root, (__name__,)),
        "verse_etl": __version__,
        "versions": {p: _version(p) for p in _PACKAGES},
        "sources": [params.sources.verse, params.sources.mosmed],
        "volumes": asdict(params.volumes),
        "checks": asdict(params.checks),
    }


def write_card(out: Path, params: BuildParams) -> Path:
    """Render the card from the tables on disk and write it atomically; return its path."""
    tables = {
        name: read_table(out, name).to_pandas() for name in TABLES if table_dir(out, name).is_dir()
    }
    path = card_path(out)
    write_text_atomic(path, render_card(tables, params))
    return path
