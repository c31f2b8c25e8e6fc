"""Content hashes of source files, of build inputs and of the code that builds a case (the keys
of incremental rebuilds)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable sha256 over JSON-serialisable parts (dataclasses are taken field by field)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        if isinstance(value, Path):
            return value.as_posix()
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    text = json.dumps(parts, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """sha256 of each file, keyed by its POSIX path relative to ``root``."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(paths)}


# Distributions a case's result depends on although no module of the closure imports them by
# name: pydicom's pixel-data decoders and the codecs zarr and numcodecs load as plugins.
PLUGIN_DISTRIBUTIONS: tuple[str, ...] = (
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
    "numcodecs",
    "isal",
    "crc32c",
)


# Installed, the repository's top-level schemas/ and flows/ are verse_etl.schemas and
# verse_etl.flows (pyproject.toml: package-dir).
_PACKAGE_DIRS = {"verse_etl.schemas": "schemas", "verse_etl.flows": "flows"}


def _module_file(root: Path, module: str) -> Path | None:
    """Source file of first-party ``module`` below ``root`` (a package's ``__init__.py``).

    In the repository (editable install) ``verse_etl.schemas`` lives in ``root/schemas``;
    installed from a wheel it is ``root/verse_etl/schemas``: both are looked for, or a
    contract's change would not reach the key of the cases it shapes.
    """
    names = [module]
    for package, folder in _PACKAGE_DIRS.items():
        if module == package or module.startswith(f"{package}."):
            names.insert(0, folder + module[len(package) :])
            break
    for name in names:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<module>[\w.]+)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#]+)"
    r"|import[ \t]+(?P<plain>[\w., \t]+))",
    re.MULTILINE,
)


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (lazy imports in functions count).

    A scan of the text for import statements (a full parse costs ~50x more); a match inside a
    string only adds a module to the key, which is safe.
    """
    names: set[str] = set()
    for m in _IMPORT.finditer(path.read_text(encoding="utf-8")):
        if m["plain"]:
            names.update(n.split()[0] for n in m["plain"].split(",") if n.strip())
        elif not m["module"].startswith("."):
            names.add(m["module"])
            # ``from pkg import sub`` may name a submodule
            listed = m["names"].strip("() \t\n").replace("\n", " ").split(",")
            names.update(f"{m['module']}.{n.split()[0]}" for n in listed if n.strip())
    return names


def code_closure(root: Path, entries: Sequence[str]) -> tuple[dict[str, Path], set[str]]:
    """The first-party modules ``entries`` import, transitively, and the third-party top-level
    modules they import.

    First-party modules are those whose source is below ``root`` (the folder holding the
    ``verse_etl`` package); importing ``a.b.c`` also runs ``a/__init__.py`` and
    ``a/b/__init__.py``, so those count too.
    """
    first: dict[str, Path] = {}
    third: set[str] = set()
    tops: dict[str, bool] = {}  # whether a top-level name is first-party, looked up once
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in first:
            continue
        top = module.split(".")[0]
        if top not in tops:
            tops[top] = _module_file(root, top) is not None
        # Most names a module imports are third-party (numpy.linalg, ...): their files are
        # not looked for below root, only their top-level name once.
        path = _module_file(root, module) if tops[top] else None
        if path is None:
            if not tops[top] and top not in sys.stdlib_module_names:
                third.add(top)
            continue
        first[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imports(path))
    return first, third


# import names whose distribution is named otherwise
_DISTRIBUTION_OF = {"yaml": "PyYAML", "PIL": "Pillow"}


@functools.cache
def _providers() -> dict[str, list[str]]:
    """Which distributions provide each top-level module (a scan of every installed
    distribution, ~0.7 s: once per process, not once per code identity)."""
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _version(name: str) -> str | None:
    # Once per process: each lookup reads a distribution's METADATA (~1 ms), and the case,
    # table, report and card identities of one build name mostly the same distributions.
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions(modules: set[str]) -> dict[str, str]:
    """Installed versions of the distributions providing ``modules`` and of the plugins.

    A module is looked up under its own name first (one metadata read each);
    ``packages_distributions`` (a scan of every installed distribution, ~1 s) only for the
    rest.
    """
    versions: dict[str, str] = {}
    unresolved = []
    for module in sorted(modules):
        name = _DISTRIBUTION_OF.get(module, module)
        for candidate in (name, name.replace("_", "-")):
            found = _version(candidate)
            if found is not None:
                versions[candidate] = found
                break
        else:
            unresolved.append(module)
    if unresolved:
        providers = _providers()
        for module in unresolved:
            for name in providers.get(module, [module]):
                versions[name] = _version(name) or "absent"
    for name in PLUGIN_DISTRIBUTIONS:
        versions[name] = _version(name) or "absent"
    return dict(sorted(versions.items()))


@functools.cache
def code_identity(root: Path, entries: tuple[str, ...]) -> str:
    """sha256 of the code that computes a case: the source of every first-party module the
    ``entries`` import (transitively; keyed by module name, so a copy of the tree elsewhere or
    a wheel install has the same identity), the versions of the third-party distributions
    they import, those of the decoder and codec plugins (:data:`PLUGIN_DISTRIBUTIONS`), and the
    Python version. (No line of this text starts with the word the import scan looks for.)

    Computed once per process for each ``(root, entries)`` (a few milliseconds: the modules are
    parsed for their imports, not imported). A case result whose key holds another identity is
    built again: a bug fix in a reader reaches the outputs.
    """
    first, third = code_closure(root, entries)
    # Keyed by module name, not path: the repository and a wheel place schemas/ differently.
    sources = {
        module: hashlib.sha256(path.read_bytes()).hexdigest() for module, path in first.items()
    }
    return fingerprint(sources, _versions(third), list(sys.version_info[:2]))


def case_code_identity(entry: str) -> str:
    """:func:`code_identity` of the installed verse_etl package for one case builder module
    (``verse_etl.verse.case``, ``verse_etl.mosmed.case``, ``verse_etl.verse.fracture_grades``)."""
    import verse_etl

    return code_identity(Path(verse_etl.__file__).resolve().parent.parent, (entry,))
