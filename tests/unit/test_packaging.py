"""Packaging: a light reader install, and nothing installed as a top-level ``schemas`` or ``flows``."""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

BUILD_STACK = ("prefect", "dvc", "dask", "pydicom", "nibabel", "pandera", "scipy", "isal")
"""Distributions only a build needs: never required by the reader install."""


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_build_stack_is_an_extra_not_a_requirement() -> None:
    project = PYPROJECT["project"]
    core = {_name(r) for r in project["dependencies"]}
    build = {_name(r) for r in project["optional-dependencies"]["build"]}
    assert not core & {n for n in build if n.startswith(BUILD_STACK)}, core
    assert {"prefect", "prefect-dask", "dvc", "pydicom", "nibabel", "pandera"} <= build
    # Everything the project itself installs (requirements.in -> lock) covers both.
    wanted = {
        _name(line)
        for line in (ROOT / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert (core | build) - wanted == set()


def test_schemas_and_flows_install_under_verse_etl_and_every_package_is_listed() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"verse_etl.schemas": "schemas", "verse_etl.flows": "flows"}
    listed = set(setuptools["packages"])
    assert not {p for p in listed if not p.startswith("verse_etl")}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("verse_etl", "verse_etl_sample")
        for init in (ROOT / top).rglob("__init__.py")
    } | {"verse_etl.schemas", "verse_etl.flows"}
    assert found == listed, "list the package in pyproject.toml [tool.setuptools] packages"


@functools.cache
def _absolute_imports() -> tuple[tuple[str, int, str], ...]:
    """(file, line, module) of every absolute import in the repository's Python code, parsed
    once for the tests below."""
    found = []
    for folder in ("verse_etl", "verse_etl_sample", "schemas", "flows", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                found += [(path.relative_to(ROOT).as_posix(), node.lineno, n) for n in names]
    return tuple(found)


def test_nothing_imports_a_top_level_schemas_or_flows() -> None:
    """In a checkout ``schemas`` is importable from the repository root, but an installed copy
    has only ``verse_etl.schemas``: code importing ``schemas`` would break once installed."""
    offenders = [
        f"{path}:{line}"
        for path, line, name in _absolute_imports()
        if name.split(".")[0] in ("schemas", "flows")
    ]
    assert not offenders, f"import verse_etl.schemas / verse_etl.flows instead: {offenders}"


def test_the_product_reaches_the_sample_generator_only_through_its_cli_command() -> None:
    """``verse_etl_sample`` writes synthetic test data; the product (verse_etl, schemas, flows)
    imports it in one place only, lazily, in ``verse-etl sample``."""
    importers = [
        f"{path}:{line}"
        for path, line, name in _absolute_imports()
        if name.split(".")[0] == "verse_etl_sample"
        and path.split("/")[0] in ("verse_etl", "schemas", "flows")
    ]
    assert [i.split(":")[0] for i in importers] == ["verse_etl/cli.py"], importers
