"""Digest manifests of whole builds: every table, store, case result and metrics file a build
writes, compared with a committed manifest so that a refactoring that changes one byte of the
output fails (issue 14: "the same tables and stores byte for byte on the sample").

A manifest maps each file below the build folder to the sha256 of its bytes. Taken out of the
comparison is only what legitimately differs between two runs of the same code on the same
inputs, or between two versions of the code that write the same data:

- the folder the test ran in (pytest's tmp_path), which the dataset card's source roots and the
  quarantine reasons of inputs a hostile corpus puts outside the source root name: ``<root>``;
- the case keys (``verse_etl.cases.hashing.fingerprint`` of inputs, parameters *and the code's source*,
  so any edit of a case module changes them): the ``fingerprint`` of each saved case result, and
  its first 12 hex digits in store names and ``store_path`` values, and likewise the key of
  each store a case keeps (``stores``: a VerSe store is named by its own key): ``<key>``;
- Python object addresses in error messages a decoder library writes
  (``<_io.BytesIO object at 0x7f...>``): ``0x?``;
- the source-digest caches ``digests/<source>/<case>.json`` as a whole (they record each source
  file's size, mtime, ctime and inode: the test's copies, not the build's output).

In text files (JSON, Markdown) these are replaced before hashing, in file names too. A Parquet
file holding none of them is compared byte for byte; one that holds them (``scans`` and
``series``: their ``store_path``; the quarantine) is compared by content instead (schema with
its field and table metadata, then every row as JSON with the replacements), marked
``content:`` in the manifest. Zarr chunks and metadata are compared byte for byte.

When an output changes on purpose (a new column, another store layout), regenerate the
manifests in the same commit and say why in its message::

    VERSE_ETL_WRITE_DIGESTS=1 .venv/bin/pytest -q -k output_digests tests/e2e
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from verse_etl.paths import STORE_KEY_CHARS

MANIFESTS = Path(__file__).resolve().parent / "digests"
WRITE_ENV = "VERSE_ETL_WRITE_DIGESTS"


_SKIPPED = ("digests",)
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


@dataclass(frozen=True)
class _Normalise:
    """What is taken out of the comparison (see the module docstring)."""

    root: str
    keys: tuple[str, ...]  # case fingerprints, longest first

    def text(self, text: str) -> str:
        text = text.replace(self.root, "<root>")
        for key in self.keys:
            text = text.replace(key, "<key>")
        return _ADDRESS.sub(" at 0x?", text)


def _case_keys(out: Path) -> tuple[str, ...]:
    keys = set()
    for path in out.glob("cases/**/*.json"):
        saved = json.loads(path.read_text())
        # The case key, and the key of each store the case keeps (its inputs and code: names
        # the store, verse_etl/verse/store.py).
        found = [saved.get("fingerprint") or ""]
        found += [s.get("key") or "" for s in saved.get("stores", {}).values()]
        keys |= {k for key in found if key for k in (key, key[:STORE_KEY_CHARS])}
    return tuple(sorted(keys, key=lambda k: (-len(k), k)))


def _parquet_digest(path: Path, normalise: _Normalise) -> str:
    table = pq.read_table(path)
    rows = json.dumps(table.to_pylist(), sort_keys=True, default=str)
    if normalise.text(rows) == rows:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    schema = table.schema.to_string(show_field_metadata=True, show_schema_metadata=True)
    canonical = f"{schema}\n{normalise.text(rows)}"
    return "content:" + hashlib.sha256(canonical.encode()).hexdigest()


def build_digests(out: Path, root: Path) -> dict[str, str]:
    """``{path relative to out: digest}`` of every file of the build at ``out``; ``root`` is
    the folder the test ran in (see the module docstring for what is left out)."""
    normalise = _Normalise(str(root), _case_keys(out))
    digests = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.relative_to(out).parts[0] in _SKIPPED:
            continue
        if path.suffix == ".parquet":
            digest = _parquet_digest(path, normalise)
        elif path.suffix in (".json", ".md"):
            text = normalise.text(path.read_text(encoding="utf-8"))
            digest = hashlib.sha256(text.encode()).hexdigest()
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        digests[normalise.text(path.relative_to(out).as_posix())] = digest
    return digests


def check_manifest(name: str, digests: dict[str, str]) -> None:
    """Assert ``digests`` equal the committed manifest ``name`` (or write it, with
    ``VERSE_ETL_WRITE_DIGESTS=1``)."""
    manifest = MANIFESTS / f"{name}.json"
    if os.environ.get(WRITE_ENV) == "1":
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(manifest.read_text())
    changed = sorted(p for p in expected.keys() & digests.keys() if expected[p] != digests[p])
    missing = sorted(expected.keys() - digests.keys())
    extra = sorted(digests.keys() - expected.keys())
    assert not (changed or missing or extra), (
        f"{manifest}: the build's output differs from the manifest "
        f"(changed {changed[:20]}, missing {missing[:20]}, new {extra[:20]}); if the change is "
        f"meant, regenerate it ({WRITE_ENV}=1, see tests/output_digests.py) in the same commit"
    )
