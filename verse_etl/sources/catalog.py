"""The catalog of public source releases `verse-etl fetch` knows: where each file comes from and
where it goes in the layout the build reads.

Addresses, commits and file names were read from the publishers' own pages and repositories
(``shared/specs/VERSE.md`` and ``MOSMED.md`` list them with their sources):

- VerSe subject-based release zips: anjany/verse ``README.md`` ("Download" / "WGET"), the six
  ``dataset-verse{19,20}{training,validation,test}.zip`` on ``s3.bonescreen.de``; OSF projects as
  listed there. Reported dead since ~2024 (anjany/verse issues #5, #17): a mirror with the same
  paths works through ``base_url``.
- VerSe'19 fracture grades: Löffler et al. 2020, Radiology: AI (doi 10.1148/ryai.2020190138),
  supplement ``ryai190138_appendixe1.xlsx``. The address below follows the journal's supplement
  URL scheme; it was not found in any stored page, so it is marked unverified.
- MosMed vertebral-fracture keypoints: neuro-ml/vertebral-fractures-severity at 5120fcb (v1,
  current identifiers) and at a3bdd0d (its first commit, the older dataset release's
  identifiers), neuro-ml/anchor-free-genant at 50eee55 (v2), as GitHub source archives.
- The identifier mapping CSV (older Folder/SeriesInstanceUID -> current) is not published as a
  file: it is derived on fetch from the two v1 commits, whose keypoints are identical
  (MOSMED.md §1.4), and checked to pair every file one to one.
- MosMed CTLungCa-500 images: behind the publisher's form; a manual step (:data:`MOSMED_IMAGES`).

Sizes and digests are not published by any of these hosts. Where a value is ``None`` it is
recorded on the first fetch (in the DVC import file) and verified on every later one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from verse_etl.errors import ParamsError

VERSE_HOST = "https://s3.bonescreen.de/public/VerSe-complete"


@dataclass(frozen=True)
class Unpack:
    """Members ``<top folder>/<member_dir>/*.json`` of a source archive, written to ``dest``."""

    member_dir: str
    dest: str  # relative to the fetch root


@dataclass(frozen=True)
class SourceEntry:
    """One public source file: its address, its place under the fetch root, what is known of it.

    ``dest`` is relative to the fetch root (``params.yaml: fetch.root``): ``verse/...`` is the
    VerSe source root, ``mosmed/...`` the MosMed one, ``archives/...`` holds archives the build
    does not read (their members are unpacked, see ``unpack``).
    """

    name: str
    group: str
    url: str
    dest: str
    description: str
    licence: str
    size: int | None = None  # bytes; None: not published, recorded on first fetch
    sha256: str | None = None  # None: not published, recorded on first fetch
    url_verified: bool = True  # False: the address was not found in a stored source
    mirrors: tuple[str, ...] = ()  # other published copies (not fetched automatically)
    unpack: Unpack | None = None
    note: str = ""


@dataclass(frozen=True)
class DerivedFile:
    """A file written by `fetch` from catalog entries (no published copy exists)."""

    name: str
    group: str
    dest: str
    inputs: tuple[str, ...]  # entry names, in the order the derivation takes them
    description: str


@dataclass(frozen=True)
class ManualStep:
    """A source the user has to download by hand (behind a form); `fetch` checks what is placed."""

    name: str
    group: str
    url: str
    dest: str
    description: str
    licence: str


_VERSE_LICENCE = "CC BY-SA 4.0 (cite Sekuboyina 2021, Löffler 2020, Liebl 2021)"
_MOSMED_LICENCE = "CC BY-NC 4.0"
_OSF_VERSE19 = ("https://osf.io/nqjyw/ (VerSe'19 project)", "https://osf.io/jtfa5/ (subject-based)")
_OSF_VERSE20_ZIP = "https://files.de-1.osf.io/v1/resources/4skx2/providers/osfstorage/{}/?zip="
_OSF_VERSE20_FOLDERS = {
    "training": "5ffa463786541a01e714d390",
    "validation": "5ffa463686541a01eb15048c",
    "test": "5ffa4635ba010901f0891bd0",
}
_VERSE20_NUMBER = {"training": 1, "validation": 2, "test": 3}
_OSF_NOTE = (
    "the s3 links are reported dead since 2024-05 (anjany/verse#17, open); the OSF copies are "
    "folder zips generated per request (bytes not stable), rooted at rawdata/ and derivatives/: "
    "saved under this entry's file name the build reads them (release and split from the zip "
    "name); pin such a file with `dvc add`"
)


def _verse(release: str, split: str) -> SourceEntry:
    year = release[-2:]
    folder = f"dataset-{release}{split}"
    # VerSe'20 zips are rooted at dataset-01training/, -02validation/, -03test/ (VERSE.md §1).
    top = folder if year == "19" else f"dataset-0{_VERSE20_NUMBER[split]}{split}"
    mirrors: tuple[str, ...]
    if year == "19":
        mirrors = _OSF_VERSE19
    else:
        mirrors = (
            "https://osf.io/t98fz/ (VerSe'20 project)",
            _OSF_VERSE20_ZIP.format(_OSF_VERSE20_FOLDERS[split]) + " (subject-based folder)",
        )
    return SourceEntry(
        name=f"{release}-{split}",
        group=release,
        url=f"{VERSE_HOST}/{folder}.zip",
        dest=f"verse/{folder}.zip",
        description=f"VerSe'{year} subject-based {split} release (zip rooted at {top}/; read in place)",
        licence=_VERSE_LICENCE,
        mirrors=mirrors,
        note=_OSF_NOTE,
    )


def _github_archive(repo: str, commit: str) -> str:
    # GitHub's documented source-archive address for a commit ("Downloading source code
    # archives"); it redirects to codeload.github.com. The zip's top folder is <repo>-<commit>/.
    return f"https://github.com/{repo}/archive/{commit}.zip"


V1_COMMIT = "5120fcb2592e808b95218c13cd0598f40fa90066"
V1_FIRST_COMMIT = "a3bdd0deafad7e10b5cd0f1e193d553e4f0d07a9"
V2_COMMIT = "50eee55126b21f3ab4e6898aec1326d0e1e9899e"

ENTRIES: tuple[SourceEntry, ...] = (
    *(_verse("verse19", s) for s in ("training", "validation", "test")),
    SourceEntry(
        name="verse19-grades",
        group="verse19",
        url="https://pubs.rsna.org/doi/suppl/10.1148/ryai.2020190138/suppl_file/ryai190138_appendixe1.xlsx",
        dest="verse/ryai190138_appendixe1.xlsx",
        description="VerSe'19 fracture grades and shapes per vertebra (Löffler 2020, appendix E1)",
        licence="Radiology: Artificial Intelligence supplement (cite Löffler 2020)",
        url_verified=False,
        note="address built from the journal's supplement URL scheme; not found in a stored page",
    ),
    *(_verse("verse20", s) for s in ("training", "validation", "test")),
    SourceEntry(
        name="mosmed-annotation-v1",
        group="mosmed-annotations",
        url=_github_archive("neuro-ml/vertebral-fractures-severity", V1_COMMIT),
        dest=f"archives/vertebral-fractures-severity-{V1_COMMIT[:7]}.zip",
        description="MosMed keypoints v1 (Pisov 2020), 100 studies, current identifiers",
        licence=_MOSMED_LICENCE,
        unpack=Unpack("annotation", "mosmed/annotation"),
    ),
    SourceEntry(
        name="mosmed-annotation-v2",
        group="mosmed-annotations",
        url=_github_archive("neuro-ml/anchor-free-genant", V2_COMMIT),
        dest=f"archives/anchor-free-genant-{V2_COMMIT[:7]}.zip",
        description="MosMed keypoints v2 (Zakharov 2023), labelled, same 100 studies",
        licence=_MOSMED_LICENCE,
        unpack=Unpack("annotation", "mosmed/annotation_v2"),
    ),
    SourceEntry(
        name="mosmed-annotation-v1-2020",
        group="mosmed-annotations",
        url=_github_archive("neuro-ml/vertebral-fractures-severity", V1_FIRST_COMMIT),
        dest=f"archives/vertebral-fractures-severity-{V1_FIRST_COMMIT[:7]}.zip",
        description="MosMed keypoints v1 as first published, with the older dataset release's "
        "identifiers (input of the identifier mapping; not read by the build)",
        licence=_MOSMED_LICENCE,
    ),
)

ID_MAPPING = DerivedFile(
    name="mosmed-id-mapping",
    group="mosmed-annotations",
    dest="mosmed/folder_uid_mapping_v1_to_v2.csv",
    inputs=("mosmed-annotation-v1-2020", "mosmed-annotation-v1"),
    description="older -> current Folder and SeriesInstanceUID (params.yaml: mosmed.id_mapping), "
    "paired by identical keypoints",
)

MOSMED_IMAGES = ManualStep(
    name="mosmed-images",
    group="mosmed-images",
    url="https://mosmed.ai/en/datasets/ct_lungcancer_500/",
    dest="mosmed/dicom",
    description="MosMed CTLungCa-500 chest CT studies (DICOM), distributed behind the "
    "publisher's request form: place <Folder>/ (or <Folder>.tar.gz) per study here",
    licence="mosmed.ai terms (cite Morozov et al., RU 2018620500)",
)

GROUPS: tuple[str, ...] = ("verse19", "verse20", "mosmed-annotations")


def entry_names() -> tuple[str, ...]:
    """Every name `fetch` accepts: groups, then entries."""
    return (*GROUPS, *(e.name for e in ENTRIES))


def select_entries(
    names: Sequence[str], entries: Iterable[SourceEntry] = ENTRIES
) -> tuple[SourceEntry, ...]:
    """The entries named (by group or entry name), in catalog order; all of them if none named.

    Raises
    ------
    ParamsError
        If a name is neither a group nor an entry.
    """
    entries = tuple(entries)
    if not names or "all" in names:
        return entries
    known = {*GROUPS, *(e.name for e in entries)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ParamsError(
            f"fetch: unknown source(s) {unknown} (expected some of all, {', '.join(sorted(known))}); "
            "see `verse-etl fetch --list`"
        )
    return tuple(e for e in entries if e.group in names or e.name in names)


def resolve_url(url: str, base_url: str = "") -> str:
    """The address to fetch ``url`` from: itself, or its host and path below a mirror.

    A mirror keeps every publisher's host and path (``<base_url>/<host>/<path>``), so one base
    URL serves every entry of the catalog.

    Examples
    --------
    >>> resolve_url("https://s3.bonescreen.de/public/a.zip", "http://127.0.0.1:8000/m/")
    'http://127.0.0.1:8000/m/s3.bonescreen.de/public/a.zip'
    >>> resolve_url("https://s3.bonescreen.de/public/a.zip")
    'https://s3.bonescreen.de/public/a.zip'
    """
    if not base_url:
        return url
    parts = urlsplit(url)
    return f"{base_url.rstrip('/')}/{parts.netloc}{parts.path}"
