"""The build report: one static HTML page with counts, distributions, quarantine and QC pictures.

Everything is inline or beside the page (``report/index.html``, ``report/qc/*.png``, each
picture's placements ``*.json`` and the key of what it was drawn from ``*.key``, so that a
rerun draws only the pictures whose inputs changed), so the
folder can be opened from disk, published, or pulled with DVC. Charts are inline SVG (no script,
no network). Deterministic for the same build.
"""

from __future__ import annotations

import contextvars
import hashlib
import html
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from verse_etl.cases.hashing import code_identity, fingerprint
from verse_etl.cases.records import write_text_atomic
from verse_etl.paths import REPORT_DIR, ensure_inside, safe_name
from verse_etl.read.catalog import connect
from verse_etl.report.qc import mosmed_picture, verse_picture
from verse_etl.tables.freshness import record_report

logger = logging.getLogger(__name__)


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    # Rows only: the views' descriptions (a COMMENT per column, from each contract's schema)
    # are for SQL clients, not for the report.
    con = connect(out, comments=False)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
            ).fetchall()
        ]
        return {name: con.execute(f"SELECT * FROM {name}").df() for name in names}
    finally:
        con.close()


def bar_chart(title: str, counts: Sequence[tuple[str, float]], unit: str = "") -> str:
    """A horizontal SVG bar chart of ``(label, value)`` pairs."""
    if not counts:
        return f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption><p>no data</p></figure>'
    top = max(v for _, v in counts) or 1
    row, width, label_w = 18, 320, 130
    bars = []
    for n, (label, value) in enumerate(counts):
        w = width * value / top
        y = n * row
        shown = f"{value:g}{unit}"
        bars.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(str(label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" class="bar"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{shown}</text>'
        )
    height = row * len(counts) + 4
    return (
        f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>'
        f'<svg width="{label_w + width + 70}" height="{height}" role="img" aria-label="{html.escape(title)}">'
        + "".join(bars)
        + "</svg></figure>"
    )


def histogram(title: str, values: Sequence[float], bins: int = 8, unit: str = "") -> str:
    """A bar chart of ``values`` binned into ``bins`` equal ranges."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return bar_chart(title, [])
    counts, edges = np.histogram(values, bins=min(bins, max(1, len(set(values)))))
    labels = [f"{_num(edges[i])}–{_num(edges[i + 1])}{unit}" for i in range(len(counts))]
    return bar_chart(title, list(zip(labels, (int(c) for c in counts), strict=True)))


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _counts(series: pd.Series, order: Sequence[object] | None = None) -> list[tuple[str, float]]:
    counts = series.dropna().value_counts()
    keys = [k for k in order if k in counts.index] if order is not None else sorted(counts.index)
    return [(str(k), int(counts[k])) for k in keys]


def _table_html(df: pd.DataFrame, columns: Sequence[str], css: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in df[list(columns)].itertuples(index=False)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


@dataclass(frozen=True)
class QcPicture:
    """One case's QC picture in the report: the case it shows and where its files are."""

    case_id: str
    caption: str
    src: str  # the PNG, relative to the report page ("" when it could not be drawn)
    placements: str  # its JSON sidecar (panels, where every level name is drawn)
    error: str = ""  # why the picture could not be drawn


def _anchor(case_id: str) -> str:
    """The HTML id of a case's figure (ids are ASCII letters, digits and ``-_.``)."""
    return "qc-" + re.sub(r"[^A-Za-z0-9_.-]", "-", case_id)


def _draw(case_id: str, caption: str, png: Path, draw: Callable[[], object], key: str) -> QcPicture:
    """Draw one case's picture, unless the one there was drawn from the same inputs (``key``:
    :func:`picture_key`); a case whose picture fails is shown with the reason instead, and the
    other cases are drawn (one broken store must not take the report down)."""
    done = QcPicture(case_id, caption, f"qc/{png.name}", f"qc/{png.stem}.json")
    key_file = png.with_suffix(".key")
    try:
        same = key_file.read_text(encoding="utf-8").strip() == key
    except OSError:
        same = False
    if same and png.is_file() and png.with_suffix(".json").is_file():
        return done
    # The key goes first and comes back last: a picture interrupted half-way is drawn again.
    key_file.unlink(missing_ok=True)
    try:
        draw()
    except Exception as error:  # shown on the page and logged, not dropped
        logger.warning("%s: QC picture not drawn: %s", case_id, error)
        return QcPicture(case_id, caption, "", "", f"{type(error).__name__}: {error}")
    write_text_atomic(key_file, key + "\n")
    return done


class _RowDigests:
    """sha256 of chosen rows of one table: their exact values, types and column names (Arrow
    IPC bytes). The table is made Arrow once; converting each picture's few rows on their own
    cost ~2.5 ms a table a picture, paid for every picture at every build (~2.5 s with the
    full release's ~470 pictures) to find the one to draw again."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._table = pa.Table.from_pandas(frame, preserve_index=False)

    def of(self, rows: Sequence[int] | np.ndarray) -> str:
        """Digest of the rows at these positions, in this order."""
        part = self._table.take(pa.array(rows, type=pa.int64()))
        # Typed as if these rows had been made Arrow on their own: a column with no value in
        # them is null-typed, and the table's pandas metadata is left out. Both come from the
        # other cases' values, and one case gaining a value must not redraw every picture.
        part = pa.Table.from_arrays(
            [pa.nulls(len(part)) if c.null_count == len(part) else c for c in part.columns],
            names=part.column_names,
        )
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _positions(frame: pd.DataFrame, column: str) -> dict[object, np.ndarray]:
    """Row positions of each value of ``column``, in row order (one pass, not one per case)."""
    return {
        key: np.asarray(rows) for key, rows in frame.groupby(column, sort=False).indices.items()
    }


_NO_ROWS = np.empty(0, dtype=np.int64)


def picture_key(kind: str, case: str, rows: str, caption: str) -> str:
    """What a QC picture is drawn from: the code that draws it (:mod:`verse_etl.report.qc` and what it
    imports, Pillow's bundled font included by its version), the digest of the case's table row
    (store path and the voxel digests of the store: ``ct_voxel_xxh3``, ``mask_voxel_xxh3``,
    ``voxel_xxh3``; the affine), that of the rows drawn on it (vertebrae or keypoints;
    :class:`_RowDigests`) and the caption. A picture whose key is unchanged is not drawn
    again."""
    import verse_etl

    code = code_identity(Path(verse_etl.__file__).resolve().parent.parent, ("verse_etl.report.qc",))
    return fingerprint(code, kind, case, rows, caption)


def picture_workers() -> int:
    """Pictures drawn at a time: the cores this process may use, at most
    :data:`MAX_PICTURE_WORKERS`."""
    return max(1, min(MAX_PICTURE_WORKERS, len(os.sched_getaffinity(0))))


MAX_PICTURE_WORKERS = 4
"""Each picture holds at most ``qc.SLAB_BYTES`` of voxels plus its panels (tens of MB), so the
report's memory stays bounded whatever the number of cores."""


def write_pictures(
    out: Path, tables: dict[str, pd.DataFrame], workers: int | None = None
) -> list[QcPicture]:
    """QC pictures (PNG + JSON sidecar) for every VerSe scan and annotated MosMed series; a
    picture already there from the same inputs (:func:`picture_key`) is kept as it is, and the
    pictures of cases no longer in ``tables`` are deleted (:func:`_remove_other_pictures`).

    ``workers`` pictures are drawn at a time (default :func:`picture_workers`), in threads:
    reading chunks (Blosc), copying them into place (NumPy), Pillow's drawing and PNG encoding
    release the GIL, and each picture writes only its own files."""
    jobs: list[tuple[str, str, Path, Callable[[], object], str]] = []
    qc = out / REPORT_DIR / "qc"
    names: set[str] = set()
    scans, vertebrae = tables.get("scans"), tables.get("vertebrae")
    if scans is not None and vertebrae is not None:
        case_digests, row_digests = _RowDigests(scans), _RowDigests(vertebrae)
        positions = _positions(vertebrae, "scan_id")
        for n, row in enumerate(scans.itertuples()):
            png = ensure_inside(out, qc / safe_name(f"verse-{row.scan_id}", "lower", ".png"))
            names.add(png.stem)
            caption = f"{row.scan_id} ({row.release}, {row.orientation})"
            at = positions.get(row.scan_id, _NO_ROWS)
            rows = vertebrae.iloc[at]
            affine = np.asarray(row.affine, dtype=float).reshape(4, 4)
            draw = partial(
                verse_picture, out / row.store_path, rows, png, caption, index_affine=affine
            )
            key = picture_key("verse", case_digests.of([n]), row_digests.of(at), caption)
            jobs.append((row.scan_id, caption, png, draw, key))
    series, keypoints = tables.get("series"), tables.get("mosmed_vertebrae")
    if series is not None and keypoints is not None:
        annotated = series[series["annotated"] & series["store_path"].notna()]
        case_digests, row_digests = _RowDigests(annotated), _RowDigests(keypoints)
        positions = _positions(keypoints, "series_uid")
        for n, row in enumerate(annotated.itertuples()):
            png = ensure_inside(out, qc / f"mosmed-{n:04d}.png")
            names.add(png.stem)
            at = positions.get(row.series_uid, _NO_ROWS)
            rows = keypoints.iloc[at]
            lists = ", ".join(
                f"{release}: {group['expert'].nunique()} experts"
                for release, group in rows.groupby("release", sort=True)
            )
            caption = f"{row.folder} ({lists or 'no keypoints'})"
            draw = partial(mosmed_picture, out / row.store_path, rows, png, title=row.folder)
            key = picture_key("mosmed", case_digests.of([n]), row_digests.of(at), caption)
            jobs.append((row.folder, caption, png, draw, key))
    n = min(len(jobs), workers or picture_workers())
    if n <= 1:
        pictures = [_draw(*job) for job in jobs]
    else:
        # Each in a copy of the caller's context: what it logs goes where the caller's logs go
        # (a Prefect flow run's, when the report is drawn in one).
        contexts = [contextvars.copy_context() for _ in jobs]
        with ThreadPoolExecutor(n, thread_name_prefix="qc-picture") as pool:
            pictures = list(pool.map(lambda c, job: c.run(_draw, *job), contexts, jobs))
    _remove_other_pictures(out, qc, names)
    return pictures


_PICTURE_FILES = (".png", ".json", ".key")  # a picture, its placements, its key


def _remove_other_pictures(out: Path, qc: Path, names: set[str]) -> None:
    """Delete the picture files in ``qc`` whose name is none of ``names`` (this report's).

    The report folder outlives a build (DVC persists it, so that unchanged pictures are not
    drawn again): a case gone from the tables, or a MosMed picture number no longer used, must
    not leave its picture among the build's outputs. A source left out of a build keeps its
    rows in the tables, hence its pictures."""
    if not qc.is_dir():
        return
    for path in sorted(qc.iterdir()):
        if path.suffix in _PICTURE_FILES and path.stem not in names and path.is_file():
            ensure_inside(out, path).unlink()
            logger.info("%s: removed (no such case in the tables)", path)


def _quarantine_html(quarantine: pd.DataFrame, shown: set[str]) -> str:
    """The quarantine table; each record of a case that has a QC picture links to it."""
    columns = ["source", "case_id", "file", "check_name", "reason"]
    head = "".join(f"<th>{c}</th>" for c in [*columns, "picture"])
    rows = []
    for record in quarantine[columns].itertuples(index=False):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in record)
        case = str(record.case_id)
        link = f'<a href="#{_anchor(case)}">picture</a>' if case in shown else ""
        rows.append(f"<tr>{cells}<td>{link}</td></tr>")
    return (
        f'<table class="quarantine"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table>"
    )


def _figure_html(picture: QcPicture, records: int) -> str:
    """A case's picture, linked to the PNG itself (full size on click)."""
    src, caption = html.escape(picture.src), html.escape(picture.caption)
    note = f" — {records} quarantine record{'s' if records != 1 else ''}" if records else ""
    css = "qc flagged" if records else "qc"
    if picture.error:
        return (
            f'<figure class="{css} failed" id="{_anchor(picture.case_id)}"><p class="error">'
            f"QC picture not drawn: {html.escape(picture.error)}</p>"
            f"<figcaption>{caption}{html.escape(note)}</figcaption></figure>"
        )
    return (
        f'<figure class="{css}" id="{_anchor(picture.case_id)}">'
        f'<a href="{src}" class="full-size"><img src="{src}" alt="QC {caption}" loading="eager"></a>'
        f'<figcaption>{caption}{html.escape(note)} · <a href="{html.escape(picture.placements)}">'
        "placements</a></figcaption></figure>"
    )


def render_report(tables: dict[str, pd.DataFrame], pictures: Sequence[QcPicture]) -> str:
    """The report page for ``tables``, showing ``pictures``."""
    sections = ['<section id="counts"><h2>Tables</h2>']
    sections.append(bar_chart("Rows per table", [(name, len(df)) for name, df in tables.items()]))
    sections.append("</section>")
    charts: list[str] = []
    scans = tables.get("scans")
    if scans is not None and not scans.empty:
        charts.append(
            bar_chart(
                "VerSe scans by release and split", _counts(scans["release"] + " " + scans["split"])
            )
        )
        charts.append(histogram("Slice spacing (mm, axis k)", list(scans["spacing_k_mm"]), unit=""))
        charts.append(histogram("In-plane spacing (mm, axis i)", list(scans["spacing_i_mm"])))
        charts.append(
            bar_chart(
                "Scan shape (i×j×k)",
                _counts(
                    scans["shape_i"].astype(str)
                    + "×"
                    + scans["shape_j"].astype(str)
                    + "×"
                    + scans["shape_k"].astype(str)
                ),
            )
        )
        charts.append(histogram("Maximum HU per scan", list(scans["hu_max"])))
    vertebrae = tables.get("vertebrae")
    if vertebrae is not None and not vertebrae.empty:
        charts.append(histogram("Vertebrae per scan", list(vertebrae.groupby("scan_id").size())))
        order = vertebrae.sort_values("label")["level"].drop_duplicates().tolist()
        charts.append(bar_chart("Vertebrae by level (VerSe)", _counts(vertebrae["level"], order)))
    for name, title in (
        ("mosmed_vertebrae", "Genant grades (MosMed, per expert and vertebra)"),
        ("verse_fracture_grades", "Fracture grades (VerSe'19 table)"),
    ):
        df = tables.get(name)
        column = next(
            (
                c
                for c in ("genant_grade", "fracture_grade", "grade")
                if df is not None and c in df.columns
            ),
            None,
        )
        if column and df is not None:
            charts.append(bar_chart(title, _counts(df[column])))
    consensus = tables.get("mosmed_consensus")
    if consensus is not None and not consensus.empty:
        if "grade_agreement" in consensus.columns:
            charts.append(
                histogram(
                    "Agreement between experts (share giving the consensus grade)",
                    list(consensus["grade_agreement"]),
                )
            )
        distance = next(
            (c for c in consensus.columns if "distance" in c and c.endswith("_mm")), None
        )
        if distance:
            charts.append(
                histogram("Mean keypoint distance between experts (mm)", list(consensus[distance]))
            )
    sections.append(
        '<section id="distributions"><h2>Distributions</h2>' + "".join(charts) + "</section>"
    )
    quarantine = tables.get(
        "quarantine", pd.DataFrame(columns=["source", "case_id", "file", "check_name", "reason"])
    )
    shown = {p.case_id for p in pictures}
    sections.append(
        f'<section id="quarantine"><h2>Quarantine ({len(quarantine)} records)</h2>'
        + (
            _quarantine_html(quarantine, shown)
            if len(quarantine)
            else "<p>Nothing was rejected.</p>"
        )
        + "</section>"
    )
    flagged = quarantine["case_id"].value_counts().to_dict() if len(quarantine) else {}
    # Cases with quarantine records first (most records first), then the rest by case id.
    ordered = sorted(pictures, key=lambda p: (-flagged.get(p.case_id, 0), p.case_id, p.src))
    figures = "".join(_figure_html(p, flagged.get(p.case_id, 0)) for p in ordered)
    sections.append(
        f'<section id="qc"><h2>QC pictures ({len(pictures)})</h2>'
        "<p>Click a picture to see it at full size (1 px = 1 mm for VerSe).</p>"
        f"{figures}</section>"
    )
    style = (
        "body{font-family:sans-serif;margin:2em;color:#222}figure{display:inline-block;margin:.5em;vertical-align:top}"
        "svg text{font-size:11px}.bar{fill:#4a7ab5}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.qc img{height:260px;background:#000}.flagged figcaption{color:#b00;font-weight:bold}.error{color:#b00;max-width:30em}"
    )
    # Marks the page as fully loaded (every picture decoded, with its size) for readers and
    # browser tests.
    script = (
        "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
        "document.body.dataset.imagesLoaded=String(imgs.filter(i=>i.complete&&i.naturalWidth>0).length);"
        "document.body.dataset.imagesTotal=String(imgs.length);"
        "imgs.forEach(i=>{i.dataset.naturalSize=i.naturalWidth+'x'+i.naturalHeight;});});</script>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>verse-etl build report</title>"
        f"<style>{style}</style>{script}</head><body><h1>verse-etl build report</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(out: Path) -> Path:
    """Draw the QC pictures and write ``<out>/report/index.html``; return its path."""
    tables = _tables(out)
    pictures = write_pictures(out, tables)
    path = out / REPORT_DIR / "index.html"
    write_text_atomic(path, render_report(tables, pictures))
    # What the report was drawn from: a build with nothing to change skips it (and Prefect).
    record_report(out)
    return path
