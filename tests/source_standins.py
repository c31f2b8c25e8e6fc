"""Small stand-ins for every entry of the source catalog, made from the synthetic sample, served
by the loopback server under the mirror layout ``/<host>/<path>`` (see ``resolve_url``)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from verse_etl.sources.catalog import ENTRIES, V1_COMMIT, V1_FIRST_COMMIT, V2_COMMIT, SourceEntry

_STAMP = (2020, 12, 7, 0, 0, 0)
_VERSE20_NUMBER = {"training": "01", "validation": "02", "test": "03"}


def mirror_path(entry: SourceEntry) -> str:
    """The path of an entry's stand-in on the loopback mirror."""
    parts = urlsplit(entry.url)
    return f"/{parts.netloc}{parts.path}"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(zipfile.ZipInfo(name, _STAMP), data)
    return buffer.getvalue()


def _folder_members(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder.parent).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def old_identifiers(i: int) -> tuple[str, str]:
    """The older dataset release's Folder and SeriesInstanceUID given to sample study ``i``."""
    return (
        f"RLAD31D006-1186{i}_RLS5A09001KDC6-N0000906{i}",
        f"1.2.276.0.7230010.3.1.3.1417964692.10880.1568750017.34705{i}",
    )


def standin_files(sample: Path) -> dict[str, bytes]:
    """Mirror path -> bytes for every catalog entry, from a sample written by ``write_sample``."""
    verse, mosmed = sample / "verse", sample / "mosmed"
    v1 = {p.name: p.read_bytes() for p in sorted((mosmed / "annotation").glob("*.json"))}
    v2 = {p.name: p.read_bytes() for p in sorted((mosmed / "annotation_v2").glob("*.json"))}
    first = {}
    for i, data in enumerate(v1.values()):
        doc = json.loads(data)
        doc["Folder"], doc["SeriesInstanceUID"] = old_identifiers(i)
        first[f"{doc['Folder']}.json"] = json.dumps(doc, indent=2).encode()
    archives = {
        V1_COMMIT: ("vertebral-fractures-severity", v1),
        V2_COMMIT: ("anchor-free-genant", v2),
        V1_FIRST_COMMIT: ("vertebral-fractures-severity", first),
    }
    files: dict[str, bytes] = {}
    for entry in ENTRIES:
        if entry.dest.endswith(".xlsx"):
            body = (verse / Path(entry.dest).name).read_bytes()
        elif entry.group.startswith("verse"):
            name = Path(entry.dest).name.removesuffix(".zip")
            # VerSe'20 zips are rooted at dataset-01training/ etc. (VERSE.md §1)
            split = name.removeprefix("dataset-verse19").removeprefix("dataset-verse20")
            top = name if "verse19" in name else f"dataset-{_VERSE20_NUMBER[split]}{split}"
            if (verse / top).is_dir():
                body = _zip(_folder_members(verse / top))
            else:  # the sample has training scans only: an empty release of the same shape
                body = _zip({f"{top}/README.txt": f"stand-in for {entry.name}\n".encode()})
        else:
            commit = entry.url.rsplit("/", 1)[1].removesuffix(".zip")
            repo, annotation = archives[commit]
            top = f"{repo}-{commit}"
            body = _zip(
                {f"{top}/README.md": b"stand-in\n"}
                | {f"{top}/annotation/{n}": d for n, d in annotation.items()}
            )
        files[mirror_path(entry)] = body
    return files


def new_dvc_project(path: Path) -> Path:
    """An empty git + DVC project with the real project's ignore files (DVC initialised in
    process: a `dvc init` subprocess costs a second or two)."""
    from dvc.repo import Repo

    root = Path(__file__).resolve().parents[1]
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(root / name, path / name)
    Repo.init(str(path)).close()
    return path
