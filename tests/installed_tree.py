"""The package as it is installed, laid out on disk for tools that read source files.

``pyproject.toml`` maps the repository's top-level ``schemas/`` and ``flows/`` to
``verse_etl.schemas`` and ``verse_etl.flows``; the editable install resolves that with an import
hook, which static tools (mypy, import-linter's grimp) cannot follow. This copies the files into
the installed shape so that those tools see every module under its real name.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Installed package name -> source folder, for the top-level packages (verse_etl,
    verse_etl_sample) and every remapped one."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    remapped = config["tool"]["setuptools"].get("package-dir", {})
    top = {p: root / p for p in config["tool"]["setuptools"]["packages"] if "." not in p}
    return top | {name: root / d for name, d in remapped.items()}


def install_tree(dest: Path, root: Path = ROOT) -> Path:
    """Copy the package into ``dest`` as installed (``dest/verse_etl/...``); return ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, source in package_dirs(root).items():
        shutil.copytree(source, dest.joinpath(*name.split(".")), ignore=ignore)
    return dest


def source_path(path: str, dest: Path, root: Path = ROOT) -> str:
    """Map a file of the copied tree (as a tool prints it) back to the repository's file."""
    relative = Path(path)
    if relative.is_absolute():
        relative = relative.relative_to(dest)
    parts = relative.parts
    for name, source in sorted(package_dirs(root).items(), key=lambda kv: -len(kv[0])):
        prefix = tuple(name.split("."))
        if parts[: len(prefix)] == prefix:
            return str((source / Path(*parts[len(prefix) :])).relative_to(root))
    return path
